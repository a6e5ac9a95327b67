// Device benchmark: the execution providers side by side, with the bytes each moves between host and device. For each
// model, provider (cpu, webgpu, and cuda where onnxruntime-node's CUDA libraries are installed) and cache mode, the
// same greedy workload (every position decoded: ignore_eos) runs through the engine: tokens/s, graph runs, and the
// bytes per step host → device and device → host, past_kv apart (dllm_device_transfer_bytes_total). Writes
// <out>.json and <out>.md.
//   - the default model (models/tiny-dream);
//   - with --synthetic NAME, a random-weight LLaDA-architecture checkpoint of that size made here, in the real layout,
//     and converted by `python3 -m dllm.convert --fp16` (nothing is downloaded): `1b` is d_model 2048, 16 layers,
//     MLP 5632, vocabulary 32,000 (0.95 B parameters); `tiny` a small one for a quick check. GPU providers run its
//     fp16 graphs, the CPU its fp32 ones.
//
//   npm run bench:device [-- --synthetic 1b --providers cpu,webgpu,cuda --caches none,prefix,dual
//                            --prompt-tokens 256 --max-tokens 128 --block-length 32 --batch 1 --threads 16]
//
// On a GPU host, `npm run bench:device -- --synthetic 1b` takes a few minutes. Here (no GPU) WebGPU runs on Mesa's
// lavapipe, on the CPU: test/bench/device.test.ts runs it at a small size.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openEngine } from '../src/engine/engine.js';
import { defaultSamplingParams, loadModelFolder } from '../src/engine/model_folder.js';
import type { CacheMode, EngineEvent } from '../src/engine/types.js';
import type { Provider } from '../src/engine/onnx_session.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(ROOT, 'models', 'tiny-dream') },
    synthetic: { type: 'string', default: '' },
    work: { type: 'string', default: path.join(os.tmpdir(), 'dllm-bench-device') },
    providers: { type: 'string', default: 'cpu,webgpu,cuda' },
    caches: { type: 'string', default: 'none,prefix,dual' },
    'prompt-tokens': { type: 'string', default: '256' },
    'max-tokens': { type: 'string', default: '128' },
    'block-length': { type: 'string', default: '32' },
    batch: { type: 'string', default: '1' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    out: { type: 'string', default: path.join(ROOT, 'bench', 'device') },
    python: { type: 'string', default: existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3' },
  },
});

// LLaDA's layout at benchmark sizes (models/dllm/bench_convert.py BASE: vocabulary 32,000, untied embeddings).
const SYNTHETIC: Record<string, Record<string, number>> = {
  '1b': { d_model: 2048, n_heads: 16, n_kv_heads: 16, n_layers: 16, mlp_hidden_size: 5632 },
  tiny: { d_model: 128, n_heads: 4, n_kv_heads: 4, n_layers: 2, mlp_hidden_size: 256 },
};

/** The synthetic checkpoint, converted (fp32 and fp16 graphs) into a model folder; its path. */
function syntheticFolder(name: string): string {
  const dims = SYNTHETIC[name];
  if (dims === undefined) throw new Error(`--synthetic ${name}: one of ${Object.keys(SYNTHETIC).join(', ')}`);
  const checkpoint = path.join(args.work, `${name}-hf`);
  const folder = path.join(args.work, name);
  if (existsSync(path.join(folder, 'dllm.json'))) return folder;
  mkdirSync(args.work, { recursive: true });
  const make = `from dllm.bench_convert import BASE, write_checkpoint
print(write_checkpoint(${JSON.stringify(checkpoint)}, BASE | ${JSON.stringify(dims)}, 2))`;
  const models = path.join(ROOT, 'models');
  const params = execFileSync(args.python, ['-c', make], { cwd: models, encoding: 'utf8' }).trim();
  console.log(`synthetic ${name}: ${(Number(params) / 1e9).toFixed(2)} B parameters; converting`);
  execFileSync(args.python, ['-m', 'dllm.convert', '--checkpoint', checkpoint, '--out', folder, '--fp16', '--name', `synthetic-${name}`], {
    cwd: models,
    stdio: 'inherit',
  });
  return folder;
}

function cudaInstalled(): boolean {
  return existsSync(path.join(ROOT, 'node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so'));
}

interface Row {
  model: string;
  provider: string;
  precision: string;
  cache: CacheMode;
  tokensPerSecond: number;
  steps: number;
  graphRuns: number;
  /** Bytes per engine step. */
  pastKvUp: number;
  otherUp: number;
  down: number;
  note?: string;
}

