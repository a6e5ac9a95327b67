// The CPU image's entry command, run on this host: the same command (ENTRYPOINT + CMD of the `cpu` target), the
// same environment (its ENV, with only PORT changed to a free port) and the same file layout (its COPY lines,
// assembled in a temporary /app with dist/ compiled by the toolchain the build stage runs). Then GET /health, one
// tiny completion, the image's HEALTHCHECK command, and SIGTERM for a clean exit.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, waitFor } from '../helpers/net.js';
import { entryCommand, readDockerfile, ROOT, type Stage } from './dockerfile.js';

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

describe('the CPU image entry command, run on the host', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'dllm-entry-'));
  const app = path.join(tmp, 'app');
  let proc: ChildProcess;
  let logs = '';
  let base = '';
  let env: Record<string, string>;

  before(async () => {
    // The build stage's `npm run build` is `tsc -p tsconfig.json`; the same, written to a private outDir.
    // (A real directory inside app/, not a link: Node resolves packages from a module's real path.)
    const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json', '--outDir', path.join(app, 'dist')], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(tsc.status, 0, `tsc failed (the image build would too):\n${tsc.stdout}${tsc.stderr}`);
    assemble(cpu, app);
    const port = await freePort();
    env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmp, ...cpu.env, PORT: String(port) };
    const [cmd, ...args] = entryCommand(cpu);
    proc = spawn(cmd, args, { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (d) => (logs += d));
    proc.stderr!.on('data', (d) => (logs += d));
    base = `http://127.0.0.1:${port}`;
    const exited = once(proc, 'exit').then(([code]) => {
      throw new Error(`the entry command exited (${code}) before answering:\n${logs}`);
    });
    const healthy = waitFor('GET /health', async () => (await fetch(`${base}/health`)).ok, 90_000, 200).catch((e: Error) => {
      throw new Error(`${e.message}\n${logs}`);
    });
    await Promise.race([healthy, exited]);
    exited.catch(() => undefined);
  });

  after(async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await once(proc, 'exit');
    }
    rmSync(tmp, { recursive: true, force: true });
  });

  test('the command and environment are the image\'s', () => {
    assert.deepEqual(entryCommand(cpu), ['sh', 'docker/entrypoint.sh', 'node', 'dist/src/main.js']);
    assert.equal(env.ROLE, 'all');
    assert.equal(env.EXECUTION_PROVIDER, 'cpu');
    assert.equal(env.MODEL_DIR, 'models/tiny-llada');
    assert.equal(env.HOST, '0.0.0.0');
  });

  test('GET /health', async () => {
    const r = await fetch(`${base}/health`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { status: 'ok' });
  });

  test('one tiny completion', async () => {
    const r = await fetch(`${base}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny-llada', prompt: 'The cat', max_tokens: 8, steps: 4, temperature: 0 }),
    });
    const body = (await r.json()) as any;
    assert.equal(r.status, 200, JSON.stringify(body));
    assert.equal(body.object, 'text_completion');
    assert.equal(typeof body.choices[0].text, 'string');
    assert.ok(body.usage.completion_tokens > 0 && body.usage.completion_tokens <= 8);
  });

  test('the static assets ship too: GET / serves the playground page', { skip: existsSync(path.join(ROOT, 'src/playground/public/index.html')) ? false : 'no playground in this checkout' }, async () => {
    const r = await fetch(`${base}/`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /text\/html/);
  });

  test("the image's HEALTHCHECK command reports healthy", () => {
    assert.match(cpu.healthcheck ?? '', /CMD \["node", "docker\/healthcheck\.mjs"\]/);
    const r = spawnSync('node', ['docker/healthcheck.mjs'], { cwd: app, env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^healthy: /);
  });

  test('SIGTERM (docker stop) ends it cleanly', async () => {
    const exit = once(proc, 'exit');
    proc.kill('SIGTERM');
    const [code] = (await exit) as [number | null];
    assert.equal(code, 0, logs);
  });
});
