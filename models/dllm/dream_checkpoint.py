"""Dream checkpoints (Dream-v0 7B Base and Instruct, DiffuCoder, Dream-Coder) for convert.py: the config mapping, the
tensor names, the tokenizer.json built from vocab.json + merges.txt, the special ids and the generation defaults.

Dream (HKUNLP Dream: configuration_dream.py, modeling_dream.py, generation_utils.py) is Qwen2's transformer with the
causal mask removed: RMSNorm, rotary embeddings (rotate-half), grouped-query attention with q/k/v biases and no
output bias, SwiGLU, an untied output head. Our LLaDA module computes exactly that with `include_qkv_bias` and
`n_kv_heads` (tests/test_convert_dream.py checks it against a plain re-implementation of Qwen2's forward pass). What
is Dream's own is the shift: the prediction for position i is the model's output at position i - 1
(`ModelConfig.shift_logits`; dllm.json says `"architecture": "dream"`, and whoever reads the graphs applies it).

The vocabulary is the config's `vocab_size` rows (152,064 for Dream-v0), more than the tokenizer's 151,667 tokens:
the official sampler takes its softmax and argmax over every row, so the extra rows stay in the logits here too.
"""

from __future__ import annotations

import os
import re

from .graph import DREAM_GENERATION
from .hf_checkpoint import CheckpointError, CheckpointFolder, chat_template, read_json, token_id
from .model import ModelConfig, check_config_keys

# --- config.json ------------------------------------------------------------------------------------------------
#
# As model.config_from_hf does for LLaDA, every key of Dream's config.json (DreamConfig, Qwen2's keys) is mapped,
# required to have the one value we compute (absent = that value), or listed as having no effect on an inference
# forward pass; any other key is refused by name.
REQUIRED = {"hidden_act": "silu", "rope_scaling": None, "use_sliding_window": False}
NO_EFFECT = {
    "architectures", "model_type", "auto_map", "transformers_version", "torch_dtype", "_name_or_path", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id",  # read by read() below, not by the module
    "attention_dropout", "initializer_range",  # training only
    "sliding_window", "max_window_layers",  # used only with use_sliding_window, which is refused
}
MAPPED = {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
          "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings", "vocab_size"}


def is_dream(hf_config: dict) -> bool:
    """model_type "Dream" (DreamConfig.model_type), or DreamModel among the architectures."""
    archs = hf_config.get("architectures") or []
    return str(hf_config.get("model_type", "")).lower() == "dream" or "DreamModel" in archs


def config_from_dream(hf_config: dict) -> ModelConfig:
    """Map a Dream config.json onto ModelConfig; refuses, by name, any key this implementation does not compute."""
    check_config_keys(hf_config, REQUIRED, NO_EFFECT, MAPPED)
    d_model, n_heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
    n_kv_heads = hf_config.get("num_key_value_heads") or n_heads  # DreamConfig: None = num_attention_heads
    if d_model % n_heads or n_heads % n_kv_heads:
        raise ValueError(f"config.json: hidden_size {d_model}, num_attention_heads {n_heads}, num_key_value_heads "
                         f"{n_kv_heads}: heads must divide hidden_size and key/value heads must divide heads")
    if "mask_token_id" not in hf_config:
        raise KeyError("mask_token_id")
    return ModelConfig(
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        n_layers=hf_config["num_hidden_layers"],
        mlp_hidden_size=hf_config["intermediate_size"],
        vocab_size=hf_config["vocab_size"],
        embedding_size=None,
        max_sequence_length=hf_config.get("max_position_embeddings", 32768),  # DreamConfig's defaults
        rope_theta=float(hf_config.get("rope_theta", 10000.0)),
        rms_norm_eps=hf_config.get("rms_norm_eps", 1e-6),
        weight_tying=bool(hf_config.get("tie_word_embeddings", False)),
        include_qkv_bias=True,  # Qwen2: q/k/v projections with bias, o_proj without
        mask_token_id=hf_config["mask_token_id"],
        shift_logits=True,
    )


# --- tensor names -----------------------------------------------------------------------------------------------

TOP_NAMES = {"model.embed_tokens.weight": "transformer.wte.weight", "model.norm.weight": "transformer.ln_f.weight",
             "lm_head.weight": "transformer.ff_out.weight"}
