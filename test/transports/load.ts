// The load figures (src/transports/transport.ts Load) as /ready and /metrics report them, for both transports' tests.

import assert from 'node:assert/strict';
import type { Load } from '../../src/transports/transport.js';

export async function reportedLoad(baseUrl: string, headers: Record<string, string> = {}): Promise<{ ready: Load; metrics: Load & { queueDepth: number; batchSize: number } }> {
  const r = (await (await fetch(`${baseUrl}/ready`)).json()) as Record<string, number>;
  assert.equal(r.queued, r.waiting_requests, 'queued is waiting_requests under its old name');
  assert.equal(r.active_sequences, r.running_sequences, 'active_sequences is running_sequences under its old name');
  const text = await (await fetch(`${baseUrl}/metrics`, { headers })).text();
  const gauge = (pattern: string) => Number(text.match(new RegExp(`^${pattern} (\\d+)$`, 'm'))?.[1] ?? NaN);
  return {
    ready: { waitingRequests: r.waiting_requests, runningRequests: r.running_requests, waitingSequences: r.waiting_sequences, runningSequences: r.running_sequences },
    metrics: {
      waitingRequests: gauge('dllm_requests\\{state="waiting"\\}'),
      runningRequests: gauge('dllm_requests\\{state="running"\\}'),
      waitingSequences: gauge('dllm_sequences\\{state="waiting"\\}'),
      runningSequences: gauge('dllm_sequences\\{state="running"\\}'),
      queueDepth: gauge('dllm_queue_depth'),
      batchSize: gauge('dllm_batch_size'),
    },
  };
}
