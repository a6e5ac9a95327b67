"""Masked-diffusion pre-training of a LLaDA model (Nie et al. 2025, "Large Language Diffusion Models", Alg. 1).

For each sequence draw t ~ U(0, 1], mask every token independently with probability p = (1 - eps) t + eps,
and minimise the cross-entropy on the masked positions weighted by 1/p (an upper bound on the negative
log-likelihood). The data is packed as LLaDA pretrains (its section 2.2): every document becomes
<|startoftext|> doc <|endoftext|>, the documents are concatenated into one stream, and each row of a batch is a
window of `seq_len` tokens cut from it at a random offset; no padding anywhere, every position is maskable. A
`random_length_share` of batches (LLaDA: 1%) is cut to a random length in [1, seq_len], so the model also sees
short canvases.

Speed on CPU: matrix products run in bfloat16 under autocast (master weights, optimiser, norms, softmax and the
loss stay float32), which oneDNN runs on AVX512-BF16 at about twice the float32 rate; `python3 -m dllm.bench_train`
measures it against the previous trainer, and `--no-bf16` turns it off.

With `--block-size` the model is a block diffusion model (BD3-LM, Arriola et al. 2025) and the objective is BD3-LM's:
a noise level per block, and the noisy and the clean window side by side under the block-causal training mask
(block_causal_training_bias), so every block learns to denoise given its clean past.

With `--objective ar` the model has causal attention and the objective is next-token cross-entropy, the prediction
for token i+1 read from position i: the autoregressive phase of adapting an AR model to diffusion (Gong et al. 2024,
"Scaling Diffusion Language Models via Adaptation from Autoregressive Models"; Dream 7B), whose diffusion phase keeps
that shift. Same packing, optimiser, schedule and checkpoints; validation is next-token loss on the same windows.

Adaptation, the diffusion phase: `--init-from` the causal checkpoint with `--shift-logits` (the prediction for
position i is read from position i-1's output, the shift the AR model was trained with; Dream 7B and DiffuGPT keep it)
and `--anneal-steps N`: attention starts causal and each key after the query becomes visible with a probability that
grows linearly from 0 to 1 over the first N steps (DiffuLLaMA's attention mask annealing, Gong et al. 2024), after
which it is bidirectional as the exported model's is. The objective is LLaDA's masked-diffusion loss throughout.

On a GPU, `--device cuda`: the model, batches and validation windows live on the GPU and the matrix products run in
bfloat16 under CUDA autocast (`--bf16`, as on CPU). Every random draw (initial weights, windows, t, masks, annealed
keys) still comes from the CPU generators, so a seed gives the same run on either device up to arithmetic, and a
checkpoint holds CPU tensors: one written on a GPU resumes on a CPU and the other way round. models/train_gpu.sh runs
train_dream.sh's recipe this way on a lent GPU machine.

    python3 -m dllm.train --out models/runs/tiny-llada            # resumes from out/ckpt.pt when present
    python3 -m dllm.train --out models/runs/tiny-bd3 --init-from tiny-llada --block-size 16
    python3 -m dllm.train --out /work/runs/tiny-ar --objective ar
    python3 -m dllm.train --out models/runs/tiny-dream --init-from /work/runs/tiny-ar/ckpt.pt --shift-logits --anneal-steps 300
    python3 -m dllm.train --out models/runs/gpu --device cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from .data import read_documents
from .model import PADDING_KEY_BIAS, LLaDA, ModelConfig, load_checkpoint, save_checkpoint, shift_logits
from .tokenizer import BOS, EOS, MASK, Tokenizer

EPS = 1e-3  # LLaDA's minimum masking probability
VALID_T_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=os.path.join(here, "..", ".cache", "corpus"))
    p.add_argument("--tokenizer", default=os.path.join(here, "..", "tiny-llada", "tokenizer.json"))
    p.add_argument("--out", default=os.path.join(here, "..", "runs", "tiny-llada"))
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-heads", type=int, default=8)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument("--mlp-hidden", type=int, default=768)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--block-size", type=int, default=0, help="train a block diffusion model (BD3-LM) with this block size; 0 = LLaDA")
    p.add_argument("--objective", choices=("diffusion", "ar"), default="diffusion",
                   help="diffusion: masked diffusion (LLaDA, or BD3-LM with --block-size); ar: causal next-token training")
    p.add_argument("--shift-logits", action="store_true",
                   help="diffusion objective with shifted predictions (position i read from i-1's output): adaptation "
                        "of a causal model (Dream 7B, DiffuGPT); exported as architecture dream")
    p.add_argument("--anneal-steps", type=int, default=0,
                   help="attention annealed from causal to bidirectional over this many steps (DiffuLLaMA); 0 = none")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--random-length-share", type=float, default=0.01, help="share of batches cut to a random length")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bfloat16 autocast of matmuls")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model trains (checkpoints are "
                   "the same either way)")
    p.add_argument("--max-steps", type=int, default=1400)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--valid-windows", type=int, default=32)
    p.add_argument("--valid-seq-len", type=int, default=256, help="validation window (<= every compared model's context)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (the model's on --device cpu)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--time-limit-min", type=float, default=0, help="stop (with a checkpoint) after this many minutes; 0 = none")
    p.add_argument("--halt-at-step", type=int, default=0, help="stop (with a checkpoint) at this step, schedule unchanged; 0 = none")
    p.add_argument("--init-from", default="", help="start from this checkpoint's weights, or a model folder's (recovered "
                   "from its model.onnx); a fresh optimiser and schedule")
    p.add_argument("--max-docs", type=int, default=0, help="use only the first N training documents (tests)")
    return p.parse_args(argv)


def encode_corpus(tokenizer: Tokenizer, docs: list[str]) -> list[np.ndarray]:
    return [np.asarray([BOS, *tokenizer.encode(d), EOS], dtype=np.int64) for d in docs]


def stream_batch(stream: np.ndarray, rows: int, length: int, rng: np.random.Generator) -> torch.Tensor:
    """-> tokens [rows, length]: windows of the packed stream at random offsets."""
    starts = rng.integers(0, len(stream) - length, size=rows)
    return torch.from_numpy(np.stack([stream[s:s + length] for s in starts]))


def stratified_times(rows: int) -> torch.Tensor:
    """t for each row of a batch, one per stratum of (0, 1] with a shared random offset: MDLM's low-discrepancy
    sampler (Sahoo et al. 2024), which keeps every batch's mix of masking rates even and so cuts the variance of the
    1/t-weighted loss at small batch sizes."""
    return 1.0 - (torch.rand(1) + torch.arange(rows) / rows) % 1.0


def next_token_loss(model: LLaDA, x: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal model over x [N, L]: position i's logits predict token i+1 (the
    shift Dream and DiffuGPT keep when the model becomes a diffusion model), so L - 1 targets per row."""
    logits = model.project(model.hidden_states(x)[:, :-1])  # [N, L-1, V]
    return F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())


