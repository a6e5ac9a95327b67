// Engine benchmark: key/value cache modes side by side. For each schedule (fixed: steps = generated length; threshold
// 0.9), each batch size and each cache mode, the same greedy workload runs through the engine and through the PyTorch
// reference of that mode (python3 -m dllm.reference in models/, same weights, same threads): tokens/s, steps, speed-up
// over the default model's `none`, and how many generated tokens equal those of the model's own `none`.
//   - the default model (LLaDA): none, and Fast-dLLM's prefix and dual cache (Wu et al. 2025), approximations;
//   - the block diffusion model (BD3-LM, Arriola et al. 2025), in its own blocks: none, and its exact block cache
//     (requests name it `prefix`).
// Every position is decoded (ignore_eos), so each run does the same work. Writes bench/engine.json and bench/engine.md.
//
//   npm run bench:engine [-- --prompt-tokens 256 --max-tokens 128 --block-length 32 --batches 1,8
//                            --caches none,prefix,dual --bd3-caches none,prefix --schedules fixed,threshold
//                            --threads 2 --repeat 2 --no-reference --bd3-model '']
//
// The workload is prompt 256 + generation 128 (context 512 models); a model of context 256 takes e.g.
// --prompt-tokens 96. --block-length applies to the default model; the block diffusion model uses its block size.

import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openEngine, type DiffusionEngine, type EngineStats } from '../src/engine/engine.js';
import { defaultSamplingParams } from '../src/engine/model_folder.js';
import type { CacheMode, FinishEvent, SamplingParams } from '../src/engine/types.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(ROOT, 'models', 'tiny-dream') },
    /** The block diffusion model benchmarked beside the default one; '' leaves it out. */
    'bd3-model': { type: 'string', default: path.join(ROOT, 'models', 'tiny-bd3') },
    'bd3-caches': { type: 'string', default: 'none,prefix' },
    'prompt-tokens': { type: 'string', default: '256' },
    'max-tokens': { type: 'string', default: '128' },
    'block-length': { type: 'string', default: '32' },
    batches: { type: 'string', default: '1,8' },
    caches: { type: 'string', default: 'none,prefix,dual' },
    schedules: { type: 'string', default: 'fixed,threshold' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    'no-reference': { type: 'boolean', default: false },
    /** Each run is repeated and the fastest kept: the machine may be shared, and the fastest run is the least disturbed. */
    repeat: { type: 'string', default: '2' },
    out: { type: 'string', default: path.join(ROOT, 'bench', 'engine') },
    python: { type: 'string', default: existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3' },
  },
});

// Prompt i: this text from sentence i on, repeated, cut to exactly --prompt-tokens tokens.
const TEXT = [
  'The old man looked at the sea and said nothing for a long time.',
  'Once upon a time, there was a little girl who lived near the forest.',
  'The committee announced on Tuesday that the bridge would be closed.',
  'She opened the door and found the letter on the floor.',
  'In the morning the village was quiet, and the fields were wet.',
  'He never thought that the letter would change his life.',
  'The history of the city begins with a small market by the river.',
  'When the rain finally stopped, the children ran outside.',
];

type Schedule = 'fixed' | 'threshold';
interface RunResult {
  model: string;
  schedule: Schedule;
  batch: number;
  cache: CacheMode;
  wallS: number;
  stats: EngineStats;
  finishes: FinishEvent[];
}

const threads = Number(args.threads);
const promptTokens = Number(args['prompt-tokens']);
const maxTokens = Number(args['max-tokens']);
const blockLength = Number(args['block-length']);
const batches = args.batches.split(',').map(Number);
const subjects: { dir: string; caches: CacheMode[] }[] = [
  { dir: args.model, caches: args.caches.split(',') as CacheMode[] },
  ...(args['bd3-model'] ? [{ dir: args['bd3-model'], caches: args['bd3-caches'].split(',') as CacheMode[] }] : []),
];
const schedules = args.schedules.split(',') as Schedule[];
const repeat = Math.max(1, Number(args.repeat));

function diff(after: EngineStats, before: EngineStats): EngineStats {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof EngineStats]])) as unknown as EngineStats;
}

