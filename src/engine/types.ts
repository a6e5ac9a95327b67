// The narrow interface between the serving layer (HTTP, queue) and the diffusion engine.
// Shaped after vLLM's EngineClient: generate() is an async iterable of events, abort(id), health().
// Every event is plain JSON so that it can cross a Redis Stream unchanged (docs/design.md §6).

/** Which masked positions a step commits first (docs/design.md §4). */
export type RemaskingRule = 'low_confidence' | 'random' | 'margin' | 'entropy';

/**
 * Dream's sampler (HKUNLP Dream, generation_utils.py `_sample`), chosen by `alg`: how confident a masked position is.
 * origin: none (each position is committed with probability 1 - s/t); maskgit_plus: p(chosen token); topk_margin:
 * p(top-1) - p(top-2); entropy: -H. The number committed per step follows Dream's timesteps (sampler.ts dreamCount).
 */
export type DreamAlg = 'origin' | 'maskgit_plus' | 'topk_margin' | 'entropy';
export const DREAM_ALGS: readonly DreamAlg[] = ['origin', 'maskgit_plus', 'topk_margin', 'entropy'];

export type FinishReason = 'stop' | 'length';

/**
 * Key/value cache mode (Fast-dLLM, Wu et al. 2025): `none` runs the whole canvas every step; `prefix` and `dual`
 * refresh a cache with a full pass at each block start, then run only the block and what follows it (`prefix`, the
 * keys/values before the block cached) or only the block (`dual`, those before and after it cached). Both are
 * approximations for a bidirectional model (docs/models.md). Needs a format-2 model folder.
 */
export type CacheMode = 'none' | 'prefix' | 'dual';
export const CACHE_MODES: readonly CacheMode[] = ['none', 'prefix', 'dual'];

/** Sampling parameters of one request, already defaulted and validated. */
export interface SamplingParams {
  /** Tokens asked for; the generated span is this rounded up to whole blocks. */
  maxTokens: number;
  /** Total denoising steps of the fixed schedule, split evenly over the blocks. */
  steps: number;
  blockLength: number;
  remasking: RemaskingRule;
  /** Parallel decoding (Fast-dLLM): commit every masked position with confidence >= threshold; null = fixed schedule. */
  threshold: number | null;
  /** Fast-dLLM's factor rule; null = off. */
  factor: number | null;
  /** 0 = greedy. */
  temperature: number;
  /** 1 = off. */
  topP: number;
  /** 0 = off; at most the head's K. */
  topK: number;
  /** Classifier-free guidance scale; 0 = none. */
  cfgScale: number;
  /** Seeds the request's own RNG; null = a fresh random seed. Choice i uses seed + i. */
  seed: number | null;
  /** Stop strings: the text is cut before the first occurrence and the choice finishes with `stop`. */
  stop: string[];
  /** Top-N alternatives per generated token (0..5); null = no logprobs. */
  logprobs: number | null;
  /** Key/value cache mode; absent = the engine's default (KV_CACHE). */
  cache?: CacheMode;
  /** vLLM's ignore_eos: an end-of-text token does not end the choice; every position is decoded (benchmarks). */
  ignoreEos?: boolean;
  /** vLLM's min_tokens, adapted: no end-of-text is chosen at generated positions below it; absent = 0. */
  minTokens?: number;
  /** Dream's sampler with this confidence (docs/design.md §4); absent = LLaDA's (remasking, threshold, factor). */
  alg?: DreamAlg;
  /** Dream's alg_temp: 0 commits the most confident positions; > 0 samples them from softmax(confidence / algTemp). */
  algTemp?: number;
  /** Dream's eps: the last timestep (timesteps run from 1 down to eps); default 1e-3. */
  eps?: number;
  /** OpenAI's frequency_penalty, over the tokens committed in the generated span (penalties.ts); absent = 0. */
  frequencyPenalty?: number;
  /** OpenAI's presence_penalty, likewise; absent = 0. */
  presencePenalty?: number;
}

export interface GenerateRequest {
  /** Unique id (the completion id); abort(id) cancels every choice of it. */
  id: string;
  /** Prompt token ids; the engine prepends the model's bos_token_id when it has one, unless verbatimPrompt. */
  promptTokenIds: number[];
  /** The prompt was given as token ids: used as sent, no BOS added (vLLM's behaviour). */
  verbatimPrompt?: boolean;
  /** Infill: token ids placed after the masked span. */
  suffixTokenIds: number[];
  params: SamplingParams;
  /** Number of choices (OpenAI `n`). */
  n: number;
  /** Put the whole generated span (`canvas`, `draft`) on every step event. */
  includeCanvas: boolean;
}

/** One position committed in a step. `position` is the index within the generated span (0-based). */
export interface CommittedToken {
  position: number;
  tokenId: number;
  text: string;
  /** Probability of the committed token under the step's softmax (with temperature 1). */
  confidence: number;
}

export interface StepEvent {
  type: 'step';
  /** Choice index (0..n-1). */
  index: number;
  /** Step number within this choice, from 0. */
  step: number;
  /** Block being decoded, from 0. */
  block: number;
  committed: CommittedToken[];
  /** Newly stable text: the longest mask-free prefix of the completion minus what earlier events already gave. */
  stableText: string;
  /** When includeCanvas: token id per position of the generated span, null where still masked. */
  canvas?: (number | null)[];
  /** When includeCanvas: the current draft as text, masked positions rendered as MASK_PLACEHOLDER. */
  draft?: string;
  /**
   * When includeCanvas: where the span's blocks start, then its end (indices in the span). Blocks of block_length for
   * LLaDA; a block diffusion model's own blocks, whose first and last may be short (docs/models.md).
   */
  blockStarts?: number[];
  /**
   * When includeCanvas: the model's current guess at each still-masked position of the block being decoded, not
   * committed and free to change at the next step (docs/design.md §5).
   */
  provisional?: ProvisionalToken[];
}

