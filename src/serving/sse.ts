// Server-sent events, OpenAI framing (docs/design.md §5): `data: <json>\n\n`, `: ping` comments to keep the connection
// alive, an error after the stream has begun as one `data: {"error": ...}` chunk, and `data: [DONE]` last, always.

import type { ServerResponse } from 'node:http';
import { ApiError, fromEngineError } from './errors.js';

export interface SseOptions {
  keepAliveMs: number;
  headers: Record<string, string>;
  onError?: (err: unknown) => void;
}

function writeRaw(raw: ServerResponse, text: string): Promise<void> | void {
  if (raw.destroyed || raw.writableEnded) return;
  if (!raw.write(text)) {
    return new Promise((resolve) => {
      const done = () => {
        raw.off('drain', done);
        raw.off('close', done);
        resolve();
      };
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
  const ping = setInterval(() => void writeRaw(raw, ': ping\n\n'), opts.keepAliveMs);
  try {
    await writeRaw(raw, `data: ${JSON.stringify(first)}\n\n`);
    for (;;) {
      const next = await chunks.next();
      if (next.done) break;
      await writeRaw(raw, `data: ${JSON.stringify(next.value)}\n\n`);
    }
  } catch (err) {
    opts.onError?.(err);
    const api = err instanceof ApiError ? err : fromEngineError(err);
    await writeRaw(raw, `data: ${JSON.stringify(api.body())}\n\n`);
  } finally {
    clearInterval(ping);
    await writeRaw(raw, 'data: [DONE]\n\n');
    if (!raw.destroyed && !raw.writableEnded) raw.end();
  }
}
