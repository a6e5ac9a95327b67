// Threads that tokenize and render chat templates for large prompts, so that no request blocks the API's event loop
// for long (docs/security.md: a 1 MiB prompt took 0.5 s of the main thread, eight of them froze every stream for 3 s).
// Threads start on first use (most servers never see a large prompt), take one task at a time, and a bounded number
// of tasks may wait for them; beyond that the request gets 429 like a full generation queue.

import type { Worker } from 'node:worker_threads';
import { startWorkerModule } from '../engine/worker_module.js';
import { ApiError } from './errors.js';
import type { ChatMessage } from './model.js';

export type TokenizerTask = { id: number } & (
  | { op: 'encode'; text: string }
  | { op: 'render'; template: string | null; messages: ChatMessage[] }
);

export type TokenizerReply = { id: number } & (
  | { ids: Int32Array }
  | { text: string }
  | { templateError: string }
  | { failed: string }
);

/** A rendered chat prompt, or the template's own error (the client's messages did not suit it). */
export type Rendered = { text: string } | { templateError: string };

interface Pending {
  task: TokenizerTask;
  resolve(reply: TokenizerReply): void;
  reject(err: Error): void;
}

interface Thread {
  worker: Worker;
  current: Pending | null;
}

export interface TokenizerPoolOptions {
  /** The model folder each thread loads. */
  dir: string;
  threads: number;
  /** Tasks that may wait for a free thread. */
  maxWaiting: number;
}

export class TokenizerPool {
  private readonly threads: Thread[] = [];
  private readonly waiting: Pending[] = [];
  private nextId = 0;
  private closed = false;

  constructor(private readonly opts: TokenizerPoolOptions) {}

  async encode(text: string): Promise<number[]> {
    const reply = await this.run({ id: this.nextId++, op: 'encode', text });
    if (!('ids' in reply)) throw new Error('tokenizer thread: unexpected reply');
    return Array.from(reply.ids);
  }

  /** `messages` through the chat template `template` (the model's own; null: its plain fallback). */
  async render(template: string | null, messages: ChatMessage[]): Promise<Rendered> {
    const reply = await this.run({ id: this.nextId++, op: 'render', template, messages });
    if ('text' in reply) return { text: reply.text };
    if ('templateError' in reply) return { templateError: reply.templateError };
    throw new Error('tokenizer thread: unexpected reply');
  }

  private run(task: TokenizerTask): Promise<TokenizerReply> {
    if (this.closed) return Promise.reject(ApiError.notReady('the server is shutting down'));
    const free = this.freeThread();
    if (free === null && this.waiting.length >= Math.max(1, this.opts.maxWaiting)) {
      return Promise.reject(ApiError.overloaded('The server is at capacity: too many large prompts waiting to be tokenized. Retry later.'));
    }
    return new Promise<TokenizerReply>((resolve, reject) => {
      const pending: Pending = {
        task,
        resolve: (reply) => ('failed' in reply ? reject(new Error(`tokenizer thread: ${reply.failed}`)) : resolve(reply)),
        reject,
      };
      if (free !== null) this.assign(free, pending);
      else this.waiting.push(pending);
    });
  }

  /** An idle thread, started if fewer than `threads` run; null when all are busy. */
  private freeThread(): Thread | null {
    const idle = this.threads.find((t) => t.current === null);
    if (idle) return idle;
    if (this.threads.length >= this.opts.threads) return null;
    const worker = startWorkerModule(import.meta.url, 'tokenizer_worker', { dir: this.opts.dir });
    worker.unref(); // a pool nobody closed must not keep the process alive
    const thread: Thread = { worker, current: null };
    worker.on('message', (reply: TokenizerReply) => {
      const done = thread.current;
      thread.current = null;
      done?.resolve(reply);
      this.next(thread);
    });
    const lost = (why: string) => {
      const i = this.threads.indexOf(thread);
      if (i < 0) return;
      this.threads.splice(i, 1);
      thread.current?.reject(new Error(`tokenizer thread ${why}`));
      thread.current = null;
      // The waiting tasks go to a fresh thread.
      const first = this.waiting.shift();
      if (first) {
        const next = this.freeThread();
        if (next) this.assign(next, first);
        else this.waiting.unshift(first);
      }
    };
    worker.on('error', (err) => lost(`failed: ${err.message}`));
    worker.on('exit', (code) => lost(`exited with ${code}`));
    this.threads.push(thread);
    return thread;
  }

  private assign(thread: Thread, pending: Pending): void {
    thread.current = pending;
    thread.worker.postMessage(pending.task);
  }

  private next(thread: Thread): void {
    const pending = this.waiting.shift();
    if (pending) this.assign(thread, pending);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.waiting.splice(0)) p.reject(ApiError.notReady('the server is shutting down'));
    const threads = this.threads.splice(0);
    await Promise.all(threads.map((t) => t.worker.terminate()));
    for (const t of threads) t.current?.reject(ApiError.notReady('the server is shutting down'));
  }
}
