// docs/security.md: API keys and the rate limit are decided by the route that matched, not by the text of the request
// target. Every form of a request target we could think of, sent byte for byte over a socket, against servers with
// API_KEYS: without a key each one is refused (401, or 400 when the target cannot be decoded), and each refusal counts
// toward the client address's rate limit. The real server, engine and model; no mocks.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startEmbedded } from '../helpers/embedded.js';
import { rawRequest, type RawResponse } from '../helpers/raw.js';
import type { Started } from '../../src/main.js';

const KEY = 'key-one';
const OTHER_KEY = 'key-two';
const COMPLETION = JSON.stringify({ model: 'tiny-llada', prompt: 'Hi', max_tokens: 4, steps: 4 });
const CHAT = JSON.stringify({ model: 'tiny-llada', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, steps: 4 });

interface Form {
  method: string;
  target: string;
  body?: string;
  /** What the same request gets with a valid key: 200 shows that the form does reach the route. */
  withKey: number;
}

/** Request targets that reach a protected route, or no route: all need a key. */
const FORMS: Form[] = [
  { method: 'POST', target: '/v1/completions', body: COMPLETION, withKey: 200 },
  // The issue's three forms: the router decodes %xx, and takes the path of an absolute-form target.
  { method: 'POST', target: '/v%31/completions', body: COMPLETION, withKey: 200 },
  { method: 'POST', target: '/%761/chat/completions', body: CHAT, withKey: 200 },
  { method: 'GET', target: 'http://anything/v1/models', withKey: 200 },
  // More encodings of the same routes.
  { method: 'POST', target: '/%76%31/%63%6f%6d%70%6c%65%74%69%6f%6e%73', body: COMPLETION, withKey: 200 },
  { method: 'POST', target: '/v1/chat/%63ompletions', body: CHAT, withKey: 200 },
  { method: 'POST', target: 'HTTP://127.0.0.1:1/v1/completions', body: COMPLETION, withKey: 200 },
  { method: 'GET', target: 'http://anything/v%31/models?x=1', withKey: 200 },
  { method: 'GET', target: '/v1/models?api_key=key-one', withKey: 200 },
  { method: 'GET', target: '/v1/models/tiny-llada', withKey: 200 },
  { method: 'GET', target: '/v1/models/%74iny-llada', withKey: 200 },
  { method: 'GET', target: '/%6detrics', withKey: 200 },
  { method: 'GET', target: '/metrics', withKey: 200 },
  { method: 'HEAD', target: '/v1/models', withKey: 200 },
  { method: 'HEAD', target: '/v%31/models', withKey: 200 },
  // Slashes, case, dots, parameters, encoded slashes, traversal: no route matches (404 with a key), still 401.
  { method: 'GET', target: '//v1/models', withKey: 404 },
  { method: 'GET', target: '/v1//models', withKey: 404 },
  { method: 'GET', target: '/V1/models', withKey: 404 },
  { method: 'GET', target: '/v1/MODELS', withKey: 404 },
  { method: 'GET', target: '/v1/models.', withKey: 404 },
  { method: 'GET', target: '/v1/models/', withKey: 404 },
  { method: 'GET', target: '/v1/models;x=1', withKey: 404 },
  { method: 'GET', target: '/v1;x=1/models', withKey: 404 },
  { method: 'GET', target: '/v1%2Fmodels', withKey: 404 },
  { method: 'GET', target: '/v1%2fmodels', withKey: 404 },
  { method: 'GET', target: '/./v1/models', withKey: 404 },
  { method: 'GET', target: '/x/../v1/models', withKey: 404 },
  { method: 'GET', target: '/health/../v1/models', withKey: 404 },
  { method: 'GET', target: '/health%2F..%2Fv1/models', withKey: 404 },
  { method: 'GET', target: '/v1/models%00', withKey: 404 },
  { method: 'GET', target: '/v1/models%20', withKey: 404 },
  { method: 'GET', target: '/v1/models/tiny-llada%2F..%2F..', withKey: 404 },
  { method: 'GET', target: '/nope', withKey: 404 },
  // Other methods: no route (Fastify has no OPTIONS routes here), still protected.
  { method: 'OPTIONS', target: '/v1/models', withKey: 404 },
  { method: 'OPTIONS', target: '*', withKey: 404 },
  { method: 'GET', target: '/v1/completions', withKey: 404 },
  { method: 'DELETE', target: '/v1/models', withKey: 404 },
  { method: 'PUT', target: '/v1/completions', body: COMPLETION, withKey: 404 },
];

