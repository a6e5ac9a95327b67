// API side of the Redis transport: a BullMQ job per request (id = completion id), its events read back from a
// per-request Redis Stream with XREAD BLOCK, cancellation through Redis (key + pub/sub), a bounded queue.
// When a worker dies mid-job, BullMQ's stalled-job check gives the job to another worker, which starts it again
// with the same seed; events already passed on are skipped, so the client sees one clean generation. Without any
// live worker a request is refused at once, and one already running ends soon after the last worker has gone, with
// 503; so does everything when Redis itself cannot be reached (docs/security.md, without workers, without Redis):
// clients retry on 503.

import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import {
  EngineError,
  sumDevice,
  sumKvCache,
  type EngineEvent,
  type EngineHealth,
  type GenerateRequest,
} from '../engine/types.js';
import { keys, WORKER_STALE_MS, type WireEvent } from './keys.js';
import { countProviders, engineLoad, NO_LOAD, type Load, type Transport, type TransportStatus } from './transport.js';

export interface RedisTransportOptions {
  redisUrl: string;
  queueName: string;
  maxQueue: number;
  modelName: string;
  /** How long one XREAD blocks before the job's state is checked. */
  blockMs?: number;
  /**
   * How long a running request waits, once no worker is alive, for one to come back before it ends with 503: the
   * time a restarted worker needs to take the job up (JOB_LOCK_MS + STALLED_INTERVAL_MS).
   */
  workerGoneGraceMs: number;
}

const unavailable = (reason: string) => new EngineError('unavailable', reason);
const redisUnreachable = () => unavailable('the queue (Redis) is unreachable');
const noWorker = () => unavailable('no worker present');

export class RedisTransport implements Transport {
  readonly kind = 'redis' as const;
  private readonly conn: Redis;
  private readonly queue: Queue;
  private readonly k: ReturnType<typeof keys>;
  private readonly idle: Redis[] = [];
  private readonly all = new Set<Redis>();
  private readonly cancelled = new Set<string>();
  private readonly running = new Set<string>();
  private closed = false;

  constructor(private readonly opts: RedisTransportOptions) {
    this.conn = new Redis(opts.redisUrl, { maxRetriesPerRequest: 3, enableOfflineQueue: true, lazyConnect: false });
    this.conn.on('error', () => undefined); // readiness reports it
    this.queue = new Queue(opts.queueName, { connection: this.conn.duplicate({ maxRetriesPerRequest: 1 }) });
    this.queue.on('error', () => undefined);
    this.k = keys(opts.queueName);
  }

  private reader(): Redis {
    const r = this.idle.pop();
    if (r) return r;
    const c = this.conn.duplicate({ maxRetriesPerRequest: 3 });
    c.on('error', () => undefined);
    this.all.add(c);
    return c;
  }

  private release(r: Redis): void {
    if (this.closed || this.idle.length >= 32) {
      this.all.delete(r);
      r.disconnect();
    } else this.idle.push(r);
  }

  async *generate(request: GenerateRequest): AsyncGenerator<EngineEvent> {
    if (this.closed) throw new EngineError('overloaded', 'server is shutting down');
    const id = request.id;
    const evKey = this.k.events(id);
    let waiting: number;
    let live: number;
    try {
      live = await this.liveWorkers();
      waiting = await this.queue.getWaitingCount();
      if (live > 0 && waiting < this.opts.maxQueue) {
        await this.conn.del(evKey);
        await this.queue.add('generate', request, { jobId: id, removeOnComplete: true, removeOnFail: true, attempts: 1 });
      }
    } catch {
      throw redisUnreachable();
    }
    // A job no worker will take would wait out REQUEST_TIMEOUT_MS: refuse it now.
    if (live === 0) throw noWorker();
    if (waiting >= this.opts.maxQueue) throw new EngineError('overloaded', `queue full: ${waiting} requests waiting`);
    this.running.add(id);
    const r = this.reader();
    let lastId = '0-0';
    let completed = false;
    /** Since when no worker has been seen alive (null while one is). */
    let goneSince: number | null = null;
    const lastStep = new Map<number, number>();
    const finished = new Set<number>();
    try {
      for (;;) {
        if (this.cancelled.has(id)) throw new EngineError('cancelled', 'request cancelled');
        let res: [string, [string, string[]][]][] | null;
        try {
          res = (await r.xread('COUNT', 500, 'BLOCK', this.opts.blockMs ?? 1000, 'STREAMS', evKey, lastId)) as typeof res;
          if (res === null) {
            // Nothing for a while: is the job still there (waiting, active, or started again after a worker died)?
            const state = await this.queue.getJobState(id);
            if (state === 'failed' || (state === 'unknown' && (await this.conn.xlen(evKey)) === 0)) {
              throw unavailable('the worker running this request was lost');
            }
            // Is any worker alive to run it, or to take it over from a dead one?
            if ((await this.liveWorkers()) > 0) goneSince = null;
            else if (Date.now() - (goneSince ??= Date.now()) >= this.opts.workerGoneGraceMs) throw noWorker();
            continue;
          }
        } catch (err) {
          if (err instanceof EngineError) throw err;
          throw redisUnreachable();
        }
        for (const [entryId, fields] of res[0][1]) {
          lastId = entryId;
          const ev = JSON.parse(fields[1]) as WireEvent;
          switch (ev.type) {
            case 'attempt':
              // A worker (re)started the job; after a restart the steps already passed on are skipped below.
              break;
            case 'error':
              throw new EngineError(ev.code, ev.message, ev.param);
            case 'step': {
              // After a restart, skip the steps already passed on (same seed: same steps).
              const seen = lastStep.get(ev.index) ?? -1;
              if (ev.step <= seen || finished.has(ev.index)) break;
              lastStep.set(ev.index, ev.step);
              yield ev;
              break;
            }
            case 'finish':
              if (finished.has(ev.index)) break;
              finished.add(ev.index);
              yield ev;
              break;
            case 'done':
              completed = true;
              yield ev;
              return;
          }
        }
      }
    } finally {
      this.release(r);
      // Leaving before the end (error, client gone, time limit): make sure the job stops too.
      if (!completed) this.abort(id);
      this.running.delete(id);
      this.cancelled.delete(id);
      await this.conn.del(evKey).catch(() => undefined);
    }
  }

