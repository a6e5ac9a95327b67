// A client process for the bounded-work tests: builds the big bodies once, then on each line of stdin (a JSON list of
// names from big_bodies.ts) sends those requests in parallel and prints one JSON line of results. It runs apart from
// the test process so that its own work (encoding and sending megabytes) does not blur what the test measures.

import { request } from 'node:http';
import { createInterface } from 'node:readline';
import { BIG } from './big_bodies.js';

const base = new URL(process.argv[2]);
const bodies = new Map(Object.entries(BIG).map(([name, r]) => [name, { path: r.path, body: Buffer.from(r.body()) }]));

function send(name: string): Promise<{ name: string; status: number; bytes: number; body: unknown; ms: number }> {
  const { path, body } = bodies.get(name)!;
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      { host: base.hostname, port: base.port, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ name, status: res.statusCode ?? 0, bytes: body.length, body: JSON.parse(text), ms: performance.now() - t0 }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

createInterface({ input: process.stdin }).on('line', async (line) => {
  const results = await Promise.all((JSON.parse(line) as string[]).map(send));
  process.stdout.write(`${JSON.stringify(results)}\n`);
});
process.stdout.write('ready\n');
