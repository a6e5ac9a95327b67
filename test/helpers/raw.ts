// Raw HTTP/1.1 over a TCP socket: request targets exactly as written (fetch and supertest normalise them), and
// clients that send slowly.

import { connect, type Socket } from 'node:net';

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The body parsed as JSON, or null. */
  json: any;
}

/** Host and port of a base URL such as http://127.0.0.1:8000. */
export function addressOf(baseUrl: string): { host: string; port: number } {
  const u = new URL(baseUrl);
  return { host: u.hostname, port: Number(u.port) };
}

function parse(raw: string): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  const head = end < 0 ? raw : raw.slice(0, end);
  const [statusLine, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = end < 0 ? '' : raw.slice(end + 4);
  if (headers['transfer-encoding'] === 'chunked') {
    let out = '';
    for (;;) {
      const nl = body.indexOf('\r\n');
      const size = parseInt(body.slice(0, nl), 16);
      if (!(size > 0)) break;
      out += body.slice(nl + 2, nl + 2 + size);
      body = body.slice(nl + 2 + size + 2);
    }
    body = out;
  }
  let json: any = null;
  try {
    json = JSON.parse(body);
  } catch {
    json = null;
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body, json };
}

/**
 * Sends `method target` with the headers and body given (Connection: close) and reads the whole response.
 * HEAD responses have no body, so the reply is read up to the end of its headers.
 */
export function rawRequest(
  baseUrl: string,
  method: string,
  target: string,
  opts: { headers?: Record<string, string>; body?: string } = {},
): Promise<RawResponse> {
  const { host, port } = addressOf(baseUrl);
  const body = opts.body ?? '';
  const headers: Record<string, string> = { host: `${host}:${port}`, connection: 'close', ...(opts.headers ?? {}) };
  if (body.length > 0) headers['content-length'] = String(Buffer.byteLength(body));
  const text = `${method} ${target} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`;
  return new Promise((resolve, reject) => {
    const socket = connect(port, host, () => socket.write(text));
    let raw = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      raw += d;
      if (method === 'HEAD' && raw.includes('\r\n\r\n')) socket.destroy();
    });
    socket.on('close', () => resolve(parse(raw)));
    socket.on('error', reject);
  });
}

export interface SlowResult {
  /** What the server answered before it closed the connection ('' for nothing). */
  response: RawResponse | null;
  /** Milliseconds from connecting to the server closing the connection. */
  closedAfterMs: number;
}

/**
 * A client that connects, sends `head` (may be empty), then one byte of `drip` every `everyMs` until the server closes
 * the connection (or `giveUpMs` pass: then closedAfterMs is Infinity).
 */
export function slowClient(baseUrl: string, head: string, drip: string, everyMs: number, giveUpMs: number): Promise<SlowResult> {
  const { host, port } = addressOf(baseUrl);
  return new Promise((resolve) => {
    const t0 = performance.now();
    let raw = '';
    let i = 0;
    let timer: NodeJS.Timeout | null = null;
    const socket: Socket = connect(port, host, () => {
      if (head) socket.write(head);
      if (drip) {
        timer = setInterval(() => {
          if (!socket.destroyed && socket.writable) socket.write(drip[i++ % drip.length]);
        }, everyMs);
      }
    });
    const giveUp = setTimeout(() => {
      socket.destroy();
      finish(Infinity);
    }, giveUpMs);
    let done = false;
    const finish = (ms: number) => {
      if (done) return;
      done = true;
      if (timer) clearInterval(timer);
      clearTimeout(giveUp);
      resolve({ response: raw ? parse(raw) : null, closedAfterMs: ms });
    };
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (raw += d));
    socket.on('error', () => undefined);
    socket.on('close', () => finish(performance.now() - t0));
  });
}