/** Targets the router cannot decode: a plain 400 with the OpenAI error object, whatever the key. */
const UNDECODABLE = ['/v1/%E0%A4%A', '/v1/models/%', '/%zz/models'];

/**
 * Targets that match a public route (Swagger UI's static files, `/docs/static/*`, served by @fastify/static): no key is
 * asked, and the static file server never leaves its folder, so they reach nothing of the API. What each gets:
 * - `..` segments, plain or as `%2e%2e` (decoded before the check): a path out of the folder, refused as such,
 *   403 Forbidden (@fastify/static's guard against dot-dot segments), which the error handler gives the OpenAI shape;
 * - `..%2F..%2F`: an encoded slash is no separator for the file server, so this is one file name inside the folder,
 *   `..%2F..%2Fv1`, which does not exist: 404 from the not-found handler (@fastify/static calls it).
 */
const INTO_PUBLIC: { target: string; status: 403 | 404; code: string }[] = [
  { target: '/docs/static/../../v1/models', status: 403, code: 'invalid_request' },
  { target: '/docs/static/%2e%2e/%2e%2e/v1/models', status: 403, code: 'invalid_request' },
  { target: '/docs/static/..%2F..%2Fv1/models', status: 404, code: 'not_found' },
];

/** Public routes: no key needed (README "Security", docs/security.md). */
const PUBLIC: [string, string][] = [
  ['GET', '/health'],
  ['HEAD', '/health'],
  ['GET', '/ready'],
  ['GET', '/docs/json'],
  ['GET', '/docs/static/swagger-ui.css'],
  ['GET', '/'],
  ['GET', '/playground.js'],
  ['GET', '/playground.css'],
];

const JSON_HEADERS = { 'content-type': 'application/json' };

function send(url: string, f: { method: string; target: string; body?: string }, headers: Record<string, string> = {}): Promise<RawResponse> {
  return rawRequest(url, f.method, f.target, { headers: { ...(f.body ? JSON_HEADERS : {}), ...headers }, body: f.body });
}

