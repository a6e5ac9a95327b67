// One interface for the two queue transports (in-process, BullMQ + Redis). The serving layer sees an EngineClient:
// generate() admits the request (or throws EngineError 'overloaded' when the queue is full) and streams its events.

import type { EngineClient, EngineHealth } from '../engine/types.js';

export interface TransportStatus {
  ready: boolean;
  reason?: string;
  /** Workers seen (1 for the in-process transport). */
  workers: number;
  activeSequences: number;
  queued: number;
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
