// Server-sent events, OpenAI framing (docs/design.md §5): `data: <json>\n\n`, `: ping` comments to keep the connection
// alive, an error after the stream has begun as one `data: {"error": ...}` chunk, and `data: [DONE]` last, always.

import type { ServerResponse } from 'node:http';
import { ApiError, fromEngineError } from './errors.js';

export interface SseOptions {
  keepAliveMs: number;
  /** How long a write may wait for the client to take what is buffered before the connection is closed. */
  sendTimeoutMs: number;
  headers: Record<string, string>;
  onError?: (err: unknown) => void;
}

/**
 * Writes `text`; when the socket's buffers are full, waits for the client to take them, at most `sendTimeoutMs`, then
 * closes the connection (nginx's send_timeout): a client that stops reading would otherwise hold the socket, and the
 * events queued behind it, for ever.
 */
function writeRaw(raw: ServerResponse, text: string, sendTimeoutMs: number): Promise<void> | void {
  if (raw.destroyed || raw.writableEnded) return;
  if (!raw.write(text)) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(stalled);
        raw.off('drain', done);
        raw.off('close', done);
        resolve();
      };
      const stalled = setTimeout(() => raw.destroy(), sendTimeoutMs);
      raw.on('drain', done);
      raw.on('close', done);
    });
  }
}

/**
 * Sends `first` (already pulled, so that errors before it became plain HTTP errors) and then the rest of `chunks`.
 * The caller has taken the response over from the framework (reply.hijack()).
 */
export async function pipeSse(
  raw: ServerResponse,
  first: object,
  chunks: AsyncIterator<object>,
  opts: SseOptions,
): Promise<void> {
  raw.writeHead(200, {
    ...opts.headers,
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  raw.flushHeaders();
  const write = (text: string) => writeRaw(raw, text, opts.sendTimeoutMs);
  const ping = setInterval(() => void write(': ping\n\n'), opts.keepAliveMs);
  try {
    await write(`data: ${JSON.stringify(first)}\n\n`);
    for (;;) {
      // The client is gone (it left, or took nothing for sendTimeoutMs): stop the chunks rather than drain them.
      if (raw.destroyed) {
        await chunks.return?.(undefined);
        break;
      }
      const next = await chunks.next();
      if (next.done) break;
      await write(`data: ${JSON.stringify(next.value)}\n\n`);
    }
  } catch (err) {
    opts.onError?.(err);
    const api = err instanceof ApiError ? err : fromEngineError(err);
    await write(`data: ${JSON.stringify(api.body())}\n\n`);
  } finally {
    clearInterval(ping);
    await write('data: [DONE]\n\n');
    if (!raw.destroyed && !raw.writableEnded) raw.end();
  }
}
