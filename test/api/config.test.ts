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
