// Issue 9 §3: no request may block the event loop for long. Bursts of eight requests of about 1 MiB each (the body
// limit) while a stream runs: long text prompts, long chat messages, tens of thousands of chat messages, token id
// arrays, many prompts. Each is refused with the OpenAI error object, and neither the running stream's chunks nor
// /health are held up by more than 100 ms. The bound that refuses text comes from the model folder (its context length
// and tokenizer), never from a constant.
//
// Robust on a busy machine: the big requests come from another process (their encoding and sending is not this
// process's work), the engine runs one ONNX thread (its intra-op pool would compete with the event loop for the two
// cores), and a burst is tried up to three times: the code's own delay shows in every try (before this fix, 3 s each
// time), a neighbour's CPU spike rarely in all three.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { startEmbedded } from '../helpers/embedded.js';
import { findLongRequest } from '../helpers/long.js';
import { readSse } from '../helpers/sse.js';
import { sleep } from '../helpers/net.js';
import { ROOT } from '../helpers/procs.js';
import { BIG, MIB } from '../helpers/big_bodies.js';
import type { Started } from '../../src/main.js';

const MODEL = 'tiny-llada';
/** The bound on how long a request may hold up others. */
const MAX_DELAY_MS = 100;

interface Result {
  name: string;
  status: number;
  bytes: number;
  body: any;
  ms: number;
}

interface Burst {
  results: Result[];
  /** Largest gap between two chunks of the running stream while the burst was on. */
  maxGapMs: number;
  /** Slowest /health answer while the burst was on. */
  maxHealthMs: number;
  streamOutlivedBurst: boolean;
}

