// The embedded server (ROLE=all, in-process queue, the real engine and the real tiny model), in this process.

import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import { start, type Started } from '../../src/main.js';
import { MODEL_DIR } from './procs.js';

export async function startEmbedded(env: Record<string, string> = {}): Promise<Started & { url: string }> {
  const config = loadConfig({ PORT: '0', MODEL_DIR, LOG_LEVEL: 'silent', ...env });
  const s = await start(config, pino({ level: config.logLevel }));
  return s as Started & { url: string };
}