BLOCK_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    **{f"self_attn.{p}_proj.{w}": f"{p}_proj.{w}" for p in "qkv" for w in ("weight", "bias")},
    "self_attn.o_proj.weight": "attn_out.weight",
    "post_attention_layernorm.weight": "ff_norm.weight",
    "mlp.gate_proj.weight": "ff_proj.weight",  # the SwiGLU gate
    "mlp.up_proj.weight": "up_proj.weight",
    "mlp.down_proj.weight": "ff_out.weight",
}
_DREAM_BLOCK = re.compile(r"model\.layers\.(\d+)\.(.+)")
_OUR_BLOCK = re.compile(r"transformer\.blocks\.(\d+)\.(.+)")


def to_ours(name: str) -> str | None:
    """A Dream tensor name -> our parameter name (None: not a tensor of Dream's layout)."""
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    m = _DREAM_BLOCK.fullmatch(name)
    if m and m.group(2) in BLOCK_NAMES:
        return f"transformer.blocks.{m.group(1)}.{BLOCK_NAMES[m.group(2)]}"
    return None


def to_dream(ours: str) -> str:
    """Our parameter name -> the Dream tensor it is read from."""
    for dream, name in TOP_NAMES.items():
        if name == ours:
            return dream
    m = _OUR_BLOCK.fullmatch(ours)
    for dream, name in BLOCK_NAMES.items():
        if m and m.group(2) == name:
            return f"model.layers.{m.group(1)}.{dream}"
    raise KeyError(ours)


def label(ours: str) -> str:
    return f"{to_dream(ours)} (our {ours})"


# --- tokenizer.json -------------------------------------------------------------------------------------------------
#
# Dream-v0 ships its tokenizer as Qwen2's slow files (vocab.json, merges.txt, the added tokens in tokenizer_config.json)
# and no tokenizer.json. The server reads tokenizer.json, so one is built as transformers' Qwen2 converter builds
# Qwen2TokenizerFast's: NFC, Qwen2's split regex (pieces kept, "Isolated"), byte-level mapping without a regex of
# its own, BPE over vocab.json with merges.txt's ranks (no unknown token, no byte fallback), byte-level decoding.

QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}


def read_merges(path: str) -> list[str]:
    """merges.txt -> ["a b", ...] in rank order: the `#version` header and blank lines skipped, as Qwen2Tokenizer
    reads it."""
    merges = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            line = line.strip()
            if (i == 0 and line.startswith("#version:")) or not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise CheckpointError(f"{path}: line {i + 1} is not a merge of two symbols: {line!r}")
            merges.append(" ".join(parts))
    return merges


def added_tokens(tok_config: dict, file: str = "tokenizer_config.json") -> list[dict]:
    """tokenizer_config.json's added_tokens_decoder ({"id": {content, lstrip, rstrip, normalized, single_word,
    special}}) as tokenizer.json's added_tokens, by id."""
    out = []
    for key, token in (tok_config.get("added_tokens_decoder") or {}).items():
        if not isinstance(token, dict) or not isinstance(token.get("content"), str) or not str(key).isdigit():
            raise CheckpointError(f"{file}: added_tokens_decoder[{key!r}] is not an added token")
        out.append({"id": int(key), "content": token["content"], "single_word": bool(token.get("single_word", False)),
                    "lstrip": bool(token.get("lstrip", False)), "rstrip": bool(token.get("rstrip", False)),
                    "normalized": bool(token.get("normalized", False)), "special": bool(token.get("special", True))})
    return sorted(out, key=lambda t: t["id"])


def qwen2_tokenizer_json(vocab: dict[str, int], merges: list[str], added: list[dict]) -> dict:
    """Hugging Face tokenizer.json equivalent to Qwen2TokenizerFast over these files."""
    by_id = {i: tok for tok, i in vocab.items()}
    for token in added:
        if token["id"] in by_id and by_id[token["id"]] != token["content"]:
            raise CheckpointError(f"added token {token['content']!r} has id {token['id']}, which vocab.json gives to "
                                  f"{by_id[token['id']]!r}")
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            dict(_BYTE_LEVEL)]},
        "post_processor": dict(_BYTE_LEVEL),
        "decoder": dict(_BYTE_LEVEL),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def read_tokenizer(folder: str, tok_config: dict) -> tuple[dict, str | None, str]:
    """(tokenizer.json's contents, the file to copy or None to write them, where they came from). tokenizer.json
    when the folder has one; else built from vocab.json, merges.txt and tokenizer_config.json's added tokens."""
    path = os.path.join(folder, "tokenizer.json")
    if os.path.exists(path):
        tokenizer = read_json(folder, "tokenizer.json")
        return tokenizer, path, f"tokenizer.json ({len(tokenizer.get('model', {}).get('vocab', {}))} tokens, " \
                                f"{len(tokenizer.get('added_tokens', []))} added)"
    for name in ("vocab.json", "merges.txt"):
        if not os.path.exists(os.path.join(folder, name)):
            raise CheckpointError(f"{os.path.join(folder, name)}: missing (and no tokenizer.json)")
    vocab = read_json(folder, "vocab.json")
    merges = read_merges(os.path.join(folder, "merges.txt"))
    added = added_tokens(tok_config, os.path.join(folder, "tokenizer_config.json"))
    tokenizer = qwen2_tokenizer_json(vocab, merges, added)
    return tokenizer, None, (f"built from vocab.json ({len(vocab)} tokens), merges.txt ({len(merges)} merges) and "
                             f"{len(added)} added tokens of tokenizer_config.json (Qwen2's byte-level BPE)")


