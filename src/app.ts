// The application as a Fastify plugin (fastify/demo style): external plugins, the error handler, the routes.
// main.ts builds the server around it; tests register it the same way.

import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import fp from 'fastify-plugin';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from './config.js';
import type { Transport } from './transports/transport.js';
import type { ServingModel } from './serving/model.js';
import type { Run } from './serving/run.js';
import { Runs } from './serving/runs.js';
import { ApiError, clip } from './serving/errors.js';
import { PromptEncoder } from './serving/prompts.js';
import { ErrorResponse, DiffusionStep } from './schemas/common.js';
import { ChatCompletionChunk, CompletionChunk } from './schemas/chunks.js';
import requestBodyPlugin from './plugins/request-body.js';
import swaggerPlugin from './plugins/swagger.js';
import swaggerUiPlugin from './plugins/swagger-ui.js';
import authPlugin from './plugins/auth.js';
import rateLimitPlugin from './plugins/rate-limit.js';
import accessPlugin from './plugins/access.js';
import metricsPlugin from './plugins/metrics.js';
import completionsRoutes from './routes/completions.js';
import chatRoutes from './routes/chat.js';
import modelsRoutes from './routes/models.js';
import { metricsRoutes, probeRoutes } from './routes/operations.js';
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
    runs: Runs<Run>;
    /** Prompt text → token ids, refusing what cannot fit and keeping large texts off the event loop. */
    prompts: PromptEncoder;
  }
  interface FastifyContextConfig {
    /** Set on the routes that need no key and count toward no rate limit (see publicRoutes below). */
    public?: boolean;
  }
}

/** The path of a request target without its query (a key sent as `?api_key=…` must never be logged), bounded. */
export function loggedPath(url: string): string {
  const q = url.indexOf('?');
  return clip(q < 0 ? url : url.slice(0, q), 256);
}

/**
 * Log serializers of the HTTP server. Fastify's default `req` serializer logs `req.url` with its query string and the
 * Host header as sent (docs/security.md, logs): this one logs the path alone, bounded, and the client address.
 */
export const logSerializers = {
  req: (req: FastifyRequest) => ({ method: req.method, url: loggedPath(req.url), remoteAddress: req.ip }),
};

/**
 * Errors Node's HTTP parser raises before Fastify sees a request (malformed request, headers too large, the request
 * not received within HTTP_REQUEST_TIMEOUT_MS), answered with the OpenAI error object like every other error.
 * Like Node's own handler (lib/_http_server.js, socketOnError), nothing is written once a response has begun.
 */