/** A guess at a masked position: what the step chose there but did not commit. */
export interface ProvisionalToken {
  position: number;
  tokenId: number;
  text: string;
}

export interface TokenLogprobs {
  tokens: string[];
  tokenLogprobs: number[];
  topLogprobs: Record<string, number>[];
  /** Character offset of each token in the completion text. */
  textOffset: number[];
}

export interface FinishEvent {
  type: 'finish';
  index: number;
  finishReason: FinishReason;
  /** The final completion text of this choice (stop strings cut, end-of-text removed). */
  text: string;
  tokenIds: number[];
  /** Steps this choice took. */
  steps: number;
  logprobs?: TokenLogprobs;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

/** Last event of a generation, after every choice has finished. */
export interface DoneEvent {
  type: 'done';
  usage: Usage;
}

export type EngineEvent = StepEvent | FinishEvent | DoneEvent;

export interface EngineHealth {
  ok: boolean;
  model: string;
  /** Execution provider in use: 'cpu', 'cuda' or 'webgpu'. */
  provider: string;
  /** Which graph of the model folder runs: 'fp32' (model.onnx) or 'fp16' (model.fp16.onnx). */
  precision: 'fp32' | 'fp16';
  /** Sequences (one per choice: a request with n = 3 is three) in the running batch, and waiting for a slot. */
  activeSequences: number;
  waitingSequences: number;
  /** Requests with a sequence in the running batch, and requests whose sequences all wait. */
  runningRequests: number;
  waitingRequests: number;
  maxBatchSize: number;
  /** Key/value caches (format-2 model folders); absent for engines without a cached graph. */
  kvCache?: KvCacheHealth;
  /** Memory traffic of a GPU provider; absent on the CPU provider. */
  device?: DeviceHealth;
}

export interface DeviceHealth {
  /** Device tensors held between runs (the caches kept on the device). */
  tensors: number;
  /** Bytes moved since start, by tensor name: host to device (inputs) and device to host (outputs). */
  hostToDevice: Record<string, number>;
  deviceToHost: Record<string, number>;
}

export interface KvCacheHealth {
  /** Default mode of requests that do not set `cache`. */
  defaultMode: CacheMode;
  /** Bytes of keys/values held now. */
  bytes: number;
  /** Bytes reserved by admitted sequences (the most each may hold); admission keeps it within maxBytes. */
  reservedBytes: number;
  maxBytes: number;
  /** Steps that ran from a cache (one per sequence and step). */
  hits: number;
  /** Full passes that filled a cache (block starts). */
  refreshes: number;
}

/** The key/value cache figures of several engines (Redis mode: every worker's heartbeat), summed; {} when none has caches. */
export function sumKvCache(healths: readonly EngineHealth[]): { kvCache?: KvCacheHealth } {
  const withCache = healths.filter((h) => h.kvCache !== undefined).map((h) => h.kvCache!);
  if (withCache.length === 0) return {};
  const sum = (k: 'bytes' | 'reservedBytes' | 'maxBytes' | 'hits' | 'refreshes') => withCache.reduce((a, c) => a + c[k], 0);
  return {
    kvCache: {
      defaultMode: withCache[0].defaultMode,
      bytes: sum('bytes'),
      reservedBytes: sum('reservedBytes'),
      maxBytes: sum('maxBytes'),
      hits: sum('hits'),
      refreshes: sum('refreshes'),
    },
  };
}

/** The device figures of several engines, summed; {} when none runs on a GPU provider. */
export function sumDevice(healths: readonly EngineHealth[]): { device?: DeviceHealth } {
  const devices = healths.filter((h) => h.device !== undefined).map((h) => h.device!);
  if (devices.length === 0) return {};
  return {
    device: {
      tensors: devices.reduce((a, d) => a + d.tensors, 0),
      hostToDevice: devices.reduce((a, d) => addBytes(a, d.hostToDevice), {}),
      deviceToHost: devices.reduce((a, d) => addBytes(a, d.deviceToHost), {}),
    },
  };
}

/** Adds bytes by tensor name into `into` (the transfer counts of runs, of engines); returns it. */
export function addBytes(into: Record<string, number>, from: Readonly<Record<string, number>>): Record<string, number> {
  for (const [tensor, bytes] of Object.entries(from)) into[tensor] = (into[tensor] ?? 0) + bytes;
  return into;
}

/** Error codes shared by the engine and the API's OpenAI error mapping. */
export type EngineErrorCode =
  | 'invalid_request'
  | 'context_length_exceeded'
  | 'cancelled'
  | 'overloaded'
  /** A transport cannot reach a worker or its queue (503: the client retries). */
  | 'unavailable'
  | 'internal';

export class EngineError extends Error {
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    /** The request field the error is about (OpenAI's `param`). */
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

export interface EngineClient {
  /** Yields step events for every choice, one finish event per choice, then one done event. Throws EngineError. */
  generate(request: GenerateRequest): AsyncIterable<EngineEvent>;
  /** Cancels a request; takes effect at the next step boundary. Unknown ids are ignored. */
  abort(id: string): void;
  health(): Promise<EngineHealth>;
}

/** How a still-masked position is shown in `draft`. */
export const MASK_PLACEHOLDER = '\u2591';
