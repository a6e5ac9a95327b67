// Redis key names shared by the API side (RedisTransport) and the worker side (QueueWorker), and the wire format
// of the per-request event stream.

import type { EngineErrorCode, EngineEvent } from '../engine/types.js';

export function keys(queueName: string) {
  const p = `dllm:${queueName}`;
  return {
    /** Per-request Redis Stream of events (XADD MAXLEN + EXPIRE by the worker; XREAD BLOCK by the API). */
    events: (id: string) => `${p}:ev:${id}`,
    /** Set by the API when its client is gone; the worker deletes it when it has stopped the job. */
    cancel: (id: string) => `${p}:cancel:${id}`,
    /** Pub/sub channel carrying ids to cancel. */
    cancelChannel: `${p}:cancel`,
    /** Sorted set: worker id → last heartbeat (ms). */
    workers: `${p}:workers`,
    /** Hash: worker id → JSON EngineHealth. */
    workerHealth: `${p}:workers:health`,
  };
}

/** Events on the wire: the engine's events plus the worker's own markers. */
export type WireEvent =
  | EngineEvent
  | { type: 'attempt'; worker: string }
  | { type: 'error'; code: EngineErrorCode; message: string; param: string | null };

export const HEARTBEAT_MS = 500;
export const WORKER_STALE_MS = 3000;
