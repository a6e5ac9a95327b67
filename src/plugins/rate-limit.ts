// Per-key rate limit (per client address without keys): a fixed one-minute window per replica.

import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from '../serving/errors.js';

export default fp(
  async function rateLimitPlugin(app: FastifyInstance, opts: { perMinute: number }) {
    if (opts.perMinute <= 0) return;
    const windows = new Map<string, { start: number; count: number }>();
    const sweep = setInterval(() => {
      const now = Date.now();
      for (const [k, w] of windows) if (now - w.start >= 60_000) windows.delete(k);
    }, 60_000);
    sweep.unref();
    app.addHook('onClose', async () => clearInterval(sweep));
    app.addHook('preHandler', async (req: FastifyRequest) => {
      if (!req.url.startsWith('/v1/')) return;
      const who = req.apiKey ?? `ip:${req.ip}`;
      const now = Date.now();
      let w = windows.get(who);
      if (!w || now - w.start >= 60_000) {
        w = { start: now, count: 0 };
        windows.set(who, w);
      }
      w.count++;
      if (w.count > opts.perMinute) throw ApiError.rateLimited(Math.max(1, Math.ceil((w.start + 60_000 - now) / 1000)));
    });
  },
  { name: 'rate-limit', dependencies: ['auth'] },
);