function assertOpenAIError(r: RawResponse, status: number, type: string, what: string) {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.body.slice(0, 200)}`);
  assert.equal(r.json?.error?.type, type, `${what}: ${r.body.slice(0, 200)}`);
  assert.equal(typeof r.json.error.message, 'string');
}

describe('API keys: every request target form (rate limit high enough not to interfere)', () => {
  let s: Started & { url: string };
  before(async () => {
    s = await startEmbedded({ API_KEYS: `${KEY},${OTHER_KEY}`, RATE_LIMIT_PER_MINUTE: '100000' });
  });
  after(async () => {
    await s.stop();
  });

  test('without a key: 401 with the OpenAI error object for every form', async () => {
    for (const f of FORMS) {
      const r = await send(s.url, f);
      const what = `${f.method} ${f.target}`;
      assert.equal(r.status, 401, `${what}: ${r.status} ${r.body.slice(0, 200)}`);
      if (f.method !== 'HEAD') assertOpenAIError(r, 401, 'authentication_error', what);
    }
  });

  test('with a valid key the same forms reach their route (or none): the check is by the route that matched', async () => {
    for (const f of FORMS) {
      const r = await send(s.url, f, { authorization: `Bearer ${KEY}` });
      assert.equal(r.status, f.withKey, `${f.method} ${f.target}: ${r.body.slice(0, 200)}`);
      if (f.withKey === 404 && f.method !== 'HEAD') assertOpenAIError(r, 404, 'invalid_request_error', `${f.method} ${f.target}`);
    }
  });

  test('targets the router cannot decode: 400 with the OpenAI error object, key or not', async () => {
    for (const target of UNDECODABLE) {
      for (const headers of [{}, { authorization: `Bearer ${KEY}` }] as Record<string, string>[]) {
        assertOpenAIError(await send(s.url, { method: 'GET', target }, headers), 400, 'invalid_request_error', target);
      }
    }
  });

  test('targets that fall into a public static route reach nothing of the API: 403 out of its folder, 404 inside it', async () => {
    for (const { target, status, code } of INTO_PUBLIC) {
      for (const headers of [{}, { authorization: `Bearer ${KEY}` }] as Record<string, string>[]) {
        const r = await send(s.url, { method: 'GET', target }, headers);
        const what = `${target} ${headers.authorization ? 'with' : 'without'} a key`;
        assertOpenAIError(r, status, 'invalid_request_error', what);
        assert.equal(r.json.error.code, code, what);
      }
    }
  });

  test('Authorization header forms: only "Bearer <key>" (scheme in any case) authenticates', async () => {
    const models = { method: 'GET', target: '/v1/models' };
    const refused = ['Bearer', 'Bearer ', 'Bearer wrong', `Bearer ${KEY}x`, `Bearer ${KEY.slice(0, -1)}`, `Bearer${KEY}`, `Basic ${Buffer.from(KEY).toString('base64')}`, KEY, `Token ${KEY}`];
    for (const authorization of refused) assertOpenAIError(await send(s.url, models, { authorization }), 401, 'authentication_error', authorization);
    for (const headers of [{ 'x-api-key': KEY }, { cookie: `api_key=${KEY}` }] as Record<string, string>[]) {
      assertOpenAIError(await send(s.url, models, headers), 401, 'authentication_error', JSON.stringify(headers));
    }
    assertOpenAIError(await send(s.url, { method: 'GET', target: `/v1/models?api_key=${KEY}` }), 401, 'authentication_error', 'key in the query');
    for (const authorization of [`Bearer ${KEY}`, `bearer ${KEY}`, `BEARER ${OTHER_KEY}`, `Bearer ${KEY} `]) {
      assert.equal((await send(s.url, models, { authorization })).status, 200, authorization);
    }
  });

  test('requests the HTTP parser refuses get the OpenAI error object too', async () => {
    const { connect } = await import('node:net');
    const raw = (text: string) =>
      new Promise<string>((resolve) => {
        const { hostname, port } = new URL(s.url);
        const c = connect(Number(port), hostname, () => c.write(text));
        let d = '';
        c.on('data', (x) => (d += x));
        c.on('close', () => resolve(d));
        c.on('error', () => resolve(d));
      });
    const cases: [string, number][] = [
      ['GARBAGE\r\n\r\n', 400],
      [`GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
    ];
    for (const [text, status] of cases) {
      const reply = await raw(text);
      assert.match(reply, new RegExp(`^HTTP/1.1 ${status} `), reply.slice(0, 100));
      const body = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4));
      assert.equal(typeof body.error.message, 'string');
      assert.equal(body.error.type, 'invalid_request_error');
    }
  });

  test('public routes need no key', async () => {
    for (const [method, target] of PUBLIC) {
      const r = await send(s.url, { method, target });
      assert.equal(r.status, 200, `${method} ${target}: ${r.body.slice(0, 200)}`);
    }
  });
});

describe('wrong keys and invalid bodies count toward the limit', () => {
  const LIMIT = 4;
  let s: Started & { url: string };
  before(async () => {
    // Each test speaks for its own client address (X-Forwarded-For from the loopback proxy), so budgets are separate.
    s = await startEmbedded({ API_KEYS: `${KEY},${OTHER_KEY}`, RATE_LIMIT_PER_MINUTE: String(LIMIT), TRUST_PROXY: 'loopback' });
  });
  after(async () => {
    await s.stop();
  });
  const from = (address: string, headers: Record<string, string> = {}) => ({ 'x-forwarded-for': address, ...headers });

  test('bypass forms and wrong keys: 401 until the address has spent its budget, then 429 even for a valid key', async () => {
    const address = '203.0.113.10';
    const tries = [FORMS[1], FORMS[2], FORMS[3], { method: 'GET', target: '/v1/models' }];
    const statuses: number[] = [];
    for (const [i, f] of tries.entries()) statuses.push((await send(s.url, f, from(address, i === 3 ? { authorization: 'Bearer guess' } : {}))).status);
    assert.deepEqual(statuses, [401, 401, 401, 401]);
    const limited = await send(s.url, { method: 'GET', target: '/v1/models' }, from(address, { authorization: 'Bearer guess-5' }));
    assertOpenAIError(limited, 429, 'rate_limit_error', 'the fifth wrong key');
    assert.equal(limited.json.error.code, 'rate_limit_exceeded');
    assert.ok(Number(limited.headers['retry-after']) >= 1, 'Retry-After');
    // The right key from the same address is not even looked at: guessing cannot go on at full speed.
    const right = await send(s.url, { method: 'GET', target: '/v1/models' }, from(address, { authorization: `Bearer ${KEY}` }));
    assert.equal(right.status, 429);
    // Other addresses are unaffected.
    assert.equal((await send(s.url, { method: 'GET', target: '/v1/models' }, from('203.0.113.11', { authorization: `Bearer ${KEY}` }))).status, 200);
  });

  test('invalid bodies count toward their key: 400 until the budget is spent, then 429; other keys unaffected', async () => {
    const headers = from('203.0.113.20', { authorization: `Bearer ${OTHER_KEY}` });
    const bad = [
      '{"model": "tiny-llada", "prompt": ',
      JSON.stringify({ model: 'tiny-llada', prompt: 5 }),
      JSON.stringify({ model: 'tiny-llada', prompt: 'x', no_such_field: 1 }),
      JSON.stringify({ model: 'tiny-llada', prompt: 'x', max_tokens: -1 }),
    ];
    for (const body of bad) assertOpenAIError(await send(s.url, { method: 'POST', target: '/v1/completions', body }, headers), 400, 'invalid_request_error', body);
    const after = await send(s.url, { method: 'POST', target: '/v1/completions', body: COMPLETION }, headers);
    assertOpenAIError(after, 429, 'rate_limit_error', 'a valid request after four invalid ones');
    const other = await send(s.url, { method: 'POST', target: '/v1/completions', body: COMPLETION }, from('203.0.113.20', { authorization: `Bearer ${KEY}` }));
    assert.equal(other.status, 200, other.body);
  });
});

