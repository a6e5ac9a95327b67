// The Dockerfile: a linter from the registries (dockerfile-utils, the validator of the VS Code Docker language
// server, every rule raised to error) and the rules that matter here, checked directly.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, test } from 'node:test';
import { validate, ValidationSeverity } from 'dockerfile-utils';
import { dockerignoreIncludes, entryCommand, parseDockerfile, readDockerfile, ROOT, substitute } from './dockerfile.js';

const df = readDockerfile();
const require = createRequire(import.meta.url);

/** Every configurable rule of dockerfile-utils as an error. */
const STRICT = Object.fromEntries(
  [
    'deprecatedMaintainer',
    'emptyContinuationLine',
    'instructionCasing',
    'instructionCmdMultiple',
    'instructionEntrypointMultiple',
    'instructionHealthcheckMultiple',
    'instructionJSONInSingleQuotes',
    'instructionWorkdirRelative',
  ].map((k) => [k, ValidationSeverity.ERROR]),
);

function lint(text: string) {
  return validate(text, STRICT).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
}

describe('Dockerfile: linter', () => {
  test('dockerfile-utils reports nothing, with every rule as an error', () => {
    assert.deepEqual(lint(df.text), []);
  });

  test('the linter does catch mistakes (control)', () => {
    assert.ok(lint('FROM node:24\nRUNN echo\nWORKDIR app\nCMD ["a"]\nCMD ["b"]\n').length >= 3);
  });
});

