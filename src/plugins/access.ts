// Who may use which route (docs/security.md). The decision is made on the route the router matched, never on the text of
// the request target: the router decodes and normalises it (`/v%31/completions`, absolute-form `http://host/v1/…`
// both match /v1/…), so a check of `req.url` was bypassed. Deny by default: only the routes registered as public
// (config.public, set by app.ts) pass freely; every other route, and every path no route matches (the 404 handler),
// needs a key when API_KEYS is set and counts toward RATE_LIMIT_PER_MINUTE. The hook runs at onRequest, before the
// body is read, so wrong keys and invalid bodies count too. docs/security.md has the policy and its reasons.

import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '../serving/errors.js';
import type { LimitVerdict } from './rate-limit.js';

export default fp(
  async function accessPlugin(app: FastifyInstance) {
    const { authenticate, limit } = app;
    if (authenticate === null && limit === null) return;
    /** The limiter's verdict; a store that cannot be reached (Redis down) is a 503, never a 500 or a free pass. */
    const count = async (req: FastifyRequest, increment: boolean): Promise<LimitVerdict> => {
      try {
        return await limit!(req, increment);
      } catch (err) {
        req.log.warn({ err: (err as Error).message }, 'rate limit store unreachable');
        throw ApiError.notReady('the rate limit store (Redis) is unreachable');
      }
    };
    app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
      if (req.routeOptions.config.public === true) return;
      if (authenticate !== null) {
        if (limit !== null) {
          // An address whose budget is spent on failed keys is refused before its key is looked at: otherwise a
          // right guess would still pass, and keys could be tried at full speed (GitHub does the same).
          const seen = await count(req, false);
          if (seen.remaining === 0) throw ApiError.rateLimited(seen.retryAfter, 'client address');
        }
        if (!(await authenticate(req, reply))) {
          if (limit !== null) {
            const failed = await count(req, true); // counted against the client address (no key id)
            if (failed.exceeded) throw ApiError.rateLimited(failed.retryAfter, 'client address');
          }
          throw ApiError.unauthorized();
        }
      }
      if (limit !== null) {
        const v = await count(req, true); // the key's bucket when authenticated, else the address's
        if (v.exceeded) throw ApiError.rateLimited(v.retryAfter, req.apiKeyId !== null ? 'API key' : 'client address');
      }
    });
  },
  { name: 'access', dependencies: ['auth', 'rate-limit'] },
);