describe('without API keys the rate limit counts every request of an address, invalid ones included', () => {
  test('invalid bodies, unknown routes and bypass forms count; public routes do not', async () => {
    const s = await startEmbedded({ RATE_LIMIT_PER_MINUTE: '3' });
    try {
      for (let i = 0; i < 5; i++) assert.equal((await send(s.url, { method: 'GET', target: '/health' })).status, 200);
      const statuses = [
        (await send(s.url, { method: 'POST', target: '/v1/completions', body: '{' })).status,
        (await send(s.url, { method: 'GET', target: '/nope' })).status,
        (await send(s.url, { method: 'GET', target: '/v%31/models' })).status,
        (await send(s.url, { method: 'GET', target: 'http://x/v1/models' })).status,
      ];
      assert.deepEqual(statuses, [400, 404, 200, 429]);
    } finally {
      await s.stop();
    }
  });
});

describe('logs', () => {
  test('a key in the query string never reaches the logs; client-chosen field names are bounded', async () => {
    const logs: string[] = [];
    const s = await startEmbedded({ API_KEYS: KEY }, logs);
    try {
      const secret = 'sk-SECRET-in-the-query-1234';
      await send(s.url, { method: 'GET', target: `/v1/models?api_key=${secret}` });
      await send(s.url, { method: 'GET', target: `/v%31/models?api_key=${secret}&x=1` }, { authorization: `Bearer ${KEY}` });
      await send(s.url, { method: 'GET', target: `/nope?key=${secret}` }, { authorization: `Bearer ${KEY}` });
      const name = `field_${'x'.repeat(20_000)}`;
      const r = await send(
        s.url,
        { method: 'POST', target: '/v1/completions', body: JSON.stringify({ model: 'tiny-llada', prompt: 'x', [name]: 1 }) },
        { authorization: `Bearer ${KEY}` },
      );
      assertOpenAIError(r, 400, 'invalid_request_error', 'unknown field');
      assert.equal(r.json.error.code, 'unknown_parameter');
      assert.ok(r.json.error.param.startsWith('field_x') && r.json.error.param.length <= 129, 'the name is echoed, clipped');
      assert.ok(r.body.length < 1000, `error body of ${r.body.length} bytes`);
      const longModel = await send(
        s.url,
        { method: 'POST', target: '/v1/completions', body: JSON.stringify({ model: 'm'.repeat(50_000), prompt: 'x' }) },
        { authorization: `Bearer ${KEY}` },
      );
      assertOpenAIError(longModel, 404, 'invalid_request_error', 'unknown model');
      assert.ok(longModel.body.length < 1000);
      assert.ok(logs.some((l) => l.includes('"incoming request"')), 'requests were logged');
      for (const line of logs) {
        assert.ok(!line.includes(secret), `log line holds the key: ${line.slice(0, 300)}`);
        assert.ok(line.length < 2000, `log line of ${line.length} characters: ${line.slice(0, 300)}`);
      }
    } finally {
      await s.stop();
    }
  });
});
