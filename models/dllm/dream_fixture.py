"""A small random-weight checkpoint in the layout of a Hugging Face Dream release, for tests and for
models/tiny-dream-random: config.json (model_type "Dream", every key Dream-v0's has), two bf16 safetensors shards and
their index, generation_config.json, and Qwen2's slow tokenizer files (vocab.json, merges.txt, tokenizer_config.json
with the added tokens and ChatML's template; no tokenizer.json, as Dream-v0 ships none).

The vocabulary is tiny-llada's byte-level BPE (its vocabulary and merges) without its special tokens, followed by
Dream's added tokens; config.json's vocab_size is padded above the tokenizer's size, so the model has rows that are
no token, as Dream-v0 has (152,064 rows, 151,667 tokens). Weights are seeded normal draws scaled so that the logits
are peaked and well apart (a greedy choice is no near-tie between PyTorch and ONNX Runtime), rounded to bfloat16 as
the release stores them. Same seed, same bytes.

    python3 -m dllm.dream_fixture --out /tmp/dream-hf                  # the checkpoint folder
    python3 -m dllm.dream_fixture --card tiny-dream-random             # MODEL_CARD.md of its converted folder
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from . import safetensors

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_TOKENIZER = os.path.join(MODELS, "tiny-llada", "tokenizer.json")
ADDED = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>")  # Dream's, appended after the regular tokens
SEED = 0
DIMS = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 192, "max_position_embeddings": 512}

# Qwen2-Instruct's ChatML template: a default system turn, each message between <|im_start|>role and <|im_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def vocabulary(source: str = SOURCE_TOKENIZER) -> tuple[dict[str, int], list[str]]:
    """tiny-llada's regular tokens renumbered from 0 (its special tokens dropped) and its merges."""
    with open(source, encoding="utf-8") as f:
        spec = json.load(f)
    special = {t["content"] for t in spec["added_tokens"]}
    regular = sorted((i, tok) for tok, i in spec["model"]["vocab"].items() if tok not in special)
    vocab = {tok: new for new, (_, tok) in enumerate(regular)}
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return vocab, merges


