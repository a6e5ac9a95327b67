// Docker HEALTHCHECK of both images: `node docker/healthcheck.mjs`, exit 0 = healthy, 1 = unhealthy.
// Liveness only (a container that fails it is reported unhealthy; compose restarts only what exits):
//   ROLE=all|api  GET /health on this container's PORT answers {"status":"ok"}.
//   ROLE=worker   (no HTTP server) this worker's heartbeat in Redis is fresh: the sorted set dllm:<QUEUE_NAME>:workers
//                 that QueueWorker refreshes every 500 ms (src/transports/keys.ts; test/deploy checks the names agree).
//                 Worker ids carry the host name (src/transports/worker.ts names them w-<hostname>-<random>), so the
//                 ids that contain this container's hostname are this container's; with none, any fresh one counts.
// Readiness (a worker present, the queue reachable) is GET /ready, for load balancers and `docker compose ps`.

import os from 'node:os';
import { pathToFileURL } from 'node:url';

/** Redis key of the worker heartbeats (src/transports/keys.ts: keys(queue).workers). */
export function workersKey(queueName) {
  return `dllm:${queueName}:workers`;
}

/** A heartbeat older than this is a dead worker (src/transports/keys.ts: WORKER_STALE_MS). */
export const WORKER_STALE_MS = 3000;

/** The address to probe for a listening HOST. */
export function probeHost(host) {
  if (!host || host === '0.0.0.0' || host === 'localhost') return '127.0.0.1';
  if (host === '::' || host === '::1') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

async function checkHttp(env) {
  const url = `http://${probeHost(env.HOST)}:${env.PORT || '8000'}/health`;
  const res = await fetch(url, { signal: AbortSignal.timeout(4000) });
  const body = await res.json().catch(() => null);
  if (res.status !== 200 || body?.status !== 'ok') throw new Error(`${url}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return `${url} ok`;
}

async function checkWorker(env) {
  if (!env.REDIS_URL) throw new Error('ROLE=worker without REDIS_URL');
  const { Redis } = await import('ioredis');
  const redis = new Redis(env.REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 3000, retryStrategy: () => null });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    const flat = await redis.zrange(workersKey(env.QUEUE_NAME || 'dllm'), 0, -1, 'WITHSCORES');
    const now = Date.now();
    const beats = [];
    for (let i = 0; i < flat.length; i += 2) beats.push({ id: flat[i], fresh: now - Number(flat[i + 1]) <= WORKER_STALE_MS });
    const host = os.hostname();
    const mine = beats.filter((b) => b.id.includes(host));
    const candidates = mine.length > 0 ? mine : beats;
    const fresh = candidates.filter((b) => b.fresh);
    if (fresh.length === 0) throw new Error(`no fresh worker heartbeat in ${workersKey(env.QUEUE_NAME || 'dllm')} (${beats.length} known)`);
    return `worker heartbeat fresh (${fresh.map((b) => b.id).join(', ')})`;
  } finally {
    redis.disconnect();
  }
}

export async function healthcheck(env = process.env) {
  return (env.ROLE || 'all') === 'worker' ? checkWorker(env) : checkHttp(env);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  healthcheck().then(
    (line) => {
      process.stdout.write(`healthy: ${line}\n`);
      process.exit(0);
    },
    (err) => {
      process.stdout.write(`unhealthy: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