async function runBatch(engine: DiffusionEngine, prompts: number[][], params: SamplingParams, name: string): Promise<{ wallS: number; stats: EngineStats; finishes: FinishEvent[] }> {
  const before = { ...engine.stats };
  const t0 = performance.now();
  const finishes = await Promise.all(
    prompts.map(async (ids, i) => {
      let finish: FinishEvent | null = null;
      for await (const event of engine.generate({ id: `${name}-${i}`, promptTokenIds: ids, suffixTokenIds: [], params, n: 1, includeCanvas: false })) {
        if (event.type === 'finish') finish = event;
      }
      return finish!;
    }),
  );
  return { wallS: (performance.now() - t0) / 1000, stats: diff(engine.stats, before), finishes };
}

interface ReferenceRun {
  name: string;
  wall_s: number;
  model_s: number;
  batched_steps: number;
  results: { token_ids: number[]; steps: number }[];
}

/** The PyTorch reference as a child process answering one run per line, so each of its runs follows the engine's. */
class Reference {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;
  private stderrTail = '';

  constructor(modelDir: string) {
    // python3 -m dllm.reference runs from models/, so the model folder is passed as an absolute path.
    this.child = spawn(args.python, ['-m', 'dllm.reference', '--model', path.resolve(modelDir), '--threads', String(threads), '--bench'], {
      cwd: path.join(ROOT, 'models'),
    });
    this.child.stderr.on('data', (chunk: Buffer) => (this.stderrTail = (this.stderrTail + chunk.toString()).slice(-2000)));
    this.lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  private async line(): Promise<unknown> {
    const next = await this.lines.next();
    if (next.done) throw new Error(`the reference process ended:\n${this.stderrTail}`);
    return JSON.parse(next.value);
  }

  ready(): Promise<unknown> {
    return this.line();
  }

  async run(name: string, params: SamplingParams, prompts: number[][]): Promise<ReferenceRun> {
    const snake = {
      max_tokens: params.maxTokens, steps: params.steps, block_length: params.blockLength, remasking: params.remasking,
      threshold: params.threshold, temperature: params.temperature, cache: params.cache, ignore_eos: params.ignoreEos,
    };
    this.child.stdin.write(JSON.stringify({ name, params: snake, prompts }) + '\n');
    return (await this.line()) as ReferenceRun;
  }

  close(): void {
    this.child.stdin.end();
  }
}

const runs: RunResult[] = [];
const references: (ReferenceRun | null)[] = [];
const models: { name: string; graph: string; architecture: string; blockLength: number; eosTokenIds: number[] }[] = [];

/** Every schedule x batch x cache of one model folder, engine and reference run by run. */
async function benchModel(modelDir: string, caches: CacheMode[]): Promise<void> {
  const { engine, model, modelPath } = await openEngine({ modelDir, provider: 'cpu', threads, maxBatchSize: Math.max(...batches), cache: 'none' });
  if (caches.some((c) => c !== 'none') && model.spec.cached === null) {
    throw new Error(`${modelDir} has no cached graph (format ${model.spec.format}); export it again with python3 -m dllm.export, or pass --caches none`);
  }
  const name = model.spec.name;
  // A block diffusion model decodes in the blocks it was trained with.
  const blocks = model.spec.blockSize ?? blockLength;
  models.push({ name, graph: path.relative(ROOT, modelPath), architecture: model.spec.architecture, blockLength: blocks, eosTokenIds: model.spec.eosTokenIds });
  const text = model.tokenizer.encode(TEXT.join(' '));
  const sentenceStarts = TEXT.map((_, i) => model.tokenizer.encode(TEXT.slice(0, i).join(' ') + (i ? ' ' : '')).length);
  const promptFor = (i: number) => Array.from({ length: promptTokens }, (_, j) => text[(sentenceStarts[i % TEXT.length] + j) % text.length]);
  const promptsFor = (batch: number) => Array.from({ length: batch }, (_, i) => promptFor(i));
  // The workload is the same on every folder: LLaDA's sampler (low_confidence, fixed schedule or threshold) without
  // penalties, also on a Dream folder, whose default sampler (alg) and penalties are left out.
  const { alg: _alg, algTemp: _algTemp, eps: _eps, frequencyPenalty: _frequency, presencePenalty: _presence, ...defaults } = defaultSamplingParams(model.spec);
  const base: SamplingParams = {
    ...defaults,
    maxTokens,
    steps: maxTokens,
    blockLength: blocks,
    temperature: 0,
    remasking: 'low_confidence',
    ignoreEos: true,
  };
  const paramsFor = (schedule: Schedule, cache: CacheMode): SamplingParams => ({ ...base, threshold: schedule === 'threshold' ? 0.9 : null, cache });

  const referenceProcess = args['no-reference'] ? null : new Reference(modelDir);
  await referenceProcess?.ready();
  for (const cache of caches) await runBatch(engine, promptsFor(1), { ...paramsFor('fixed', cache), maxTokens: blocks, steps: 2 }, `warmup-${cache}`);
  for (const schedule of schedules) {
    for (const batch of batches) {
      for (const cache of caches) {
        const runName = `${name}-${schedule}-b${batch}-${cache}`;
        let r = await runBatch(engine, promptsFor(batch), paramsFor(schedule, cache), runName);
        for (let i = 1; i < repeat; i++) {
          const again = await runBatch(engine, promptsFor(batch), paramsFor(schedule, cache), `${runName}-${i}`);
          if (again.wallS < r.wallS) r = again;
        }
        runs.push({ ...r, model: name, schedule, batch, cache });
        const tokens = r.finishes.reduce((sum, f) => sum + f.tokenIds.length, 0);
        let line = `engine ${runName}: ${r.wallS.toFixed(2)} s, ${(tokens / r.wallS).toFixed(1)} tok/s, load ${os.loadavg()[0].toFixed(2)}`;
        let ref: ReferenceRun | null = null;
        if (referenceProcess !== null) {
          ref = await referenceProcess.run(runName, paramsFor(schedule, cache), promptsFor(batch));
          for (let i = 1; i < repeat; i++) {
            const again = await referenceProcess.run(runName, paramsFor(schedule, cache), promptsFor(batch));
            if (again.wall_s < ref.wall_s) ref = again;
          }
          line += `; reference ${ref.wall_s.toFixed(2)} s`;
        }
        references.push(ref);
        console.error(line);
      }
    }
  }
  await engine.close();
  referenceProcess?.close();
}

for (const subject of subjects) await benchModel(subject.dir, subject.caches);

/** The `none` run of a run's model, schedule and batch; of the default (first) model with `base`. */
const noneOf = (r: RunResult, base = false) =>
  runs.find((x) => x.model === (base ? models[0].name : r.model) && x.schedule === r.schedule && x.batch === r.batch && x.cache === 'none');

/** Share of generated positions whose token equals the `none` run's (same model, schedule, batch and prompt). */
function agreementWithNone(r: RunResult): number {
  const none = noneOf(r);
  if (none === undefined) return NaN;
  let same = 0;
  let total = 0;
  r.finishes.forEach((f, i) => {
    const g = none.finishes[i].tokenIds;
    for (let j = 0; j < Math.max(f.tokenIds.length, g.length); j++) {
      total++;
      if (f.tokenIds[j] === g[j]) same++;
    }
  });
  return same / total;
}

/** Share of sequences whose text (tokens before the first end-of-text) equals the `none` run's: what a client gets. */
function textAgreementWithNone(r: RunResult): number {
  const none = noneOf(r);
  if (none === undefined) return NaN;
  const eos = new Set(models.find((m) => m.name === r.model)!.eosTokenIds);
  const text = (ids: number[]) => {
    const end = ids.findIndex((t) => eos.has(t));
    return JSON.stringify(end < 0 ? ids : ids.slice(0, end));
  };
  return r.finishes.filter((f, i) => text(f.tokenIds) === text(none.finishes[i].tokenIds)).length / r.finishes.length;
}

const rows = runs.map((r, i) => {
  const ref = references[i];
  const none = noneOf(r, true);
  // Tokens delivered (max_tokens each): a block diffusion span may decode a few positions past max_tokens.
  const tokens = r.finishes.reduce((sum, f) => sum + f.tokenIds.length, 0);
  const steps = r.finishes.reduce((s, f) => s + f.steps, 0) / r.finishes.length;
  return {
    model: r.model,
    schedule: r.schedule,
    batch: r.batch,
    cache: r.cache,
    wall_s: r.wallS,
    tokens,
    tokens_per_s: tokens / r.wallS,
    steps_per_sequence: steps,
    graph_runs: r.stats.graphRuns,
    cached_steps: r.stats.cacheHits,
    ort_share: r.stats.graphMs / r.stats.stepMs,
    speedup_vs_default_none: none === undefined ? null : none.wallS / r.wallS,
    agreement_with_none: agreementWithNone(r),
    text_agreement_with_none: textAgreementWithNone(r),
    reference_wall_s: ref?.wall_s ?? null,
    reference_tokens_per_s: ref ? tokens / ref.wall_s : null,
    engine_matches_reference: ref ? r.finishes.every((f, j) => JSON.stringify(f.tokenIds) === JSON.stringify(ref.results[j].token_ids)) : null,
  };
});

let torchVersion = 'unknown';
try {
  torchVersion = execFileSync(args.python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).trim();
} catch {
  /* reported as unknown */
}
const machine = {
  cpu: os.cpus()[0]?.model ?? 'unknown',
  cores: os.availableParallelism(),
  memory_gib: Math.round(os.totalmem() / 2 ** 30),
  platform: `${os.type()} ${os.release()}`,
  node: process.version,
  onnxruntime_node: JSON.parse(readFileSync(path.join(ROOT, 'node_modules/onnxruntime-node/package.json'), 'utf8')).version,
  torch: torchVersion,
  threads,
  load_average: os.loadavg().map((x) => Number(x.toFixed(2))),
};
const report = {
  date: new Date().toISOString(),
  models,
  machine,
  workload: { prompt_tokens: promptTokens, max_tokens: maxTokens, block_length: blockLength, steps: maxTokens, threshold: 0.9, temperature: 0, ignore_eos: true },
  runs: rows,
};
writeFileSync(`${args.out}.json`, JSON.stringify(report, null, 2) + '\n');

const f = (x: number | null, d = 1) => (x === null || Number.isNaN(x) ? '–' : x.toFixed(d));
const pct = (x: number | null) => (x === null || Number.isNaN(x) ? '–' : `${(100 * x).toFixed(1)}%`);
const md = [
  '# Engine benchmark: key/value cache modes',
  '',
  `${report.date} · ${models.map((m) => `\`${m.name}\` (${m.architecture}, ${m.graph}, block ${m.blockLength})`).join(', ')} · ${machine.cpu}, ${machine.cores} cores, ${machine.memory_gib} GiB · ${machine.platform} · ` +
    `Node ${machine.node}, onnxruntime-node ${machine.onnxruntime_node} (CPU, ${threads} threads), torch ${machine.torch} (${threads} threads) · ` +
    `**load average at the end ${machine.load_average.join(' ')}**`,
  '',
  `Workload: ${batches.join(' and ')} prompts of ${promptTokens} tokens started together, ${maxTokens} generated tokens (every position decoded: ` +
    `ignore_eos), greedy, low_confidence; fixed schedule (steps = ${maxTokens}) and threshold 0.9. ` +
    `\`${models[0].name}\` (block_length ${blockLength}): \`none\` runs the whole canvas every step; \`prefix\` and \`dual\` (Fast-dLLM) refresh at each block ` +
    'start and then run the block and what follows it (prefix) or the block alone (dual). ' +
    (models.length > 1
      ? `\`${models[1].name}\` (${models[1].architecture}, in its own blocks of ${models[1].blockLength}): \`none\` runs the whole canvas every step; \`prefix\` is its exact ` +
        'block cache (the prompt prefilled once, each completed block appended, each step runs only the current block). '
      : '') +
    `Speed-up: against \`${models[0].name}\` without a cache (same schedule and batch). Agreement: generated positions whose token equals the same model's \`none\`; ` +
    'same text: sequences whose tokens before the first end-of-text equal `none`\'s (what a client receives). Each run is repeated and the fastest kept.',
  '',
  `| model | schedule | batch | cache | tokens/s | speed-up vs ${models[0].name} none | steps / sequence | cached steps | agreement with none | same text as none | ORT share | PyTorch reference tokens/s | engine = reference |`,
  '| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ...rows.map(
    (r) =>
      `| ${r.model} | ${r.schedule} | ${r.batch} | ${r.cache} | ${f(r.tokens_per_s)} | ${r.speedup_vs_default_none === null ? '–' : `${f(r.speedup_vs_default_none, 2)}×`} | ${f(r.steps_per_sequence)} | ` +
      `${r.cached_steps} | ${pct(r.agreement_with_none)} | ${pct(r.text_agreement_with_none)} | ${pct(r.ort_share)} | ${f(r.reference_tokens_per_s)} | ${r.engine_matches_reference === null ? '–' : r.engine_matches_reference ? 'yes' : 'no'} |`,
  ),
  '',
];
writeFileSync(`${args.out}.md`, md.join('\n'));
console.log(md.join('\n'));
