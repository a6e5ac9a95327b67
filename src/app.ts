// The application as a Fastify plugin (fastify/demo's app.ts): the composition root. It decorates the instance with
// what the routes share and registers, in order, the error mapping, the send timeout, the external plugins and the
// routes; the server's own options are server.ts's. main.ts builds the server around it; tests register it the same way.

import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { Config } from './config.js';
import type { Transport } from './transports/transport.js';
import type { ServingModel } from './serving/model.js';
import type { Run } from './serving/run.js';
import { Runs } from './serving/runs.js';
import { PromptEncoder } from './serving/prompts.js';
import { ErrorResponse, DiffusionStep } from './schemas/common.js';
import { ChatCompletionChunk, CompletionChunk } from './schemas/chunks.js';
import errorsPlugin from './plugins/errors.js';
import requestBodyPlugin from './plugins/request-body.js';
import sendTimeoutPlugin from './plugins/send-timeout.js';
import { serverOptions } from './server.js';
import swaggerPlugin from './plugins/swagger.js';
import swaggerUiPlugin from './plugins/swagger-ui.js';
import authPlugin from './plugins/auth.js';
import rateLimitPlugin from './plugins/rate-limit.js';
import accessPlugin from './plugins/access.js';
import metricsPlugin from './plugins/metrics.js';
import completionsRoutes from './routes/completions.js';
import chatRoutes from './routes/chat.js';
import modelsRoutes from './routes/models.js';
import { metricsRoutes, probeRoutes } from './routes/operations.js';
import playgroundPlugin from './playground/plugin.js';

export interface AppOptions {
  config: Config;
  model: ServingModel;
  transport: Transport;
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    model: ServingModel;
    transport: Transport;
    /** The name clients use in `model`. */
    servedName: string;
    /** Generations in progress, for graceful shutdown. */
    runs: Runs<Run>;
    /** Prompt text → token ids, refusing what cannot fit and keeping large texts off the event loop. */
    prompts: PromptEncoder;
  }
  interface FastifyContextConfig {
    /** Set on the routes that need no key and count toward no rate limit (see publicRoutes below). */
    public?: boolean;
  }
}

const appPlugin = fp(
  async function app(fastify: FastifyInstance, opts: AppOptions) {
    fastify.decorate('config', opts.config);
    fastify.decorate('model', opts.model);
    fastify.decorate('transport', opts.transport);
    fastify.decorate('servedName', opts.config.modelName ?? opts.model.name);
    fastify.decorate('runs', new Runs<Run>());
    const prompts = new PromptEncoder(opts.model, { threads: opts.config.tokenizerThreads, maxWaiting: opts.config.maxQueue });
    fastify.decorate('prompts', prompts);
    fastify.addHook('onClose', async () => prompts.close());
    fastify.addSchema(ErrorResponse);
    fastify.addSchema(DiffusionStep);
    fastify.addSchema(CompletionChunk);
    fastify.addSchema(ChatCompletionChunk);

    fastify.addHook('onRequest', async (req, reply) => {
      reply.header('x-request-id', req.id);
    });
    await fastify.register(errorsPlugin);
    await fastify.register(sendTimeoutPlugin, { ms: opts.config.httpSendTimeoutMs });
    await fastify.register(requestBodyPlugin);
    await fastify.register(swaggerPlugin);
    await fastify.register(authPlugin, { apiKeys: opts.config.apiKeys });
    await fastify.register(rateLimitPlugin, {
      perMinute: opts.config.rateLimitPerMinute,
      redisUrl: opts.config.redisUrl,
      queueName: opts.config.queueName,
    });
    await fastify.register(accessPlugin);
    await fastify.register(metricsPlugin, { transport: opts.transport });

    await fastify.register(completionsRoutes);
    await fastify.register(chatRoutes);
    await fastify.register(modelsRoutes);
    await fastify.register(metricsRoutes);
    // Public routes, marked here by the scope they are registered in: the liveness and readiness probes, the API
    // documentation and the playground page. Every other route, and every path no route matches, needs a key when
    // API_KEYS is set and counts toward RATE_LIMIT_PER_MINUTE (src/plugins/access.ts, docs/security.md).
    await fastify.register(async function publicRoutes(scope) {
      scope.addHook('onRoute', (route) => {
        route.config = { ...route.config, public: true };
      });
      await scope.register(probeRoutes);
      await scope.register(swaggerUiPlugin);
      await scope.register(playgroundPlugin);
    });

    // Graceful shutdown: let running generations finish (up to SHUTDOWN_TIMEOUT_MS), then stop the rest.
    // The stopped ones end with an error chunk at their next step: 2 s for that.
    fastify.addHook('preClose', async () => {
      if (await fastify.runs.drained(opts.config.shutdownTimeoutMs)) return;
      fastify.runs.cancelAll('shutdown');
      await fastify.runs.drained(2000);
    });
  },
  { name: 'dllm-app' },
);
export default appPlugin;

/** The OpenAPI document of the app (what /docs/json serves), built without an engine. */
export async function openapiDocument(config: Config, model: ServingModel): Promise<unknown> {
  const { default: Fastify } = await import('fastify');
  const unused = (): never => {
    throw new Error('not available while generating the OpenAPI document');
  };
  const transport: Transport = {
    kind: 'local',
    generate: unused,
    abort: unused,
    health: unused,
    status: unused,
    close: async () => undefined,
  };
  const fastify = Fastify(serverOptions(config, false));
  await fastify.register(appPlugin, { config, model, transport });
  await fastify.ready();
  const doc = fastify.swagger();
  await fastify.close();
  return doc;
}
