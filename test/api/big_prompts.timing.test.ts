// docs/security.md: no request may block the event loop for long. Bursts of eight requests of about 1 MiB each (the body
// limit) while a stream runs: long text prompts, long chat messages, tens of thousands of chat messages, token id
// arrays, many prompts. Each is refused with the OpenAI error object, and neither the running stream's chunks nor
// /health are held up by more than 100 ms. Timed (npm run test:timing); the bound that refuses text, which comes from
// the model folder (its context length and tokenizer), never from a constant, is checked in big_prompts.test.ts.
//
// Robust on a busy machine. The big requests come from another process at the lowest priority (they stand for
// clients elsewhere), and the engine runs one ONNX thread. Two measures:
// - the main thread's CPU time between two turns of the event loop (helpers/loop_cpu.ts): what the server's own work
//   blocks the loop for, which other jobs on the machine do not inflate; it must stay under 100 ms;
// - the issue's own: the stream's gaps and /health's latency during the burst, against the same just before and
//   after it. On a quiet machine those are ~10 ms and the burst may add at most 100 ms; when other jobs saturate the
//   CPU so that they alone exceed that, wall-clock time measures them, not the server, and is reported only.
// A burst is tried up to three times: the code's own delay shows in every try (before this fix, seconds each time),
// a neighbour's spike rarely in all three.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import path from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { startEmbedded } from '../helpers/embedded.js';
import { findLongRequest } from '../helpers/long.js';
import { readSse } from '../helpers/sse.js';
import { sleep } from '../helpers/net.js';
import { ROOT } from '../helpers/procs.js';
import { BIG, MIB } from '../helpers/big_bodies.js';
import { watchLoopCpu } from '../helpers/loop_cpu.js';
import { type ErrorBody } from '../helpers/openai.js';
import type { Started } from '../../src/main.js';

/** The bound on how long a request may hold up others. */
const MAX_DELAY_MS = 100;

interface Result {
  name: string;
  status: number;
  bytes: number;
  body: ErrorBody;
  ms: number;
}

interface Burst {
  results: Result[];
  /** Largest gap between two chunks of the running stream while the burst was on. */
  maxGapMs: number;
  /** Largest gap of the same stream before and after the burst: what the machine does without it. */
  baseGapMs: number;
  /** Slowest /health answer while the burst was on. */
  maxHealthMs: number;
  /** Slowest /health answer in as long a time just before the burst. */
  baseHealthMs: number;
  /** Most main-thread CPU in one turn of the event loop during the burst. */
  turnCpuMs: number;
  streamOutlivedBurst: boolean;
}

