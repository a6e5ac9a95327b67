// The Fastify factory's options (fastify/demo's server.ts): what the HTTP server itself must do before the app sees a
// request: limits and timeouts, request ids, log serializers, and the OpenAI error object for what Node's parser and
// Fastify's router refuse. main.ts builds the server with them; the app (app.ts) is registered on it.

import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from './config.js';
import { clip, fromClientError, fromFrameworkError } from './serving/errors.js';

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
    const api = fromClientError(err.code, requestTimeoutMs);
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
      const api = fromFrameworkError(err);
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
