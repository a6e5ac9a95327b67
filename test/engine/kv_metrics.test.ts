// /metrics carries the engines' key/value cache figures (dllm_kv_cache_*), from the transport's health().

import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import metricsPlugin from '../../src/plugins/metrics.js';
import type { Transport } from '../../src/transports/transport.js';
import { sumKvCache, type EngineHealth } from '../../src/engine/types.js';

const health = (bytes: number, hits: number): EngineHealth => ({
  ok: true, model: 'm', provider: 'cpu', precision: 'fp32', activeSequences: 1, waitingSequences: 0, runningRequests: 1, waitingRequests: 0, maxBatchSize: 4,
  kvCache: { defaultMode: 'dual', bytes, reservedBytes: 2 * bytes, maxBytes: 1000, hits, refreshes: 3 },
});

test('sumKvCache adds the figures of several workers; none without caches', () => {
  assert.deepEqual(sumKvCache([health(10, 1), health(5, 2)]).kvCache, { defaultMode: 'dual', bytes: 15, reservedBytes: 30, maxBytes: 2000, hits: 3, refreshes: 6 });
  const { kvCache: _, ...plain } = health(0, 0);
  assert.deepEqual(sumKvCache([plain]), {});
});

test('GET /metrics: dllm_kv_cache_bytes, reserved, max, hits, refreshes', async () => {
  let current = health(4096, 7);
  const transport = {
    health: async () => current,
    status: async () => ({ ready: true, workers: 1, load: { waitingRequests: 0, runningRequests: 1, waitingSequences: 0, runningSequences: 1 }, maxBatchSize: 4, providers: {} }),
  } as unknown as Transport;
  const app = Fastify();
  await app.register(metricsPlugin, { transport });
  app.get('/metrics', async (_req, reply) => reply.type('text/plain').send(await app.metrics.registry.metrics()));
  const scrape = async () => (await app.inject({ method: 'GET', url: '/metrics' })).body;
  let text = await scrape();
  for (const line of ['dllm_kv_cache_bytes 4096', 'dllm_kv_cache_reserved_bytes 8192', 'dllm_kv_cache_max_bytes 1000', 'dllm_kv_cache_hits 7', 'dllm_kv_cache_refreshes 3']) {
    assert.ok(text.includes(`\n${line}\n`), line);
  }
  current = { ...health(0, 0), kvCache: undefined };
  await new Promise((r) => setTimeout(r, 300));
  text = await scrape();
  assert.ok(text.includes('\ndllm_kv_cache_bytes 0\n'), 'an engine without caches reports 0');
  await app.close();
});
