// Worker thread owning the ONNX Runtime session: in onnxruntime-node 1.30 session.run blocks its thread for the whole
// run (docs/design.md §7), so it must not run on the event loop of the server.
//
// On WebGPU with a folder's device graph, it also owns the key/value caches that live on the GPU: each present_kv
// the engine keeps stays a `gpu-buffer` tensor here, named by a block id, until the engine frees it. A device tensor
// is never read on this side (getData() on one aborts the process in 1.30): only the head's outputs come back.

import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { HeadOutputs } from './head.js';
import type { Provider, WireFeeds, WorkerInit, WorkerReply, WorkerRequest } from './onnx_session.js';
import { deviceHeadOutputs } from './device_head.js';
import { vulkanProblem } from './vulkan.js';

const init = workerData as WorkerInit;

interface Opened {
  session: ort.InferenceSession;
  provider: Provider;
  /** The device graph (model.device.onnx) is open: caches stay on the device. */
  device: boolean;
}

async function createSession(provider: Provider): Promise<Opened> {
  const device = provider === 'webgpu' && init.devicePath !== null;
  const executionProviders: ort.InferenceSession.ExecutionProviderConfig[] =
    provider === 'cuda' ? [{ name: 'cuda', deviceId: init.deviceId }] : provider === 'webgpu' ? ['webgpu'] : ['cpu'];
  const session = await ort.InferenceSession.create(device ? init.devicePath! : init.modelPath, {
    executionProviders,
    intraOpNumThreads: init.intraOpNumThreads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    // Errors only: ONNX Runtime warns on every WebGPU session that shape computations run on the CPU, as designed.
    logSeverityLevel: 3,
    // present_kv stays where the graph computed it (onnxruntime-node keeps outputs on a device only for WebGPU).
    ...(device ? { preferredOutputLocation: { present_kv: 'gpu-buffer' as const } } : {}),
  });
  return { session, provider, device };
}

async function openWebGpu(): Promise<Opened> {
  try {
    return await createSession('webgpu');
  } catch (err) {
    const cause = vulkanProblem();
    throw new Error(cause === null ? firstLine(err) : `${cause} (${firstLine(err)})`);
  }
}

/** auto: CUDA, then WebGPU on a hardware adapter, then CPU; one warning names what was skipped and why. */
async function open(): Promise<{ opened: Opened; warning: string | null }> {
  if (init.provider === 'cpu') return { opened: await createSession('cpu'), warning: null };
  if (init.provider === 'cuda') return { opened: await createSession('cuda'), warning: null };
  if (init.provider === 'webgpu') return { opened: await openWebGpu(), warning: null };
  const skipped: string[] = [];
  try {
    return { opened: await createSession('cuda'), warning: null };
  } catch (err) {
    skipped.push(`CUDA: ${firstLine(err)}`);
  }
  // lavapipe (Mesa's software Vulkan) makes WebGPU run on the CPU, slower than the CPU provider: auto skips it.
  const noHardware = vulkanProblem({ hardwareOnly: true });
  if (noHardware === null) {
    try {
      return { opened: await openWebGpu(), warning: `CUDA execution provider unavailable (${skipped[0]}); running on WebGPU` };
    } catch (err) {
      skipped.push(`WebGPU: ${firstLine(err)}`);
    }
  } else {
    skipped.push(`WebGPU: ${noHardware}`);
  }
  return { opened: await createSession('cpu'), warning: `no GPU execution provider (${skipped.join('; ')}); running on CPU` };
}

function firstLine(err: unknown): string {
  return String(err instanceof Error ? err.message : err).split('\n')[0];
}

const HEAD_OUTPUTS = ['topk_logits', 'topk_ids', 'logsumexp', 'entropy'];

/** The last past_kv sent, kept for the steps that name it again (onnx_session.ts wireFeeds); dropped on release. */
let held: { key: string; tensor: ort.Tensor } | null = null;

/** Device caches by block id: present_kv tensors on the GPU, kept until the engine frees them. */
const blocks = new Map<number, ort.Tensor>();

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

