// Server roles as separate processes (node + tsx on the TypeScript sources), for the Redis-mode tests.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { ROOT } from './paths.js';

export { ROOT };
export const MODEL_DIR = path.join(ROOT, 'models/tiny-llada');

export interface RoleProcess {
  proc: ChildProcess;
  logs: string[];
  /** SIGTERM (graceful) and wait for the exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
}

/** Starts `node src/main.ts` with the environment given and waits for the log line `readyMsg`. */
export async function startRole(env: Record<string, string>, readyMsg: string, timeoutMs = 180_000): Promise<RoleProcess> {
  const proc = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', MODEL_DIR, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  let buf = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${readyMsg}" within ${timeoutMs} ms:\n${logs.join('\n')}`)), timeoutMs);
    const onData = (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        logs.push(line);
        if (line.includes(`"msg":"${readyMsg}"`)) {
          clearTimeout(timer);
          resolve();
        }
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before "${readyMsg}":\n${logs.join('\n')}`));
    });
  });
  await ready;
  return {
    proc,
    logs,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      const exit = once(proc, 'exit');
      proc.kill('SIGTERM');
      const [code] = (await exit) as [number | null];
      return code;
    },
    async kill() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exit = once(proc, 'exit');
      proc.kill('SIGKILL');
      await exit;
    },
  };
}

/** The URL an API process listens on, from its "listening" log line. */
export function urlOf(p: RoleProcess): string {
  for (const l of p.logs) {
    if (l.includes('"msg":"listening"')) return (JSON.parse(l) as { url: string }).url;
  }
  throw new Error('no listening line');
}