def padded_vocab_size(tokens: int) -> int:
    """Rows of the model: the next multiple of 64 at or above the tokenizer's size, plus 64."""
    return -(-tokens // 64) * 64 + 64


def tensor_shapes(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Dream's (Qwen2's) tensors, in the order of the module (embeddings, layers, final norm, head)."""
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * d // config["num_attention_heads"]
    shapes = [("model.embed_tokens.weight", (v, d))]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (d,)),
                   (p + "self_attn.q_proj.weight", (d, d)), (p + "self_attn.q_proj.bias", (d,)),
                   (p + "self_attn.k_proj.weight", (kv, d)), (p + "self_attn.k_proj.bias", (kv,)),
                   (p + "self_attn.v_proj.weight", (kv, d)), (p + "self_attn.v_proj.bias", (kv,)),
                   (p + "self_attn.o_proj.weight", (d, d)),
                   (p + "post_attention_layernorm.weight", (d,)),
                   (p + "mlp.gate_proj.weight", (f, d)), (p + "mlp.up_proj.weight", (f, d)),
                   (p + "mlp.down_proj.weight", (d, f))]
    return shapes + [("model.norm.weight", (d,)), ("lm_head.weight", (v, d))]


def random_weights(config: dict, seed: int = SEED) -> dict[str, np.ndarray]:
    """Seeded weights, float32 values exactly representable in bfloat16.

    Scaled so the model is far from an identity map and its logits far from uniform: embeddings of unit variance;
    every projection 1/sqrt(fan_in), so attention mixes positions (rotary embeddings make them differ) rather than
    passing each token's embedding through; biases and norm gains visibly away from 0 and 1; an output head of
    standard deviation 0.5, logits of standard deviation about 4 (the top two of 4,160 then lie about 1 apart)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tensor_shapes(config):
        if name.endswith("norm.weight"):
            w = rng.uniform(0.8, 1.3, shape)
        elif name.endswith(".bias"):
            w = rng.normal(0.0, 0.2, shape)
        elif name == "model.embed_tokens.weight":
            w = rng.normal(0.0, 1.0, shape)
        elif name == "lm_head.weight":
            w = rng.normal(0.0, 0.5, shape)
        else:
            w = rng.normal(0.0, shape[1] ** -0.5, shape)
        out[name] = np.frombuffer(safetensors.encode(w.astype(np.float32), "BF16"), dtype="<u2")
        out[name] = safetensors.to_float32(out[name].reshape(shape), "BF16")
    return out


def _write_json(path: str, value) -> None:
    """As transformers saves its JSON files: indented by 2, keys sorted, a final newline."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def build(out: str, seed: int = SEED, source_tokenizer: str = SOURCE_TOKENIZER) -> dict:
    """Writes the checkpoint folder; returns its config.json."""
    os.makedirs(out, exist_ok=True)
    vocab, merges = vocabulary(source_tokenizer)
    ids = {tok: len(vocab) + i for i, tok in enumerate(ADDED)}
    tokens = len(vocab) + len(ADDED)
    eot = ids["<|endoftext|>"]
    config = {
        "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": eot,
        "eos_token_id": eot,
        "hidden_act": "silu",
        **DIMS,
        "initializer_range": 0.02,
        "mask_token_id": ids["<|mask|>"],
        "max_window_layers": DIMS["num_hidden_layers"],
        "model_type": "Dream",
        "pad_token_id": eot,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": padded_vocab_size(tokens),
    }
    _write_json(os.path.join(out, "config.json"), config)
    weights = random_weights(config, seed)
    shapes = dict(tensor_shapes(config))
    shards = [sorted(n for n in shapes if n.startswith(("model.embed_tokens.", "model.layers.0."))),
              sorted(n for n in shapes if not n.startswith(("model.embed_tokens.", "model.layers.0.")))]
    weight_map = {}
    for s, names in enumerate(shards):
        file = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
        safetensors.write(os.path.join(out, file), [(n, shapes[n]) for n in names], weights.__getitem__, "BF16")
        weight_map.update({n: file for n in names})
    total = sum(2 * int(np.prod(shape)) for shape in shapes.values())
    _write_json(os.path.join(out, safetensors.INDEX), {"metadata": {"total_size": total},
                                                       "weight_map": dict(sorted(weight_map.items()))})
    _write_json(os.path.join(out, "generation_config.json"), {
        "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot, "max_new_tokens": 32, "steps": 32,
        "transformers_version": "4.46.2"})
    _write_json(os.path.join(out, "vocab.json"), vocab)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    _write_json(os.path.join(out, "tokenizer_config.json"), {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for tok, i in ids.items()},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|endoftext|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "mask_token": "<|mask|>",
        "model_max_length": DIMS["max_position_embeddings"],
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "DreamTokenizer",
        "unk_token": None,
    })
    return config


# --- how peaked the logits are ----------------------------------------------------------------------------------

def top2_gaps(model, mask_token_id: int, canvases: int = 8, prompt: int = 12, span: int = 32,
              seed: int = SEED) -> np.ndarray:
    """Top-1 minus top-2 logit at every masked position of seeded canvases (a random prompt, then a span of masks
    of which a random share is already filled), read with Dream's shift (position i from output i - 1)."""
    import torch

    from .model import shift_logits

    g = torch.Generator().manual_seed(seed)
    gaps = []
    with torch.no_grad():
        for _ in range(canvases):
            ids = torch.randint(0, mask_token_id, (1, prompt + span), generator=g)
            masked = torch.zeros(1, prompt + span, dtype=torch.bool)
            masked[0, prompt:] = torch.rand(span, generator=g) < torch.rand(1, generator=g).clamp(min=0.3)
            ids[masked] = mask_token_id
            top2 = shift_logits(model(ids)).topk(2, dim=-1).values[masked]  # [masked, 2]
            gaps.append((top2[:, 0] - top2[:, 1]).numpy())
    return np.concatenate(gaps)


# --- the card of the converted folder -------------------------------------------------------------------------

def card(folder: str) -> str:
    from .reference.weights import model_from_onnx

    with open(os.path.join(folder, "dllm.json")) as f:
        spec = json.load(f)
    c = spec["model_config"]
    model = model_from_onnx(folder, spec).eval()
    gaps = top2_gaps(model, spec["mask_token_id"])
    files = sorted(n for n in os.listdir(folder) if n != "MODEL_CARD.md")
    sizes = ", ".join(f"`{n}` ({os.path.getsize(os.path.join(folder, n)) / 2**20:.2f} MB)" for n in files)
    total = sum(os.path.getsize(os.path.join(folder, n)) for n in files) / 2**20
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        tokens = len(json.load(f)["model"]["vocab"]) + len(ADDED)
    return f"""# {spec['name']}

**Random weights, for tests.** A model folder converted from a checkpoint laid out exactly as a Hugging Face Dream
release (Dream-v0 7B, DiffuCoder, Dream-Coder), with small dimensions and seeded random weights: it exercises the
Dream conversion path (`python3 -m dllm.convert`, `models/dllm/dream_checkpoint.py`) and the server's `dream`
architecture (shifted logits) end to end. It has learnt nothing; its text is noise.

## Model

- Architecture `dream`: Qwen2's transformer without the causal mask (RMSNorm, rotary embeddings with theta {c['rope_theta']:g}, grouped-query attention with q/k/v biases, SwiGLU, untied output head); the prediction for position i is read from the graph's output at position i - 1
- {c['n_layers']} layers, hidden {c['d_model']}, {c['n_heads']} heads, {c['n_kv_heads']} key/value heads, MLP {c['mlp_hidden_size']}, context {c['max_sequence_length']}; {model.num_parameters():,} parameters (bfloat16 in the checkpoint, float32 in the folder)
- Vocabulary: {spec['vocab_size']} rows for {tokens} tokens (tiny-llada's byte-level BPE without its special tokens, then `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<|mask|>`); the {spec['vocab_size'] - tokens} rows beyond the tokenizer are no token but take part in the softmax, as in Dream-v0 (152,064 rows, 151,667 tokens)
- Special ids (`dllm.json`): mask {spec['mask_token_id']}, eos {spec['eos_token_ids']} (`<|endoftext|>`, and `<|im_end|>` which ends a chat turn), pad {spec['pad_token_id']}, bos {json.dumps(spec['bos_token_id'])} (nothing is prepended); ChatML chat template (Qwen2-Instruct's)
- Generation defaults: `{json.dumps(spec['generation_defaults'])}`
- Files ({total:.2f} MB): {sizes}; fp32 only, top-K {spec['topk']}

Logits are peaked so that greedy choices are no near-ties between PyTorch and ONNX Runtime: over {len(gaps)} masked
positions of 8 seeded canvases, the gap between the best and second-best logit has median {np.median(gaps):.2f}
(smallest {gaps.min():.4f}).

## How it was made

`python3 -m dllm.dream_fixture --out DIR` writes the checkpoint (seed {SEED}): config.json with every key of
Dream-v0's, the weights as two bfloat16 safetensors shards with `model.safetensors.index.json`, generation_config.json
(`max_new_tokens` and `steps` 32), vocab.json, merges.txt and tokenizer_config.json (added tokens, ChatML template,
`add_bos_token` false) and no tokenizer.json, as Dream-v0 ships none. `python3 -m dllm.convert` then converts it like
any Dream checkpoint: it builds `tokenizer.json` from the slow tokenizer files (Qwen2's fast tokenizer: NFC, Qwen2's
split regex, byte-level BPE) and streams the weights into the three graphs. Every step is seeded and ordered, so the
same command writes the same bytes.

## Rebuild

```bash
bash models/build_tiny_dream_random.sh    # from nothing: checkpoint in a temporary folder, conversion, this card
```
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="write the checkpoint folder here")
    what.add_argument("--card", help="write MODEL_CARD.md of this converted folder")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    if args.out:
        config = build(args.out, args.seed)
        print(f"wrote {args.out}: Dream layout, {config['num_hidden_layers']} layers, "
              f"vocab_size {config['vocab_size']}")
    else:
        with open(os.path.join(args.card, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
            f.write(card(args.card))
        print(f"wrote {os.path.join(args.card, 'MODEL_CARD.md')}")


if __name__ == "__main__":
    main()
