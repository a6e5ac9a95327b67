// Prometheus metrics (prom-client): queue depth, batch size, steps, tokens, time to first step, latency, requests.

import fp from 'fastify-plugin';
import client from 'prom-client';
import type { FastifyInstance } from 'fastify';
import type { ServingObserver } from '../serving/observe.js';
import type { Transport } from '../queue/transport.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: { registry: client.Registry; observer: ServingObserver; countRequest(method: string, route: string, status: number): void };
  }
}

export default fp(
  async function metricsPlugin(app: FastifyInstance, opts: { transport: Transport }) {
    const registry = new client.Registry();
    client.collectDefaultMetrics({ register: registry, prefix: 'dllm_process_' });
    let last: Awaited<ReturnType<Transport['status']>> | null = null;
    const refresh = async () => {
      try {
        last = await opts.transport.status();
      } catch {
        last = null;
      }
    };
    new client.Gauge({
      name: 'dllm_queue_depth',
      help: 'Requests waiting for a batch slot',
      registers: [registry],
      async collect() {
        await refresh();
        this.set(last?.queued ?? 0);
      },
    });
    new client.Gauge({
      name: 'dllm_batch_size',
      help: 'Sequences in the running batch(es)',
      registers: [registry],
      collect() {
        this.set(last?.activeSequences ?? 0);
      },
    });
    new client.Gauge({
      name: 'dllm_workers',
      help: 'Workers seen',
      registers: [registry],
      collect() {
        this.set(last?.workers ?? 0);
      },
    });
    const steps = new client.Counter({ name: 'dllm_steps_total', help: 'Denoising steps streamed or collected (rate = steps/s)', labelNames: ['endpoint'], registers: [registry] });
    const tokens = new client.Counter({ name: 'dllm_generated_tokens_total', help: 'Completion tokens (rate = tokens/s)', labelNames: ['endpoint'], registers: [registry] });
    const ttfs = new client.Histogram({
      name: 'dllm_time_to_first_step_seconds',
      help: 'From admission to the first denoising step',
      labelNames: ['endpoint'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    });
    const latency = new client.Histogram({
      name: 'dllm_generation_seconds',
      help: 'Generation latency by outcome',
      labelNames: ['endpoint', 'outcome'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers: [registry],
    });
    const requests = new client.Counter({
      name: 'dllm_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status'],
      registers: [registry],
    });
    const observer: ServingObserver = {
      step: (endpoint) => steps.inc({ endpoint }),
      firstStep: (endpoint, s) => ttfs.observe({ endpoint }, s),
      finished: (endpoint, outcome, s, completionTokens) => {
        latency.observe({ endpoint, outcome }, s);
        if (completionTokens > 0) tokens.inc({ endpoint }, completionTokens);
      },
    };
    app.decorate('metrics', {
      registry,
      observer,
      countRequest: (method: string, route: string, status: number) => requests.inc({ method, route, status: String(status) }),
    });
    app.addHook('onResponse', async (req, reply) => {
      requests.inc({ method: req.method, route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
    });
  },
  { name: 'metrics' },
);
