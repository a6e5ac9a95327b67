// The shared path of the generation routes: run, watch the client, reply with JSON or SSE, record metrics.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { GenerateRequest } from '../engine/types.js';
import { ApiError } from '../serving/errors.js';
import { Run } from '../serving/run.js';
import { pipeSse } from '../serving/sse.js';

export interface Generation {
  endpoint: 'completions' | 'chat';
  requests: GenerateRequest[];
  stream: boolean;
  full(run: Run): Promise<object>;
  chunks(run: Run): AsyncGenerator<object>;
}

export async function serveGeneration(app: FastifyInstance, req: FastifyRequest, reply: FastifyReply, g: Generation) {
  const run = new Run(app.transport, g.requests, app.config.requestTimeoutMs);
  const obs = app.metrics.observer;
  const t0 = performance.now();
  let outcome = 'ok';
  app.runs.add(run);
  // Client gone (fastify#4690: watch the raw response, not request.signal): stop the generation at the next step.
  const onClose = () => {
    if (!reply.raw.writableFinished) run.cancel('disconnect');
  };
  reply.raw.on('close', onClose);
  req.log.info(
    { completionId: g.requests[0]?.id, prompts: g.requests.length, promptTokens: g.requests.map((r) => r.promptTokenIds.length), stream: g.stream },
    'generation admitted',
  );
  try {
    if (!g.stream) return await g.full(run);
    const chunks = g.chunks(run);
    const first = await chunks.next(); // errors before the first chunk are plain HTTP errors
    if (first.done) throw ApiError.internal();
    reply.hijack();
    await pipeSse(reply.raw, first.value, chunks, {
      keepAliveMs: app.config.keepAliveMs,
      headers: Object.fromEntries(Object.entries(reply.getHeaders()).map(([k, v]) => [k, String(v)])),
      onError: (err) => {
        outcome = err instanceof ApiError ? (err.code ?? String(err.status)) : 'error';
        if (!(err instanceof ApiError) || err.status >= 500) req.log.error({ err }, 'stream failed');
        else req.log.info({ code: err.code }, 'stream ended early');
      },
    });
    app.metrics.countRequest(req.method, req.routeOptions.url ?? req.url, 200);
  } catch (err) {
    outcome = err instanceof ApiError ? (err.code ?? String(err.status)) : 'error';
    if (run.stopReason === 'disconnect') outcome = 'disconnect';
    throw err;
  } finally {
    reply.raw.off('close', onClose);
    app.runs.delete(run);
    if (run.stopReason === 'disconnect') outcome = 'disconnect';
    obs.finished(g.endpoint, outcome, (performance.now() - t0) / 1000, run.usage.completionTokens);
    req.log.info({ completionId: g.requests[0]?.id, outcome, completionTokens: run.usage.completionTokens }, 'generation ended');
  }
}
