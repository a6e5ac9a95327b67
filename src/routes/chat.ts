import type { FastifyInstance } from 'fastify';
import type { ChatRequest } from '../schemas/chat.js';
import { chatRouteSchema } from '../schemas/chat.js';
import { prepareChat } from '../serving/chat.js';
import { serveGeneration } from '../serving/pipeline.js';

export default async function chatRoutes(app: FastifyInstance) {
  app.post<{ Body: ChatRequest }>('/v1/chat/completions', { schema: chatRouteSchema }, async (req, reply) =>
    serveGeneration(app, req, reply, await prepareChat(app.model, app.prompts, app.servedName, req.body)),
  );
}
