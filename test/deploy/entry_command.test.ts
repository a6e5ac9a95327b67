// The CPU image's entry command, run on this host: the same command (ENTRYPOINT + CMD of the `cpu` target), the
// same environment (its ENV, with only PORT changed to a free port) and the same file layout (its COPY lines,
// assembled in a temporary /app with dist/ compiled by the toolchain the build stage runs). Then GET /health, one
// tiny completion, the image's HEALTHCHECK command, and SIGTERM for a clean exit.
// Second, the compose `cpu` profile on the host: an `api` and a `worker-cpu` process from the same layout, each with
// the environment compose gives its container (image ENV < env_file docker/env.example < the service's
// environment), a private redis-server in place of the `redis` service.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { freePort, waitFor } from '../helpers/net.js';
import { jsonOf, type ReadyBody } from '../helpers/openai.js';
import type { CompletionResponse } from '../../src/schemas/completions.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { entryCommand, readDockerfile, ROOT, type Stage } from './dockerfile.js';
import { parseEnvFile } from './envfile.js';

const df = readDockerfile();
const cpu = df.stage('cpu');

/**
 * Lays out `app` as the stage's COPY lines do. Sources from a build stage are that stage's WORKDIR paths; dist/ is
 * already compiled into `app`, node_modules comes from this checkout (the production dependencies and more).
 */
function assemble(stage: Stage, app: string): void {
  for (const c of stage.copies) {
    const destDir = path.resolve(app, path.posix.relative(stage.workdir, path.posix.resolve(stage.workdir, c.dest)));
    for (const src of c.sources) {
      let from: string;
      if (c.from === null) from = path.join(ROOT, src);
      else {
        const fromStage = df.stage(c.from);
        const rel = path.posix.relative(fromStage.workdir, src);
        assert.ok(!rel.startsWith('..'), `COPY --from=${c.from} ${src}: outside ${fromStage.workdir}`);
        if (rel === 'dist') {
          assert.ok(existsSync(path.join(app, 'dist')));
          continue;
        }
        from = path.join(ROOT, rel);
      }
      assert.ok(existsSync(from), `COPY ${c.from ? `--from=${c.from} ` : ''}${src}: ${from} missing`);
      const multi = c.sources.length > 1 || c.dest.endsWith('/');
      const to = multi ? path.join(destDir, path.basename(src)) : destDir;
      mkdirSync(path.dirname(to), { recursive: true });
      if (statSync(from).isDirectory()) symlinkSync(from, to, 'dir');
      else copyFileSync(from, to);
    }
  }
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'dllm-entry-'));
const app = path.join(tmp, 'app');
let built: Promise<void> | null = null;

/** Compiles and lays out the image's /app once for this file. */
function buildLayout(): Promise<void> {
  return (built ??= (async () => {
    // The build stage's `npm run build` is `tsc -p tsconfig.json`; the same, written to a private outDir.
    // (A real directory inside app/, not a link: Node resolves packages from a module's real path.)
    const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json', '--outDir', path.join(app, 'dist')], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(tsc.status, 0, `tsc failed (the image build would too):\n${tsc.stdout}${tsc.stderr}`);
    assemble(cpu, app);
  })());
}

after(() => rmSync(tmp, { recursive: true, force: true }));

interface Container {
  proc: ChildProcess;
  env: Record<string, string>;
  logs: () => string;
  stop(): Promise<number | null>;
}

/** Runs the image's entry command in the layout with `env` (and this host's PATH). */
function runEntry(env: Record<string, string>): Container {
  const full = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmp, ...env };
  const [cmd, ...args] = entryCommand(cpu);
  const proc = spawn(cmd, args, { cwd: app, env: full, stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  proc.stdout!.on('data', (d) => (logs += d));
  proc.stderr!.on('data', (d) => (logs += d));
  return {
    proc,
    env: full,
    logs: () => logs,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      const exit = once(proc, 'exit');
      proc.kill('SIGTERM');
      const [code] = (await exit) as [number | null];
      return code;
    },
  };
}

async function until<T>(c: Container, what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 90_000): Promise<T> {
  const exited = once(c.proc, 'exit').then(([code]) => {
    throw new Error(`the entry command exited (${code}) before ${what}:\n${c.logs()}`);
  });
  exited.catch(() => undefined);
  return Promise.race([
    waitFor(what, fn, timeoutMs, 200).catch((e: Error) => {
      throw new Error(`${e.message}\n${c.logs()}`);
    }),
    exited,
  ]);
}

function healthcheck(c: Container) {
  return spawnSync('node', ['docker/healthcheck.mjs'], { cwd: app, env: c.env, encoding: 'utf8' });
}

async function completion(base: string): Promise<CompletionResponse> {
  const r = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tiny-dream', prompt: 'The cat', max_tokens: 8, steps: 4, temperature: 0 }),
  });
  const body = await jsonOf<CompletionResponse>(r); // an error object when the status is not 200 (reported below)
  assert.equal(r.status, 200, JSON.stringify(body));
  assert.equal(body.object, 'text_completion');
  assert.equal(typeof body.choices[0].text, 'string');
  assert.ok(body.usage.completion_tokens > 0 && body.usage.completion_tokens <= 8);
  return body;
}

