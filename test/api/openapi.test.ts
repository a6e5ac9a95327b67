// The committed OpenAPI document must match what the routes' schemas generate (`npm run openapi` rewrites it).

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { openapiDocument } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { loadModelFolder } from '../../src/engine/model_folder.js';
import { servingModel } from '../../src/serving/model.js';
import { MODEL_DIR, ROOT } from '../helpers/procs.js';

test('openapi/openapi.json is up to date (run `npm run openapi` after changing a route or schema)', async () => {
  const config = loadConfig({ MODEL_DIR });
  const generated = await openapiDocument(config, servingModel(await loadModelFolder(MODEL_DIR)));
  const committed = JSON.parse(await readFile(path.join(ROOT, 'openapi/openapi.json'), 'utf8'));
  assert.deepEqual(JSON.parse(JSON.stringify(generated)), committed);
});

test('every route documents its request and every response status', async () => {
  const doc = JSON.parse(await readFile(path.join(ROOT, 'openapi/openapi.json'), 'utf8'));
  for (const p of ['/v1/completions', '/v1/chat/completions']) {
    const op = doc.paths[p].post;
    assert.ok(op.requestBody.content['application/json'].schema);
    for (const status of ['200', '400', '401', '404', '413', '429', '503']) assert.ok(op.responses[status], `${p} ${status}`);
  }
  for (const p of ['/v1/models', '/health', '/ready', '/metrics']) assert.ok(doc.paths[p].get.responses['200'], p);
  for (const name of ['ErrorResponse', 'DiffusionStep', 'CompletionChunk', 'ChatCompletionChunk']) assert.ok(doc.components.schemas[name], name);
});

test('the fields clients and benchmarks rely on are documented: ignore_eos, min_tokens, token-id prompts, provisional tokens', async () => {
  const doc = JSON.parse(await readFile(path.join(ROOT, 'openapi/openapi.json'), 'utf8'));
  for (const p of ['/v1/completions', '/v1/chat/completions']) {
    const props = doc.paths[p].post.requestBody.content['application/json'].schema.properties;
    assert.match(props.ignore_eos.description, /every one of the max_tokens positions/, p);
    assert.equal(props.min_tokens.type, 'integer', p);
    assert.match(props.min_tokens.description, /end-of-text/, p);
    assert.equal(props.temperature.anyOf[0].maximum, 100, `${p}: the engine's limit`);
  }
  const prompt = doc.paths['/v1/completions'].post.requestBody.content['application/json'].schema.properties.prompt;
  assert.match(prompt.description, /token ids are used verbatim, no BOS added/);
  const provisional = doc.components.schemas.DiffusionStep.properties.provisional;
  assert.deepEqual(Object.keys(provisional.items.properties), ['position', 'token_id', 'text']);
  assert.match(provisional.description, /Provisional: not committed/);
});
