import type { FastifyInstance } from 'fastify';
import { healthRouteSchema, metricsRouteSchema, readyRouteSchema } from '../schemas/health.js';
import { ApiError } from '../serving/errors.js';

/** Liveness and readiness: public (app.ts), so that probes need no key. */
export async function probeRoutes(app: FastifyInstance) {
  app.get('/health', { schema: healthRouteSchema }, async () => ({ status: 'ok' as const }));

  app.get('/ready', { schema: readyRouteSchema }, async () => {
    const s = await app.transport.status();
    if (!s.ready) throw ApiError.notReady(s.reason ?? 'unknown');
    return {
      ready: true,
      model: app.servedName,
      role: app.config.role,
      transport: app.transport.kind,
      workers: s.workers,
      waiting_requests: s.load.waitingRequests,
      running_requests: s.load.runningRequests,
      waiting_sequences: s.load.waitingSequences,
      running_sequences: s.load.runningSequences,
      queued: s.load.waitingRequests,
      active_sequences: s.load.runningSequences,
      max_batch_size: s.maxBatchSize,
      providers: s.providers,
    };
  });
}

/** Prometheus metrics: protected like the API (they tell traffic and load), so a scraper sends a key. */
export async function metricsRoutes(app: FastifyInstance) {
  app.get('/metrics', { schema: metricsRouteSchema }, async (_req, reply) => {
    reply.header('content-type', app.metrics.registry.contentType);
    return app.metrics.registry.metrics();
  });
}