describe('the CPU image entry command, run on the host', () => {
  let c: Container;
  let base = '';

  before(async () => {
    await buildLayout();
    const port = await freePort();
    c = runEntry({ ...cpu.env, PORT: String(port) });
    base = `http://127.0.0.1:${port}`;
    await until(c, 'GET /health', async () => (await fetch(`${base}/health`)).ok);
  });

  after(async () => {
    if (c && c.proc.exitCode === null && c.proc.signalCode === null) {
      c.proc.kill('SIGKILL');
      await once(c.proc, 'exit');
    }
  });

  test("the command and environment are the image's", () => {
    assert.deepEqual(entryCommand(cpu), ['sh', 'docker/entrypoint.sh', 'node', 'dist/src/main.js']);
    assert.equal(c.env.ROLE, 'all');
    assert.equal(c.env.EXECUTION_PROVIDER, 'cpu');
    assert.equal(c.env.MODEL_DIR, 'models/tiny-dream');
    assert.equal(c.env.HOST, '0.0.0.0');
  });

  test('GET /health', async () => {
    const r = await fetch(`${base}/health`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { status: 'ok' });
  });

  test('one tiny completion', async () => {
    await completion(base);
  });

  test('the static assets ship too: GET / serves the playground page', { skip: existsSync(path.join(ROOT, 'src/playground/public/index.html')) ? false : 'no playground in this checkout' }, async () => {
    const r = await fetch(`${base}/`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /text\/html/);
  });

  test("the image's HEALTHCHECK command reports healthy", () => {
    assert.match(cpu.healthcheck ?? '', /CMD \["node", "docker\/healthcheck\.mjs"\]/);
    const r = healthcheck(c);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^healthy: /);
  });

  test('SIGTERM (docker stop) ends it cleanly', async () => {
    assert.equal(await c.stop(), 0, c.logs());
  });
});

/** The parts of docker/compose.yaml read here (the services' fields are checked as they are used). */
interface ComposeFile {
  services: Record<string, { build: { target: string }; env_file: string; environment: Record<string, string | number | boolean> }>;
}

describe('the compose cpu profile on the host: api + worker-cpu through Redis', () => {
  const compose = parse(readFileSync(path.join(ROOT, 'docker/compose.yaml'), 'utf8'), { merge: true }) as ComposeFile;
  const envFile = parseEnvFile(readFileSync(path.join(ROOT, 'docker/env.example'), 'utf8'));
  let redis: TestRedis;
  let api: Container;
  let worker: Container;
  let base = '';

  /** What compose gives the service's container: image ENV < env_file < environment; Redis and port are ours. */
  function serviceEnv(name: string, overrides: Record<string, string>): Record<string, string> {
    const svc = compose.services[name];
    assert.equal(svc.build.target, 'cpu', `${name} runs the cpu image`);
    assert.equal(svc.env_file, '.env');
    const environment = Object.fromEntries(Object.entries(svc.environment).map(([k, v]) => [k, String(v)]));
    for (const k of Object.keys(environment)) if (/\$\{/.test(environment[k])) delete environment[k];
    return { ...cpu.env, ...envFile, ...environment, ...overrides };
  }

  before(async () => {
    await buildLayout();
    redis = await startRedis();
    const port = await freePort();
    // ORT_THREADS=1: this test's only departure from compose's environment, for small CI machines.
    worker = runEntry(serviceEnv('worker-cpu', { REDIS_URL: redis.url, ORT_THREADS: '1' }));
    api = runEntry(serviceEnv('api', { REDIS_URL: redis.url, PORT: String(port) }));
    base = `http://127.0.0.1:${port}`;
    await until(api, 'the API answers /health', async () => (await fetch(`${base}/health`)).ok);
    await until(worker, 'a worker is ready', async () => (await fetch(`${base}/ready`)).status === 200);
  });

  after(async () => {
    for (const c of [api, worker]) {
      if (c && c.proc.exitCode === null && c.proc.signalCode === null) {
        c.proc.kill('SIGKILL');
        await once(c.proc, 'exit');
      }
    }
    await redis?.stop();
  });

  test('the roles are those of the compose services', () => {
    assert.equal(api.env.ROLE, 'api');
    assert.equal(worker.env.ROLE, 'worker');
    assert.equal(worker.env.EXECUTION_PROVIDER, 'cpu');
    assert.equal(api.env.MODEL_DIR, worker.env.MODEL_DIR);
  });

  test('GET /ready counts the worker; a completion goes through Redis', async () => {
    const ready = await jsonOf<ReadyBody>(fetch(`${base}/ready`));
    assert.equal(ready.transport, 'redis');
    assert.equal(ready.workers, 1);
    await completion(base);
  });

  test('HEALTHCHECK: the API by GET /health, the worker by its heartbeat in Redis', () => {
    for (const c of [api, worker]) {
      const r = healthcheck(c);
      assert.equal(r.status, 0, r.stdout + r.stderr);
    }
    assert.match(healthcheck(worker).stdout, /worker heartbeat fresh/);
  });

  test('SIGTERM ends both cleanly', async () => {
    assert.equal(await api.stop(), 0, api.logs());
    assert.equal(await worker.stop(), 0, worker.logs());
  });
});