describe('Dockerfile: rules', () => {
  test('targets cuda, cpu and converter exist; cuda is the last (default) stage', () => {
    for (const t of ['build', 'deps-cpu', 'deps-cuda', 'cpu', 'cuda', 'converter']) df.stage(t);
    assert.equal(df.stages[df.stages.length - 1].name, 'cuda');
  });

  test('every external base is pinned: an exact version tag (never latest) or a digest', () => {
    const names = new Set(df.stages.map((s) => s.name));
    for (const s of df.stages) {
      if (names.has(s.base)) continue;
      const image = s.image;
      assert.ok(image.length > 0, `stage ${s.name}: FROM ${s.base} resolves to nothing`);
      if (image.includes('@sha256:')) continue;
      const tag = /:([^/:@]+)$/.exec(image)?.[1];
      assert.ok(tag, `stage ${s.name}: ${image} has no tag`);
      assert.notEqual(tag, 'latest', `stage ${s.name}: ${image}`);
      assert.match(tag, /\d+\.\d+/, `stage ${s.name}: ${image}: tag must carry an exact version (major.minor[.patch])`);
    }
  });

  test('Node 22 or 24 LTS, in the build and in both runtime images', () => {
    const node = df.globalArgs.NODE_IMAGE;
    const major = Number(/^node:(\d+)\./.exec(node)?.[1]);
    assert.ok(major === 22 || major === 24, `NODE_IMAGE=${node}`);
    assert.equal(df.stage('cpu').image, node);
    assert.ok(df.stage('cuda').instructions.some((i) => i.keyword === 'COPY' && i.args.includes('--from=node') && i.args.includes('/usr/local/bin/node')));
  });

  test('the CUDA base is a CUDA 12 + cuDNN 9 runtime, what onnxruntime-node 1.30 "cuda12" links against', () => {
    const cuda = df.stage('cuda').image;
    assert.match(cuda, /^nvidia\/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+$/, cuda);
    // The pairing is tied to the onnxruntime-node version: a new version must be re-checked (docs/deploy.md).
    const ort = JSON.parse(readFileSync(require.resolve('onnxruntime-node/package.json'), 'utf8')) as { version: string };
    assert.match(ort.version, /^1\.30\./, `onnxruntime-node ${ort.version}: re-check its CUDA/cuDNN needs, then update this test`);
    const metadata = require('onnxruntime-node/script/install-metadata.js') as { requirements: Record<string, string[]>; manifests: Record<string, unknown> };
    assert.deepEqual(metadata.requirements['linux/x64'], ['cuda12']);
    assert.ok(metadata.manifests['linux/x64:cuda12']);
  });

  test('the CUDA dependencies install the CUDA EP explicitly (install scripts may be blocked) and check it', () => {
    const deps = df.stage('deps-cuda');
    assert.equal(deps.env.ONNXRUNTIME_NODE_INSTALL, 'cuda12');
    const runs = deps.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n');
    assert.match(runs, /node node_modules\/onnxruntime-node\/script\/install\.js/);
    assert.match(runs, /libonnxruntime_providers_cuda\.so/);
    for (const name of ['build', 'deps-cpu']) assert.equal(df.stage(name).env.ONNXRUNTIME_NODE_INSTALL, 'skip', name);
    const cudaRuns = df.stage('cuda').instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n');
    assert.match(cudaRuns, /ldd [^|]*libonnxruntime_providers_cuda\.so/, 'the CUDA image checks the EP links');
  });

  for (const target of ['cpu', 'cuda']) {
    test(`${target}: non-root user, HEALTHCHECK, exec-form entry command, the tiny model baked in`, () => {
      const s = df.stage(target);
      assert.ok(s.user && !/^(root|0)(:|$)/.test(s.user), `USER ${s.user}`);
      assert.ok(s.healthcheck && s.healthcheck.includes('docker/healthcheck.mjs'), `HEALTHCHECK ${s.healthcheck}`);
      assert.deepEqual(entryCommand(s), ['sh', 'docker/entrypoint.sh', 'node', 'dist/src/main.js']);
      assert.equal(s.workdir, '/app');
      assert.ok(s.copies.some((c) => c.from === null && c.sources.includes('models/tiny-dream')), 'models/tiny-dream copied');
      assert.equal(s.env.MODEL_DIR, 'models/tiny-dream');
      assert.ok(existsSync(path.join(ROOT, s.env.MODEL_DIR, 'dllm.json')));
      assert.equal(s.env.HOST, '0.0.0.0');
      assert.ok(s.instructions.some((i) => i.keyword === 'VOLUME' && i.args.includes('/models')), 'a volume for other models');
      assert.ok(s.instructions.some((i) => i.keyword === 'EXPOSE' && i.args.split(/\s+/).includes(s.env.PORT)));
    });
  }

  test('execution providers: cpu image cpu, cuda image cuda', () => {
    assert.equal(df.stage('cpu').env.EXECUTION_PROVIDER, 'cpu');
    assert.equal(df.stage('cuda').env.EXECUTION_PROVIDER, 'cuda');
  });

  test('every file copied from the build context exists and is not excluded by .dockerignore', () => {
    const ignore = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8');
    for (const s of df.stages) {
      for (const c of s.copies) {
        if (c.from !== null) continue;
        for (const src of c.sources) {
          assert.ok(existsSync(path.join(ROOT, src)), `${s.name}: COPY ${src}: not in the repository`);
          assert.ok(dockerignoreIncludes(ignore, src), `${s.name}: COPY ${src}: excluded by .dockerignore`);
        }
      }
    }
    assert.equal(dockerignoreIncludes(ignore, 'node_modules/x'), false);
    assert.equal(dockerignoreIncludes(ignore, 'dist/src/main.js'), false);
    assert.equal(dockerignoreIncludes(ignore, 'test/deploy/dockerfile.test.ts'), false);
  });

  test('the reader handles continuations, ENV forms and stage inheritance (self-check)', () => {
    const d = parseDockerfile('ARG B=img:1.2\nFROM ${B} AS a\nENV X=1 \\\n  Y="two words"\nWORKDIR /w\nFROM a AS b\nENV Z 3\nCMD ["x"]\n');
    assert.equal(d.stage('a').image, 'img:1.2');
    assert.deepEqual(d.stage('b').env, { X: '1', Y: 'two words', Z: '3' });
    assert.equal(d.stage('b').workdir, '/w');
    assert.equal(substitute('${A:-d}$B', { B: 'b' }), 'db');
  });
});
