// Worker side of the Redis transport: a BullMQ Worker with concurrency = the engine's maximum batch, so the engine's
// scheduler sees every running job as one sequence of its batch. Each job's events go to its Redis Stream
// (XADD MAXLEN + EXPIRE); cancellation arrives by pub/sub (and a key, for jobs that start after it was sent).

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { EngineError, type EngineClient, type GenerateRequest } from '../engine/types.js';
import { HEARTBEAT_MS, keys, type WireEvent } from './keys.js';

export interface QueueWorkerOptions {
  redisUrl: string;
  queueName: string;
  maxBatchSize: number;
  lockMs: number;
  stalledIntervalMs: number;
  eventStreamMaxLen: number;
  eventTtlSeconds: number;
  log: Logger;
}

export class QueueWorker {
  /** Carries the host name so that a container's healthcheck (docker/healthcheck.mjs) finds its own heartbeat. */
  readonly id = `w-${hostname()}-${randomBytes(4).toString('hex')}`;
  private readonly conn: Redis;
  private readonly sub: Redis;
  private readonly worker: Worker;
  private readonly k: ReturnType<typeof keys>;
  private readonly active = new Map<string, { cancelled: boolean; stepsAtCancel: number }>();
  private beat: NodeJS.Timeout | null = null;

  constructor(
    private readonly engine: EngineClient,
    private readonly opts: QueueWorkerOptions,
  ) {
    this.k = keys(opts.queueName);
    this.conn = new Redis(opts.redisUrl, { maxRetriesPerRequest: null });
    this.conn.on('error', (err) => opts.log.warn({ err: err.message }, 'redis error'));
    this.sub = this.conn.duplicate();
    this.sub.on('error', () => undefined);
    this.worker = new Worker(opts.queueName, (job) => this.process(job), {
      connection: this.conn.duplicate({ maxRetriesPerRequest: null }),
      concurrency: opts.maxBatchSize,
      lockDuration: opts.lockMs,
      stalledInterval: opts.stalledIntervalMs,
      maxStalledCount: 1,
      autorun: false,
    });
    this.worker.on('error', (err) => opts.log.warn({ err: err.message }, 'worker error'));
    this.worker.on('stalled', (jobId) => opts.log.warn({ jobId }, 'stalled job taken up again'));
  }

  async start(): Promise<void> {
    await this.sub.subscribe(this.k.cancelChannel);
    this.sub.on('message', (_channel, id: string) => this.cancel(id));
    await this.heartbeat();
    this.beat = setInterval(() => void this.heartbeat().catch(() => undefined), HEARTBEAT_MS);
    void this.worker.run().catch((err) => this.opts.log.error({ err }, 'worker stopped'));
    this.opts.log.info({ worker: this.id, concurrency: this.opts.maxBatchSize }, 'worker started');
  }

  private cancel(id: string): void {
    const a = this.active.get(id);
    if (!a || a.cancelled) return;
    a.cancelled = true;
    a.stepsAtCancel = this.engineSteps();
    this.engine.abort(id);
  }

  /** Steps the engine has run (when it counts them), to report how fast a cancellation took effect. */
  private engineSteps(): number {
    return (this.engine as { stats?: { steps?: number } }).stats?.steps ?? 0;
  }

  private async heartbeat(): Promise<void> {
    const h = await this.engine.health();
    await this.conn
      .multi()
      .zadd(this.k.workers, Date.now(), this.id)
      .hset(this.k.workerHealth, this.id, JSON.stringify(h))
      .exec();
  }

  private async emit(id: string, ev: WireEvent): Promise<void> {
    const key = this.k.events(id);
    await this.conn
      .multi()
      .xadd(key, 'MAXLEN', '~', String(this.opts.eventStreamMaxLen), '*', 'e', JSON.stringify(ev))
      .expire(key, this.opts.eventTtlSeconds)
      .exec();
  }

  private async process(job: Job<GenerateRequest>): Promise<void> {
    const req = job.data;
    const state = { cancelled: false, stepsAtCancel: 0 };
    this.active.set(req.id, state);
    const log = this.opts.log.child({ completionId: req.id, worker: this.id });
    try {
      if ((await this.conn.exists(this.k.cancel(req.id))) === 1) state.cancelled = true;
      if (state.cancelled) return;
      await this.emit(req.id, { type: 'attempt', worker: this.id });
      log.info({ promptTokens: req.promptTokenIds.length, attempt: job.attemptsStarted }, 'job started');
      for await (const ev of this.engine.generate(req)) {
        if (state.cancelled) break;
        await this.emit(req.id, ev);
      }
    } catch (err) {
      if (state.cancelled || (err instanceof EngineError && err.code === 'cancelled')) {
        state.cancelled = true;
      } else {
        const e = err instanceof EngineError ? err : null;
        if (!e || e.code === 'internal') log.error({ err }, 'generation failed');
        await this.emit(req.id, {
          type: 'error',
          code: e?.code ?? 'internal',
          message: e && e.code !== 'internal' ? e.message : 'internal error in the worker',
          param: e?.param ?? null,
        }).catch(() => undefined);
      }
    } finally {
      this.active.delete(req.id);
      if (state.cancelled) {
        await this.conn.del(this.k.events(req.id), this.k.cancel(req.id)).catch(() => undefined);
        log.info({ engineStepsSinceCancel: this.engineSteps() - state.stepsAtCancel }, 'job cancelled');
      }
    }
  }

  /** Graceful: stop taking jobs, let running ones finish, leave the worker set. */
  async close(): Promise<void> {
    if (this.beat) clearInterval(this.beat);
    await this.worker.close();
    await this.conn.multi().zrem(this.k.workers, this.id).hdel(this.k.workerHealth, this.id).exec().catch(() => undefined);
    await this.sub.quit().catch(() => undefined);
    await this.conn.quit().catch(() => undefined);
  }
}
