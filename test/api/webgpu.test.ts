// The README's examples against a server on the WebGPU provider (EXECUTION_PROVIDER=webgpu, caches on the device)
// and one on the CPU provider, through the official openai client: the same text for each model folder, in every
// cache mode, each request alone and all of them at once. Here WebGPU runs on Mesa's lavapipe (scripts/test.sh).

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { startEmbedded } from '../helpers/embedded.js';
import { ROOT } from '../helpers/procs.js';

type Started = Awaited<ReturnType<typeof startEmbedded>>;

interface Example {
  name: string;
  /** Infill: block diffusion models decode left to right and refuse a suffix. */
  infill?: boolean;
  run: (client: OpenAI, model: string, cache: string) => Promise<string>;
}

// The README's examples (greedy: the folders' default temperature is 0), with a cache mode added. The extension
// fields ride in the body as the README shows; a body built apart is not checked for excess properties.
const complete = async (c: OpenAI, body: { model: string; prompt: string } & Record<string, unknown>) => {
  const params: OpenAI.CompletionCreateParamsNonStreaming = body;
  return (await c.completions.create(params)).choices[0].text;
};

const EXAMPLES: Example[] = [
  { name: 'completion', run: (c, model, cache) => complete(c, { model, prompt: 'Once upon a time', max_tokens: 32, cache }) },
  { name: 'infill', infill: true, run: (c, model, cache) => complete(c, { model, prompt: 'The cat', suffix: ' on the mat.', max_tokens: 16, cache }) },
  { name: 'ignore_eos', run: (c, model, cache) => complete(c, { model, prompt: 'Once upon a time', max_tokens: 32, ignore_eos: true, cache }) },
  {
    name: 'chat stream',
    run: async (c, model, cache) => {
      const body = { model, messages: [{ role: 'user' as const, content: 'Tell me a story' }], max_tokens: 24, stream: true as const, cache };
      let text = '';
      for await (const chunk of await c.chat.completions.create(body)) text += chunk.choices[0]?.delta?.content ?? '';
      return text;
    },
  },
];

for (const [folder, caches] of [
  ['tiny-dream', ['none', 'prefix', 'dual']],
  ['tiny-llada', ['none', 'prefix', 'dual']],
  ['tiny-bd3', ['none', 'prefix']],
] as const) {
  describe(`${folder}: WebGPU answers as the CPU does`, () => {
    let cpu: Started;
    let gpu: Started;
    const client = (s: Started) => new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 300_000 });
    before(async () => {
      const env = { MODEL_DIR: path.join(ROOT, 'models', folder), ORT_THREADS: '1', MAX_QUEUE: '256', REQUEST_TIMEOUT_MS: '600000' };
      cpu = await startEmbedded({ ...env, EXECUTION_PROVIDER: 'cpu' });
      gpu = await startEmbedded({ ...env, EXECUTION_PROVIDER: 'webgpu' });
    });
    after(async () => {
      await cpu?.stop();
      await gpu?.stop();
    });

    const examples = EXAMPLES.filter((e) => folder !== 'tiny-bd3' || !e.infill); // block diffusion has no infill
    const all = caches.flatMap((cache) => examples.map((example) => ({ cache, example })));

    test('each example alone, in every cache mode', async () => {
      for (const { cache, example } of all) {
        const expected = await example.run(client(cpu), folder, cache);
        assert.ok(expected.length > 0);
        assert.equal(await example.run(client(gpu), folder, cache), expected, `${example.name}, cache ${cache}`);
      }
    });

    test('all of them at once (batched on the device), then no device tensor is left', async () => {
      const expected = await Promise.all(all.map(({ cache, example }) => example.run(client(cpu), folder, cache)));
      const got = await Promise.all(all.map(({ cache, example }) => example.run(client(gpu), folder, cache)));
      all.forEach(({ cache, example }, i) => assert.equal(got[i], expected[i], `${example.name}, cache ${cache}`));
      const metrics = async () => (await fetch(`${gpu.url}/metrics`)).text();
      let text = await metrics();
      for (let i = 0; i < 100 && !/^dllm_device_tensors 0$/m.test(text); i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        text = await metrics();
      }
      assert.match(text, /^dllm_device_tensors 0$/m);
      assert.match(text, /^dllm_device_transfer_bytes_total\{direction="host_to_device",tensor="past_kv"\} 0$/m);
      assert.match(text, /^dllm_device_transfer_bytes_total\{direction="device_to_host",tensor="topk_logits"\} [1-9]\d*$/m);
    });
  });
}
