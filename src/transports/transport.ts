// One interface for the two queue transports (in-process, BullMQ + Redis). The serving layer sees an EngineClient:
// generate() admits the request (or throws EngineError 'overloaded' when the queue is full) and streams its events.

import type { EngineClient, EngineHealth } from '../engine/types.js';

/**
 * What a server holds, in both units: requests (HTTP requests admitted) and sequences (one per choice: a request with
 * n = 3 is three), each running (in a batch) or waiting (queued, or admitted to an engine without a batch slot yet).
 * A request runs as soon as one of its sequences does. The one definition behind /ready and /metrics, both transports.
 */
export interface Load {
  waitingRequests: number;
  runningRequests: number;
  waitingSequences: number;
  runningSequences: number;
}

export const NO_LOAD: Load = { waitingRequests: 0, runningRequests: 0, waitingSequences: 0, runningSequences: 0 };

/** The load inside engines (summed over workers in Redis mode), from their health. */
export function engineLoad(healths: readonly EngineHealth[]): Load {
  const sum = (pick: (h: EngineHealth) => number) => healths.reduce((a, h) => a + pick(h), 0);
  return {
    waitingRequests: sum((h) => h.waitingRequests),
    runningRequests: sum((h) => h.runningRequests),
    waitingSequences: sum((h) => h.waitingSequences),
    runningSequences: sum((h) => h.activeSequences),
  };
}

export interface TransportStatus {
  ready: boolean;
  reason?: string;
  /** Workers seen (1 for the in-process transport). */
  workers: number;
  load: Load;
  maxBatchSize: number;
  /** Engines by execution provider and precision, e.g. {"cuda/fp16": 2} (from worker heartbeats in Redis mode). */
  providers: Record<string, number>;
}

/** Counts engines by `provider/precision` for /ready. */
export function countProviders(healths: readonly EngineHealth[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const h of healths) {
    const key = `${h.provider}/${h.precision ?? 'fp32'}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

export interface Transport extends EngineClient {
  readonly kind: 'local' | 'redis';
  status(): Promise<TransportStatus>;
  close(): Promise<void>;
}
