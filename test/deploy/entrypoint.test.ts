// docker/entrypoint.sh (GPU leases for scaled workers) and docker/healthcheck.mjs (worker heartbeat in Redis), run
// here as the images run them. The lease needs no GPU: GPU_LEASE_DEVICES names the devices.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { keys, WORKER_STALE_MS } from '../../src/transports/keys.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { ROOT } from './dockerfile.js';
// @ts-ignore: a plain .mjs script without type declarations
import { healthcheck, probeHost, workersKey, WORKER_STALE_MS as CHECK_STALE_MS } from '../../docker/healthcheck.mjs';

interface Run {
  code: Promise<number | null>;
  out: () => string;
  kill(): void;
}

function run(cmd: string[], env: Record<string, string>): Run {
  const p = spawn(cmd[0], cmd.slice(1), { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  const code = new Promise<number | null>((resolve) => p.once('close', (c) => resolve(c)));
  return { code, out: () => out, kill: () => p.kill('SIGTERM') };
}

/** The entrypoint with a stand-in server: prints DEVICE_ID, then holds its lease until killed. */
function worker(env: Record<string, string>): Run {
  return run(['sh', 'docker/entrypoint.sh', 'sh', '-c', 'echo "device=${DEVICE_ID:-unset}"; exec sleep 30'], env);
}

async function lineOf(r: Run, re: RegExp, timeoutMs = 10_000): Promise<string> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const m = re.exec(r.out());
    if (m) return m[1] ?? m[0];
    if (Date.now() > end) throw new Error(`no ${re} in: ${r.out()}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

describe('docker/entrypoint.sh: one GPU per worker', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dllm-lease-'));
  const gpuWorker = { ROLE: 'worker', EXECUTION_PROVIDER: 'cuda', GPU_LEASE_DIR: dir, GPU_LEASE_DEVICES: '0,1' };
  const runs: Run[] = [];
  after(async () => {
    for (const r of runs) r.kill();
    await Promise.all(runs.map((r) => r.code));
    rmSync(dir, { recursive: true, force: true });
  });

  test('two workers take GPUs 0 and 1, a third finds none and exits 3, a freed GPU is taken again', async () => {
    const a = worker(gpuWorker);
    runs.push(a);
    assert.equal(await lineOf(a, /device=(\S+)/), '0');
    const b = worker(gpuWorker);
    runs.push(b);
    assert.equal(await lineOf(b, /device=(\S+)/), '1');
    const c = worker(gpuWorker);
    assert.equal(await c.code, 3);
    assert.match(c.out(), /every GPU \(0 1\) is held by another worker/);
    a.kill();
    await a.code; // the lock goes with the process
    const d = worker(gpuWorker);
    runs.push(d);
    assert.equal(await lineOf(d, /device=(\S+)/), '0');
    assert.match(d.out(), /pinned to GPU 0/);
  });

  test('no lease for CPU workers, API processes, an explicit DEVICE_ID, or without GPU_LEASE_DIR', async () => {
    const cases: [Record<string, string>, string][] = [
      [{ ...gpuWorker, EXECUTION_PROVIDER: 'cpu' }, 'unset'],
      [{ ...gpuWorker, ROLE: 'api' }, 'unset'],
      [{ ...gpuWorker, DEVICE_ID: '5' }, '5'],
      [{ ROLE: 'worker', EXECUTION_PROVIDER: 'cuda' }, 'unset'],
    ];
    for (const [env, expected] of cases) {
      const r = run(['sh', 'docker/entrypoint.sh', 'sh', '-c', 'echo "device=${DEVICE_ID:-unset}"'], env);
      assert.equal(await r.code, 0, r.out());
      assert.equal(await lineOf(r, /device=(\S+)/), expected, JSON.stringify(env));
    }
  });

  test('a GPU worker that sees no GPU says so and exits 3', async () => {
    const r = run(['sh', 'docker/entrypoint.sh', 'true'], { ...gpuWorker, GPU_LEASE_DEVICES: '', PATH: '/usr/bin:/bin' });
    // Here: no nvidia-smi and no /dev/nvidiaN (a machine with a GPU would lease it instead).
    const code = await r.code;
    if (code === 0) return;
    assert.equal(code, 3);
    assert.match(r.out(), /sees no GPU/);
  });
});

describe('docker/healthcheck.mjs', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  test('its Redis key and staleness agree with src/transports/keys.ts', () => {
    assert.equal(workersKey('q1'), keys('q1').workers);
    assert.equal(CHECK_STALE_MS, WORKER_STALE_MS);
    assert.equal(probeHost('0.0.0.0'), '127.0.0.1');
    assert.equal(probeHost('::'), '[::1]');
  });

  test('worker: healthy with a fresh heartbeat of its own host, unhealthy when stale or absent', async () => {
    const env = { ROLE: 'worker', REDIS_URL: redis.url, QUEUE_NAME: 'hc' };
    const key = keys('hc').workers;
    await assert.rejects(healthcheck(env), /no fresh worker heartbeat/);
    await redis.client.zadd(key, Date.now() - 60_000, `w-${os.hostname()}-dead`);
    await redis.client.zadd(key, Date.now(), 'w-other-host');
    await assert.rejects(healthcheck(env), /no fresh worker heartbeat/, "another host's fresh worker does not make this one healthy");
    await redis.client.zadd(key, Date.now(), `w-${os.hostname()}-1`);
    assert.match(await healthcheck(env), /heartbeat fresh/);
    await redis.client.del(key);
    await redis.client.zadd(key, Date.now(), 'w-0123456789ab');
    assert.match(await healthcheck(env), /heartbeat fresh/, 'ids without a hostname (today): any fresh worker');
  });

  test('worker: Redis unreachable is unhealthy, quickly', async () => {
    const t0 = Date.now();
    await assert.rejects(healthcheck({ ROLE: 'worker', REDIS_URL: 'redis://127.0.0.1:1' }));
    assert.ok(Date.now() - t0 < 5000);
  });

  test('api: unhealthy when nothing listens', async () => {
    await assert.rejects(healthcheck({ ROLE: 'api', HOST: '0.0.0.0', PORT: '1' }));
  });
});