async function measure(modelDir: string, provider: Provider, cache: CacheMode, precision: 'fp32' | 'fp16'): Promise<Row> {
  const folder = await loadModelFolder(modelDir);
  const { engine } = await openEngine({ modelDir, provider, precision, threads: Number(args.threads), cache, maxBatchSize: 64 });
  try {
    const words = folder.tokenizer.encode('The old man looked at the sea and said nothing for a long time. ');
    const prompt = Array.from({ length: Number(args['prompt-tokens']) }, (_, i) => words[i % words.length]);
    const params = { ...defaultSamplingParams(folder.spec), maxTokens: Number(args['max-tokens']), steps: Number(args['max-tokens']), blockLength: Number(args['block-length']), temperature: 0, threshold: null, cache, ignoreEos: true };
    const run = async (tag: string) => {
      const requests = Array.from({ length: Number(args.batch) }, async (_, i) => {
        const events: EngineEvent[] = [];
        for await (const e of engine.generate({ id: `${tag}-${i}`, promptTokenIds: prompt, suffixTokenIds: [], params, n: 1, includeCanvas: false })) events.push(e);
        return events;
      });
      await Promise.all(requests);
    };
    await run('warm-up'); // shader compilation and allocation on GPU providers
    const before = await engine.health();
    const stats0 = { ...engine.stats };
    const t0 = performance.now();
    await run('timed');
    const seconds = (performance.now() - t0) / 1000;
    const after = await engine.health();
    const steps = engine.stats.steps - stats0.steps;
    const delta = (pick: (h: typeof after) => Record<string, number> | undefined, filter: (tensor: string) => boolean) => {
      const a = pick(after) ?? {};
      const b = pick(before) ?? {};
      return Object.keys(a).filter(filter).reduce((sum, t) => sum + a[t] - (b[t] ?? 0), 0) / Math.max(1, steps);
    };
    return {
      model: folder.spec.name,
      provider: after.provider,
      precision: after.precision,
      cache,
      tokensPerSecond: (Number(args.batch) * Number(args['max-tokens'])) / seconds,
      steps,
      graphRuns: engine.stats.graphRuns - stats0.graphRuns,
      pastKvUp: delta((h) => h.device?.hostToDevice, (t) => t === 'past_kv'),
      otherUp: delta((h) => h.device?.hostToDevice, (t) => t !== 'past_kv'),
      down: delta((h) => h.device?.deviceToHost, () => true),
    };
  } finally {
    await engine.close();
  }
}

const bytes = (n: number) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n.toFixed(0)} B`);

async function main(): Promise<void> {
  const models = [args.model, ...(args.synthetic ? [syntheticFolder(args.synthetic)] : [])];
  const providers = args.providers.split(',') as Provider[];
  const rows: Row[] = [];
  const skipped: string[] = [];
  for (const modelDir of models) {
    const hasFp16 = (await loadModelFolder(modelDir)).spec.onnx.fp16 !== null;
    for (const provider of providers) {
      if (provider === 'cuda' && !cudaInstalled()) {
        const note = `cuda: onnxruntime-node's CUDA libraries are not installed (ONNXRUNTIME_NODE_INSTALL=cuda12)`;
        if (!skipped.includes(note)) skipped.push(note);
        continue;
      }
      for (const cache of args.caches.split(',') as CacheMode[]) {
        const precision = provider !== 'cpu' && hasFp16 ? 'fp16' : 'fp32';
        try {
          const row = await measure(modelDir, provider, cache, precision);
          rows.push(row);
          console.log(`${row.model} ${row.provider}/${row.precision} ${cache}: ${row.tokensPerSecond.toFixed(1)} tokens/s, per step up ${bytes(row.pastKvUp)} past_kv + ${bytes(row.otherUp)}, down ${bytes(row.down)}`);
        } catch (err) {
          skipped.push(`${path.basename(modelDir)} ${provider} ${cache}: ${(err as Error).message.split('\n')[0]}`);
          console.log(`skipped: ${skipped.at(-1)}`);
        }
      }
    }
  }
  const machine = `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores`;
  const lines = [
    '# Device benchmark',
    '',
    `\`npm run bench:device${args.synthetic ? ` -- --synthetic ${args.synthetic}` : ''}\` (bench/device.ts): prompt ${args['prompt-tokens']} + generation ${args['max-tokens']}, blocks of ${args['block-length']}, batch ${args.batch}, greedy, every position decoded; one warm-up run, then one timed. Bytes per engine step between host and device memory (0 on the CPU provider).`,
    `Machine: ${machine}; ${new Date().toISOString().slice(0, 10)}.`,
    '',
    '| model | provider | precision | cache | tokens/s | steps | graph runs | past_kv up / step | other inputs up / step | outputs down / step |',
    '| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.model} | ${r.provider} | ${r.precision} | ${r.cache} | ${r.tokensPerSecond.toFixed(1)} | ${r.steps} | ${r.graphRuns} | ${bytes(r.pastKvUp)} | ${bytes(r.otherUp)} | ${bytes(r.down)} |`),
    ...(skipped.length ? ['', 'Not run:', '', ...skipped.map((s) => `- ${s}`)] : []),
    '',
  ];
  writeFileSync(`${args.out}.md`, lines.join('\n'));
  writeFileSync(`${args.out}.json`, JSON.stringify({ args, machine, rows, skipped }, null, 2) + '\n');
  console.log(`wrote ${args.out}.md and ${args.out}.json`);
}

await main();
