// Request bodies of about 1 MiB (the default body limit) in every shape the API accepts, for the bounded-work tests
// (docs/security.md, bounded work on the event loop), and a client process that sends them (big_client.ts).

const MODEL = 'tiny-llada';
export const MIB = 1024 * 1024;

/** A JSON body just under 1 MiB of UTF-8: `make(fill)` with `fill` (repeats of `unit`) grown to the size. */
function nearMiB(make: (fill: string) => unknown, unit = 'word '): string {
  const base = Buffer.byteLength(JSON.stringify(make('')));
  return JSON.stringify(make(unit.repeat(Math.floor((MIB - 1024 - base) / Buffer.byteLength(unit)))));
}

export interface BigRequest {
  path: string;
  body: () => string;
}

export const BIG: Record<string, BigRequest> = {
  'completion, 1 MiB of text': { path: '/v1/completions', body: () => nearMiB((fill) => ({ model: MODEL, prompt: fill, max_tokens: 8 })) },
  'completion, 1 MiB of multi-byte text': {
    path: '/v1/completions',
    body: () => nearMiB((fill) => ({ model: MODEL, prompt: fill, max_tokens: 8 }), 'né 🐈 '),
  },
  'completion, a 1 MiB suffix': {
    path: '/v1/completions',
    body: () => nearMiB((fill) => ({ model: MODEL, prompt: 'The', suffix: fill, max_tokens: 8 })),
  },
  'completion, 16 prompts of 64 KiB': {
    path: '/v1/completions',
    body: () => JSON.stringify({ model: MODEL, prompt: Array.from({ length: 16 }, () => 'word '.repeat(13_000)), max_tokens: 8 }),
  },
  'completion, 100 000 tiny prompts': {
    path: '/v1/completions',
    body: () => JSON.stringify({ model: MODEL, prompt: Array.from({ length: 100_000 }, () => 'a'), max_tokens: 8 }),
  },
  'completion, 300 000 token ids': {
    path: '/v1/completions',
    body: () => JSON.stringify({ model: MODEL, prompt: Array.from({ length: 300_000 }, () => 7), max_tokens: 8 }),
  },
  'chat, one 1 MiB message': {
    path: '/v1/chat/completions',
    body: () => nearMiB((fill) => ({ model: MODEL, messages: [{ role: 'user', content: fill }], max_tokens: 8 })),
  },
  'chat, 30 000 messages': {
    path: '/v1/chat/completions',
    body: () =>
      JSON.stringify({
        model: MODEL,
        messages: Array.from({ length: 30_000 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: 'hi' })),
        max_tokens: 8,
      }),
  },
};
