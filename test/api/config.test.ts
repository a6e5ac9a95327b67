import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, ENV, loadConfig } from '../../src/config.js';

test('defaults: the embedded mode on the tiny model', () => {
  const c = loadConfig({});
  assert.equal(c.role, 'all');
  assert.equal(c.redisUrl, null);
  assert.equal(c.modelDir, 'models/tiny-dream');
  assert.deepEqual(c.apiKeys, []);
});

test('every problem is named with its variable', () => {
  try {
    loadConfig({ PORT: 'eighty', ROLE: 'boss', MAX_BATCH_SIZE: '0', EXECUTION_PROVIDER: 'tpu' });
    assert.fail('should throw');
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    const text = (e as Error).message;
    for (const name of ['PORT', 'ROLE', 'MAX_BATCH_SIZE', 'EXECUTION_PROVIDER']) assert.ok(text.includes(name), `${name} in ${text}`);
  }
  assert.throws(() => loadConfig({ ROLE: 'api' }), /REDIS_URL/);
});

test('lists and nullable values', () => {
  const c = loadConfig({ API_KEYS: ' a, b ,,c ', REDIS_URL: 'redis://x:1', ROLE: 'worker', MODEL_NAME: 'm' });
  assert.deepEqual(c.apiKeys, ['a', 'b', 'c']);
  assert.equal(c.redisUrl, 'redis://x:1');
  assert.equal(c.modelName, 'm');
});

test('docs/configuration.md: one row per variable, in src/config.ts order, with its default', async () => {
  const { readFile } = await import('node:fs/promises');
  const doc = await readFile(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
  const rows = doc
    .split('\n')
    .filter((line) => /^\| `[A-Z_]+` \|/.test(line))
    .map((line) => line.split(' | ').map((cell) => cell.replace(/^\| /, '')));
  assert.deepEqual(rows.map(([name]) => name), Object.keys(ENV).map((name) => `\`${name}\``));
  for (const [name, def] of rows) {
    const spec = ENV[name.slice(1, -1)];
    // A default the code gives is quoted as written; an absent one (null, empty list) is described in words.
    if (spec.def) assert.equal(def, `\`${spec.def}\``, name);
    else assert.ok(!def.startsWith('`'), `${name}: no default in src/config.ts, so none quoted (${def})`);
  }
});

test('HTTP timeouts: defaults (30 s to receive a request, 10 s for its headers); headers longer than the request refused', () => {
  const c = loadConfig({});
  assert.equal(c.httpRequestTimeoutMs, 30_000);
  assert.equal(c.httpHeadersTimeoutMs, 10_000);
  assert.equal(c.httpMaxConnections, 1024);
  assert.throws(() => loadConfig({ HTTP_REQUEST_TIMEOUT_MS: '5000', HTTP_HEADERS_TIMEOUT_MS: '6000' }), /HTTP_HEADERS_TIMEOUT_MS.*HTTP_REQUEST_TIMEOUT_MS/);
  assert.throws(() => loadConfig({ HTTP_MAX_CONNECTIONS: '0', TOKENIZER_THREADS: '0' }), (e: Error) => /HTTP_MAX_CONNECTIONS/.test(e.message) && /TOKENIZER_THREADS/.test(e.message));
});
