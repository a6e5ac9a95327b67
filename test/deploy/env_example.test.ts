// docker/env.example lists every variable of the configuration (src/config.ts ENV, the source of truth), with the
// default unless a difference is intended, and is itself a valid configuration.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ENV, loadConfig } from '../../src/config.js';
import { ROOT } from './dockerfile.js';
import { parseEnvFile } from './envfile.js';

const example = parseEnvFile(readFileSync(path.join(ROOT, 'docker/env.example'), 'utf8'));

/** Where the example deliberately differs from the built-in default, and why. */
const INTENDED: Record<string, string> = {
  HOST: 'a container listens on every interface (the built-in default is loopback)',
  REDIS_URL: 'the compose service `redis`',
};

/** Variables of the deployment itself (compose interpolation, docker/entrypoint.sh), not of the server. */
const DEPLOYMENT = new Set([
  'COMPOSE_PROJECT_NAME',
  'COMPOSE_PROFILES',
  'WORKER_EXECUTION_PROVIDER',
  'DLLM_BIND',
  'DLLM_PORT',
  'DLLM_CUDA_IMAGE',
  'DLLM_CPU_IMAGE',
  'MODELS_HOST_DIR',
  'GPU_LEASE_DEVICES',
  'WORKER_START_PERIOD',
  'REDIS_MAXMEMORY',
]);

test('env.example lists every variable src/config.ts knows', () => {
  const missing = Object.keys(ENV).filter((name) => !(name in example));
  assert.deepEqual(missing, [], `add to docker/env.example: ${missing.join(', ')}`);
});

test('env.example holds no variable that neither the server nor the deployment reads', () => {
  const unknown = Object.keys(example).filter((name) => !(name in ENV) && !DEPLOYMENT.has(name));
  assert.deepEqual(unknown, []);
});

test('its values are the defaults, except where a difference is intended', () => {
  for (const [name, spec] of Object.entries(ENV)) {
    if (name in INTENDED) {
      assert.notEqual(example[name], spec.def ?? '', `${name}: listed as intended but equal to the default`);
      continue;
    }
    assert.equal(example[name], spec.def ?? '', `${name}: example ${JSON.stringify(example[name])}, default ${JSON.stringify(spec.def)}`);
  }
});

test('it is a valid configuration as it stands, and for each role compose.yaml gives it', () => {
  const only = (names: Iterable<string>) => Object.fromEntries([...names].map((n) => [n, example[n]]));
  const server = only(Object.keys(ENV));
  loadConfig(server);
  for (const role of ['api', 'worker', 'all']) loadConfig({ ...server, ROLE: role });
  const worker = loadConfig({ ...server, ROLE: 'worker', EXECUTION_PROVIDER: 'cuda', DEVICE_ID: '' });
  assert.equal(worker.deviceId, 0);
});