def tokenizer_size(tokenizer: dict) -> int:
    """Distinct token ids of a tokenizer.json: its vocabulary and added tokens."""
    ids = set(tokenizer.get("model", {}).get("vocab", {}).values())
    return len(ids | {t["id"] for t in tokenizer.get("added_tokens", [])})


# --- special ids and generation defaults --------------------------------------------------------------------------

END_OF_TURN = "<|im_end|>"  # ChatML's end of a turn (Qwen2's template, and so Dream's)


def _ids(value) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def special_ids(folder: str, hf_config: dict, gen_config: dict, tok_config: dict, tokenizer: dict,
                template: str | None) -> tuple[dict, str]:
    """{mask, eos, pad, bos} and the report's line saying where each came from.

    mask: config.json's mask_token_id. eos: the union of generation_config.json's eos_token_id (an id or a list),
    config.json's and tokenizer_config.json's eos_token, and `<|im_end|>` when the chat template uses it (a chat
    answer ends with the turn). pad: config.json, else generation_config.json, else tokenizer_config.json, else the
    first eos. bos: null unless tokenizer_config.json's add_bos_token is true, because Dream's tokenizer prepends
    nothing (its bos_token_id in config.json is end-of-text, which its template never renders)."""
    mask = hf_config["mask_token_id"]
    eos, sources = set(), []
    for ids, source in ((_ids(gen_config.get("eos_token_id")), "generation_config.json"),
                        (_ids(hf_config.get("eos_token_id")), "config.json"),
                        (_ids(token_id(tokenizer, tok_config.get("eos_token"))), "tokenizer_config.json eos_token")):
        if ids:
            eos.update(ids)
            sources.append(f"{source} {ids[0] if len(ids) == 1 else ids}")
    end_of_turn = token_id(tokenizer, END_OF_TURN)
    if template and END_OF_TURN in template and end_of_turn is not None:
        eos.add(end_of_turn)
        sources.append(f"the chat template's {END_OF_TURN} {end_of_turn}")
    if not eos:
        raise CheckpointError(f"{folder}: no end-of-sequence token in generation_config.json, config.json or "
                              "tokenizer_config.json")
    pad, pad_source = None, "the first eos"
    for value, source in ((hf_config.get("pad_token_id"), "config.json"),
                          (gen_config.get("pad_token_id"), "generation_config.json"),
                          (token_id(tokenizer, tok_config.get("pad_token")), "tokenizer_config.json pad_token")):
        if _ids(value):
            pad, pad_source = _ids(value)[0], source
            break
    eos_ids = tuple(sorted(eos))
    pad = eos_ids[0] if pad is None else pad
    bos, bos_source = None, "none: add_bos_token is false, nothing is prepended"
    if tok_config.get("add_bos_token"):
        bos = token_id(tokenizer, tok_config.get("bos_token"))
        if bos is None:
            raise CheckpointError(f"{folder}/tokenizer_config.json: add_bos_token is true but bos_token "
                                  f"{tok_config.get('bos_token')!r} is not a token")
        bos_source = "tokenizer_config.json bos_token (add_bos_token)"
    line = (f"mask from config.json; eos from {', '.join(sources)}; pad from {pad_source}; bos {bos_source}")
    return {"mask": mask, "eos": eos_ids, "pad": pad, "bos": bos}, line


DEFAULT_MAX_TOKENS = 256
ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")  # generation_utils.py's confidence algorithms


