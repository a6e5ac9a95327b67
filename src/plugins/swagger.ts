// OpenAPI document from the routes' TypeBox schemas (@fastify/swagger). Registered at the root so that it sees every
// route; the UI that serves it is src/plugins/swagger-ui.ts.

import fp from 'fastify-plugin';
import swagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';

export const OPENAPI_INFO = {
  title: 'dllm-serve',
  description:
    'OpenAI-style API for masked diffusion language models (LLaDA family). Streams one chunk per denoising step; ' +
    'each streamed choice carries the step in its `diffusion` field.',
  version: '0.1.0',
};

export default fp(
  async function swaggerPlugin(app: FastifyInstance) {
    await app.register(swagger, {
      // Components keep their $id names (ErrorResponse, DiffusionStep, ...).
      refResolver: { buildLocalReference: (json, _base, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
      openapi: {
        openapi: '3.1.0',
        info: OPENAPI_INFO,
        components: {
          securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'Only when API_KEYS is set' } },
        },
        security: [{ bearerAuth: [] }],
        tags: [
          { name: 'completions', description: 'Text completion and infill' },
          { name: 'chat', description: 'Chat completion' },
          { name: 'models', description: 'Served models' },
          { name: 'operations', description: 'Health, readiness, metrics' },
        ],
      },
    });
  },
  { name: 'swagger' },
);
