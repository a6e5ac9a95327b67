import json
import os

import numpy as np
import torch

from dllm import train


def test_loss_falls_and_training_resumes(corpus_dir, tmp_path):
    args = ["--corpus", corpus_dir, "--out", str(tmp_path), "--max-docs", "400", "--d-model", "64", "--n-layers", "2",
            "--n-heads", "4", "--mlp-hidden", "128", "--seq-len", "64", "--valid-seq-len", "64", "--batch-size", "8",
            "--warmup", "5", "--lr", "3e-3", "--eval-every", "20", "--ckpt-every", "20", "--valid-windows", "8",
            "--threads", "1"]
    train.main(args + ["--max-steps", "20"])
    train.main(args + ["--max-steps", "40"])  # resumes from the step-20 checkpoint
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    valid = [r["valid"]["mean"] for r in records if "valid" in r]
    steps = [r["step"] for r in records if "window_loss" in r]
    assert steps == list(range(10, 41, 10))  # no step repeated or skipped across the resume
    assert len(valid) == 2 and valid[1] < valid[0] < 8.5
    assert os.path.exists(tmp_path / "ckpt.pt")


def test_learning_rate_schedule():
    args = train.parse_args(["--warmup", "10", "--max-steps", "110", "--lr", "1e-3", "--min-lr-ratio", "0.1"])
    assert train.lr_at(0, args) == 1e-4
    assert abs(train.lr_at(9, args) - 1e-3) < 1e-12
    assert abs(train.lr_at(110, args) - 1e-4) < 1e-12
    assert train.lr_at(40, args) > train.lr_at(80, args)


def test_packed_windows_have_no_padding():
    stream = np.arange(1000, dtype=np.int64)
    x = train.stream_batch(stream, 4, 32, np.random.default_rng(0))
    assert x.shape == (4, 32)
    for row in x:  # contiguous windows of the stream
        assert np.array_equal(row.numpy(), np.arange(int(row[0]), int(row[0]) + 32))


def test_bf16_autocast_loss_is_close_to_float32():
    """The trainer's bf16 autocast computes the same objective as float32 (same weights, masks and t)."""
    from dllm.model import LLaDA, ModelConfig

    torch.manual_seed(0)
    model = LLaDA(ModelConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, max_sequence_length=64))
    x = torch.randint(7, 4096, (4, 64))
    t = torch.linspace(0.2, 1.0, 4)
    losses = []
    for bf16 in (False, True):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses.append(train.masked_diffusion_loss(model, x, t).item())
    assert abs(losses[1] - losses[0]) / losses[0] < 0.01
