// Seeded uniform generator shared bit for bit with models/dllm/reference/sampler.py (class CounterRng), so that
// seeded sampling (temperature, `random` remasking) gives the same tokens in TypeScript and in the Python reference.
//
// Counter-based (in the spirit of Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): draw c is a
// pure function of (seed, c), built from Chris Wellons' "lowbias32" integer hash. Only 32-bit integer operations and
// exact float64 arithmetic are used, so NumPy's uint32 arrays reproduce it exactly.

/** lowbias32 (https://nullprogram.com/blog/2018/07/31/): a 32-bit integer hash with low avalanche bias. */
export function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

const TWO_POW_26 = 67108864;
const TWO_POW_32 = 4294967296;
const TWO_POW_52 = 4503599627370496;

/** Largest seed accepted: seeds are integers in [0, 2^53). */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

export class CounterRng {
  private readonly key: number;
  private counter = 0;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be an integer in [0, 2^53), got ${seed}`);
    const lo = seed % TWO_POW_32;
    const hi = Math.floor(seed / TWO_POW_32);
    this.key = mix32((lo ^ mix32((hi ^ 0x9e3779b9) >>> 0)) >>> 0);
  }

  /** Draws taken so far. */
  get position(): number {
    return this.counter;
  }

  /**
   * Next uniform in the open interval (0, 1): 52 random bits x, returned as (x + 0.5) / 2^52.
   * Never 0 or 1, so log(-log(u)) is always finite (Gumbel noise).
   */
  next(): number {
    const c = this.counter++;
    const a = mix32((mix32((2 * c) >>> 0) ^ this.key) >>> 0);
    const b = mix32((mix32((2 * c + 1) >>> 0) ^ this.key) >>> 0);
    return ((a >>> 6) * TWO_POW_26 + (b >>> 6) + 0.5) / TWO_POW_52;
  }
}

/** A fresh seed for requests that give none (not reproducible by design). */
export function randomSeed(): number {
  return Math.floor(Math.random() * TWO_POW_32);
}
