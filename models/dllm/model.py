"""The LLaDA architecture: a bidirectional Llama-style transformer that predicts masked tokens.

Follows LLaDA-8B's own modelling code (`modeling_llada.py`, the `LLaDALlamaBlock` path: RMSNorm, rotary
embeddings, SwiGLU MLP, no causal mask) so that a Hugging Face LLaDA checkpoint loads through one name mapping:
every parameter here is the checkpoint's name without its leading `model.` (see `hf_state_dict_to_ours`).

Block diffusion (BD3-LM, `ModelConfig.block_size`): the same transformer with attention bidirectional inside each
block and causal across blocks (`attention_bias`), decided from position ids so that full passes, cached steps and
batches all follow one rule (docs/models.md).

Causal attention (`ModelConfig.causal`): the same transformer as a next-token model, the first phase of adapting an
autoregressive model to diffusion (Gong et al. 2024, "Scaling Diffusion Language Models via Adaptation from
Autoregressive Models"; Dream 7B). It is the block-causal rule with blocks of one position.

Padding: rows are left-padded. Padding keys get no attention weight and position ids are derived from the
attention mask (first real token = position 0), so a padded row computes what it computes alone (docs/design.md §3).

Shapes in comments: N batch, L sequence, D d_model, H heads, Hk kv heads, Dh head dim, F MLP hidden, V vocab.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


PADDING_KEY_BIAS = -65504.0


@dataclass
class ModelConfig:
    # Field names are LLaDA's config.json names, so a checkpoint's config maps onto this one by name.
    d_model: int = 256
    n_heads: int = 8
    n_kv_heads: int | None = None  # None = n_heads (plain multi-head attention)
    n_layers: int = 6
    mlp_hidden_size: int = 768
    vocab_size: int = 4096
    embedding_size: int | None = None  # rows of wte; >= vocab_size (LLaDA pads to a multiple of 128)
    max_sequence_length: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    weight_tying: bool = True
    include_bias: bool = False
    include_qkv_bias: bool = False  # biases on q/k/v only (LLaDA's include_qkv_bias)
    input_emb_norm: bool = False  # embeddings scaled by sqrt(d_model) (OLMo/LLaDA input_emb_norm)
    scale_logits: bool = False  # logits scaled by 1/sqrt(d_model) (OLMo/LLaDA scale_logits)
    init_std: float = 0.02
    mask_token_id: int = 2
    # Block diffusion (BD3-LM, Arriola et al. 2025): attention is bidirectional inside each block of `block_size`
    # positions (blocks counted from position 0) and causal across blocks. None = LLaDA, bidirectional everywhere.
    block_size: int | None = None
    # Causal (next-token) attention: position i attends positions <= i. For the autoregressive phase of AR-to-diffusion
    # adaptation (Gong et al. 2024); False = LLaDA. Not combined with block_size: both set the attention rule.
    causal: bool = False
    # Shifted logits (Dream 7B; AR-to-diffusion adaptation, Gong et al. 2024): the prediction for position i is the
    # output at position i - 1, as in the autoregressive model it was adapted from (position 0 reads its own output).
    # The graphs return unshifted outputs; whoever reads them (the server, train.py, the reference) applies the shift.
    shift_logits: bool = False

    def __post_init__(self):
        if self.causal and self.block_size is not None:
            raise ValueError(f"causal attention and block_size {self.block_size} are two attention rules; set one")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def effective_n_kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def attention_block_size(self) -> int | None:
        """The block size of the attention rule (`attention_bias`): causal attention is block-causal attention with
        blocks of one position (key j visible to query i iff pos(j) <= pos(i)); None = bidirectional."""
        return 1 if self.causal else self.block_size

    def to_dict(self) -> dict:
        values = asdict(self)
        # Flags off are left out, so the checkpoints and dllm.json of models without them stay as they were before.
        for flag in ("causal", "shift_logits"):
            if not values[flag]:
                del values[flag]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def shift_logits(logits: torch.Tensor) -> torch.Tensor:
    """[N, L, ...] outputs -> predictions: position i takes position i - 1's output, position 0 its own (Dream's
    `torch.cat([logits[:, :1], logits[:, :-1]], dim=1)` in generation_utils.py)."""
    return torch.cat((logits[:, :1], logits[:, :-1]), dim=1)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 as LLaDA's RMSLayerNorm does."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * self.weight.float()).to(dtype)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[N, L] 1/0 mask -> [N, L] positions with the first real token at 0 (padding clamped to 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def attention_bias(key_mask: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor,
                   block_size: int | None) -> torch.Tensor:
    """Additive attention bias [N, 1, Q, K] (or [N, 1, 1, K] without blocks): 0 where query i may attend key j.

    key_mask [N, K] (1 = a real key) hides padding. With a block size, query i also may not attend a key of a later
    block: floor(pos(j) / block_size) <= floor(pos(i) / block_size), BD3-LM's block-causal rule, decided from the
    position ids so that the same rule holds in a full pass, in a cached step and batched. The bias is float16's
    lowest finite value, so padding keys get exactly zero weight (exp underflows) and the fp16 export stays finite.
    """
    allowed = key_mask[:, None, None, :] > 0  # [N, 1, 1, K]
    if block_size is not None:
        later = (key_positions // block_size)[:, None, None, :] > (query_positions // block_size)[:, None, :, None]
        allowed = allowed & ~later  # [N, 1, Q, K]
    # float32 tensors rather than Python floats, which the ONNX exporter makes float64 constants (a Where that
    # WebGPU, having no float64, leaves to the CPU); the values are the same.
    return torch.where(allowed, torch.zeros(()), torch.full((), PADDING_KEY_BIAS))


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [N, 1, L, Dh] for the non-interleaved (rotate-half) RoPE that LLaDA uses."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim))
    freqs = position_ids.float().unsqueeze(-1) * inv_freq  # [N, L, Dh/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [N, L, Dh]
    return emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LLaDALlamaBlock(nn.Module):
    """x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); parameter names as in modeling_llada.py."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        kv_dim = config.effective_n_kv_heads * config.head_dim
        bias = config.include_bias
        qkv_bias = config.include_bias or config.include_qkv_bias  # as LLaDALlamaBlock
        self.attn_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.ff_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=qkv_bias)
        self.k_proj = nn.Linear(config.d_model, kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(config.d_model, kv_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(config.d_model, config.d_model, bias=bias)
        self.ff_proj = nn.Linear(config.d_model, config.mlp_hidden_size, bias=bias)  # gate
        self.up_proj = nn.Linear(config.d_model, config.mlp_hidden_size, bias=bias)
        self.ff_out = nn.Linear(config.mlp_hidden_size, config.d_model, bias=bias)  # down

    def rotated_qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [N, L, D] -> q [N, H, L, Dh] (rotated, scaled), k [N, Hk, L, Dh] (rotated), v [N, Hk, L, Dh]."""
        n, l, _ = x.shape
        c = self.config
        q = self.q_proj(x).view(n, l, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(n, l, c.effective_n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(n, l, c.effective_n_kv_heads, c.head_dim).transpose(1, 2)
        # The 1/sqrt(Dh) scale goes on q ([N, H, L, Dh]) rather than on the scores ([N, H, L, L]): fewer products.
        q = (q * cos + rotate_half(q) * sin) * (1.0 / math.sqrt(c.head_dim))
        return q, k * cos + rotate_half(k) * sin, v

    def attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
        """q [N, H, Q, Dh] over keys/values [N, Hk, K, Dh] (key_bias [N, 1, Q or 1, K] or None) -> attn_out [N, Q, D].

        Grouped-query attention (Hk < H): query head j uses key/value head j // (H / Hk), as LLaDA's
        `repeat_interleave` of the keys (and Llama's `repeat_kv`) does. The query heads are grouped on a fifth axis
        and the keys broadcast over it instead of being copied: the same arithmetic, without the exported
        repeat_interleave, with which the graph failed in ONNX Runtime at every shape.
        """
        c = self.config
        n, heads, q_len, head_dim = q.shape
        groups = c.effective_n_kv_heads
        q = q.reshape(n, groups, heads // groups, q_len, head_dim)  # [N, Hk, H/Hk, Q, Dh]
        scores = q @ keys.unsqueeze(2).transpose(-1, -2)  # [N, Hk, H/Hk, Q, K]
        if key_bias is not None:
            scores = scores + key_bias.unsqueeze(1)
        weights = scores.float().softmax(-1).to(values.dtype)
        out = (weights @ values.unsqueeze(2)).reshape(n, heads, q_len, head_dim)  # [N, H, Q, Dh]
        return self.attn_out(out.transpose(1, 2).reshape(n, q_len, c.d_model))

    def attention(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self.rotated_qkv(x, cos, sin)
        return self.attend(q, k, v, key_bias)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_bias: torch.Tensor | None) -> torch.Tensor:
        return self.feed_forward(x + self.attention(self.attn_norm(x), cos, sin, key_bias))

    def attention_cached(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past_k: torch.Tensor,
                         past_v: torch.Tensor, key_bias: torch.Tensor):
        """Attention of Q query tokens over [past keys/values, their own]; also returns their keys (rotated) and
        values, [N, Hk, Q, Dh] each, as they go into a cache (docs/models.md, the cached graph contract).

        x [N, Q, D]; cos/sin [N, 1, Q, Dh] of the queries' absolute positions; past_k/past_v [N, Hk, Lp, Dh], keys
        already rotated by their own absolute positions; key_bias [N, 1, 1, Lp + Q]. The arithmetic is attention()'s,
        with the key axis split into the cached part and the fresh part.
        """
        q, k, v = self.rotated_qkv(x, cos, sin)
        out = self.attend(q, torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2), key_bias)
        return out, k, v

    def forward_cached(self, x, cos, sin, past_k, past_v, key_bias):
        """forward() for query tokens over a cache: (x, their keys, their values)."""
        a, k, v = self.attention_cached(self.attn_norm(x), cos, sin, past_k, past_v, key_bias)
        return self.feed_forward(x + a), k, v


class LLaDA(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.embedding_size or config.vocab_size, config.d_model),
                blocks=nn.ModuleList(LLaDALlamaBlock(config) for _ in range(config.n_layers)),
                ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
            )
        )
        if not config.weight_tying:
            self.transformer["ff_out"] = nn.Linear(config.d_model, config.embedding_size or config.vocab_size, bias=config.include_bias)
        self.apply(self._init_weights)
        # Scaled init of the residual outputs (GPT-2 / OLMo "normal" init).
        for name, p in self.named_parameters():
            if name.endswith("attn_out.weight") or name.endswith("ff_out.weight") and "blocks" in name:
                nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layers))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[N, L] -> [N, L, D]; with input_emb_norm scaled by sqrt(d_model), as LLaDAModel.forward does."""
        x = self.transformer["wte"](input_ids)
        return x * (self.config.d_model ** 0.5) if self.config.input_emb_norm else x

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, attention_mask: [N, L] int64 -> final normed hidden states [N, L, D].

        Without attention_mask (training on packed windows) no position is padding: positions are 0..L-1 and a
        bidirectional model adds no key bias."""
        block_size = self.config.attention_block_size
        if attention_mask is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]  # [1, L], shared by the rows
            key_bias = None
            if block_size is not None:  # [1, 1, L, L]
                key_bias = attention_bias(torch.ones_like(positions), positions, positions, block_size)
        else:
            positions = position_ids_from_mask(attention_mask)
            key_bias = attention_bias(attention_mask, positions, positions, block_size)
        return self.hidden_states_biased(input_ids, positions, key_bias)

    def hidden_states_biased(self, input_ids: torch.Tensor, positions: torch.Tensor,
                             key_bias: torch.Tensor | None) -> torch.Tensor:
        """The transformer with explicit position ids [N, L] and additive attention bias ([N, 1, L or 1, L] or None):
        -> final normed hidden states [N, L, D]. Block diffusion training uses it with its own mask (train.py)."""
        c = self.config
        x = self.embed(input_ids)  # [N, L, D]
        if key_bias is not None:
            key_bias = key_bias.to(x.dtype)
        cos, sin = rotary_cos_sin(positions, c.head_dim, c.rope_theta)
        for block in self.transformer["blocks"]:
            x = block(x, cos, sin, key_bias)
        return self.transformer["ln_f"](x)

    def hidden_states_cached(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                             past_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The query tokens' final normed hidden states over a key/value cache, and their own keys/values.

        input_ids, position_ids [N, Q] (absolute positions: the row's first real token is 0); attention_mask
        [N, Lp + Q] (1 = a real key: past positions first, then the queries); past_kv [layers, 2, N, Hk, Lp, Dh]
        (keys rotated by their positions). Returns hidden [N, Q, D] and present_kv [layers, 2, N, Hk, Q, Dh].
        With Lp = 0 and position ids from the mask this is hidden_states() of the whole row. For block diffusion the
        block-causal rule restricts only the query part: every cached key belongs to an earlier block (or is masked);
        so does the causal rule (blocks of one position), every cached key being an earlier position.
        """
        c = self.config
        x = self.embed(input_ids)
        past_len = past_kv.shape[-2]
        # Cached keys are given position -1 for the rule: visible to every query (padding is hidden by the mask).
        past_positions = torch.full_like(position_ids[:, :1], -1).expand(-1, past_len)  # position_ids' dtype
        key_positions = torch.cat((past_positions, position_ids), dim=1)
        key_bias = attention_bias(attention_mask, position_ids, key_positions, c.attention_block_size).to(x.dtype)
        cos, sin = rotary_cos_sin(position_ids, c.head_dim, c.rope_theta)
        presents = []
        for i, block in enumerate(self.transformer["blocks"]):
            x, k, v = block.forward_cached(x, cos, sin, past_kv[i, 0], past_kv[i, 1], key_bias)
            presents.append(torch.stack((k, v)))
        return self.transformer["ln_f"](x), torch.stack(presents)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """[..., D] -> logits [..., V], dropping embedding rows beyond vocab_size (LLaDA pads the embedding to a
        multiple of 128; the padding rows are never tokens, and the sampler's softmax leaves them out). With
        scale_logits the logits are divided by sqrt(d_model), as LLaDAModel.forward does."""
        if self.config.weight_tying:
            logits = F.linear(h, self.transformer["wte"].weight)
        else:
            logits = self.transformer["ff_out"](h)
        if self.config.scale_logits:
            logits = logits * (1 / math.sqrt(self.config.d_model))
        return logits[..., : self.config.vocab_size]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[N, L] -> logits [N, L, V]."""
        return self.project(self.hidden_states(input_ids, attention_mask))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --- checkpoints --------------------------------------------------------------------------------------------

def on_cpu(value):
    """value (a tensor, or dicts, lists and tuples holding some) with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(v) for v in value)
    return value


def save_checkpoint(path: str, model: LLaDA, **extra) -> None:
    """A checkpoint carries its own config (nanoGPT style). Its tensors (weights, optimiser moments) are saved from
    the CPU whatever device trained the model, so the file is the same either way and loads on any machine."""
    torch.save(on_cpu({"config": model.config.to_dict(), "model": model.state_dict(), **extra}), path)


def load_checkpoint(path: str) -> tuple[LLaDA, dict]:
    # Our own checkpoints carry the trainer's numpy RNG state, which torch >= 2.6 refuses under its weights_only default.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = LLaDA(ModelConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def hf_state_dict_to_ours(hf_state: dict) -> dict:
    """The one name mapping from a Hugging Face LLaDA checkpoint (LLaDAModelLM): drop the leading `model.`.

    e.g. `model.transformer.blocks.3.q_proj.weight` -> `transformer.blocks.3.q_proj.weight`,
         `model.transformer.ff_out.weight` (untied output head) -> `transformer.ff_out.weight`.
    """
    return {(k[len("model."):] if k.startswith("model.") else k): v for k, v in hf_state.items()}


# Every key of LLaDA's config.json (configuration_llada.py, inherited from OLMo's ModelConfig) falls in one of
# three groups, so that no flag that changes the computation is dropped without a word:
# - mapped onto ModelConfig (config_from_hf below);
# - REQUIRED: computed only with this value (absent = this value); anything else is refused by name;
# - NO_EFFECT: training, initialisation, parallelism or bookkeeping; no effect on an inference forward pass.
# A key in none of them is refused too: a newer config may carry a flag we have never seen.
REQUIRED = {"block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu", "alibi": False, "rope": True,
            "attention_layer_norm": False, "layer_norm_with_affine": True, "clip_qkv": None}
NO_EFFECT = {
    "architectures", "model_type", "auto_map", "transformers_version", "torch_dtype", "_name_or_path", "use_cache",
    "eos_token_id", "pad_token_id", "bos_token_id", "mask_token_id",  # read by convert.py, not by the module
    "attention_dropout", "residual_dropout", "embedding_dropout", "flash_attention", "precision", "init_device",
    "init_fn", "init_std", "init_cutoff_factor", "block_group_size", "alibi_bias_max",  # alibi is refused
    "attention_layer_norm_with_affine",  # attention_layer_norm is refused
    # RoPE in full precision is what we always compute (float32 in both graphs); false only lowers its precision
    # in the official code's bf16 runs, it does not change the function.
    "rope_full_precision",
    "mlp_ratio",  # superseded by mlp_hidden_size when both are given
}
MAPPED = {"d_model", "n_heads", "n_kv_heads", "multi_query_attention", "n_layers", "mlp_hidden_size", "vocab_size",
          "embedding_size", "max_sequence_length", "rope_theta", "rms_norm_eps", "weight_tying", "include_bias",
          "include_qkv_bias", "input_emb_norm", "scale_logits", "bias_for_layer_norm"}


def check_config_keys(hf_config: dict, required: dict, no_effect: set, mapped: set) -> None:
    """Refuses, by name, a config.json key that is required to have another value, or that is in none of the three
    groups (a checkpoint family's REQUIRED, NO_EFFECT and MAPPED)."""
    for key, expected in required.items():
        if key in hf_config and hf_config[key] != expected:
            raise ValueError(f"config.json: {key} = {hf_config[key]!r} is not supported (only {expected!r})")
    unknown = sorted(set(hf_config) - set(required) - no_effect - mapped)
    if unknown:
        raise ValueError(f"config.json: unknown field {unknown[0]!r} ({len(unknown)} unknown: {unknown}); "
                         "refusing rather than guessing whether it changes the computation")


def config_from_hf(hf_config: dict) -> ModelConfig:
    """Map a LLaDA config.json onto ModelConfig; refuses, by name, any flag this implementation does not compute."""
    arch = hf_config.get("model_type"), tuple(hf_config.get("architectures") or ())
    if arch[0] != "llada" and "LLaDAModelLM" not in arch[1]:
        raise ValueError(f"config.json: unknown architecture {arch[0]!r} {list(arch[1])}; expected model_type 'llada'")
    check_config_keys(hf_config, REQUIRED, NO_EFFECT, MAPPED)
    # LayerNormBase: norm biases when bias_for_layer_norm is true, or unset and include_bias is true.
    norm_bias = hf_config.get("bias_for_layer_norm")
    if norm_bias or (norm_bias is None and hf_config.get("include_bias")):
        raise ValueError("config.json: bias_for_layer_norm (norm biases; also implied by include_bias when "
                         "bias_for_layer_norm is unset) is not supported")
    n_heads = hf_config["n_heads"]
    # effective_n_kv_heads of LLaDA's config: n_kv_heads, else 1 with multi_query_attention, else n_heads.
    n_kv_heads = hf_config.get("n_kv_heads") or (1 if hf_config.get("multi_query_attention") else n_heads)
    if hf_config["d_model"] % n_heads or n_heads % n_kv_heads:
        raise ValueError(f"config.json: d_model {hf_config['d_model']}, n_heads {n_heads}, n_kv_heads {n_kv_heads}: "
                         "heads must divide d_model and kv heads must divide heads")
    mlp = hf_config.get("mlp_hidden_size") or int(hf_config["mlp_ratio"] * hf_config["d_model"])
    return ModelConfig(
        d_model=hf_config["d_model"],
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        n_layers=hf_config["n_layers"],
        mlp_hidden_size=mlp,
        vocab_size=hf_config["vocab_size"],
        embedding_size=hf_config.get("embedding_size"),
        max_sequence_length=hf_config.get("max_sequence_length", 4096),
        rope_theta=hf_config.get("rope_theta", 10000.0),
        rms_norm_eps=hf_config.get("rms_norm_eps", 1e-5),
        weight_tying=bool(hf_config.get("weight_tying", False)),
        include_bias=bool(hf_config.get("include_bias", False)),
        include_qkv_bias=bool(hf_config.get("include_qkv_bias", False)),
        input_emb_norm=bool(hf_config.get("input_emb_norm", False)),
        scale_logits=bool(hf_config.get("scale_logits", False)),
        mask_token_id=hf_config.get("mask_token_id", 126336),
    )


def describe(config: ModelConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)
