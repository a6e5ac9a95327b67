"""Dream checkpoints through convert.py (dream_checkpoint.py), on the fixture of dream_fixture.py: a small random
checkpoint in the exact layout of a Hugging Face Dream release (config.json, bf16 shards + index,
generation_config.json, vocab.json + merges.txt + tokenizer_config.json, no tokenizer.json)."""

import json
import math
import os
import shutil
import subprocess
import unicodedata

import numpy as np
import pytest
import regex
import torch
import torch.nn.functional as F

from conftest import MODELS, REPO, run_ort
from dllm import dream_checkpoint, dream_fixture, safetensors
from dllm.convert import CheckpointError, convert
from dllm.export import parameter_shapes
from dllm.graph import CACHED_INPUT_NAMES, INPUT_NAMES, CachedSamplingGraph, SamplingGraph
from dllm.model import LLaDA, shift_logits

COMMITTED = os.path.join(MODELS, "tiny-dream-random")
ENDOFTEXT, IM_START, IM_END, MASK = 4089, 4090, 4091, 4092  # the fixture's added tokens
TOKENS, ROWS = 4093, 4160


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """The fixture checkpoint folder (read-only for the tests: copy it to change it)."""
    folder = str(tmp_path_factory.mktemp("dream") / "hf")
    dream_fixture.build(folder)
    return folder


@pytest.fixture(scope="module")
def converted(hf, tmp_path_factory):
    """The fixture converted as models/build_tiny_dream_random.sh converts it: (dllm.json, folder, report lines)."""
    out = str(tmp_path_factory.mktemp("dream") / "tiny-dream-random")
    lines = []
    meta = convert(hf, out, "tiny-dream-random", k=64, log=lines.append, progress=lambda *_: None)
    return meta, out, lines


def copy_of(hf, tmp_path, **config):
    """A copy of the fixture with config.json fields changed."""
    folder = str(tmp_path / "hf")
    shutil.copytree(hf, folder)
    with open(os.path.join(folder, "config.json")) as f:
        hf_config = json.load(f)
    hf_config.update(config)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config, f)
    return folder