def masked_diffusion_loss(model: LLaDA, x: torch.Tensor, t: torch.Tensor,
                          key_bias: torch.Tensor | None = None) -> torch.Tensor:
    """LLaDA's objective: mean over all positions of 1/p * CE at the masked ones. x: [N, L]; t: [N] (or [N, blocks]
    for block diffusion) in (0, 1]; key_bias: an attention bias [1, 1, L, L] during annealing (annealing_bias)."""
    p = masking_probabilities(model, x, t.to(x.device))  # [N, L]
    # Drawn from the CPU generator on either device: the same masks for a seed, and one generator state to checkpoint.
    masked = torch.rand(x.shape).to(x.device) < p
    noisy = torch.where(masked, torch.full_like(x, MASK), x)
    h = noisy_hidden_states(model, noisy, x, key_bias)  # [N, L, D]
    logits = model.project(h[masked])  # only masked positions reach the head: [M, V]
    ce = F.cross_entropy(logits.float(), x[masked], reduction="none")  # [M]
    return (ce / p[masked]).sum() / x.numel()


@functools.lru_cache(maxsize=4)  # the same few (length, block size) every step: built once, never modified
def block_causal_training_bias(length: int, block_size: int) -> torch.Tensor:
    """BD3-LM's training mask (Arriola et al. 2025, section 3.3 and their `block_diff_mask`) as an additive bias
    [1, 1, 2L, 2L] over the concatenation [x_t, x_0] of the noisy and the clean window:

    - noisy block b sees the noisy tokens of block b (bidirectional inside the block, M_BD),
    - and the clean tokens of the blocks before b (M_OBC): the context the sampler gives it at inference;
    - clean block b sees the clean tokens of blocks 0..b (M_BC), which is how a finished block's keys/values are
      computed at inference (so the cache the engine appends is the one trained for);
    - clean tokens never see noisy ones.
    One forward pass then trains every block against its clean past at once.
    """
    block = torch.arange(length) // block_size
    q, k = block[:, None], block[None, :]
    noisy_rows = torch.cat((q == k, k < q), dim=1)  # [L, 2L]
    clean_rows = torch.cat((torch.zeros(length, length, dtype=torch.bool), k <= q), dim=1)
    allowed = torch.cat((noisy_rows, clean_rows), dim=0)  # [2L, 2L]
    return torch.where(allowed, 0.0, PADDING_KEY_BIAS)[None, None]


