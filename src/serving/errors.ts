// Errors are values with the OpenAI shape: {error: {message, type, param, code}} plus an HTTP status.

import type { FastifyError } from 'fastify';
import { EngineError } from '../engine/types.js';

/**
 * Client-chosen text (field names, model names, paths) as it may appear in an error message or a log line: at most
 * `max` characters, so that a request cannot make either as large as its body (docs/security.md).
 */
export function clip(text: string, max = 64): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    /** Seconds, for 429/503. */
    readonly retryAfter: number | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The same error about another request field (an engine field name → the endpoint's own). */
  withParam(param: string): ApiError {
    return new ApiError(this.status, this.message, this.type, this.code, param, this.retryAfter);
  }

  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  static invalid(message: string, param: string | null = null, code: string | null = null): ApiError {
    return new ApiError(400, message, 'invalid_request_error', code, param);
  }
  static unsupported(param: string, what = 'is not supported by this server'): ApiError {
    return new ApiError(400, `'${param}' ${what}`, 'invalid_request_error', 'unsupported_parameter', param);
  }
  static contextLength(message: string, param: string | null = 'messages'): ApiError {
    return new ApiError(400, message, 'invalid_request_error', 'context_length_exceeded', param);
  }
  static bodyTooLarge(message = 'Request body is too large'): ApiError {
    return new ApiError(413, message, 'invalid_request_error', 'request_too_large');
  }
  static unauthorized(message = 'Missing or invalid API key. Send it as "Authorization: Bearer <key>".'): ApiError {
    return new ApiError(401, message, 'authentication_error', 'invalid_api_key');
  }
  static modelNotFound(model: string): ApiError {
    return new ApiError(404, `The model '${clip(model)}' does not exist`, 'invalid_request_error', 'model_not_found', 'model');
  }
  static notFound(message: string): ApiError {
    return new ApiError(404, message, 'invalid_request_error', 'not_found');
  }
  static overloaded(message = 'The server is at capacity: too many requests queued. Retry later.', retryAfter = 1): ApiError {
    return new ApiError(429, message, 'rate_limit_error', 'queue_full', null, retryAfter);
  }
  static rateLimited(retryAfter: number, who: 'API key' | 'client address' = 'API key'): ApiError {
    return new ApiError(429, `Rate limit reached for this ${who}. Retry later.`, 'rate_limit_error', 'rate_limit_exceeded', null, retryAfter);
  }
  static notReady(reason: string): ApiError {
    return new ApiError(503, `Service not ready: ${reason}`, 'service_unavailable', 'not_ready', null, 1);
  }
  static headersTooLarge(): ApiError {
    return new ApiError(431, 'Request headers too large', 'invalid_request_error', 'headers_too_large');
  }
  /** 499, nginx's "client closed request": the client went away, or the request was cancelled. Never sent. */
  static cancelled(): ApiError {
    return new ApiError(499, 'Client closed the request', 'cancelled', 'cancelled');
  }
  static requestTimeout(ms: number): ApiError {
    return new ApiError(408, `The request was not received within ${ms} ms`, 'invalid_request_error', 'request_timeout');
  }
  static timeout(ms: number): ApiError {
    return new ApiError(504, `Request exceeded the time limit of ${ms} ms`, 'timeout', 'timeout');
  }
  static internal(cause?: unknown): ApiError {
    const e = new ApiError(500, 'The server had an error while processing your request.', 'server_error', 'internal_error');
    // Logged by the error handler, never sent.
    if (cause !== undefined) (e as { cause?: unknown }).cause = cause;
    return e;
  }
}

/** Maps an engine (or transport) error to its API error. Internal details never reach the client. */
export function fromEngineError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof EngineError || (typeof e === 'object' && e !== null && (e as { name?: string }).name === 'EngineError')) {
    const err = e as EngineError;
    switch (err.code) {
      case 'invalid_request':
        return ApiError.invalid(err.message, err.param ?? null);
      case 'context_length_exceeded':
        return ApiError.contextLength(err.message, err.param ?? null);
      case 'overloaded':
        return ApiError.overloaded(err.message);
      case 'unavailable':
        return ApiError.notReady(err.message);
      case 'cancelled':
        return ApiError.cancelled();
      default:
        return ApiError.internal(e);
    }
  }
  return ApiError.internal(e);
}

/** The field an error is about, as a dotted path; object keys are the client's, so the path is bounded. */
function fieldOf(instancePath: string, extra?: string): string | null {
  const parts = instancePath.split('/').filter(Boolean);
  if (extra) parts.push(extra);
  return parts.length ? clip(parts.join('.'), 128) : null;
}

/** Any error a route, hook or Fastify raises, as the OpenAI error object (5xx details stay in the log). */
export function fromFrameworkError(err: FastifyError): ApiError {
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
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return ApiError.bodyTooLarge();
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    const code = err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'unsupported_media_type' : 'invalid_request';
    // Framework messages may quote the client's input (a content type, a URL component): bounded.
    return new ApiError(status, clip(err.message, 256), 'invalid_request_error', code);
  }
  return ApiError.internal();
}

/** Errors of Node's HTTP parser, before any route (server.ts): 408, 431 or 400. */
export function fromClientError(code: string | undefined, requestTimeoutMs: number): ApiError {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return ApiError.requestTimeout(requestTimeoutMs);
  if (code === 'HPE_HEADER_OVERFLOW') return ApiError.headersTooLarge();
  return ApiError.invalid('Malformed HTTP request', null, 'bad_request');
}
