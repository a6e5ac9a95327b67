// The one error handler (vLLM's errors as values, fastify/demo's single handler): whatever a route, hook or plugin
// throws becomes the OpenAI error object with its status (serving/errors.ts holds every mapping and its wording);
// 5xx details are logged, never sent. Unknown routes get the same shape.

import fp from 'fastify-plugin';
import type { FastifyError, FastifyInstance } from 'fastify';
import { ApiError, fromFrameworkError } from '../serving/errors.js';
import { loggedPath } from '../server.js';

export default fp(
  async function errorsPlugin(fastify: FastifyInstance) {
    fastify.setErrorHandler((err: FastifyError, req, reply) => {
      const api = fromFrameworkError(err);
      if (api.status >= 500) req.log.error({ err }, 'request failed');
      else req.log.info({ status: api.status, code: api.code, param: api.param }, 'request refused');
      if (api.retryAfter !== null) reply.header('retry-after', String(api.retryAfter));
      return reply.code(api.status).send(api.body());
    });
    fastify.setNotFoundHandler((req, reply) => {
      const api = ApiError.notFound(`Unknown route ${req.method} ${loggedPath(req.url)}`);
      return reply.code(404).send(api.body());
    });
  },
  { name: 'openai-errors' },
);
