// Optional API keys: `Authorization: Bearer <key>` on /v1/*, compared in constant time.

import { createHash, timingSafeEqual } from 'node:crypto';
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from '../serving/errors.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The API key the request authenticated with (null without keys). */
    apiKey: string | null;
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

export function keyMatcher(keys: string[]): (given: string) => string | null {
  const digests = keys.map((k) => ({ key: k, d: digest(k) }));
  return (given) => {
    const g = digest(given);
    let found: string | null = null;
    // Compare with every key, without stopping early, so timing says nothing about which key came close.
    for (const { key, d } of digests) if (timingSafeEqual(g, d) && found === null) found = key;
    return found;
  };
}

export default fp(
  async function authPlugin(app: FastifyInstance, opts: { apiKeys: string[] }) {
    app.decorateRequest('apiKey', null);
    if (opts.apiKeys.length === 0) return;
    const match = keyMatcher(opts.apiKeys);
    app.addHook('onRequest', async (req: FastifyRequest) => {
      if (!req.url.startsWith('/v1/')) return;
      const h = req.headers.authorization;
      const m = typeof h === 'string' ? /^Bearer\s+(.+)$/i.exec(h.trim()) : null;
      const key = m ? match(m[1]) : null;
      if (key === null) throw ApiError.unauthorized();
      req.apiKey = key;
    });
  },
  { name: 'auth' },
);
