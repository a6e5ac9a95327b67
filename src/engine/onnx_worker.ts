// Worker thread owning the ONNX Runtime session: in onnxruntime-node 1.30 session.run blocks its thread for the whole
// run (docs/design.md §7), so it must not run on the event loop of the server.

import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { HeadOutputs } from './head.js';
import type { WireFeeds, WorkerInit, WorkerReply, WorkerRequest } from './onnx_session.js';

const init = workerData as WorkerInit;

async function createSession(provider: 'cpu' | 'cuda'): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(init.modelPath, {
    executionProviders: provider === 'cuda' ? [{ name: 'cuda', deviceId: init.deviceId }] : ['cpu'],
    intraOpNumThreads: init.intraOpNumThreads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
}

async function open(): Promise<{ session: ort.InferenceSession; provider: 'cpu' | 'cuda'; warning: string | null }> {
  if (init.provider === 'cpu') return { session: await createSession('cpu'), provider: 'cpu', warning: null };
  try {
    return { session: await createSession('cuda'), provider: 'cuda', warning: null };
  } catch (err) {
    if (init.provider === 'cuda') throw err;
    const warning = `CUDA execution provider unavailable (${firstLine(err)}); running on CPU`;
    return { session: await createSession('cpu'), provider: 'cpu', warning };
  }
}

function firstLine(err: unknown): string {
  return String(err instanceof Error ? err.message : err).split('\n')[0];
}

const HEAD_OUTPUTS = ['topk_logits', 'topk_ids', 'logsumexp', 'entropy'];

/** The last past_kv sent, kept for the steps that name it again (onnx_session.ts wireFeeds); dropped on release. */
let held: { key: string; tensor: ort.Tensor } | null = null;

function pastTensor(f: WireFeeds): ort.Tensor {
  const c = f.cached!;
  if (c.past === null) {
    if (held === null || held.key !== c.pastKey) throw new Error(`past_kv "${c.pastKey}" is not held by the worker`);
    return held.tensor;
  }
  const { layers, kvHeads, headDim } = c.geometry;
  const tensor = new ort.Tensor('float32', c.past, [layers, 2, f.rows, kvHeads, c.pastLength, headDim]);
  if (c.pastLength > 0) held = { key: c.pastKey, tensor };
  return tensor;
}

function run(session: ort.InferenceSession, f: WireFeeds): Promise<ort.InferenceSession.OnnxValueMapType> {
  const common = {
    input_ids: new ort.Tensor('int64', f.inputIds, [f.rows, f.length]),
    positions: new ort.Tensor('int64', f.positions, [f.rows, f.positionsPerRow]),
    cfg_scale: new ort.Tensor('float32', f.cfgScale, [f.rows]),
    uncond_row: new ort.Tensor('int64', f.uncondRow, [f.rows]),
  };
  const c = f.cached;
  if (c === undefined) return session.run({ ...common, attention_mask: new ort.Tensor('int64', f.attentionMask, [f.rows, f.length]) });
  // The cached graph (docs/models.md, format 2); present_kv only when asked for, so a cached step copies no keys back.
  return session.run(
    {
      ...common,
      position_ids: new ort.Tensor('int64', c.positionIds, [f.rows, f.length]),
      attention_mask: new ort.Tensor('int64', f.attentionMask, [f.rows, c.pastLength + f.length]),
      past_kv: pastTensor(f),
    },
    c.wantPresent ? [...HEAD_OUTPUTS, 'present_kv'] : HEAD_OUTPUTS,
  );
}

/**
 * `data` itself when it owns its whole buffer (ONNX Runtime's output tensors do), so that it can be moved to the main
 * thread rather than copied: present_kv is tens of MB at batch 8; a copy otherwise.
 */
function movable<T extends Float32Array | Float64Array>(data: Float32Array | Float64Array, as: { from(a: ArrayLike<number>): T; prototype: T }): T {
  const owns = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
  return owns && Object.getPrototypeOf(data) === as.prototype ? (data as T) : as.from(data);
}

function toHead(out: ort.InferenceSession.OnnxValueMapType): HeadOutputs {
  const logits = out.topk_logits;
  const [rows, positions, k] = logits.dims;
  const ids = out.topk_ids.data as BigInt64Array;
  const topkIds = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) topkIds[i] = Number(ids[i]);
  return {
    rows,
    positions,
    k,
    topkLogits: movable(logits.data as Float32Array, Float32Array),
    topkIds,
    // float64 in graphs with the exact head (docs/models.md), float32 in earlier exports.
    logsumexp: movable(out.logsumexp.data as Float64Array | Float32Array, Float64Array),
    entropy: movable(out.entropy.data as Float64Array | Float32Array, Float64Array),
    ...(out.present_kv === undefined
      ? {}
      : { present: { data: movable(out.present_kv.data as Float32Array, Float32Array), dims: [...out.present_kv.dims] } }),
  };
}

const port = parentPort!;
open().then(
  ({ session, provider, warning }) => {
    port.postMessage({ type: 'ready', provider, warning } satisfies WorkerReply);
    port.on('message', async (msg: WorkerRequest) => {
      if (msg.type === 'release') {
        held = null;
        return;
      }
      try {
        const t0 = performance.now();
        const out = await run(session, msg.feeds);
        const runMs = performance.now() - t0;
        const head = toHead(out);
        const reply: WorkerReply = { type: 'result', id: msg.id, head, runMs };
        const arrays = [head.topkLogits, head.topkIds, head.logsumexp, head.entropy, ...(head.present ? [head.present.data] : [])];
        const buffers = arrays.map((a) => a.buffer as ArrayBuffer);
        port.postMessage(reply, buffers);
      } catch (err) {
        port.postMessage({ type: 'failed', id: msg.id, message: firstLine(err) } satisfies WorkerReply);
      }
    });
  },
  (err: unknown) => port.postMessage({ type: 'fatal', message: firstLine(err) } satisfies WorkerReply),
);
