// A thread of the tokenizer pool (tokenizer_pool.ts): the model folder's tokenizer and chat template, run off the
// API's event loop for large prompts.

import { parentPort, workerData } from 'node:worker_threads';
import { loadModelFolder } from '../engine/model_folder.js';
import { renderChat, servingModel } from './model.js';
import type { TokenizerReply, TokenizerTask } from './tokenizer_pool.js';

const port = parentPort!;
const model = loadModelFolder((workerData as { dir: string }).dir).then(servingModel);

port.on('message', async (task: TokenizerTask) => {
  try {
    const m = await model;
    if (task.op === 'encode') {
      const ids = Int32Array.from(m.encode(task.text));
      port.postMessage({ id: task.id, ids } satisfies TokenizerReply, [ids.buffer]);
      return;
    }
    let reply: TokenizerReply;
    try {
      reply = { id: task.id, text: renderChat({ ...m, chatTemplate: task.template }, task.messages) };
    } catch (err) {
      reply = { id: task.id, templateError: (err as Error).message };
    }
    port.postMessage(reply);
  } catch (err) {
    port.postMessage({ id: task.id, failed: (err as Error).message ?? String(err) } satisfies TokenizerReply);
  }
});