function clientErrorHandler(requestTimeoutMs: number) {
  return function onClientError(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const api =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? ApiError.requestTimeout(requestTimeoutMs)
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? new ApiError(431, 'Request headers too large', 'invalid_request_error', 'headers_too_large')
          : ApiError.invalid('Malformed HTTP request', null, 'bad_request');
    this.log.info({ code: api.code }, 'client error');
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !inFlight?.headersSent) {
      const body = JSON.stringify(api.body());
      socket.write(
        `HTTP/1.1 ${api.status} ${STATUS_CODES[api.status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
    socket.destroy();
  };
}

/** Options for the Fastify factory that the app needs (body limit, timeouts, Ajv without coercion, request ids). */
export function serverOptions(config: Config, logger: boolean | object = { level: config.logLevel, serializers: logSerializers }) {
  return {
    logger,
    bodyLimit: config.bodyLimitBytes,
    // Slow clients (docs/security.md): Fastify and Node leave requestTimeout at 0, so a body trickled a byte at a time held a
    // socket forever. Node's requestTimeout bounds the receiving of the request (headers and body) and nothing after
    // it: a stream that outlives it is untouched. connectionTimeout (the socket idle timeout) stays 0 on purpose: a
    // non-streamed request may wait silently for its generation up to REQUEST_TIMEOUT_MS.
    requestTimeout: config.httpRequestTimeoutMs,
    keepAliveTimeout: config.httpKeepAliveTimeoutMs,
    http: {
      headersTimeout: config.httpHeadersTimeoutMs,
      // Node checks both timeouts only this often (30 s by default), which would let a slow client stay up to twice
      // the limit; a tenth of the headers timeout (at most 1 s) keeps each close within about 10% of its limit.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(config.httpHeadersTimeoutMs / 10))),
    },
    clientErrorHandler: clientErrorHandler(config.httpRequestTimeoutMs),
    // A request target the router cannot decode (bad %-escape, over-long parameter): the OpenAI error object too.
    frameworkErrors: (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
      const api = toApiError(err);
      if (api.status >= 500) req.log.error({ err }, 'request failed');
      return reply.code(api.status).send(api.body());
    },
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

/** The field an error is about, as a dotted path; object keys are the client's, so the path is bounded. */
function fieldOf(instancePath: string, extra?: string): string | null {
  const parts = instancePath.split('/').filter(Boolean);
  if (extra) parts.push(extra);
  return parts.length ? clip(parts.join('.'), 128) : null;
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
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return ApiError.bodyTooLarge(err.message);
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    const code = err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'unsupported_media_type' : 'invalid_request';
    // Framework messages may quote the client's input (a content type, a URL component): bounded.
    return new ApiError(status, clip(err.message, 256), 'invalid_request_error', code);
  }
  return ApiError.internal();
}

const appPlugin = fp(
  async function app(fastify: FastifyInstance, opts: AppOptions) {
    fastify.decorate('config', opts.config);
    fastify.decorate('model', opts.model);
    fastify.decorate('transport', opts.transport);
    fastify.decorate('servedName', opts.config.modelName ?? opts.model.name);
    fastify.decorate('runs', new Runs<Run>());
    const prompts = new PromptEncoder(opts.model, { threads: opts.config.tokenizerThreads, maxWaiting: opts.config.maxQueue });
    fastify.decorate('prompts', prompts);
    fastify.addHook('onClose', async () => prompts.close());
    fastify.addSchema(ErrorResponse);
    fastify.addSchema(DiffusionStep);
    fastify.addSchema(CompletionChunk);
    fastify.addSchema(ChatCompletionChunk);

    fastify.addHook('onRequest', async (req, reply) => {
      reply.header('x-request-id', req.id);
    });
    // A client that takes none of a response for HTTP_SEND_TIMEOUT_MS is disconnected (nginx's send_timeout), so a
    // large answer to a client that stopped reading does not hold its socket and memory for ever. It is the socket's
    // idle timeout, which counts a write the client is still taking as activity and, with no 'timeout' listener,
    // destroys the socket (Node's http server). Set only as the answer goes out (before, a non-streamed request waits
    // silently for its generation), on the socket it is given (a pipelined answer gets it later), and cleared before
    // Node's own 'finish' handler, which sets the keep-alive timeout or hands the socket to the next answer. Streams
    // have their own (serving/sse.ts). `app.inject`'s mock socket has no timeouts, hence the check, as Node's own.
    const sendTimeout = (socket: Socket | null, ms: number) => {
      if (typeof socket?.setTimeout === 'function') socket.setTimeout(ms);
    };
    fastify.addHook('onSend', async (_req, reply, payload) => {
      const res = reply.raw;
      if (res.socket) sendTimeout(res.socket, opts.config.httpSendTimeoutMs);
      else res.once('socket', (socket: Socket) => sendTimeout(socket, opts.config.httpSendTimeoutMs));
      res.prependOnceListener('finish', () => sendTimeout(res.socket, 0));
      return payload;
    });
    fastify.setErrorHandler((err: FastifyError, req, reply) => {
      const api = toApiError(err);
      if (api.status >= 500) req.log.error({ err }, 'request failed');
      else req.log.info({ status: api.status, code: api.code, param: api.param }, 'request refused');
      if (api.retryAfter !== null) reply.header('retry-after', String(api.retryAfter));
      return reply.code(api.status).send(api.body());
    });
    fastify.setNotFoundHandler((req, reply) => {
      const api = ApiError.notFound(`Unknown route ${req.method} ${loggedPath(req.url)}`);
      return reply.code(404).send(api.body());
    });

    await fastify.register(requestBodyPlugin);
    await fastify.register(swaggerPlugin);
    await fastify.register(authPlugin, { apiKeys: opts.config.apiKeys });
    await fastify.register(rateLimitPlugin, {
      perMinute: opts.config.rateLimitPerMinute,
      redisUrl: opts.config.redisUrl,
      queueName: opts.config.queueName,
    });
    await fastify.register(accessPlugin);
    await fastify.register(metricsPlugin, { transport: opts.transport });

    await fastify.register(completionsRoutes);
    await fastify.register(chatRoutes);
    await fastify.register(modelsRoutes);
    await fastify.register(metricsRoutes);
    // Public routes, marked here by the scope they are registered in: the liveness and readiness probes, the API
    // documentation and the playground page. Every other route, and every path no route matches, needs a key when
    // API_KEYS is set and counts toward RATE_LIMIT_PER_MINUTE (src/plugins/access.ts, docs/security.md).
    await fastify.register(async function publicRoutes(scope) {
      scope.addHook('onRoute', (route) => {
        route.config = { ...route.config, public: true };
      });
      await scope.register(probeRoutes);
      await scope.register(swaggerUiPlugin);
      await scope.register(playgroundPlugin);
    });

    // Graceful shutdown: let running generations finish (up to SHUTDOWN_TIMEOUT_MS), then stop the rest.
    // The stopped ones end with an error chunk at their next step: 2 s for that.
    fastify.addHook('preClose', async () => {
      if (await fastify.runs.drained(opts.config.shutdownTimeoutMs)) return;
      fastify.runs.cancelAll('shutdown');
      await fastify.runs.drained(2000);
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