def hf_config_of(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def tensors(folder) -> dict[str, torch.Tensor]:
    checkpoint = safetensors.Checkpoint(folder)
    out = {n: torch.from_numpy(checkpoint.rows(n, 0, info.shape[0]).copy()) for n, info in checkpoint.tensors.items()}
    checkpoint.close()
    return out


def our_model(folder) -> LLaDA:
    """Our module with the checkpoint's weights, through the conversion's name mapping."""
    model = LLaDA(dream_checkpoint.config_from_dream(hf_config_of(folder))).eval()
    model.load_state_dict({dream_checkpoint.to_ours(name): t for name, t in tensors(folder).items()})
    return model


# --- config.json ------------------------------------------------------------------------------------------------

def test_config_maps_every_key(hf):
    hf_config = hf_config_of(hf)
    groups = set(dream_checkpoint.REQUIRED) | dream_checkpoint.NO_EFFECT | dream_checkpoint.MAPPED
    assert set(hf_config) <= groups, "the fixture has every key of Dream-v0's config.json"
    c = dream_checkpoint.config_from_dream(hf_config)
    assert (c.d_model, c.n_heads, c.n_kv_heads, c.n_layers, c.mlp_hidden_size) == (64, 4, 2, 2, 192)
    assert (c.vocab_size, c.embedding_size, c.max_sequence_length) == (ROWS, None, 512)
    assert (c.rope_theta, c.rms_norm_eps, c.mask_token_id) == (1e6, 1e-6, MASK)
    assert c.include_qkv_bias and not c.include_bias and not c.weight_tying and c.shift_logits and not c.causal
    assert dream_checkpoint.config_from_dream(hf_config | {"tie_word_embeddings": True}).weight_tying
    assert dream_checkpoint.config_from_dream(hf_config | {"num_key_value_heads": None}).n_kv_heads == 4


@pytest.mark.parametrize("field,value", [
    ("rope_scaling", {"type": "linear", "factor": 2.0}), ("use_sliding_window", True), ("hidden_act", "gelu"),
    ("attention_bias", False), ("layer_types", ["full_attention"] * 2),
])
def test_unsupported_config_is_refused_by_name(hf, tmp_path, field, value):
    folder = copy_of(hf, tmp_path, **{field: value})
    with pytest.raises(CheckpointError, match=field):
        convert(folder, str(tmp_path / "out"), "x", log=lambda _: None)
    assert not os.path.exists(tmp_path / "out"), "refused before anything is written"


def test_missing_mask_id_and_indivisible_heads_are_named(hf):
    hf_config = hf_config_of(hf)
    with pytest.raises(KeyError, match="mask_token_id"):
        dream_checkpoint.config_from_dream({k: v for k, v in hf_config.items() if k != "mask_token_id"})
    with pytest.raises(ValueError, match="num_key_value_heads 3"):
        dream_checkpoint.config_from_dream(hf_config | {"num_key_value_heads": 3})


def test_family_comes_from_model_type(hf, tmp_path):
    folder = copy_of(hf, tmp_path, model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    with pytest.raises(CheckpointError, match="unknown architecture 'qwen2'.*'Dream'"):
        convert(folder, str(tmp_path / "out"), "x", log=lambda _: None)


# --- tensor names -----------------------------------------------------------------------------------------------

def test_name_mapping(hf):
    names = set(tensors(hf))
    ours = {dream_checkpoint.to_ours(n) for n in names}
    assert ours == set(parameter_shapes(dream_checkpoint.config_from_dream(hf_config_of(hf))))
    assert all(dream_checkpoint.to_dream(dream_checkpoint.to_ours(n)) == n for n in names)
    assert dream_checkpoint.to_ours("model.layers.1.mlp.gate_proj.weight") == "transformer.blocks.1.ff_proj.weight"
    assert dream_checkpoint.to_ours("model.layers.0.mlp.down_proj.weight") == "transformer.blocks.0.ff_out.weight"
    assert dream_checkpoint.to_ours("model.layers.0.self_attn.o_proj.weight") == "transformer.blocks.0.attn_out.weight"
    assert (dream_checkpoint.to_ours("model.layers.0.post_attention_layernorm.weight")
            == "transformer.blocks.0.ff_norm.weight")
    assert dream_checkpoint.to_ours("lm_head.weight") == "transformer.ff_out.weight"
    assert dream_checkpoint.to_ours("model.layers.0.self_attn.o_proj.bias") is None
    assert dream_checkpoint.to_ours("model.rotary_emb.inv_freq") is None


def rewrite_shard(folder, drop=(), add=None):
    """Writes the second shard again without the tensors `drop`, with `add` ({name: array}) added."""
    shard = os.path.join(folder, "model-00002-of-00002.safetensors")
    checkpoint = safetensors.Checkpoint(folder)
    state = {n: checkpoint.rows(n, 0, i.shape[0]) for n, i in checkpoint.tensors.items() if i.file == shard}
    checkpoint.close()
    state = {n: v for n, v in state.items() if n not in drop} | (add or {})
    safetensors.write(shard, [(n, v.shape) for n, v in state.items()], state.__getitem__, "BF16")
    with open(os.path.join(folder, safetensors.INDEX)) as f:
        index = json.load(f)
    index["weight_map"] = {n: s for n, s in index["weight_map"].items() if n not in drop} | {n: os.path.basename(shard)
                                                                                              for n in add or {}}
    with open(os.path.join(folder, safetensors.INDEX), "w") as f:
        json.dump(index, f)


def test_missing_tensor_is_named(hf, tmp_path):
    folder = copy_of(hf, tmp_path)
    rewrite_shard(folder, drop=("model.norm.weight",))
    with pytest.raises(CheckpointError, match=r"tensor model\.norm\.weight \(our transformer\.ln_f\.weight\) missing"):
        convert(folder, str(tmp_path / "out"), "x", log=lambda _: None)


def test_unexpected_and_misshapen_tensors_are_named(hf, tmp_path):
    folder = copy_of(hf, tmp_path)
    rewrite_shard(folder, add={"model.layers.1.self_attn.o_proj.bias": np.zeros(64, np.float32)})
    with pytest.raises(CheckpointError, match=r"unexpected tensor model\.layers\.1\.self_attn\.o_proj\.bias "
                                              r"\(is this a Dream checkpoint\?\)"):
        convert(folder, str(tmp_path / "out"), "x", log=lambda _: None)
    folder = copy_of(hf, tmp_path / "b")
    rewrite_shard(folder, drop=("lm_head.weight",), add={"lm_head.weight": np.zeros((TOKENS, 64), np.float32)})
    with pytest.raises(CheckpointError, match=r"lm_head\.weight \(our transformer\.ff_out\.weight\) has shape "
                                              r"\[4093, 64\], config\.json implies \[4160, 64\]"):
        convert(folder, str(tmp_path / "out"), "x", log=lambda _: None)


# --- the forward pass: Qwen2's, written out plainly ---------------------------------------------------------------

def qwen2_dream_logits(w: dict[str, torch.Tensor], hf_config: dict, ids: torch.Tensor, mask: torch.Tensor):
    """Dream's forward pass as Qwen2's modelling code computes it (RMSNorm, rotate-half RoPE with
    inv_freq = 1 / theta^(2i/d), repeat_kv, scaled dot-product attention, SwiGLU), bidirectional: no causal mask, only
    padding keys hidden; positions counted from the first real token, as Dream's generation_utils.py does."""
    d, heads, kv_heads = hf_config["hidden_size"], hf_config["num_attention_heads"], hf_config["num_key_value_heads"]
    head_dim, eps = d // heads, hf_config["rms_norm_eps"]
    n, length = ids.shape

    def rms_norm(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def rotate_half(x):
        return torch.cat((-x[..., head_dim // 2:], x[..., :head_dim // 2]), dim=-1)

    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    inv_freq = 1.0 / (hf_config["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = positions[..., None].float() * inv_freq
    cos, sin = torch.cat((freqs, freqs), -1).cos()[:, None], torch.cat((freqs, freqs), -1).sin()[:, None]
    bias = torch.where(mask[:, None, None, :] > 0, 0.0, float("-inf"))
    x = w["model.embed_tokens.weight"][ids]
    for i in range(hf_config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"])
        q, k, v = (F.linear(h, w[f"{p}self_attn.{s}_proj.weight"], w[f"{p}self_attn.{s}_proj.bias"])
                   .view(n, length, -1, head_dim).transpose(1, 2) for s in "qkv")
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)  # repeat_kv
        attn = ((q @ k.transpose(-1, -2)) / math.sqrt(head_dim) + bias).softmax(-1) @ v
        x = x + F.linear(attn.transpose(1, 2).reshape(n, length, d), w[p + "self_attn.o_proj.weight"])
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"])
        x = x + F.linear(F.silu(F.linear(h, w[p + "mlp.gate_proj.weight"])) * F.linear(h, w[p + "mlp.up_proj.weight"]),
                         w[p + "mlp.down_proj.weight"])
    return F.linear(rms_norm(x, w["model.norm.weight"]), w["lm_head.weight"])


def test_forward_is_qwen2_bidirectional(hf):
    """Our module, loaded through the name mapping, computes Dream's forward pass (padded rows included)."""
    w, hf_config = tensors(hf), hf_config_of(hf)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, TOKENS, (2, 20), generator=g)
    mask = torch.ones(2, 20, dtype=torch.int64)
    mask[0, :5] = 0
    with torch.no_grad():
        ours, reference = our_model(hf)(ids, mask), qwen2_dream_logits(w, hf_config, ids, mask)
    real = mask.bool()
    assert ours.shape == (2, 20, ROWS), "every row of the head, those beyond the tokenizer too"
    scale = reference[real].abs().max().item()
    assert scale > 5 and (ours - reference)[real].abs().max().item() <= 1e-5 * scale
    # The reference is sensitive to what it checks: without the q/k/v biases, or with a causal mask, it differs.
    no_bias = {n: (torch.zeros_like(t) if n.endswith("_proj.bias") else t) for n, t in w.items()}
    with torch.no_grad():
        assert (qwen2_dream_logits(no_bias, hf_config, ids, mask) - reference)[real].abs().max() > 0.1
        causal = our_model(hf)
        causal.config.causal = True
        assert (causal(ids, mask) - reference)[real].abs().max() > 0.1


def test_logits_are_peaked(hf):
    """Greedy decisions of the fixture are no near-ties: the best and second-best logits at masked positions lie far
    apart compared with float32 differences between PyTorch and ONNX Runtime (~1e-5)."""
    gaps = dream_fixture.top2_gaps(our_model(hf), MASK)
    assert len(gaps) > 100 and np.median(gaps) > 0.2 and gaps.min() > 1e-3


# --- the tokenizer built from vocab.json + merges.txt ---------------------------------------------------------------

# Qwen2Tokenizer's PRETOKENIZE_REGEX (transformers, tokenization_qwen2.py), written out here independently.
QWEN2_PATTERN = regex.compile(
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def byte_chars() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in printable else chr(next(extra)) for b in range(256)}


def reference_encode(text: str, folder: str) -> list[int]:
    """Qwen2's slow tokenizer, plainly: added tokens cut out first, then NFC, the split regex, bytes as characters,
    and merges applied lowest rank first."""
    with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
        ranks = {tuple(line.split()): r for r, line in enumerate(f.read().splitlines()[1:])}
    with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
        added = {t["content"]: int(i) for i, t in json.load(f)["added_tokens_decoder"].items()}
    chars = byte_chars()
    ids = []
    for part in regex.split("(" + "|".join(map(regex.escape, added)) + ")", text):
        if part in added:
            ids.append(added[part])
            continue
        for piece in QWEN2_PATTERN.findall(unicodedata.normalize("NFC", part)):
            symbols = [chars[b] for b in piece.encode("utf-8")]
            while len(symbols) > 1:
                rank, k = min((ranks.get(pair, math.inf), k) for k, pair in enumerate(zip(symbols, symbols[1:])))
                if rank == math.inf:
                    break
                symbols[k:k + 2] = [symbols[k] + symbols[k + 1]]
            ids.extend(vocab[s] for s in symbols)
    return ids


TEXTS = [
    "Hello world, it's a test. IT'S LOUD, we'll see; they'VE gone. I'The DON'THE it'Sound x'Dog 'tis",
    "The year 2024 had 366 days: 3.14159 and 1,000,000!",
    "  leading spaces,\ttabs\tand trailing   ",
    "lines\r\nwith CRLF\n\n\nand blank ones\n",
    "def f(x):\n    return x ** 2  # squared\n",
    "Ünïcödé: café, naïve, coöperate; Ελληνικά, русский, 中文字符, 日本語のテキスト, 한국어",
    "cafe\u0301 and n\u0303 in decomposed form (NFC composes them)",
    "emoji 🙂🚀 and symbols ©®™ ∑∫√",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<|mask|><|mask|> end",
    "",
]


def run_tokenizer_node(path: str, encode: list[str], decode: list[list[int]]) -> dict:
    """@huggingface/tokenizers, as the server uses it (models/tests/tokenizer_run.mjs)."""
    proc = subprocess.run(["node", os.path.join(MODELS, "tests", "tokenizer_run.mjs")], cwd=REPO, check=True,
                          input=json.dumps({"tokenizer": path, "encode": encode, "decode": decode}),
                          capture_output=True, text=True)
    return json.loads(proc.stdout)


def test_built_tokenizer_in_node(hf, converted):
    """The tokenizer.json built from vocab.json + merges.txt encodes every text in the server's tokenizer library
    to the ids of Qwen2's slow tokenizer, decodes them back to the (NFC) text, and keeps special tokens whole."""
    _, out, _ = converted
    path = os.path.join(out, "tokenizer.json")
    expected = [reference_encode(t, hf) for t in TEXTS]
    got = run_tokenizer_node(path, TEXTS, expected + [[IM_START], [MASK, ENDOFTEXT]])
    assert got["encoded"] == expected
    assert got["decoded"][:len(TEXTS)] == [unicodedata.normalize("NFC", t) for t in TEXTS]
    assert got["decoded"][len(TEXTS):len(TEXTS) + 2] == ["<|im_start|>", "<|mask|><|endoftext|>"]
    assert expected[8][:1] == [IM_START] and IM_END in expected[8] and expected[9].count(MASK) == 2
    assert all(len(ids) < len(t.encode()) for ids, t in zip(expected, TEXTS) if t), "merges were applied"
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    assert spec["normalizer"] == {"type": "NFC"} and spec["model"]["type"] == "BPE"
    assert spec["pre_tokenizer"]["pretokenizers"][0]["behavior"] == "Isolated"
    assert [(t["id"], t["content"], t["special"]) for t in spec["added_tokens"]] == [
        (ENDOFTEXT, "<|endoftext|>", True), (IM_START, "<|im_start|>", True), (IM_END, "<|im_end|>", True),
        (MASK, "<|mask|>", True)]


def test_built_tokenizer_in_python_tokenizers(converted, hf):
    """The same ids from Hugging Face's own `tokenizers` package, where it is installed."""
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(converted[1], "tokenizer.json"))
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == reference_encode(text, hf), text
        assert tokenizer.decode(ids, skip_special_tokens=False) == unicodedata.normalize("NFC", text)


def test_tokenizer_json_is_used_when_present(hf, tmp_path):
    folder = copy_of(hf, tmp_path)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump({"added_tokens": [{"id": MASK, "content": "<|mask|>"}, {"id": IM_END, "content": "<|im_end|>"},
                                    {"id": ENDOFTEXT, "content": "<|endoftext|>"}],
                   "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}, f)
    os.remove(os.path.join(folder, "vocab.json"))
    checkpoint = dream_checkpoint.read(folder, hf_config_of(folder),
                                       dream_checkpoint.config_from_dream(hf_config_of(folder)))
    assert checkpoint.tokenizer_file == os.path.join(folder, "tokenizer.json")
    assert dict(checkpoint.report)["tokenizer"].startswith("tokenizer.json")
    os.remove(os.path.join(folder, "tokenizer.json"))
    with pytest.raises(CheckpointError, match="vocab.json: missing"):
        convert(folder, str(tmp_path / "out"), "x", log=lambda _: None)


# --- the converted folder ---------------------------------------------------------------------------------------------

def test_dllm_json(converted):
    meta, out, lines = converted
    assert meta["architecture"] == "dream" and meta["model_config"]["shift_logits"] is True
    assert (meta["vocab_size"], meta["mask_token_id"], meta["pad_token_id"], meta["bos_token_id"]) == (ROWS, MASK,
                                                                                                        ENDOFTEXT, None)
    assert meta["eos_token_ids"] == [ENDOFTEXT, IM_END], "end of text, and ChatML's end of turn"
    assert meta["chat_template"] == dream_fixture.CHAT_TEMPLATE and meta["max_sequence_length"] == 512
    assert meta["generation_defaults"] == {"max_tokens": 32, "steps": 32, "block_length": None,
                                           "remasking": "low_confidence", "threshold": None, "temperature": 0.0,
                                           "alg": "entropy", "alg_temp": 0.0, "eps": 0.001}
    assert (meta["cached"]["kv_heads"], meta["cached"]["head_dim"], meta["onnx"]["fp16"]) == (2, 16, None)
    assert sorted(os.listdir(out)) == ["dllm.json", "model.device.onnx", "model.kv.onnx", "model.onnx",
                                       "tokenizer.json", "weights.data"]
    report = "\n".join(lines)
    for expected in ("Dream (Qwen2 layout", "4 heads (2 kv heads, grouped-query)",
                     "include_qkv_bias, shift_logits", "4160 rows (config.json vocab_size), the tokenizer 4093 tokens: "
                     "the 67 rows beyond it stay in the logits", "BF16", "in 2 files (sharded",
                     "mask 4092, eos [4089, 4091], pad 4089, bos None", "built from vocab.json (4089 tokens), "
                     "merges.txt (3833 merges) and 4 added tokens", "the chat template's <|im_end|> 4091",
                     "max_tokens 32, steps 32, temperature 0.0 (default), alg entropy (default)",
                     "architecture dream", "peak memory"):
        assert expected in report, expected


def test_converted_graphs_match_pytorch(hf, converted):
    """model.onnx and model.kv.onnx in onnxruntime-node give the PyTorch module's outputs (unshifted: position p's
    own output), with every row of the head in the softmax."""
    _, out, _ = converted
    model = our_model(hf)
    ids = torch.tensor([[ENDOFTEXT, 300, 17, 44, MASK, MASK, MASK], [IM_START, 12, 13, 900, 5, MASK, MASK]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1] * 7])
    feeds = dict(input_ids=ids, attention_mask=mask, positions=torch.tensor([[3, 4, 5], [4, 5, 6]]),
                 cfg_scale=torch.zeros(2), uncond_row=torch.arange(2))
    with torch.no_grad():
        top, top_ids, lse, entropy = SamplingGraph(model, 64)(*(feeds[n] for n in INPUT_NAMES))
        logits = model(ids, mask)
    got = run_ort(os.path.join(out, "model.onnx"), feeds)
    np.testing.assert_allclose(got["topk_logits"], top.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["logsumexp"], lse.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["entropy"], entropy.numpy(), atol=1e-4)
    assert np.array_equal(got["topk_ids"][..., 0], top_ids[..., 0].numpy())
    at = logits[0, 3]
    assert abs(got["logsumexp"][0, 0] - torch.logsumexp(at, -1).item()) < 1e-4
    assert abs(got["logsumexp"][0, 0] - torch.logsumexp(at[:TOKENS], -1).item()) > 1e-6, "the extra rows count"
    cached_feeds = dict(input_ids=ids, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), attention_mask=mask,
                        past_kv=torch.zeros(2, 2, 2, 2, 0, 16), positions=feeds["positions"],
                        cfg_scale=feeds["cfg_scale"], uncond_row=feeds["uncond_row"])
    cached = run_ort(os.path.join(out, "model.kv.onnx"), cached_feeds)
    with torch.no_grad():
        expected = CachedSamplingGraph(model, 64)(*(cached_feeds[n] for n in CACHED_INPUT_NAMES))
    np.testing.assert_allclose(cached["topk_logits"], top.numpy(), atol=1e-4)
    np.testing.assert_allclose(cached["present_kv"], expected[4].numpy(), atol=1e-4)


def test_fp16_conversion(hf, tmp_path):
    """--fp16 adds the float16 graphs (float32 islands) on the Dream path as on LLaDA's; on the CPU they give the
    float32 module's logits to float16's precision and its top-1 token wherever that is not a near-tie."""
    meta = convert(hf, str(tmp_path / "out"), "x", k=8, fp16=True, log=lambda _: None, progress=lambda *_: None)
    assert meta["onnx"]["fp16"] == "model.fp16.onnx" and meta["weights"]["fp16"] == "weights.fp16.data"
    ids = torch.tensor([[IM_START, 300, 17, 44, 1200, MASK, MASK, MASK, MASK]])
    feeds = dict(input_ids=ids, attention_mask=torch.ones_like(ids), positions=torch.tensor([[4, 5, 6, 7]]),
                 cfg_scale=torch.zeros(1), uncond_row=torch.zeros(1, dtype=torch.int64))
    with torch.no_grad():
        top, top_ids, _, _ = SamplingGraph(our_model(hf), 8)(*(feeds[n] for n in INPUT_NAMES))
    got = run_ort(str(tmp_path / "out" / "model.fp16.onnx"), feeds)
    np.testing.assert_allclose(got["topk_logits"], top.numpy(), atol=0.01 * top.abs().max().item())
    clear = (top[..., 0] - top[..., 1]).numpy() > 0.1
    assert clear.any() and np.array_equal(got["topk_ids"][..., 0][clear], top_ids[..., 0].numpy()[clear])


def dream_greedy(step, prompt: list[int], length: int) -> list[int]:
    """Greedy decoding with Dream's shift, one position a step: the prediction for masked position p is read from
    the output at p - 1; the most confident (lowest entropy) masked position is committed."""
    canvas = prompt + [MASK] * length
    for _ in range(length):
        masked = [i for i, t in enumerate(canvas) if t == MASK]
        top, ids, entropy = step(dict(input_ids=torch.tensor([canvas]),
                                      attention_mask=torch.ones(1, len(canvas), dtype=torch.int64),
                                      positions=torch.tensor([[max(p - 1, 0) for p in masked]]),
                                      cfg_scale=torch.zeros(1), uncond_row=torch.zeros(1, dtype=torch.int64)))
        j = int(np.argmin(np.asarray(entropy)[0]))
        canvas[masked[j]] = int(np.asarray(ids)[0, j, 0])
    return canvas[len(prompt):]


def test_greedy_generation_equals_pytorch(hf, converted):
    _, out, _ = converted
    model = our_model(hf)

    def onnx_step(feeds):
        got = run_ort(os.path.join(out, "model.onnx"), feeds)
        return got["topk_logits"], got["topk_ids"], got["entropy"]

    def torch_step(feeds):
        with torch.no_grad():
            top, ids, _, entropy = SamplingGraph(model, 8)(*(feeds[n] for n in INPUT_NAMES))
        return top.numpy(), ids.numpy(), entropy.numpy()

    prompt = [IM_START, 300, 17, 44, 1200]
    assert dream_greedy(onnx_step, prompt, 6) == dream_greedy(torch_step, prompt, 6)
    # The shift is what the test reads: the module's predictions at the masked positions read one position back.
    with torch.no_grad():
        canvas = torch.tensor([prompt + [MASK] * 6])
        assert torch.equal(shift_logits(model(canvas))[0, len(prompt)], model(canvas)[0, len(prompt) - 1])


def test_committed_folder_is_the_fixture_converted(converted):
    """models/tiny-dream-random is what models/build_tiny_dream_random.sh writes (dllm.json, the tokenizer, the
    weights byte for byte); rebuild it with that script when the conversion or the contract changes."""
    _, out, _ = converted
    for name in ("dllm.json", "tokenizer.json", "weights.data"):
        with open(os.path.join(COMMITTED, name), "rb") as a, open(os.path.join(out, name), "rb") as b:
            assert a.read() == b.read(), f"{name} differs: run bash models/build_tiny_dream_random.sh"
    assert os.path.exists(os.path.join(COMMITTED, "MODEL_CARD.md"))
    assert sum(os.path.getsize(os.path.join(COMMITTED, n)) for n in os.listdir(COMMITTED)) < 4 * 2**20


# --- special ids and generation defaults from other generation_config.json files ------------------------------

def test_special_ids_and_defaults_from_other_files(hf):
    hf_config = hf_config_of(hf)
    with open(os.path.join(hf, "tokenizer_config.json")) as f:
        tok_config = json.load(f)
    tokenizer, _, _ = dream_checkpoint.read_tokenizer(hf, tok_config)
    # A list of eos ids in generation_config.json (as DiffuCoder's or Dream-Coder's may have), no template.
    ids, line = dream_checkpoint.special_ids(hf, hf_config, {"eos_token_id": [ENDOFTEXT, IM_START]}, tok_config,
                                             tokenizer, None)
    assert ids == {"mask": MASK, "eos": (ENDOFTEXT, IM_START), "pad": ENDOFTEXT, "bos": None}
    assert "generation_config.json [4089, 4090]" in line
    ids, _ = dream_checkpoint.special_ids(hf, {k: v for k, v in hf_config.items() if k != "pad_token_id"}, {},
                                         tok_config | {"add_bos_token": True}, tokenizer, dream_fixture.CHAT_TEMPLATE)
    assert ids["bos"] == ENDOFTEXT and ids["pad"] == ENDOFTEXT and ids["eos"] == (ENDOFTEXT, IM_END)
    # Without max_new_tokens and steps: 256, capped by the context; what generation_config.json says is carried.
    defaults, line = dream_checkpoint.generation_defaults(hf, {"temperature": 0.2, "top_p": 0.95, "alg": "origin"}, 128)
    assert defaults == {"max_tokens": 128, "steps": 128, "temperature": 0.2, "block_length": None, "alg": "origin",
                        "alg_temp": 0.0, "eps": 0.001}
    assert "capped at the context 128" in line and "not carried: top_p 0.95" in line
    assert dream_checkpoint.generation_defaults(hf, {}, 4096)[0]["max_tokens"] == 256
    with pytest.raises(CheckpointError, match="alg = 'greedy'"):
        dream_checkpoint.generation_defaults(hf, {"alg": "greedy"}, 512)
