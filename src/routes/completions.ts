import type { FastifyInstance } from 'fastify';
import type { CompletionRequest } from '../schemas/completions.js';
import { completionsRouteSchema } from '../schemas/completions.js';
import { prepareCompletion } from '../serving/completions.js';
import { serveGeneration } from '../serving/pipeline.js';

export default async function completionsRoutes(app: FastifyInstance) {
  app.post<{ Body: CompletionRequest }>('/v1/completions', { schema: completionsRouteSchema }, async (req, reply) =>
    serveGeneration(app, req, reply, await prepareCompletion(app.model, app.prompts, app.servedName, req.body)),
  );
}
