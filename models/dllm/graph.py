"""The model folder and graph contract (docs/design.md §2-3, docs/models.md): what a model folder holds and what
each of its ONNX graphs takes and returns, as the server reads them. The graphs are modules here (the model plus the
sampling head); export.py traces them into ONNX, convert.py fills them from a Hugging Face checkpoint, and the
reference sampler (reference/) runs the same modules in PyTorch, so every caller computes the one contract.

Full logits [N, L, V] never leave a graph: it gathers the wanted positions, applies classifier-free guidance over the
whole vocabulary, and returns the top-K logits and ids, the softmax normaliser and the entropy (or, in the device
graph, the float32 sums they are made of).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .model import LLaDA, ModelConfig
from .tokenizer import BOS, EOS, EOT, MASK, PAD

FORMAT = "dllm-onnx/2"
OPSET = 17
INPUT_NAMES = ["input_ids", "attention_mask", "positions", "cfg_scale", "uncond_row"]
OUTPUT_NAMES = ["topk_logits", "topk_ids", "logsumexp", "entropy"]
# The cached graph (format 2, docs/models.md): query tokens over a key/value cache.
CACHED_INPUT_NAMES = ["input_ids", "position_ids", "attention_mask", "past_kv", "positions", "cfg_scale", "uncond_row"]
CACHED_OUTPUT_NAMES = OUTPUT_NAMES + ["present_kv"]
# Every graph of a folder reads its weights from one external data file, so a second graph costs no weights.
WEIGHTS_FILE = {"fp32": "weights.data", "fp16": "weights.fp16.data"}

# LLaDA-8B-Instruct's chat format (its tokenizer_config.json chat_template), with our token names.
LLADA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

TRANSPOSED = "^T"  # initializer name suffix: the parameter stored transposed, as the graph's MatMul reads it


def guided_head(logits: torch.Tensor, cfg_scale: torch.Tensor, uncond_row: torch.Tensor, k: int):
    """The sampling head on gathered logits [N, P, V] -> (topk_logits [N,P,K] float32, topk_ids [N,P,K],
    logsumexp [N,P] float64, entropy [N,P] float64).

    Guidance (LLaDA paper, Appendix B.3 / Ho & Salimans 2022): logits_i = u + (s_i + 1)(c_i - u) with u the
    logits of row uncond_row[i]; uncond_row[i] = i gives c_i exactly, so guided and plain rows share a batch.

    The normaliser and the entropy are computed (and returned) in float64, max-shifted: LLaDA's sampler takes the
    softmax of the logits in float64, and a float32 sum of exp(l - max) over the vocabulary drops the mass of
    thousands of tiny terms (each below half an ulp of 1), which inflates confidences near 1 by up to ~1e-5 and
    reorders near-ties. Returned as float32, log Z would still lose ~5e-7 at |log Z| ~ 10, hence float64 outputs.
    """
    logits = logits.float()
    u = logits.index_select(0, uncond_row)
    logits = u + (cfg_scale[:, None, None] + 1.0) * (logits - u)
    topk_logits, topk_ids = logits.topk(k, dim=-1)
    wide = logits.double()
    top = topk_logits[..., :1].double()  # the max, shared with topk: [N, P, 1]
    sum_exp = (wide - top).exp().sum(-1)  # >= 1 (the max contributes exactly 1): [N, P]
    logsumexp = top.squeeze(-1) + sum_exp.log()
    log_probs = wide - logsumexp.unsqueeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return topk_logits, topk_ids, logsumexp, entropy


class SamplingGraph(nn.Module):
    """What the server runs per denoising step: the model plus the sampling head."""

    def __init__(self, model: LLaDA, k: int):
        super().__init__()
        if not 1 <= k <= model.config.vocab_size:
            raise ValueError(f"topk K = {k} must be between 1 and the vocabulary size {model.config.vocab_size}")
        self.model, self.k = model, k

    def forward(self, input_ids, attention_mask, positions, cfg_scale, uncond_row):
        # input_ids, attention_mask: [N, L]; positions: [N, P]; cfg_scale: [N] float; uncond_row: [N]
        h = self.model.hidden_states(input_ids, attention_mask)  # [N, L, D]
        h = h.gather(1, positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [N, P, D]
        return guided_head(self.model.project(h), cfg_scale, uncond_row, self.k)


class CachedSamplingGraph(nn.Module):
    """The cached graph of format 2 (docs/models.md): Q query tokens at explicit absolute positions over a cache of
    keys/values (past_kv), the sampling head at `positions` (indices into the query), and the queries' own
    keys/values (present_kv), to be cached by the caller.

    Fast-dLLM (Wu et al. 2025, "Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and
    Parallel Decoding"; NVlabs/Fast-dLLM) runs LLaDA this way: a full pass (Lp = 0, the whole canvas as query) fills
    the cache at each block start, later steps of the block query the block alone (dual cache) or the block and what
    follows it (prefix cache). Keys are cached after RoPE, rotated by their absolute positions, so a cached key is
    used unchanged whatever query attends to it, and the order of keys along the cache axis does not matter.
    """

    def __init__(self, model: LLaDA, k: int):
        super().__init__()
        if not 1 <= k <= model.config.vocab_size:
            raise ValueError(f"topk K = {k} must be between 1 and the vocabulary size {model.config.vocab_size}")
        self.model, self.k = model, k

    def forward(self, input_ids, position_ids, attention_mask, past_kv, positions, cfg_scale, uncond_row):
        h, present_kv = self.model.hidden_states_cached(input_ids, position_ids, attention_mask, past_kv)  # [N, Q, D]
        h = h.gather(1, positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [N, P, D]
        return (*guided_head(self.model.project(h), cfg_scale, uncond_row, self.k), present_kv)


# The device graph (docs/models.md): the cached graph in the form a GPU keeps its cache in. The cache is a graph
# input and output that never visits the host: rows of past_kv are picked on the device (past_rows), the queries'
# keys/values are appended inside the graph (present_kv = past rows + queries), and the head needs no float64,
# which WebGPU lacks. Inputs that feed arithmetic are int32 or float32 (WebGPU computes no int64: ONNX Runtime
# places such nodes on the CPU); the int64 ones only index a Gather.
DEVICE_INPUT_NAMES = ["input_ids", "position_ids", "attention_mask", "past_kv", "past_rows", "positions", "cfg_scale",
                      "uncond_row"]
DEVICE_HEAD_NAMES = ["topk_logits", "topk_ids", "top_count", "sum_exp_rest", "sum_exp_shifted"]
DEVICE_OUTPUT_NAMES = DEVICE_HEAD_NAMES + ["present_kv"]


def device_head(logits: torch.Tensor, cfg_scale: torch.Tensor, uncond_row: torch.Tensor, k: int):
    """guided_head in float32 only, its normaliser and entropy left for the host to finish in float64:
    -> topk_logits [N,P,K], topk_ids [N,P,K], top_count, sum_exp_rest, sum_exp_shifted [N,P] (float32).

    With m the best logit and d_i = l_i - m <= 0: top_count = #{d_i = 0} (1 unless the best ties), sum_exp_rest =
    sum of exp(d_i) over d_i < 0, sum_exp_shifted = sum of exp(d_i) d_i. The host forms S = top_count +
    sum_exp_rest in float64, log Z = m + log S and H = log S - sum_exp_shifted / S. The terms equal to 1 are what
    a float32 sum would round the small ones against (guided_head's docstring): kept out of the float32 sum, the
    sum's error is relative to sum_exp_rest alone, and log Z never exists as one float32 (its ulp near 10 is 1e-6).
    """
    logits = logits.float()
    u = logits.index_select(0, uncond_row)
    logits = u + (cfg_scale[:, None, None] + 1.0) * (logits - u)
    topk_logits, topk_ids = logits.topk(k, dim=-1)
    shifted = logits - topk_logits[..., :1]  # [N, P, V], <= 0
    at_top = shifted == 0
    e = shifted.exp()
    sum_exp_rest = torch.where(at_top, torch.zeros_like(e), e).sum(-1)
    return topk_logits, topk_ids, at_top.float().sum(-1), sum_exp_rest, (e * shifted).sum(-1)


class DeviceSamplingGraph(nn.Module):
    """The cached graph for devices (docs/models.md, the device graph): query row i reads cache row past_rows[i] of
    past_kv [layers, 2, M, Hk, Lp, Dh]; present_kv [layers, 2, N, Hk, Lp + Q, Dh] is those rows followed by the
    queries' own keys/values, so a caller that keeps present_kv has the grown cache without a copy through the host
    (which positions of it are stale is the caller's to mask). position_ids and positions are int32, attention_mask
    float32 (1 = a real key)."""

    def __init__(self, model: LLaDA, k: int):
        super().__init__()
        if not 1 <= k <= model.config.vocab_size:
            raise ValueError(f"topk K = {k} must be between 1 and the vocabulary size {model.config.vocab_size}")
        self.model, self.k = model, k

    def forward(self, input_ids, position_ids, attention_mask, past_kv, past_rows, positions, cfg_scale, uncond_row):
        past = past_kv.index_select(2, past_rows)  # [layers, 2, N, Hk, Lp, Dh]
        h, new_kv = self.model.hidden_states_cached(input_ids, position_ids, attention_mask, past)  # [N, Q, D]
        # The wanted positions picked by a one-hot product rather than an int64 gather index (which WebGPU leaves
        # to the CPU): each output row is one hidden row times 1 plus zeros, so the values are the same.
        query_index = torch.arange(h.shape[1], dtype=positions.dtype, device=h.device)
        one_hot = (positions.unsqueeze(-1) == query_index).to(h.dtype)  # [N, P, Q]
        h = one_hot @ h  # [N, P, D]
        return (*device_head(self.model.project(h), cfg_scale, uncond_row, self.k), torch.cat((past, new_kv), dim=4))


def kv_shape(config) -> dict:
    """The cache geometry of a model: past_kv / present_kv are [layers, 2, N, kv_heads, length, head_dim]."""
    return {"layers": config.n_layers, "kv_heads": config.effective_n_kv_heads, "head_dim": config.head_dim}


def example_cached_inputs(c: ModelConfig, n: int = 2, past: int = 5, q: int = 4, p: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, c.vocab_size, (n, q), generator=g)
    position_ids = torch.arange(past, past + q).repeat(n, 1)
    attention_mask = torch.ones(n, past + q, dtype=torch.int64)
    attention_mask[0, :2] = 0
    past_kv = torch.randn(c.n_layers, 2, n, c.effective_n_kv_heads, past, c.head_dim, generator=g)
    positions = torch.arange(q - p, q).repeat(n, 1)
    return input_ids, position_ids, attention_mask, past_kv, positions, torch.zeros(n), torch.arange(n)


def example_inputs(vocab_size: int, n: int = 2, length: int = 12, p: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (n, length), generator=g)
    attention_mask = torch.ones(n, length, dtype=torch.int64)
    attention_mask[0, :3] = 0
    positions = torch.arange(length - p, length).repeat(n, 1)
    return input_ids, attention_mask, positions, torch.zeros(n), torch.arange(n)


def example_device_inputs(c: ModelConfig) -> tuple[torch.Tensor, ...]:
    input_ids, position_ids, attention_mask, past_kv, positions, cfg_scale, uncond_row = example_cached_inputs(c)
    past_rows = torch.arange(past_kv.shape[2])
    return (input_ids, position_ids.int(), attention_mask.float(), past_kv, past_rows, positions.int(), cfg_scale,
            uncond_row)


DEFAULT_GENERATION = {"max_tokens": 64, "steps": 64, "block_length": 8, "remasking": "low_confidence", "threshold": None,
                      "temperature": 0.0}
# A shifted-logits model (architecture "dream") samples as Dream's diffusion_generate by default: the whole span one
# canvas (block_length null), the entropy confidence Dream's README uses, timesteps down to eps.
DREAM_GENERATION = {"block_length": None, "alg": "entropy", "alg_temp": 0.0, "eps": 1e-3}


def architecture(config: ModelConfig) -> str:
    """dllm.json's architecture: block_diffusion (block-causal attention), dream (bidirectional, shifted logits), llada."""
    if config.block_size:
        return "block_diffusion"
    return "dream" if config.shift_logits else "llada"


def dllm_json(config: ModelConfig, k: int, name: str, fp16: bool, chat_template: str | None = LLADA_CHAT_TEMPLATE,
              eos_token_ids: tuple[int, ...] = (EOS, EOT), pad_token_id: int = PAD, bos_token_id: int | None = BOS,
              mask_token_id: int = MASK, generation_defaults: dict | None = None, quantization: dict | None = None) -> dict:
    """The model folder's dllm.json (docs/design.md §2; format 2 adds `cached` and `weights`, docs/models.md).
    generation_defaults update DEFAULT_GENERATION (what a request leaves out). A block diffusion model's block size
    is also its block_length: it cannot decode in other blocks than it was trained with. `quantization`
    (quantize.Quantization.to_json: bits, block_size, accuracy_level, layers) is written only for a quantized folder,
    so the dllm.json (and graph metadata) of float folders stay as they were."""
    block_size = config.block_size
    arch = architecture(config)
    defaults = (DEFAULT_GENERATION | (DREAM_GENERATION if arch == "dream" else {}) | (generation_defaults or {})
                | ({"block_length": block_size} if block_size else {}))
    return {
        "format": FORMAT,
        "architecture": arch,
        **({"block_size": block_size} if block_size else {}),
        "name": name,
        "vocab_size": config.vocab_size,
        "mask_token_id": mask_token_id,
        "eos_token_ids": list(eos_token_ids),
        "pad_token_id": pad_token_id,
        "bos_token_id": bos_token_id,
        "max_sequence_length": config.max_sequence_length,
        "topk": k,
        "chat_template": chat_template,
        "generation_defaults": defaults,
        "onnx": {"fp32": "model.onnx", "fp16": "model.fp16.onnx" if fp16 else None},
        "cached": {"fp32": "model.kv.onnx", "fp16": "model.kv.fp16.onnx" if fp16 else None, **kv_shape(config)},
        "device": {"fp32": "model.device.onnx", "fp16": "model.device.fp16.onnx" if fp16 else None},
        "weights": {"fp32": WEIGHTS_FILE["fp32"], "fp16": WEIGHTS_FILE["fp16"] if fp16 else None},
        **({"quantization": quantization} if quantization is not None else {}),
        "model_config": config.to_dict(),
    }