def annealing_bias(length: int, visible_share: float) -> torch.Tensor:
    """DiffuLLaMA's annealed attention mask as an additive bias [1, 1, L, L]: causal, plus each later key visible with
    probability `visible_share` (drawn afresh every step, shared by the batch's rows)."""
    position = torch.arange(length)
    allowed = (position[None, :] <= position[:, None]) | (torch.rand(length, length) < visible_share)
    return torch.where(allowed, 0.0, PADDING_KEY_BIAS)[None, None]


def noisy_hidden_states(model: LLaDA, noisy: torch.Tensor, clean: torch.Tensor,
                        key_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Hidden states [N, L, D] that predict the noisy window's tokens: a LLaDA model sees it alone (under key_bias
    while attention is annealed); with shifted logits position i's prediction is position i-1's state; a block
    diffusion model sees it beside the clean window under the block-causal training mask, both halves at positions
    0..L-1."""
    block_size = model.config.block_size
    if block_size is None:
        if key_bias is None:
            h = model.hidden_states(noisy)  # no padding in a packed window
        else:
            h = model.hidden_states_biased(noisy, torch.arange(noisy.shape[1], device=noisy.device)[None, :], key_bias)
        return shift_logits(h) if model.config.shift_logits else h
    length = noisy.shape[1]
    positions = torch.arange(length, device=noisy.device).repeat(2)[None, :].expand(noisy.shape[0], -1)  # [N, 2L]
    bias = block_causal_training_bias(length, block_size).to(noisy.device)
    return model.hidden_states_biased(torch.cat((noisy, clean), dim=1), positions, bias)[:, :length]


def masking_probabilities(model: LLaDA, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """p = (1 - eps) t + eps per token [N, L] from t: one per row [N] (LLaDA), or one per block [N, blocks] (BD3-LM
    draws a noise level per block: its objective is a sum of one diffusion loss per block)."""
    p = (1 - EPS) * t + EPS
    if p.dim() == 1:
        return p[:, None].expand_as(x)
    return p.repeat_interleave(model.config.block_size, dim=1)[:, : x.shape[1]]


def sample_times(model: LLaDA, x: torch.Tensor) -> torch.Tensor:
    """Stratified t: per row for LLaDA, per block (shuffled over the batch's blocks) for block diffusion."""
    if model.config.block_size is None:
        return stratified_times(x.shape[0])
    blocks = -(-x.shape[1] // model.config.block_size)
    return stratified_times(x.shape[0] * blocks)[torch.randperm(x.shape[0] * blocks)].view(x.shape[0], blocks)


def validation_windows(tokenizer: Tokenizer, path: str, count: int, length: int) -> torch.Tensor:
    """[count, length] windows at evenly spaced offsets of the packed validation split (the same for every model
    that shares the tokenizer, so their losses compare)."""
    stream = np.concatenate(encode_corpus(tokenizer, read_documents(path)))
    count = min(count, len(stream) // length)
    starts = np.linspace(0, len(stream) - length, count).astype(np.int64)
    return torch.from_numpy(np.stack([stream[s:s + length] for s in starts]))


@torch.no_grad()
def validation_losses(model: LLaDA, windows: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean CE per masked token at each t of a fixed grid, with fixed masks (comparable across runs). A block
    diffusion model predicts each block given the clean blocks before it, so its figures are lower than a LLaDA
    model's on the same windows by construction: compare like with like."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in VALID_T_GRID:
        masked = torch.rand(windows.shape, generator=g).to(windows.device) < t  # the CPU generator, as in training
        noisy = torch.where(masked, torch.full_like(windows, MASK), windows)
        logits = model.project(noisy_hidden_states(model, noisy, windows)[masked])
        out[f"t={t}"] = F.cross_entropy(logits, windows[masked]).item()
    out["mean"] = sum(out.values()) / len(VALID_T_GRID)
    model.train()
    return out


@torch.no_grad()
def validation_next_token_loss(model: LLaDA, windows: torch.Tensor) -> float:
    """Mean next-token CE per token on the validation windows (deterministic: no masks to draw)."""
    model.eval()
    loss = next_token_loss(model, windows).item()
    model.train()
    return loss


def initial_model(path: str) -> LLaDA:
    """The weights to start from: a checkpoint, or a model folder (its model.onnx holds them; a block diffusion model
    is fine-tuned from the default model's folder this way, as Fast-dLLM v2 and SDAR adapt trained models)."""
    if not os.path.isdir(path):
        return load_checkpoint(path)[0]
    from .reference import model_from_onnx

    with open(os.path.join(path, "dllm.json")) as f:
        return model_from_onnx(path, json.load(f))


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr at max_steps."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.max_steps - args.warmup))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def progress_line(step: int, total: int, loss: float, lr: float, tok_s: float) -> str:
    done = int(30 * step / total)
    return f"[{'#' * done}{'.' * (30 - done)}] {step}/{total} loss {loss:.3f} lr {lr:.2e} {tok_s:,.0f} tok/s"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    causal = args.objective == "ar"
    if causal and args.block_size:
        raise SystemExit("--objective ar trains causal attention; --block-size is a diffusion attention rule")
    if (args.shift_logits or args.anneal_steps) and (causal or args.block_size):
        raise SystemExit("--shift-logits and --anneal-steps adapt a model to (LLaDA-style) diffusion: not with "
                         "--objective ar or --block-size")
    if args.device == "cuda" and not torch.cuda.is_available():
        why = "it was built without CUDA" if torch.version.cuda is None else "torch.cuda.is_available() is false"
        raise SystemExit(f"--device cuda: torch {torch.__version__} sees no CUDA device ({why}); train with --device cpu")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    ckpt_path, log_path = os.path.join(args.out, "ckpt.pt"), os.path.join(args.out, "log.jsonl")

    tokenizer = Tokenizer.load(args.tokenizer)
    train_docs = read_documents(os.path.join(args.corpus, "train.txt"))
    if args.max_docs:
        train_docs = train_docs[: args.max_docs]
    train = encode_corpus(tokenizer, train_docs)
    stream = np.concatenate(train)
    valid = validation_windows(tokenizer, os.path.join(args.corpus, "valid.txt"), args.valid_windows, args.valid_seq_len)
    print(f"corpus: {len(stream):,} train tokens, {valid.numel():,} validation tokens", flush=True)
    valid = valid.to(args.device)

    if os.path.exists(ckpt_path):
        model, ckpt = load_checkpoint(ckpt_path)
        state = ckpt["train"]
        if "optimizer" not in ckpt:
            raise SystemExit(f"{ckpt_path} has no optimiser state (stripped to travel: dllm.parts); continue from it "
                             "with --init-from and another --out")
        if model.config.causal != causal:
            raise SystemExit(f"{ckpt_path} was trained with --objective {'ar' if model.config.causal else 'diffusion'}; "
                             "resume it with the same objective")
        if model.config.shift_logits != args.shift_logits:
            raise SystemExit(f"{ckpt_path} was trained {'with' if model.config.shift_logits else 'without'} "
                             "--shift-logits; resume it the same way")
        print(f"resuming from step {state['step']}", flush=True)
    else:
        torch.manual_seed(args.seed)
        block_size = args.block_size or None
        if args.init_from:  # the architecture comes from the checkpoint; only the attention rule may change
            init = initial_model(args.init_from)
            model = LLaDA(dataclasses.replace(init.config, block_size=block_size, causal=causal,
                                              shift_logits=args.shift_logits, max_sequence_length=args.seq_len))
            model.load_state_dict(init.state_dict())
        else:
            model = LLaDA(ModelConfig(d_model=args.d_model, n_heads=args.n_heads, n_layers=args.n_layers,
                                      mlp_hidden_size=args.mlp_hidden, vocab_size=tokenizer.vocab_size,
                                      max_sequence_length=args.seq_len, mask_token_id=MASK, block_size=block_size,
                                      causal=causal, shift_logits=args.shift_logits))
        ckpt, state = None, {"step": 0, "tokens": 0, "seconds": 0.0}
    model.to(args.device)  # built (or loaded) on the CPU, so its initial weights do not depend on the device
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(args.seed)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])  # moves the moments to the parameters' device
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
    print(f"model: {model.num_parameters():,} parameters; {json.dumps(model.config.to_dict())}", flush=True)

    def checkpoint() -> None:
        save_checkpoint(ckpt_path + ".tmp", model, optimizer=optimizer.state_dict(), train=state, args=vars(args),
                        numpy_rng=rng.bit_generator.state, torch_rng=torch.get_rng_state())
        os.replace(ckpt_path + ".tmp", ckpt_path)

    def log(record: dict) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    if 0 < args.halt_at_step <= state["step"]:
        print(f"already at step {state['step']} (--halt-at-step {args.halt_at_step}): nothing to do", flush=True)
        return
    started, window_tokens, window_start, window_losses = time.time() - state["seconds"], 0, time.time(), []
    session_start = time.time()
    while state["step"] < args.max_steps:
        step = state["step"]
        lr = lr_at(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        length = args.seq_len
        # Short canvases teach a diffusion model short inputs; a causal model already trains on every prefix length.
        if not causal and rng.random() < args.random_length_share:
            length = int(rng.integers(1, args.seq_len + 1))
        x = stream_batch(stream, args.batch_size, length, rng).to(args.device)
        anneal = annealing_bias(length, step / args.anneal_steps).to(args.device) if step < args.anneal_steps else None
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
            loss = next_token_loss(model, x) if causal else masked_diffusion_loss(model, x, sample_times(model, x), anneal)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

        state["step"] += 1
        state["tokens"] += x.numel()
        window_tokens += x.numel()
        window_losses.append(loss.item())
        state["seconds"] = time.time() - started
        if state["step"] % 10 == 0 or state["step"] == args.max_steps:
            tok_s = window_tokens / (time.time() - window_start)
            mean = sum(window_losses) / len(window_losses)
            print(progress_line(state["step"], args.max_steps, mean, lr, tok_s), flush=True)
            log({"step": state["step"], "window_loss": mean, "lr": lr, "tokens": state["tokens"],
                 "seconds": round(state["seconds"], 1), "tok_s": round(tok_s, 1)})
            window_tokens, window_start, window_losses = 0, time.time(), []
        if state["step"] % args.eval_every == 0 or state["step"] == args.max_steps:
            if causal:  # its own key: "valid" records are the masked-token estimator, not to be plotted beside it
                v = validation_next_token_loss(model, valid)
                print(f"validation next-token loss {v:.4f}", flush=True)
                log({"step": state["step"], "valid_next_token": v, "tokens": state["tokens"],
                     "seconds": round(state["seconds"], 1)})
            else:
                v = validation_losses(model, valid, args.seed)
                print(f"validation masked-token loss {json.dumps({k: round(x, 4) for k, x in v.items()})}", flush=True)
                log({"step": state["step"], "valid": v, "tokens": state["tokens"], "seconds": round(state["seconds"], 1)})
        if state["step"] % args.ckpt_every == 0 or state["step"] == args.max_steps:
            checkpoint()
        if state["step"] == args.halt_at_step:
            checkpoint()
            print(f"halted at step {state['step']} (--halt-at-step); run again to resume", flush=True)
            return
        if args.time_limit_min and time.time() - session_start > 60 * args.time_limit_min:
            checkpoint()
            print(f"time limit reached at step {state['step']}; run again to resume", flush=True)
            sys.exit(0)
    print(f"done: {state['step']} steps, {state['tokens']:,} tokens, {state['seconds'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