  abort(id: string): void {
    if (!this.running.has(id)) return;
    if (this.cancelled.has(id)) return;
    this.cancelled.add(id);
    void (async () => {
      // Still waiting: remove the job, no worker will see it. Active: its worker holds the lock, so ask it through Redis.
      const job = await this.queue.getJob(id);
      if (job) {
        try {
          await job.remove();
          return;
        } catch {
          /* locked by a worker */
        }
      } else return;
      await this.conn.multi().set(this.k.cancel(id), '1', 'EX', 30).publish(this.k.cancelChannel, id).exec();
    })().catch(() => undefined);
  }

  /** Workers whose heartbeat is fresh. */
  private liveWorkers(): Promise<number> {
    return this.conn.zcount(this.k.workers, Date.now() - WORKER_STALE_MS, '+inf');
  }

  private async workers(): Promise<EngineHealth[]> {
    const now = Date.now();
    await this.conn.zremrangebyscore(this.k.workers, 0, now - WORKER_STALE_MS);
    const ids = await this.conn.zrange(this.k.workers, 0, -1);
    if (ids.length === 0) return [];
    const hs = await this.conn.hmget(this.k.workerHealth, ...ids);
    return hs.filter((h): h is string => h !== null).map((h) => JSON.parse(h) as EngineHealth);
  }

  /**
   * The load of the whole deployment: what the workers' engines hold (their last heartbeats) plus the jobs waiting in
   * the queue for a worker, each a request of `n` sequences.
   */
  private async load(ws: readonly EngineHealth[]): Promise<Load> {
    const inEngines = engineLoad(ws);
    const queued = await this.queue.getWaiting(0, -1);
    return {
      ...inEngines,
      waitingRequests: inEngines.waitingRequests + queued.length,
      waitingSequences: inEngines.waitingSequences + queued.reduce((a, job) => a + (job?.data?.n ?? 1), 0),
    };
  }

  async health(): Promise<EngineHealth> {
    const ws = await this.workers();
    const load = await this.load(ws);
    return {
      ok: ws.length > 0,
      model: this.opts.modelName,
      provider: ws[0]?.provider ?? 'none',
      precision: ws[0]?.precision ?? 'fp32',
      activeSequences: load.runningSequences,
      waitingSequences: load.waitingSequences,
      runningRequests: load.runningRequests,
      waitingRequests: load.waitingRequests,
      maxBatchSize: ws.reduce((a, w) => a + w.maxBatchSize, 0),
      ...sumKvCache(ws),
      ...sumDevice(ws),
    };
  }

  async status(): Promise<TransportStatus> {
    try {
      await this.conn.ping();
    } catch {
      return { ready: false, reason: 'Redis unreachable', workers: 0, load: NO_LOAD, maxBatchSize: 0, providers: {} };
    }
    try {
      const ws = await this.workers();
      const base = {
        workers: ws.length,
        load: await this.load(ws),
        maxBatchSize: ws.reduce((a, w) => a + w.maxBatchSize, 0),
        providers: countProviders(ws),
      };
      if (this.closed) return { ready: false, reason: 'shutting down', ...base };
      if (ws.length === 0) return { ready: false, reason: 'no worker present', ...base };
      return { ready: true, ...base };
    } catch {
      return { ready: false, reason: 'Redis error', workers: 0, load: NO_LOAD, maxBatchSize: 0, providers: {} };
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.queue.close().catch(() => undefined);
    for (const c of this.all) c.disconnect();
    this.all.clear();
    this.idle.length = 0;
    await this.conn.quit().catch(() => undefined);
  }
}
