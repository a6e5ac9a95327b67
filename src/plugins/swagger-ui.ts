// Swagger UI at /docs and the OpenAPI document at /docs/json (@fastify/swagger-ui). A public route: app.ts registers
// it in the scope of the routes that need no key.

import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';

export default async function swaggerUiPlugin(app: FastifyInstance) {
  await app.register(swaggerUi, { routePrefix: '/docs' });
}
