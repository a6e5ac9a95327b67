// A request that runs many denoising steps on the model at hand. A trained model ends most texts early (end-of-text
// committed with everything before it), so tests that need a generation still running (disconnect, full queue,
// worker crash, shutdown) probe a few seeded candidates and keep one that runs long enough. Seeded requests give the
// same steps every time (batching never changes a result), so the probe's answer holds for the test.

import { readSse } from './sse.js';

const PROMPTS = ['The cat sat on the', 'Once upon a time', 'She opened the door and', 'In the morning the'];

export interface LongRequest {
  body: Record<string, unknown>;
  steps: number;
}

const cache = new Map<string, LongRequest>();

export async function findLongRequest(baseUrl: string, minSteps = 24, cacheKey = 'default'): Promise<LongRequest> {
  const key = `${cacheKey}:${minSteps}`;
  const hit = cache.get(key);
  if (hit) return hit;
  let best: LongRequest | null = null;
  for (let i = 0; i < 48; i++) {
    const body = {
      model: 'tiny-llada',
      prompt: PROMPTS[i % PROMPTS.length],
      max_tokens: 64,
      steps: 64,
      remasking: i % 2 === 0 ? 'random' : 'low_confidence',
      temperature: [2, 1.5, 1][i % 3],
      seed: 1000 + i,
      ...(i % 4 === 3 ? { suffix: ' and that was the end of it.' } : {}),
    };
    const raw = await readSse(`${baseUrl}/v1/completions`, { ...body, stream: true });
    const steps = raw.events.filter((e) => e.choices?.[0]?.diffusion).length;
    if (!best || steps > best.steps) best = { body, steps };
    if (steps >= minSteps) {
      cache.set(key, best);
      return best;
    }
  }
  throw new Error(`no candidate request ran ${minSteps} steps (best: ${best?.steps} steps, ${JSON.stringify(best?.body)})`);
}
