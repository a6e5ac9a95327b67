// In-process transport: the engine runs in this process; a bounded admission counter gives the queue limit.

import { EngineError, type EngineClient, type EngineEvent, type GenerateRequest, type EngineHealth } from '../engine/types.js';
import { countProviders, engineLoad, NO_LOAD, type Transport, type TransportStatus } from './transport.js';

export class LocalTransport implements Transport {
  readonly kind = 'local' as const;
  private inFlight = 0;
  private closed = false;

  constructor(
    private readonly engine: EngineClient,
    private readonly maxBatchSize: number,
    private readonly maxQueue: number,
  ) {}

  async *generate(request: GenerateRequest): AsyncGenerator<EngineEvent> {
    if (this.closed) throw new EngineError('overloaded', 'server is shutting down');
    if (this.inFlight >= this.maxBatchSize + this.maxQueue) {
      throw new EngineError('overloaded', `queue full: ${this.inFlight} requests in flight`);
    }
    this.inFlight++;
    try {
      yield* this.engine.generate(request);
    } finally {
      this.inFlight--;
    }
  }

  abort(id: string): void {
    this.engine.abort(id);
  }

  health(): Promise<EngineHealth> {
    return this.engine.health();
  }

  async status(): Promise<TransportStatus> {
    try {
      const h = await this.engine.health();
      return {
        ready: h.ok && !this.closed,
        reason: h.ok ? (this.closed ? 'shutting down' : undefined) : 'engine not healthy',
        workers: 1,
        // Every admitted request is in the engine: generate() hands it over at once.
        load: engineLoad([h]),
        maxBatchSize: this.maxBatchSize,
        providers: countProviders([h]),
      };
    } catch {
      return { ready: false, reason: 'engine health check failed', workers: 0, load: NO_LOAD, maxBatchSize: this.maxBatchSize, providers: {} };
    }
  }

  /** Stops admitting; the engine belongs to whoever created it (main.ts closes it). */
  async close(): Promise<void> {
    this.closed = true;
  }
}