type Feeds = Record<string, ort.Tensor>;

function hostFeeds(f: WireFeeds): { feeds: Feeds; fetches?: string[] } {
  const common = {
    input_ids: new ort.Tensor('int64', f.inputIds, [f.rows, f.length]),
    positions: new ort.Tensor('int64', f.positions, [f.rows, f.positionsPerRow]),
    cfg_scale: new ort.Tensor('float32', f.cfgScale, [f.rows]),
    uncond_row: new ort.Tensor('int64', f.uncondRow, [f.rows]),
  };
  const c = f.cached;
  if (c === undefined) return { feeds: { ...common, attention_mask: new ort.Tensor('int64', f.attentionMask, [f.rows, f.length]) } };
  // The cached graph (docs/models.md, format 2); present_kv only when asked for, so a cached step copies no keys back.
  return {
    feeds: {
      ...common,
      position_ids: new ort.Tensor('int64', c.positionIds, [f.rows, f.length]),
      attention_mask: new ort.Tensor('int64', f.attentionMask, [f.rows, c.pastLength + f.length]),
      past_kv: pastTensor(f),
    },
    fetches: c.wantPresent ? [...HEAD_OUTPUTS, 'present_kv'] : HEAD_OUTPUTS,
  };
}

/** The device graph's feeds (docs/models.md): int32 positions, a float32 mask, past_kv from a kept block. */
function deviceFeeds(f: WireFeeds): Feeds {
  const d = f.device!;
  let past: ort.Tensor;
  if (d.pastBlock === null) {
    const { layers, kvHeads, headDim } = d.geometry;
    past = new ort.Tensor('float32', new Float32Array(0), [layers, 2, 1, kvHeads, 0, headDim]);
  } else {
    const kept = blocks.get(d.pastBlock);
    if (kept === undefined) throw new Error(`device cache block ${d.pastBlock} is not held by the worker`);
    past = kept;
  }
  const kv = d.pastLength + f.length;
  return {
    input_ids: new ort.Tensor('int64', f.inputIds, [f.rows, f.length]),
    position_ids: new ort.Tensor('int32', Int32Array.from(d.positionIds, Number), [f.rows, f.length]),
    attention_mask: new ort.Tensor('float32', Float32Array.from(f.attentionMask, Number), [f.rows, kv]),
    past_kv: past,
    past_rows: new ort.Tensor('int64', d.pastRows, [f.rows]),
    positions: new ort.Tensor('int32', Int32Array.from(f.positions, Number), [f.rows, f.positionsPerRow]),
    cfg_scale: new ort.Tensor('float32', f.cfgScale, [f.rows]),
    uncond_row: new ort.Tensor('int64', f.uncondRow, [f.rows]),
  };
}

/** Bytes of each host tensor fed (each crosses to the device on a GPU provider), or of each host output. */
function hostBytes(tensors: Record<string, ort.Tensor>): Record<string, number> {
  const bytes: Record<string, number> = {};
  for (const [name, t] of Object.entries(tensors)) {
    if (t.location === 'cpu') bytes[name] = (t.data as ArrayBufferView).byteLength;
  }
  return bytes;
}

/**
 * `data` itself when it owns its whole buffer (ONNX Runtime's output tensors do), so that it can be moved to the main
 * thread rather than copied: present_kv is tens of MB at batch 8; a copy otherwise.
 */
function movable<T extends Float32Array | Float64Array>(data: Float32Array | Float64Array, as: { from(a: ArrayLike<number>): T; prototype: T }): T {
  const owns = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
  return owns && Object.getPrototypeOf(data) === as.prototype ? (data as T) : as.from(data);
}

function int32Ids(ids: BigInt64Array): Int32Array {
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) out[i] = Number(ids[i]);
  return out;
}

