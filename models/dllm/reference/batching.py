"""Batching and the generation loop (src/engine/batch.ts, src/engine/kv_cache.ts): every unfinished sequence in
left-padded graph batches per step, the cached steps of Fast-dLLM's prefix and dual cache and of a block diffusion
model's exact block cache, ReferenceSampler and a sequence's result."""

from __future__ import annotations

import time

import torch

from ..graph import CachedSamplingGraph, SamplingGraph
from ..model import LLaDA
from .sampler import DREAM_ALGS, Head, Params, Sequence

# --- the loop: every unfinished sequence in one left-padded batch per step (src/engine/batch.ts) ----------------

def build_batch(entries: list[tuple[Sequence, list[int]]], pad_id: int):
    """Full-pass feeds: each sequence's canvas left-padded, the head read at the canvas index whose output predicts
    each wanted position (Sequence.read_from: the position itself, or with shifted logits the one before)."""
    rows, row_of = [], []
    for seq, wanted in entries:
        positions = [seq.read_from(q) for q in wanted]
        cond = len(rows)
        row_of.append(cond)
        if seq.params.cfg_scale > 0:
            rows.append((seq.canvas, positions, seq.params.cfg_scale, cond + 1))
            rows.append((seq.unconditional_canvas(), positions, 0.0, cond + 1))
        else:
            rows.append((seq.canvas, positions, 0.0, cond))
    length = max(len(r[0]) for r in rows)
    p = max(1, max(len(r[1]) for r in rows))
    n = len(rows)
    input_ids = torch.full((n, length), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros((n, length), dtype=torch.int64)
    positions = torch.zeros((n, p), dtype=torch.int64)
    for r, (canvas, pos, _, _) in enumerate(rows):
        pad = length - len(canvas)
        input_ids[r, pad:] = torch.tensor(canvas)
        attention_mask[r, pad:] = 1
        positions[r] = torch.tensor([pad + pos[min(j, len(pos) - 1)] for j in range(p)])
    cfg_scale = torch.tensor([r[2] for r in rows], dtype=torch.float32)
    uncond_row = torch.tensor([r[3] for r in rows], dtype=torch.int64)
    return (input_ids, attention_mask, positions, cfg_scale, uncond_row), row_of


def cached_feeds(feeds):
    """A full pass as cached-graph feeds: the whole canvas is the query, positions from the mask, nothing cached."""
    input_ids, attention_mask, positions, cfg_scale, uncond_row = feeds
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, position_ids, attention_mask, None, positions, cfg_scale, uncond_row


def step_rows(seq: Sequence, positions: list[int]):
    """The graph rows of a cached step (src/engine/kv_cache.ts stepRows): per row (canvas, cache), the query span,
    the cached positions it sees, and which of them are masked out.

    Fast-dLLM's two modes (Wu et al. 2025, NVlabs/Fast-dLLM llada/generate.py generate_with_prefix_cache,
    generate_with_dual_cache): `prefix` queries the block and everything after it (later blocks, suffix) over the
    cached keys/values before the block; `dual` queries the block alone over the cached keys/values of every other
    position (before and after it) from the block start. In dual mode the cached entries of the block itself are
    masked out and its fresh keys/values come from the query, which equals Fast-dLLM's replace_position update.
    With shifted logits (Dream) the query starts one position before the block (Sequence.query_start), whose output
    predicts the block's first position: prefix caches [0, start - 1), dual hides [start - 1, end).
    """
    start, end = seq.block_range()
    canvases = [seq.canvas] + ([seq.unconditional_canvas()] if seq.params.cfg_scale > 0 else [])
    rows = []
    for canvas, kv in zip(canvases, seq.kv):
        if seq.block_size is not None:
            # Block diffusion: everything not cached yet up to the block's end (the block, and right after a block
            # completes also that block, whose keys/values the step returns to be appended), over the whole cache.
            q_lo, q_hi, past_len, hidden = kv.shape[-2], end, kv.shape[-2], (0, 0)
        elif seq.params.cache == "prefix":
            q = seq.query_start()
            q_lo, q_hi, past_len, hidden = q, len(canvas), q, (q, q)
        else:
            q = seq.query_start()
            q_lo, q_hi, past_len, hidden = q, end, len(canvas), (q, end)
        rows.append({"query": canvas[q_lo:q_hi], "q_lo": q_lo, "past": kv[..., :past_len, :], "hidden": hidden,
                     "positions": [seq.read_from(p) - q_lo for p in positions],
                     "cfg": seq.params.cfg_scale if len(rows) == 0 else 0.0})
    return rows


def build_step_batch(entries: list[tuple[Sequence, list[int]]], pad_id: int):
    """Cached-step feeds, left-padded like build_batch: row r's cached positions end at Lp and its query at Q, with the
    attention mask 0 on padding (and on the hidden cached positions)."""
    rows, row_of = [], []
    for seq, positions in entries:
        row_of.append(len(rows))
        for i, row in enumerate(step_rows(seq, positions)):
            row["partner"] = row_of[-1] + (1 if seq.params.cfg_scale > 0 else 0)
            rows.append(row)
    n = len(rows)
    lp = max(r["past"].shape[-2] for r in rows)
    q = max(len(r["query"]) for r in rows)
    p = max(1, max(len(r["positions"]) for r in rows))
    layers, _, hk, _, dh = rows[0]["past"].shape
    past_kv = torch.zeros((layers, 2, n, hk, lp, dh), dtype=torch.float32)
    attention_mask = torch.zeros((n, lp + q), dtype=torch.int64)
    input_ids = torch.full((n, q), pad_id, dtype=torch.int64)
    position_ids = torch.zeros((n, q), dtype=torch.int64)
    positions = torch.zeros((n, p), dtype=torch.int64)
    for r, row in enumerate(rows):
        past_len, q_len = row["past"].shape[-2], len(row["query"])
        past_pad, q_pad = lp - past_len, q - q_len
        past_kv[:, :, r, :, past_pad:, :] = row["past"]
        attention_mask[r, past_pad:lp] = 1
        lo, hi = row["hidden"]
        attention_mask[r, past_pad + lo:past_pad + hi] = 0
        attention_mask[r, lp + q_pad:] = 1
        input_ids[r, q_pad:] = torch.tensor(row["query"])
        position_ids[r, q_pad:] = torch.arange(row["q_lo"], row["q_lo"] + q_len)
        pos = row["positions"]
        positions[r] = torch.tensor([q_pad + pos[min(j, len(pos) - 1)] for j in range(p)])
    cfg_scale = torch.tensor([r["cfg"] for r in rows], dtype=torch.float32)
    uncond_row = torch.tensor([r["partner"] for r in rows], dtype=torch.int64)
    return (input_ids, position_ids, attention_mask, past_kv, positions, cfg_scale, uncond_row), row_of


def append_completed_blocks(seq: Sequence, present: torch.Tensor, row: int) -> None:
    """Block diffusion: a cached step's query starts at the end of the cache; its leading positions up to the cache
    frontier are blocks completed by the previous step, and their keys/values (present_kv, computed under the
    block-causal rule from clean tokens) are appended. present [layers, 2, N, Hk, Q, Dh], queries left-padded."""
    cached, end = seq.kv[0].shape[-2], seq.block_range()[1]
    count = seq.cache_frontier() - cached
    if count <= 0:
        return
    q_pad = present.shape[-2] - (end - cached)
    seq.kv = [torch.cat((kv, present[:, :, r, :, q_pad:q_pad + count, :]), dim=-2)
              for kv, r in zip(seq.kv, range(row, row + seq.row_count))]


class ReferenceSampler:
    def __init__(self, model: LLaDA, spec: dict):
        self.graph = SamplingGraph(model.eval(), spec["topk"])
        self.cached_graph = CachedSamplingGraph(model.eval(), spec["topk"])
        self.spec = spec
        self.model_ms = 0.0

    def run_cached(self, feeds) -> tuple[Head, torch.Tensor]:
        """The cached graph (graph.CachedSamplingGraph); feeds with past_kv None run with nothing cached."""
        input_ids, position_ids, attention_mask, past_kv, *rest = feeds
        if past_kv is None:
            c = self.cached_graph.model.config
            past_kv = torch.zeros((c.n_layers, 2, input_ids.shape[0], c.effective_n_kv_heads, 0, c.head_dim))
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.cached_graph(input_ids, position_ids, attention_mask, past_kv, *rest)
        self.model_ms += (time.perf_counter() - t0) * 1000
        return Head(*(t.numpy() for t in out[:4])), out[4]

    def run(self, feeds) -> Head:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.graph(*feeds)
        self.model_ms += (time.perf_counter() - t0) * 1000
        return Head(*(t.numpy() for t in out))

    def new_sequence(self, prompt_ids: list[int], params: Params, suffix_ids: list[int] = (), choice: int = 0) -> Sequence:
        bos = self.spec.get("bos_token_id")
        prefix = ([bos] if bos is not None else []) + list(prompt_ids)
        seed = ((params.seed or 0) + choice) % 2**53
        block_size = self.spec.get("block_size") if self.spec.get("architecture") == "block_diffusion" else None
        config = self.spec.get("model_config") or {}
        shift = int(self.spec.get("architecture") == "dream" or bool(config.get("shift_logits")))
        if params.alg is not None:
            # What the engine refuses (src/engine/validation.ts): Dream's blocks share the steps equally.
            blocks = -(-params.max_tokens // params.block_length)
            if params.alg not in DREAM_ALGS or params.steps % blocks or not 0 < params.eps < 1 or params.alg_temp < 0:
                raise ValueError(f"Dream's sampler: alg in {DREAM_ALGS}, steps a multiple of the {blocks} blocks, "
                                 "0 < eps < 1, alg_temp >= 0")
        if block_size is not None:
            # What the engine refuses for such a model (src/engine/validation.ts): it decodes left to right only.
            if params.block_length != block_size or suffix_ids or params.cfg_scale > 0 or params.cache == "dual":
                raise ValueError("block diffusion: block_length must be the model's block size; no suffix, guidance "
                                 "or dual cache")
        return Sequence(prefix, list(suffix_ids), params, self.spec["mask_token_id"], self.spec["eos_token_ids"], seed,
                        block_size, shift)

    def generate(self, sequences: list[Sequence]) -> int:
        """Steps every sequence to its end, all unfinished ones batched per step. Returns the batched steps.

        Without a cache mode every sequence runs in one full batch (SamplingGraph, the graph of model.onnx). With
        one, a step has up to three graph runs, as in the engine: full passes without a cache, full passes that
        refresh the cache (block starts, through the cached graph), and cached steps."""
        steps = 0
        while True:
            active = [s for s in sequences if s.end is None]
            if not active:
                return steps
            groups = {"none": [], "refresh": [], "cached": []}
            for s in active:
                kind = s.pass_kind()
                groups["none" if s.params.cache == "none" else "refresh" if kind == "full" else "cached"].append(s)
            for kind, group in groups.items():
                if not group:
                    continue
                entries = [(s, s.wanted_positions()) for s in group]
                if kind == "cached":
                    feeds, row_of = build_step_batch(entries, self.spec["pad_token_id"])
                    head, present = self.run_cached(feeds)
                    for (seq, _), row in zip(entries, row_of):
                        seq.cached_steps += 1
                        if seq.block_size is not None:
                            append_completed_blocks(seq, present, row)
                else:
                    feeds, row_of = build_batch(entries, self.spec["pad_token_id"])
                    if kind == "none":
                        head = self.run(feeds)
                    else:
                        head, present = self.run_cached(cached_feeds(feeds))
                        mask = feeds[1]
                        for (seq, _), row in zip(entries, row_of):
                            # Each graph row's keys/values over its real (unpadded) positions.
                            # Each graph row's keys/values over its real (unpadded) positions, as far as they are
                            # ever read (prefix: before the block; block diffusion: the final blocks).
                            pad = [int((mask[r] == 0).sum()) for r in range(row, row + seq.row_count)]
                            seq.kv = [present[:, :, r, :, pad[i]:pad[i] + seq.kept_length(), :].clone()
                                      for i, r in enumerate(range(row, row + seq.row_count))]
                            seq.refreshes += 1
                for (seq, positions), row in zip(entries, row_of):
                    seq.apply_step(head, row, positions)
            steps += 1


def result(seq: Sequence) -> dict:
    """The choice's tokens, end and steps; `canvas`: the whole generated span when it ended (None = still masked)."""
    reason, length = seq.end
    canvas = [None if t == seq.mask_id else t for t in seq.generated()]
    return {"token_ids": seq.generated()[:length], "finish_reason": reason, "steps": seq.steps, "canvas": canvas}
