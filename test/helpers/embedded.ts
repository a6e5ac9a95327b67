// The embedded server (ROLE=all, in-process queue, the real engine and the real tiny model), in this process.

import { Writable } from 'node:stream';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import { start, type Started } from '../../src/main.js';
import { MODEL_DIR } from './procs.js';

/** Starts it; with `logs`, every log line (at LOG_LEVEL, default info then) is pushed there. */
export async function startEmbedded(env: Record<string, string> = {}, logs?: string[]): Promise<Started & { url: string }> {
  const config = loadConfig({ PORT: '0', MODEL_DIR, LOG_LEVEL: logs ? 'info' : 'silent', ...env });
  const sink = logs
    ? new Writable({
        write(chunk: Buffer, _enc, done) {
          logs.push(...chunk.toString().split('\n').filter(Boolean));
          done();
        },
      })
    : undefined;
  const s = await start(config, sink ? pino({ level: config.logLevel }, sink) : pino({ level: config.logLevel }));
  return s as Started & { url: string };
}
