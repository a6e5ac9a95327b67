// RATE_LIMIT_PER_MINUTE with @fastify/rate-limit: fixed one-minute windows per API key, or per client address for
// requests without a valid key (IPv6 addresses per /64, the plugin's normalisation). In Redis mode the counters live
// in Redis (the plugin's Redis store), so the limit holds across every API replica; otherwise in memory. The plugin
// adds no global hook (global: false): src/plugins/access.ts calls the limiter where the key check needs it.

import rateLimit, { normalizeIP } from '@fastify/rate-limit';
import fp from 'fastify-plugin';
import { Redis } from 'ioredis';
import type { FastifyInstance, FastifyRequest } from 'fastify';

export interface LimitVerdict {
  /** Requests left in the current window (0 when it is spent). */
  remaining: number;
  /** This request was counted and is over the limit. */
  exceeded: boolean;
  /** Seconds until the window ends. */
  retryAfter: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Counts the request (or, with `count: false`, only reads its counter) in its bucket: its API key's when it has
     * authenticated, its client address's otherwise. Null when RATE_LIMIT_PER_MINUTE is 0. Throws when the store
     * (Redis) cannot be reached.
     */
    limit: ((req: FastifyRequest, count: boolean) => Promise<LimitVerdict>) | null;
  }
}

export interface RateLimitOptions {
  perMinute: number;
  redisUrl: string | null;
  queueName: string;
}

export default fp(
  async function rateLimitPlugin(app: FastifyInstance, opts: RateLimitOptions) {
    if (opts.perMinute <= 0) {
      app.decorate('limit', null);
      return;
    }
    let redis: Redis | null = null;
    if (opts.redisUrl !== null) {
      // Bounded waits when Redis is away: the request gets 503 (access.ts) instead of hanging.
      redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 1, commandTimeout: 2000 });
      redis.on('error', () => undefined); // /ready reports Redis; each request that needs it gets 503
      app.addHook('onClose', async () => {
        redis!.disconnect();
      });
    }
    await app.register(rateLimit, {
      global: false,
      max: opts.perMinute,
      timeWindow: 60_000,
      keyGenerator: (req: FastifyRequest) => (req.apiKeyId !== null ? `key:${req.apiKeyId}` : `addr:${normalizeIP(req.ip)}`),
      ...(redis ? { redis, nameSpace: `dllm:${opts.queueName}:ratelimit:` } : {}),
    });
    const limiter = app.createRateLimit();
    app.decorate('limit', async (req: FastifyRequest, count: boolean) => {
      const r = await limiter(req, { increment: count });
      if (r.isAllowed) throw new Error('unexpected allow-listed request'); // no allowList is configured
      return { remaining: r.remaining, exceeded: r.isExceeded, retryAfter: Math.max(1, r.ttlInSeconds) };
    });
  },
  { name: 'rate-limit', dependencies: ['auth'] },
);
