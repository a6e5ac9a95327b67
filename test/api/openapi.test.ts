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
