// Quantization benchmark, one measurement: a model folder (float or quantized: dllm.json `quantization`) served by the
// engine on the CPU provider, the greedy workload of bench/engine.ts (prompt --prompt-tokens + --max-tokens generated,
// every position decoded, steps = generated tokens, blocks of --block-length) with one cache mode. Prints one JSON line:
// tokens/s, engine steps and graph time, the seconds to open the session, and this process's peak RSS (the engine's
// ONNX worker is a thread of it: the weights, onnxruntime's prepacked copies and arenas, the caches).
// models/dllm/bench_quantize.py runs it once per folder and cache mode, each in a fresh process, and writes
// bench/quantize.md.
//
//   node --import tsx bench/quantize.ts --model DIR [--cache dual --prompt-tokens 256 --max-tokens 128
//                                                     --block-length 32 --threads N]
//
// With --reference DIR --prompts FILE (a JSON list of texts) it measures agreement instead: greedy completions of each
// prompt (--max-tokens, steps = tokens, --block-length, every position decoded) by both folders, and how many are
// identical, token for token.

import { readFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { openEngine } from '../src/engine/engine.js';
import { defaultSamplingParams } from '../src/engine/model_folder.js';
import type { CacheMode, EngineEvent } from '../src/engine/types.js';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    cache: { type: 'string', default: 'dual' },
    'prompt-tokens': { type: 'string', default: '256' },
    'max-tokens': { type: 'string', default: '128' },
    'block-length': { type: 'string', default: '32' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    reference: { type: 'string' },
    prompts: { type: 'string' },
  },
});
if (!args.model) throw new Error('--model DIR is required');

const TEXT = 'The old man looked at the sea and said nothing for a long time. ';

/** VmRSS of this process now, in bytes. */
function rssNow(): number {
  return process.memoryUsage().rss;
}

/** This process's peak RSS in bytes: VmHWM, the high-water mark of its own address space (ru_maxrss would also count
 * the parent it was forked from: Linux carries it across fork and exec). */
function peakRss(): number {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('VmHWM:'));
  return line === undefined ? process.resourceUsage().maxRSS * 1024 : Number(line.split(/\s+/)[1]) * 1024;
}

async function main(): Promise<void> {
  const cache = args.cache as CacheMode;
  const t0 = performance.now();
  const { engine, model } = await openEngine({ modelDir: args.model!, provider: 'cpu', threads: Number(args.threads), cache, maxBatchSize: 8 });
  const openSeconds = (performance.now() - t0) / 1000;
  const rssAfterOpen = rssNow();
  try {
    const words = model.tokenizer.encode(TEXT);
    const prompt = Array.from({ length: Number(args['prompt-tokens']) }, (_, i) => words[i % words.length]);
    const blockLength = Number(args['block-length']);
    const base = { ...defaultSamplingParams(model.spec), temperature: 0, threshold: null, cache, ignoreEos: true, blockLength };
    const run = async (id: string, maxTokens: number) => {
      const events: EngineEvent[] = [];
      const params = { ...base, maxTokens, steps: maxTokens };
      for await (const e of engine.generate({ id, promptTokenIds: prompt, suffixTokenIds: [], params, n: 1, includeCanvas: false })) events.push(e);
      return events;
    };
    // Warm-up: one block, so the session has run every shape of the timed run (full pass, cached steps) once.
    await run('warm-up', blockLength);
    const stats0 = { ...engine.stats };
    const t1 = performance.now();
    await run('timed', Number(args['max-tokens']));
    const seconds = (performance.now() - t1) / 1000;
    const s = engine.stats;
    const q = model.spec.quantization ?? null;
    console.log(
      JSON.stringify({
        model: args.model,
        name: model.spec.name,
        quantization: q,
        cache,
        promptTokens: prompt.length,
        maxTokens: Number(args['max-tokens']),
        blockLength,
        threads: Number(args.threads),
        tokensPerSecond: Number(args['max-tokens']) / seconds,
        seconds,
        steps: s.steps - stats0.steps,
        graphRuns: s.graphRuns - stats0.graphRuns,
        graphMs: s.graphMs - stats0.graphMs,
        openSeconds,
        rssAfterOpenBytes: rssAfterOpen,
        peakRssBytes: peakRss(),
        loadAverage: os.loadavg(),
      }),
    );
  } finally {
    await engine.close();
  }
}

/** Greedy completions of `prompts` by the folder, batched. */
async function greedy(modelDir: string, prompts: string[]): Promise<number[][]> {
  const cache = args.cache as CacheMode;
  const { engine, model } = await openEngine({ modelDir, provider: 'cpu', threads: Number(args.threads), cache, maxBatchSize: 16 });
  try {
    const maxTokens = Number(args['max-tokens']);
    const params = { ...defaultSamplingParams(model.spec), temperature: 0, threshold: null, cache, ignoreEos: true, maxTokens, steps: maxTokens, blockLength: Number(args['block-length']) };
    return await Promise.all(
      prompts.map(async (text, i) => {
        let ids: number[] = [];
        for await (const e of engine.generate({ id: `p${i}`, promptTokenIds: model.tokenizer.encode(text), suffixTokenIds: [], params, n: 1, includeCanvas: false })) {
          if (e.type === 'finish') ids = e.tokenIds;
        }
        return ids;
      }),
    );
  } finally {
    await engine.close();
  }
}

async function agreement(): Promise<void> {
  const prompts = JSON.parse(readFileSync(args.prompts!, 'utf8')) as string[];
  const reference = await greedy(args.reference!, prompts);
  const got = await greedy(args.model!, prompts);
  let tokens = 0;
  let of = 0;
  got.forEach((ids, i) => ids.forEach((t, j) => ((of += 1), (tokens += reference[i][j] === t ? 1 : 0))));
  const same = got.filter((ids, i) => ids.join() === reference[i].join()).length;
  console.log(JSON.stringify({ model: args.model, reference: args.reference, cache: args.cache, prompts: prompts.length, same, tokens, of }));
}

await (args.reference ? agreement() : main());
