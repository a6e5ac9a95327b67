// Prometheus metrics (prom-client): queue depth, batch size, steps, tokens, time to first step, latency, requests.

import fp from 'fastify-plugin';
import client from 'prom-client';
import type { FastifyInstance } from 'fastify';
import type { ServingObserver } from '../serving/observe.js';
import type { Load, Transport } from '../transports/transport.js';
import type { KvCacheHealth } from '../engine/types.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: { registry: client.Registry; observer: ServingObserver };
  }
}

/** `load` called at most once per 250 ms; callers in between share its promise. */
function sharedFor250Ms<T>(load: () => Promise<T>): () => Promise<T> {
  let at = 0;
  let last: Promise<T> | null = null;
  return () => {
    if (last === null || Date.now() - at > 250) {
      at = Date.now();
      last = load();
    }
    return last;
  };
}

export default fp(
  async function metricsPlugin(app: FastifyInstance, opts: { transport: Transport }) {
    const registry = new client.Registry();
    client.collectDefaultMetrics({ register: registry, prefix: 'dllm_process_' });
    // One status and one engine health per scrape, each shared by the gauges that read it (prom-client collects them
    // concurrently), at most 250 ms old.
    const status = sharedFor250Ms(() => opts.transport.status().catch(() => null));
    const engineHealth = sharedFor250Ms(() =>
      opts.transport.health().then(
        (h) => ({ kvCache: h.kvCache ?? null, device: h.device ?? null }),
        () => ({ kvCache: null, device: null }),
      ),
    );
    /** A gauge of one Load figure pair: labels waiting and running. */
    const stateGauge = (name: string, help: string, pick: (load: Load) => { waiting: number; running: number }) =>
      new client.Gauge({
        name,
        help,
        labelNames: ['state'],
        registers: [registry],
        async collect() {
          const load = (await status())?.load;
          const { waiting, running } = load ? pick(load) : { waiting: 0, running: 0 };
          this.set({ state: 'waiting' }, waiting);
          this.set({ state: 'running' }, running);
        },
      });
    // The load (transport.ts Load), in requests and in sequences; queue depth and batch size are two of its figures.
    new client.Gauge({
      name: 'dllm_queue_depth',
      help: 'Requests waiting: queued, or admitted with no sequence running yet (= dllm_requests{state="waiting"})',
      registers: [registry],
      async collect() {
        this.set((await status())?.load.waitingRequests ?? 0);
      },
    });
    new client.Gauge({
      name: 'dllm_batch_size',
      help: 'Sequences in the running batch(es) (= dllm_sequences{state="running"})',
      registers: [registry],
      async collect() {
        this.set((await status())?.load.runningSequences ?? 0);
      },
    });
    stateGauge('dllm_requests', 'Requests held, waiting (queued or without a batch slot) or running (a sequence in a batch)', (l) => ({
      waiting: l.waitingRequests,
      running: l.runningRequests,
    }));
    stateGauge('dllm_sequences', 'Sequences (one per choice) held, waiting for a batch slot or running', (l) => ({
      waiting: l.waitingSequences,
      running: l.runningSequences,
    }));
    new client.Gauge({
      name: 'dllm_workers',
      help: 'Workers seen',
      registers: [registry],
      async collect() {
        this.set((await status())?.workers ?? 0);
      },
    });
    // Key/value caches (format-2 model folders) and device traffic (GPU providers), summed over workers in Redis
    // mode, from the engines' health.
    const kv = async () => (await engineHealth()).kvCache;
    const kvGauge = (name: string, help: string, pick: (c: KvCacheHealth) => number) =>
      new client.Gauge({
        name,
        help,
        registers: [registry],
        async collect() {
          const c = await kv();
          this.set(c === null ? 0 : pick(c));
        },
      });
    kvGauge('dllm_kv_cache_bytes', 'Key/value cache bytes held by running sequences', (c) => c.bytes);
    kvGauge('dllm_kv_cache_reserved_bytes', 'Key/value cache bytes reserved by admitted sequences (at most KV_CACHE_MAX_BYTES)', (c) => c.reservedBytes);
    kvGauge('dllm_kv_cache_max_bytes', 'KV_CACHE_MAX_BYTES (summed over workers)', (c) => c.maxBytes);
    kvGauge('dllm_kv_cache_hits', 'Sequence steps run from a key/value cache since start (cumulative)', (c) => c.hits);
    kvGauge('dllm_kv_cache_refreshes', 'Full passes that filled a key/value cache since start (cumulative)', (c) => c.refreshes);
    new client.Gauge({
      name: 'dllm_device_tensors',
      help: 'Device tensors held between steps (key/value caches kept on the GPU); 0 on the CPU provider',
      registers: [registry],
      async collect() {
        this.set((await engineHealth()).device?.tensors ?? 0);
      },
    });
    new client.Counter({
      name: 'dllm_device_transfer_bytes_total',
      help: 'Bytes moved between host and device memory by graph input or output (GPU providers)',
      labelNames: ['direction', 'tensor'],
      registers: [registry],
      // The engines count since they started: the counter is set to their totals at each scrape.
      async collect() {
        const device = (await engineHealth()).device;
        this.reset();
        if (device === null) return;
        for (const [direction, bytes] of [['host_to_device', device.hostToDevice], ['device_to_host', device.deviceToHost]] as const) {
          for (const [tensor, total] of Object.entries(bytes)) this.inc({ direction, tensor }, total);
        }
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
    app.decorate('metrics', { registry, observer });
    // Every response once, streamed (hijacked) ones included: Fastify runs onResponse when the socket response ends.
    app.addHook('onResponse', async (req, reply) => {
      requests.inc({ method: req.method, route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
    });
  },
  { name: 'metrics' },
);