/** How much the burst held things up beyond what the machine did without it (the larger of stream and /health). */
const added = (b: Burst) => Math.max(b.maxGapMs - b.baseGapMs, b.maxHealthMs - b.baseHealthMs);

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
    // The sender stands for clients on other machines: its own CPU (encoding, sending megabytes) must not be taken
    // from the server it measures.
    setPriority(client.pid!, 19);
    lines = (createInterface({ input: client.stdout! }) as Interface)[Symbol.asyncIterator]();
    assert.equal((await lines.next()).value, 'ready');
    // Choices run one after another on one batch slot: a stream that lasts well beyond a burst (it is stopped once
    // the burst and a little after it are measured).
    stream = { ...(await findLongRequest(s.url)).body, n: 16, stream: true };
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
    /** Error chunks of the stream, seen as they come: it is stopped below, so its result is not there to read. */
    const errors: unknown[] = [];
    const stop = new AbortController();
    const running = readSse(`${s.url}/v1/completions`, stream, {
      signal: stop.signal,
      onEvent: (ev) => {
        chunkTimes.push(performance.now());
        if (ev.error) errors.push(ev.error);
        firstChunk();
      },
    })
      .catch(() => null) // stopped below
      .then((r) => {
        streamEnd = performance.now();
        return r;
      });
    await begun;
    const probeHealth = async (until: () => boolean) => {
      const ms: number[] = [];
      while (!until()) {
        const t0 = performance.now();
        await fetch(`${s.url}/health`);
        ms.push(performance.now() - t0);
        await sleep(10);
      }
      return Math.max(...ms);
    };
    const quiet = performance.now() + 500;
    const baseHealthMs = await probeHealth(() => performance.now() >= quiet);
    const start = performance.now();
    const cpu = watchLoopCpu();
    let burstOn = true;
    const probe = probeHealth(() => !burstOn);
    client.stdin!.write(`${JSON.stringify(names)}\n`);
    const results = JSON.parse((await lines.next()).value) as Result[];
    const end = performance.now();
    const turnCpuMs = cpu.stop();
    burstOn = false;
    const maxHealthMs = await probe;
    await sleep(300); // the stream's gaps just after the burst belong to the baseline
    const outlived = streamEnd > end;
    stop.abort();
    await running;
    assert.deepEqual(errors, [], 'no error chunk in the stream');
    // The gaps below are measured across the burst only if a chunk came after it: a stream stalled until it was stopped
    // would have no gap over the burst at all, and pass.
    assert.ok(chunkTimes.at(-1)! > end, 'the stream sent chunks after the burst');
    // Gaps between consecutive chunks that overlap the burst, and the others.
    let maxGapMs = 0;
    let baseGapMs = 0;
    for (let i = 1; i < chunkTimes.length; i++) {
      const gap = chunkTimes[i] - chunkTimes[i - 1];
      if (chunkTimes[i] >= start && chunkTimes[i - 1] <= end) maxGapMs = Math.max(maxGapMs, gap);
      else baseGapMs = Math.max(baseGapMs, gap);
    }
    return { results, maxGapMs, baseGapMs, maxHealthMs, baseHealthMs, turnCpuMs, streamOutlivedBurst: outlived };
  }

  /**
   * The wall-clock measure applies when the machine is quiet: without the burst, both waits stay under a quarter of the
   * bound. On a busy machine (CI beside another job: baseline gaps of 40 ms and more) the scheduler's delays add tens
   * of ms that are not the server's; the event loop's CPU per turn, which they do not touch, is checked either way.
   */
  const resolves = (b: Burst) => b.baseGapMs < MAX_DELAY_MS / 4 && b.baseHealthMs < MAX_DELAY_MS / 4;
  const ok = (b: Burst) => b.turnCpuMs < MAX_DELAY_MS && (!resolves(b) || added(b) < MAX_DELAY_MS);

  /** Up to three bursts, until one holds nothing up; every one is checked by `check`. */
  async function bursts(names: string[], check: (b: Burst) => void, t: { diagnostic(m: string): void }): Promise<Burst> {
    const tries: Burst[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const b = await burst(names);
      tries.push(b);
      t.diagnostic(
        `try ${attempt}: event loop turn ${b.turnCpuMs} ms of CPU at most; stream gap ${b.maxGapMs.toFixed(1)} ms ` +
          `(${b.baseGapMs.toFixed(1)} ms without the burst), /health ${b.maxHealthMs.toFixed(1)} ms (${b.baseHealthMs.toFixed(1)} ms without)` +
          `${resolves(b) ? '' : ' [machine saturated: wall-clock reported only]'}; refused in ${b.results.map((r) => r.ms.toFixed(0)).join(', ')} ms`,
      );
      check(b);
      if (ok(b)) return b;
    }
    const best = tries.reduce((a, b) => (b.turnCpuMs < a.turnCpuMs ? b : a));
    assert.ok(best.turnCpuMs < MAX_DELAY_MS, `a turn of the event loop took ${best.turnCpuMs} ms of CPU`);
    const clocked = tries.filter(resolves);
    assert.ok(
      clocked.length === 0 || Math.min(...clocked.map(added)) < MAX_DELAY_MS,
      `the burst held the stream or /health up by ${Math.min(...clocked.map(added)).toFixed(0)} ms`,
    );
    return best;
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
});
