// A small SSE reader over fetch: the raw `data:` payloads and comment lines, in order.

export interface SseResult {
  status: number;
  headers: Headers;
  /** Parsed JSON payloads (the final `[DONE]` excluded). */
  events: any[];
  /** Every `data:` payload as text, `[DONE]` included. */
  data: string[];
  comments: string[];
  /** Milliseconds from the request to each data payload. */
  times: number[];
}

export async function readSse(
  url: string,
  body: unknown,
  opts: { headers?: Record<string, string>; onEvent?: (ev: any, i: number) => boolean | void; signal?: AbortSignal } = {},
): Promise<SseResult> {
  const t0 = performance.now();
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(opts.headers ?? {}) },
    body: JSON.stringify(body),
    signal: opts.signal,
  });
  const out: SseResult = { status: res.status, headers: res.headers, events: [], data: [], comments: [], times: [] };
  if (!res.body) return out;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of frame.split('\n')) {
        if (line.startsWith(':')) out.comments.push(line.slice(1).trim());
        else if (line.startsWith('data: ')) {
          const payload = line.slice(6);
          out.data.push(payload);
          out.times.push(performance.now() - t0);
          if (payload !== '[DONE]') {
            const ev = JSON.parse(payload);
            out.events.push(ev);
            if (opts.onEvent?.(ev, out.events.length - 1) === true) {
              await reader.cancel();
              return out;
            }
          }
        }
      }
    }
  }
  return out;
}
