// Step-level continuous batching (Orca, Yu et al., OSDI'22, at the granularity of a denoising step; nano-vllm's
// scheduler shape): between two engine steps, finished and cancelled sequences leave the active set and waiting ones
// join it, first come first served, while the graph rows they need fit the maximum batch and the memory they may
// hold (their key/value cache reservation, `cost`) fits the bound.

export interface Schedulable {
  /** Graph rows per step (2 with classifier-free guidance). */
  readonly rowCount: number;
  /** Finished or cancelled: leaves at the next step boundary. */
  readonly done: boolean;
  /** Memory this item may hold while active (cache bytes); 0 when absent. */
  readonly cost?: number;
}

export interface ScheduleResult<T> {
  /** The sequences of the next step. */
  active: T[];
  admitted: T[];
  retired: T[];
}

export class Scheduler<T extends Schedulable> {
  private readonly waiting: T[] = [];
  private active: T[] = [];

  constructor(
    readonly maxRows: number,
    /** Bound on the summed cost of the active items; an item costlier than the bound alone is never admitted. */
    readonly maxCost = Infinity,
  ) {
    if (!Number.isInteger(maxRows) || maxRows < 1) throw new RangeError(`maximum batch size must be a positive integer, got ${maxRows}`);
    if (!(maxCost >= 0)) throw new RangeError(`maximum cost must be >= 0, got ${maxCost}`);
  }

  /** Summed cost of the active items. */
  get activeCost(): number {
    return this.active.reduce((sum, s) => sum + (s.cost ?? 0), 0);
  }

  add(item: T): void {
    this.waiting.push(item);
  }

  get activeCount(): number {
    return this.active.length;
  }

  isActive(item: T): boolean {
    return this.active.includes(item);
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  /** The step boundary: retire, drop cancelled waiting items, admit in arrival order while rows fit. */
  schedule(): ScheduleResult<T> {
    const retired = this.active.filter((s) => s.done);
    this.active = this.active.filter((s) => !s.done);
    for (let i = this.waiting.length - 1; i >= 0; i--) if (this.waiting[i].done) retired.push(...this.waiting.splice(i, 1));
    const admitted: T[] = [];
    let rows = this.active.reduce((sum, s) => sum + s.rowCount, 0);
    let cost = this.activeCost;
    while (this.waiting.length > 0) {
      const next = this.waiting[0];
      // A sequence wider than the whole batch still runs, alone.
      if (rows + next.rowCount > this.maxRows && rows > 0) break;
      // Memory: first come first served, so a large request is not overtaken for ever by small ones.
      if (cost + (next.cost ?? 0) > this.maxCost) break;
      this.waiting.shift();
      this.active.push(next);
      admitted.push(next);
      rows += next.rowCount;
      cost += next.cost ?? 0;
    }
    return { active: [...this.active], admitted, retired };
  }
}
