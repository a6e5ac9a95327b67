// One interface for the two queue transports (in-process, BullMQ + Redis). The serving layer sees an EngineClient:
// generate() admits the request (or throws EngineError 'overloaded' when the queue is full) and streams its events.

import type { EngineClient } from '../engine/types.js';

export interface TransportStatus {
  ready: boolean;
  reason?: string;
  /** Workers seen (1 for the in-process transport). */
  workers: number;
  activeSequences: number;
  queued: number;
  maxBatchSize: number;
}

export interface Transport extends EngineClient {
  readonly kind: 'local' | 'redis';
  status(): Promise<TransportStatus>;
  close(): Promise<void>;
}