describe('large requests while a stream runs', () => {
  let s: Started & { url: string };
  let stream: Record<string, unknown>;
  /** The process that sends the big requests (helpers/big_client.ts). */
  let client: ChildProcess;
  let lines: AsyncIterator<string>;

  before(async () => {
    s = await startEmbedded({ MAX_BATCH_SIZE: '1', ORT_THREADS: '1' });
    client = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/helpers/big_client.ts'), s.url], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    lines = (createInterface({ input: client.stdout! }) as Interface)[Symbol.asyncIterator]();
    assert.equal((await lines.next()).value, 'ready');
    // Choices run one after another on one batch slot: a stream that lasts well beyond a burst.
    stream = { ...(await findLongRequest(s.url)).body, n: 8, stream: true };
  });
  after(async () => {
    client.kill();
    await s.stop();
  });

  async function burst(names: string[]): Promise<Burst> {
    const chunkTimes: number[] = [];
    let firstChunk: () => void;
    const begun = new Promise<void>((r) => (firstChunk = r));
    let streamEnd = Infinity;
    const running = readSse(`${s.url}/v1/completions`, stream, {
      onEvent: () => {
        chunkTimes.push(performance.now());
        firstChunk();
      },
    }).then((r) => {
      streamEnd = performance.now();
      return r;
    });
    await begun;
    await sleep(50);
    const start = performance.now();
    let burstOn = true;
    const healthMs: number[] = [];
    const probe = (async () => {
      while (burstOn) {
        const t0 = performance.now();
        await fetch(`${s.url}/health`);
        healthMs.push(performance.now() - t0);
        await sleep(10);
      }
    })();
    client.stdin!.write(`${JSON.stringify(names)}\n`);
    const results = JSON.parse((await lines.next()).value) as Result[];
    const end = performance.now();
    burstOn = false;
    await probe;
    const raw = await running;
    assert.equal(raw.data.at(-1), '[DONE]');
    assert.ok(raw.events.every((e) => !e.error), 'the stream ran to its end');
    // Gaps between consecutive chunks that overlap the burst.
    let maxGapMs = 0;
    for (let i = 1; i < chunkTimes.length; i++) {
      if (chunkTimes[i] >= start && chunkTimes[i - 1] <= end) maxGapMs = Math.max(maxGapMs, chunkTimes[i] - chunkTimes[i - 1]);
    }
    return { results, maxGapMs, maxHealthMs: Math.max(...healthMs), streamOutlivedBurst: streamEnd > end };
  }

  /** Up to three bursts, until one holds nothing up by MAX_DELAY_MS; every one is checked by `check`. */
  async function bursts(names: string[], check: (b: Burst) => void, t: { diagnostic(m: string): void }): Promise<Burst> {
    let best: Burst | null = null;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const b = await burst(names);
      t.diagnostic(
        `try ${attempt}: stream gap ${b.maxGapMs.toFixed(1)} ms, /health ${b.maxHealthMs.toFixed(1)} ms, ` +
          `refused in ${b.results.map((r) => r.ms.toFixed(0)).join(', ')} ms`,
      );
      check(b);
      if (!best || Math.max(b.maxGapMs, b.maxHealthMs) < Math.max(best.maxGapMs, best.maxHealthMs)) best = b;
      if (best.maxGapMs < MAX_DELAY_MS && best.maxHealthMs < MAX_DELAY_MS) break;
    }
    assert.ok(best!.maxGapMs < MAX_DELAY_MS, `the stream waited ${best!.maxGapMs} ms between two chunks`);
    assert.ok(best!.maxHealthMs < MAX_DELAY_MS, `/health took ${best!.maxHealthMs} ms`);
    return best!;
  }

  test('eight 1 MiB text prompts in parallel: refused fast with context_length_exceeded; stream and /health not held up', async (t) => {
    await bursts(
      Array.from({ length: 8 }, () => 'completion, 1 MiB of text'),
      (b) => {
        for (const r of b.results) {
          assert.ok(r.bytes > MIB - 2048 && r.bytes < MIB, `body of ${r.bytes} bytes`);
          assert.equal(r.status, 400, JSON.stringify(r.body).slice(0, 300));
          assert.equal(r.body.error.code, 'context_length_exceeded');
          assert.equal(r.body.error.param, 'prompt');
          assert.match(r.body.error.message, /maximum context length is \d+ tokens/);
        }
        assert.ok(b.streamOutlivedBurst, 'the stream was running for the whole burst');
      },
      t,
    );
  });

  test('eight other 1 MiB shapes (chat, many messages, many prompts, token ids, suffix): refused, nothing held up', async (t) => {
    const expected: Record<string, [string, string]> = {
      'completion, 1 MiB of multi-byte text': ['context_length_exceeded', 'prompt'],
      'completion, a 1 MiB suffix': ['context_length_exceeded', 'prompt'],
      'completion, 16 prompts of 64 KiB': ['context_length_exceeded', 'prompt'],
      'completion, 100 000 tiny prompts': ['invalid_request_error', 'prompt'],
      'completion, 300 000 token ids': ['context_length_exceeded', 'prompt'],
      'chat, one 1 MiB message': ['context_length_exceeded', 'messages'],
      'chat, 30 000 messages': ['context_length_exceeded', 'messages'],
    };
    const names = Object.keys(BIG).filter((n) => n !== 'completion, 1 MiB of text');
    assert.deepEqual(names.sort(), Object.keys(expected).sort());
    await bursts(
      [...names, 'completion, 1 MiB of text'],
      (b) => {
        for (const r of b.results) {
          if (!(r.name in expected)) continue;
          const [codeOrType, param] = expected[r.name];
          assert.ok(r.bytes < MIB, `${r.name}: ${r.bytes} bytes`);
          assert.equal(r.status, 400, `${r.name}: ${JSON.stringify(r.body).slice(0, 300)}`);
          assert.ok(r.body.error.code === codeOrType || r.body.error.type === codeOrType, `${r.name}: ${JSON.stringify(r.body.error)}`);
          assert.equal(r.body.error.param, param, r.name);
        }
        assert.ok(b.streamOutlivedBurst, 'the stream was running for the whole burst');
      },
      t,
    );
  });

  test('a prompt that fits is still served, and one just past the bound is refused without tokenizing', async () => {
    const ok = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: 'word '.repeat(100), max_tokens: 8, steps: 8 }),
    });
    assert.equal(ok.status, 200, await ok.clone().text());
    // The same words past the context, by tokens (not by the byte bound): still context_length_exceeded.
    const over = await fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: 'word '.repeat(400), max_tokens: 8 }),
    });
    assert.equal(over.status, 400);
    assert.equal(((await over.json()) as any).error.code, 'context_length_exceeded');
  });
});
