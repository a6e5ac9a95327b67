import type { FastifyInstance } from 'fastify';
import type { CompletionRequest } from '../schemas/completions.js';
import { completionsRouteSchema } from '../schemas/completions.js';
import { completionChunks, completionResponse, prepareCompletion } from '../serving/completions.js';
import { serveGeneration } from './generate.js';

export default async function completionsRoutes(app: FastifyInstance) {
  app.post<{ Body: CompletionRequest }>('/v1/completions', { schema: completionsRouteSchema }, async (req, reply) => {
    const p = await prepareCompletion(app.model, app.prompts, app.servedName, req.body);
    const obs = app.metrics.observer;
    return serveGeneration(app, req, reply, {
      endpoint: 'completions',
      requests: p.requests,
      stream: p.stream,
      full: (run) => completionResponse(p, run, obs),
      chunks: (run) => completionChunks(p, run, obs),
    });
  });
}
