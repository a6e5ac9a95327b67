import type { FastifyInstance } from 'fastify';
import type { ChatRequest } from '../schemas/chat.js';
import { chatRouteSchema } from '../schemas/chat.js';
import { chatChunks, chatResponse, prepareChat } from '../serving/chat.js';
import { serveGeneration } from './generate.js';

export default async function chatRoutes(app: FastifyInstance) {
  app.post<{ Body: ChatRequest }>('/v1/chat/completions', { schema: chatRouteSchema }, async (req, reply) => {
    const p = await prepareChat(app.model, app.prompts, app.servedName, req.body);
    const obs = app.metrics.observer;
    return serveGeneration(app, req, reply, {
      endpoint: 'chat',
      requests: [p.request],
      stream: p.stream,
      full: (run) => chatResponse(p, run, obs),
      chunks: (run) => chatChunks(p, run, obs),
    });
  });
}
