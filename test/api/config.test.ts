import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, ENV, loadConfig } from '../../src/config.js';

test('defaults: the embedded mode on the tiny model', () => {
  const c = loadConfig({});
  assert.equal(c.role, 'all');
  assert.equal(c.redisUrl, null);
  assert.equal(c.modelDir, 'models/tiny-llada');
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

test('the README documents every variable', async () => {
  const { readFile } = await import('node:fs/promises');
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
  for (const name of Object.keys(ENV)) assert.ok(readme.includes(`\`${name}\``), `${name} missing from README.md`);
});

test('HTTP timeouts: defaults (30 s to receive a request, 10 s for its headers); headers longer than the request refused', () => {
  const c = loadConfig({});
  assert.equal(c.httpRequestTimeoutMs, 30_000);
  assert.equal(c.httpHeadersTimeoutMs, 10_000);
  assert.equal(c.httpMaxConnections, 1024);
  assert.throws(() => loadConfig({ HTTP_REQUEST_TIMEOUT_MS: '5000', HTTP_HEADERS_TIMEOUT_MS: '6000' }), /HTTP_HEADERS_TIMEOUT_MS.*HTTP_REQUEST_TIMEOUT_MS/);
  assert.throws(() => loadConfig({ HTTP_MAX_CONNECTIONS: '0', TOKENIZER_THREADS: '0' }), (e: Error) => /HTTP_MAX_CONNECTIONS/.test(e.message) && /TOKENIZER_THREADS/.test(e.message));
});