function toHead(out: ort.InferenceSession.OnnxValueMapType): HeadOutputs {
  const logits = out.topk_logits;
  const [rows, positions, k] = logits.dims;
  return {
    rows,
    positions,
    k,
    topkLogits: movable(logits.data as Float32Array, Float32Array),
    topkIds: int32Ids(out.topk_ids.data as BigInt64Array),
    // float64 in graphs with the exact head (docs/models.md), float32 in earlier exports.
    logsumexp: movable(out.logsumexp.data as Float64Array | Float32Array, Float64Array),
    entropy: movable(out.entropy.data as Float64Array | Float32Array, Float64Array),
    ...(out.present_kv === undefined
      ? {}
      : { present: { data: movable(out.present_kv.data as Float32Array, Float32Array), dims: [...out.present_kv.dims] } }),
  };
}

function toDeviceHead(out: ort.InferenceSession.OnnxValueMapType): HeadOutputs {
  const logits = out.topk_logits;
  const [rows, positions, k] = logits.dims;
  const topkLogits = movable(logits.data as Float32Array, Float32Array);
  const { logsumexp, entropy } = deviceHeadOutputs(
    topkLogits,
    k,
    out.top_count.data as Float32Array,
    out.sum_exp_rest.data as Float32Array,
    out.sum_exp_shifted.data as Float32Array,
  );
  return { rows, positions, k, topkLogits, topkIds: int32Ids(out.topk_ids.data as BigInt64Array), logsumexp, entropy };
}

async function runDevice(session: ort.InferenceSession, f: WireFeeds) {
  const feeds = deviceFeeds(f);
  const uploaded = hostBytes(feeds);
  // Every output is fetched: onnxruntime-node 1.30 fails a run with a preferred output location and fewer fetches
  // ("Output count mismatch"). present_kv stays on the device either way; it is kept or disposed of here.
  const t0 = performance.now();
  const out = await session.run(feeds);
  const runMs = performance.now() - t0;
  const present = out.present_kv;
  const keep = f.device!.keepAs;
  if (keep !== null) blocks.set(keep, present);
  else present.dispose();
  const { present_kv: _, ...host } = out;
  return { head: toDeviceHead(out), runMs, transfers: { hostToDevice: uploaded, deviceToHost: hostBytes(host) } };
}

async function runHost(session: ort.InferenceSession, provider: Provider, f: WireFeeds) {
  const { feeds, fetches } = hostFeeds(f);
  const t0 = performance.now();
  const out = fetches === undefined ? await session.run(feeds) : await session.run(feeds, fetches);
  const runMs = performance.now() - t0;
  // On the CPU provider nothing crosses a bus; on a GPU provider every input goes up and every output comes down.
  const transfers = provider === 'cpu' ? { hostToDevice: {}, deviceToHost: {} } : { hostToDevice: hostBytes(feeds), deviceToHost: hostBytes(out) };
  return { head: toHead(out), runMs, transfers };
}

const port = parentPort!;
open().then(
  ({ opened: { session, provider, device }, warning }) => {
    port.postMessage({ type: 'ready', provider, device, warning } satisfies WorkerReply);
    port.on('message', async (msg: WorkerRequest) => {
      if (msg.type === 'release') {
        held = null;
        return;
      }
      if (msg.type === 'free') {
        for (const id of msg.blocks) {
          blocks.get(id)?.dispose();
          blocks.delete(id);
        }
        port.postMessage({ type: 'freed', deviceTensors: blocks.size } satisfies WorkerReply);
        return;
      }
      try {
        const { head, runMs, transfers } = msg.feeds.device !== undefined ? await runDevice(session, msg.feeds) : await runHost(session, provider, msg.feeds);
        const reply: WorkerReply = { type: 'result', id: msg.id, head, runMs, transfers, deviceTensors: blocks.size };
        const arrays = [head.topkLogits, head.topkIds, head.logsumexp, head.entropy, ...(head.present ? [head.present.data] : [])];
        port.postMessage(reply, arrays.map((a) => a.buffer as ArrayBuffer));
      } catch (err) {
        port.postMessage({ type: 'failed', id: msg.id, message: firstLine(err), deviceTensors: blocks.size } satisfies WorkerReply);
      }
    });
  },
  (err: unknown) => port.postMessage({ type: 'fatal', message: firstLine(err) } satisfies WorkerReply),
);
