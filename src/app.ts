// The application as a Fastify plugin (fastify/demo style): external plugins, the error handler, the routes.
// main.ts builds the server around it; tests register it the same way.

import { randomUUID } from 'node:crypto';
import fp from 'fastify-plugin';
import type { FastifyError, FastifyInstance } from 'fastify';
import type { Config } from './config.js';
import type { Transport } from './queue/transport.js';
import type { ServingModel } from './serving/model.js';
import type { Run } from './serving/run.js';
import { ApiError } from './serving/errors.js';
import { ErrorResponse, DiffusionStep } from './schemas/common.js';
import { ChatCompletionChunk, CompletionChunk } from './schemas/chunks.js';
import swaggerPlugin from './plugins/swagger.js';
import authPlugin from './plugins/auth.js';
import rateLimitPlugin from './plugins/rate-limit.js';
import metricsPlugin from './plugins/metrics.js';
import completionsRoutes from './routes/completions.js';
import chatRoutes from './routes/chat.js';
import modelsRoutes from './routes/models.js';
import operationsRoutes from './routes/operations.js';
import playgroundPlugin from './playground/plugin.js';

export interface AppOptions {
  config: Config;
  model: ServingModel;
  transport: Transport;
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    model: ServingModel;
    transport: Transport;
    /** The name clients use in `model`. */
    servedName: string;
    /** Generations in progress, for graceful shutdown. */
    runs: Set<Run>;
  }
}

/** Options for the Fastify factory that the app needs (body limit, Ajv without coercion, request ids). */
export function serverOptions(config: Config, logger: boolean | object = { level: config.logLevel }) {
  return {
    logger,
    bodyLimit: config.bodyLimitBytes,
    // Behind the compose gateway the peer is nginx: without this, logs and the keyless rate limit see one client.
    trustProxy: config.trustProxy.length > 0 ? [...config.trustProxy] : false,
    // The client's x-request-id when it is a sane token, else a fresh one (ids end up in every log line).
    requestIdHeader: false,
    genReqId: (req: { headers: Record<string, string | string[] | undefined> }) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[A-Za-z0-9._:-]{1,128}$/.test(given) ? given : randomUUID();
    },
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
  } as const;
}

function fieldOf(instancePath: string, extra?: string): string | null {
  const parts = instancePath.split('/').filter(Boolean);
  if (extra) parts.push(extra);
  return parts.length ? parts.join('.') : null;
}

/** Turns any error into the OpenAI error object; 5xx details are logged, never sent. */
export function toApiError(err: FastifyError): ApiError {
  if (err instanceof ApiError) return err;
  if (err.validation && err.validation.length > 0) {
    const v = err.validation[0];
    const extra = (v.params as { additionalProperty?: string }).additionalProperty;
    if (extra !== undefined) {
      return new ApiError(400, `Unrecognized request argument supplied: ${fieldOf(v.instancePath, extra)}`, 'invalid_request_error', 'unknown_parameter', fieldOf(v.instancePath, extra));
    }
    const field = fieldOf(v.instancePath);
    return ApiError.invalid(`Invalid request: ${field ?? err.validationContext ?? 'body'} ${v.message ?? 'is invalid'}`, field, 'invalid_value');
  }
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new ApiError(413, err.message, 'invalid_request_error', 'request_too_large');
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    const code = err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'unsupported_media_type' : 'invalid_request';
    return new ApiError(status, err.message, 'invalid_request_error', code);
  }
  return ApiError.internal();
}

const appPlugin = fp(
  async function app(fastify: FastifyInstance, opts: AppOptions) {
    fastify.decorate('config', opts.config);
    fastify.decorate('model', opts.model);
    fastify.decorate('transport', opts.transport);
    fastify.decorate('servedName', opts.config.modelName ?? opts.model.name);
    fastify.decorate('runs', new Set<Run>());
    fastify.addSchema(ErrorResponse);
    fastify.addSchema(DiffusionStep);
    fastify.addSchema(CompletionChunk);
    fastify.addSchema(ChatCompletionChunk);

    fastify.addHook('onRequest', async (req, reply) => {
      reply.header('x-request-id', req.id);
    });

    fastify.setErrorHandler((err: FastifyError, req, reply) => {
      const api = toApiError(err);
      if (api.status >= 500) req.log.error({ err }, 'request failed');
      else req.log.info({ status: api.status, code: api.code, param: api.param }, 'request refused');
      if (api.retryAfter !== null) reply.header('retry-after', String(api.retryAfter));
      return reply.code(api.status).send(api.body());
    });
    fastify.setNotFoundHandler((req, reply) => {
      const api = ApiError.notFound(`Unknown route ${req.method} ${req.url.split('?')[0]}`);
      return reply.code(404).send(api.body());
    });

    await fastify.register(swaggerPlugin);
    await fastify.register(authPlugin, { apiKeys: opts.config.apiKeys });
    await fastify.register(rateLimitPlugin, { perMinute: opts.config.rateLimitPerMinute });
    await fastify.register(metricsPlugin, { transport: opts.transport });

    await fastify.register(completionsRoutes);
    await fastify.register(chatRoutes);
    await fastify.register(modelsRoutes);
    await fastify.register(operationsRoutes);
    await fastify.register(playgroundPlugin);

    // Graceful shutdown: let running generations finish (up to SHUTDOWN_TIMEOUT_MS), then stop the rest.
    fastify.addHook('preClose', async () => {
      const deadline = Date.now() + opts.config.shutdownTimeoutMs;
      while (fastify.runs.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const run of fastify.runs) run.cancel('shutdown');
      const grace = Date.now() + 2000;
      while (fastify.runs.size > 0 && Date.now() < grace) await new Promise((r) => setTimeout(r, 20));
    });
  },
  { name: 'dllm-app' },
);
export default appPlugin;

/** The OpenAPI document of the app (what /docs/json serves), built without an engine. */
export async function openapiDocument(config: Config, model: ServingModel): Promise<unknown> {
  const { default: Fastify } = await import('fastify');
  const unused = (): never => {
    throw new Error('not available while generating the OpenAPI document');
  };
  const transport: Transport = {
    kind: 'local',
    generate: unused,
    abort: unused,
    health: unused,
    status: unused,
    close: async () => undefined,
  };
  const fastify = Fastify(serverOptions(config, false));
  await fastify.register(appPlugin, { config, model, transport });
  await fastify.ready();
  const doc = fastify.swagger();
  await fastify.close();
  return doc;
}
