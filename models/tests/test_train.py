import json
import os

from dllm import train


def test_loss_falls_and_training_resumes(corpus_dir, tmp_path):
    args = ["--corpus", corpus_dir, "--out", str(tmp_path), "--max-docs", "400", "--d-model", "64", "--n-layers", "2",
            "--n-heads", "4", "--mlp-hidden", "128", "--seq-len", "64", "--padded-len", "64", "--batch-size", "8",
            "--warmup", "5", "--lr", "3e-3", "--eval-every", "20", "--ckpt-every", "20", "--valid-windows", "8"]
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
