// Optional API keys (API_KEYS) with @fastify/bearer-auth: it parses `Authorization: Bearer <key>` (the scheme
// case-insensitive, RFC 7235 §2.1: specCompliance rfc6749) and asks our matcher, which compares with every key in
// constant time. The plugin adds no hook of its own (addHook: false): which routes need a key, and the order of the
// key check and the rate limit, are decided in src/plugins/access.ts by the route that matched (docs/security.md).

import { createHash, timingSafeEqual } from 'node:crypto';
import bearerAuth from '@fastify/bearer-auth';
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

declare module 'fastify' {
  interface FastifyRequest {
    /** Which API key the request authenticated with: a digest prefix, safe to log and to use as a Redis key. */
    apiKeyId: string | null;
  }
  interface FastifyInstance {
    /** Checks the request's key and sets `apiKeyId`; null when API_KEYS is not set. */
    authenticate: ((req: FastifyRequest, reply: FastifyReply) => Promise<boolean>) | null;
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** The id of the key `given` matches (first 16 hex digits of its SHA-256), or null. */
export function keyMatcher(keys: string[]): (given: string) => string | null {
  const digests = keys.map((k) => ({ id: digest(k).toString('hex').slice(0, 16), d: digest(k) }));
  return (given) => {
    const g = digest(given);
    let found: string | null = null;
    // Compare with every key, without stopping early, so timing says nothing about which key came close. Digests
    // have one length, so timingSafeEqual never sees buffers of different lengths (which would leak the key's).
    for (const { id, d } of digests) if (timingSafeEqual(g, d) && found === null) found = id;
    return found;
  };
}

export default fp(
  async function authPlugin(app: FastifyInstance, opts: { apiKeys: string[] }) {
    app.decorateRequest('apiKeyId', null);
    if (opts.apiKeys.length === 0) {
      app.decorate('authenticate', null);
      return;
    }
    const match = keyMatcher(opts.apiKeys);
    await app.register(bearerAuth, {
      keys: [],
      auth: (key: string, req: FastifyRequest) => {
        req.apiKeyId = match(key);
        return req.apiKeyId !== null;
      },
      addHook: false,
      specCompliance: 'rfc6749',
      // The refusal is logged once, by the error handler (app.ts).
      verifyErrorLogLevel: 'debug',
    });
    app.decorate('authenticate', (req: FastifyRequest, reply: FastifyReply) =>
      new Promise<boolean>((resolve) => app.verifyBearerAuth!(req, reply, (err?: Error) => resolve(err === undefined))),
    );
  },
  { name: 'auth' },
);