def generation_defaults(folder: str, gen_config: dict, max_sequence_length: int) -> tuple[dict, str]:
    """dllm.json's generation_defaults from generation_config.json (what Dream's diffusion_generate reads) and the
    report's line: max_tokens from max_new_tokens (else 256), steps (else max_tokens), temperature (else 0.0), alg,
    alg_temp, eps (else DREAM_GENERATION's), block_length null (the whole span is one canvas); max_tokens and steps
    at most the context. top_p and top_k are requests' parameters only: the folder carries no default for them."""
    file = os.path.join(folder, "generation_config.json")
    said = []

    def take(key, fallback, name=None):
        value = gen_config.get(key)
        if value is None:
            said.append(f"{name or key} {fallback} (default)")
            return fallback
        said.append(f"{name or key} {value}")
        return value

    max_tokens = take("max_new_tokens", DEFAULT_MAX_TOKENS, "max_tokens")
    steps = take("steps", max_tokens)
    for key, value in (("max_new_tokens", max_tokens), ("steps", steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"{file}: {key} = {value!r} is not a positive integer")
    if max(max_tokens, steps) > max_sequence_length:
        said.append(f"capped at the context {max_sequence_length}")
    defaults = {
        "max_tokens": min(max_tokens, max_sequence_length),
        "steps": min(steps, max_sequence_length),
        "temperature": float(take("temperature", 0.0)),
        "block_length": None,
        "alg": take("alg", DREAM_GENERATION["alg"]),
        "alg_temp": float(take("alg_temp", DREAM_GENERATION["alg_temp"])),
        "eps": float(take("eps", DREAM_GENERATION["eps"])),
    }
    if defaults["alg"] not in ALGS:
        raise CheckpointError(f"{file}: alg = {defaults['alg']!r} is not one of {list(ALGS)}")
    if not 0 < defaults["eps"] < 1:
        raise CheckpointError(f"{file}: eps = {defaults['eps']!r} is not in (0, 1)")
    if defaults["temperature"] < 0 or defaults["alg_temp"] < 0:
        raise CheckpointError(f"{file}: temperature and alg_temp must be >= 0")
    ignored = [f"{k} {gen_config[k]}" for k in ("top_p", "top_k") if gen_config.get(k) is not None]
    if ignored:
        said.append(f"not carried: {', '.join(ignored)} (a request's parameters)")
    return defaults, ", ".join(said)


# --- the folder -----------------------------------------------------------------------------------------------------

def read(folder: str, hf_config: dict, config: ModelConfig) -> CheckpointFolder:
    """A Dream folder as convert.py writes it (config.json already mapped onto `config`)."""
    tok_config = read_json(folder, "tokenizer_config.json", required=False) or {}
    gen_config = read_json(folder, "generation_config.json", required=False) or {}
    tokenizer, tokenizer_file, tokenizer_source = read_tokenizer(folder, tok_config)
    template, template_source = chat_template(folder, tok_config)
    ids, ids_source = special_ids(folder, hf_config, gen_config, tok_config, tokenizer, template)
    size = tokenizer_size(tokenizer)
    c = config
    if size > c.vocab_size:
        raise CheckpointError(f"{folder}: the tokenizer has {size} tokens, more than config.json's vocab_size "
                              f"{c.vocab_size}")
    for what, value in (("mask_token_id", ids["mask"]), ("pad", ids["pad"]), ("eos", max(ids["eos"]))):
        if not 0 <= value < c.vocab_size:
            raise CheckpointError(f"{folder}: {what} {value} is not below config.json's vocab_size {c.vocab_size}")
    defaults, defaults_source = generation_defaults(folder, gen_config, c.max_sequence_length)
    return CheckpointFolder(
        family="Dream", architecture="Dream (Qwen2 layout, bidirectional, shifted logits)", config=config,
        to_ours=to_ours, label=label, tokenizer=tokenizer, tokenizer_file=tokenizer_file,
        mask_token_id=ids["mask"], eos_token_ids=ids["eos"], pad_token_id=ids["pad"], bos_token_id=ids["bos"],
        chat_template=template, chat_template_source=template_source,
        vocabulary=(f"{c.vocab_size} rows (config.json vocab_size), the tokenizer {size} tokens"
                    + (f": the {c.vocab_size - size} rows beyond it stay in the logits and the softmax, as in "
                       f"Dream's own sampler" if c.vocab_size > size else "")),
        generation_defaults=defaults,
        report=[("tokenizer", tokenizer_source), ("ids from", ids_source),
                ("generation", f"{defaults_source}; block_length null (one canvas)"),
                ("shift", "prediction for position i = output at i - 1 (position 0 its own); the graphs are "
                          "unshifted, dllm.json architecture \"dream\" tells the reader")],
    )

