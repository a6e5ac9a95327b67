// The device benchmark (bench/device.ts) at a small size: the default model and a synthetic checkpoint converted at
// run time, on the CPU provider and on WebGPU (Mesa's lavapipe here), with the bytes each moves per step.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { ROOT } from '../engine/model_fixture.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'bench-device-'));
after(() => rmSync(work, { recursive: true, force: true }));

test('bench:device runs at a small size and shows the caches staying on the device', () => {
  const out = path.join(work, 'device');
  execFileSync(
    process.execPath,
    ['--import', 'tsx', 'bench/device.ts', '--synthetic', 'tiny', '--work', work, '--providers', 'cpu,webgpu,cuda', '--caches', 'none,dual',
      '--prompt-tokens', '12', '--max-tokens', '8', '--block-length', '4', '--threads', '2', '--out', out],
    { cwd: ROOT, stdio: 'pipe', timeout: 600_000 },
  );
  const report = JSON.parse(readFileSync(`${out}.json`, 'utf8')) as {
    rows: { model: string; provider: string; precision: string; cache: string; tokensPerSecond: number; pastKvUp: number; otherUp: number; down: number }[];
    skipped: string[];
  };
  const row = (model: string, provider: string, cache: string) => report.rows.find((r) => r.model === model && r.provider === provider && r.cache === cache);
  for (const model of ['tiny-dream', 'synthetic-tiny']) {
    for (const cache of ['none', 'dual']) {
      const cpu = row(model, 'cpu', cache);
      const gpu = row(model, 'webgpu', cache);
      assert.ok(cpu && gpu, `${model} ${cache} ran on both providers`);
      assert.ok(cpu.tokensPerSecond > 0 && gpu.tokensPerSecond > 0);
      assert.equal(cpu.down + cpu.otherUp + cpu.pastKvUp, 0, 'nothing crosses a bus on the CPU provider');
      assert.equal(gpu.pastKvUp, 0, 'no cache bytes go up on WebGPU');
      assert.ok(gpu.otherUp > 0 && gpu.down > 0, 'the step inputs and the head outputs are counted');
    }
  }
  // The synthetic checkpoint's fp16 graphs run on the GPU provider; CUDA is reported as not installed here.
  assert.equal(row('synthetic-tiny', 'webgpu', 'dual')?.precision, 'fp16');
  assert.ok(report.skipped.some((s) => s.startsWith('cuda:')));
  assert.match(readFileSync(`${out}.md`, 'utf8'), /\| synthetic-tiny \| webgpu \| fp16 \| dual \|/);
});
