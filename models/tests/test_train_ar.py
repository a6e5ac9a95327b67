"""The autoregressive phase of AR-to-diffusion adaptation: `dllm.train --objective ar` (causal next-token training)."""

import json

import pytest
import torch
import torch.nn.functional as F

from dllm import train
from dllm.model import LLaDA, ModelConfig, load_checkpoint

ARGS = ["--objective", "ar", "--max-docs", "400", "--d-model", "64", "--n-layers", "2", "--n-heads", "4",
        "--mlp-hidden", "128", "--seq-len", "64", "--valid-seq-len", "64", "--batch-size", "8", "--warmup", "5",
        "--lr", "3e-3", "--eval-every", "20", "--ckpt-every", "20", "--valid-windows", "8", "--threads", "1"]


def test_ar_loss_falls_and_training_resumes(corpus_dir, tmp_path):
    args = ["--corpus", corpus_dir, "--out", str(tmp_path)] + ARGS
    train.main(args + ["--max-steps", "20"])
    train.main(args + ["--max-steps", "40"])  # resumes from the step-20 checkpoint
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    steps = [r["step"] for r in records if "window_loss" in r]
    assert steps == list(range(10, 41, 10))  # no step repeated or skipped across the resume
    window = [r["window_loss"] for r in records if "window_loss" in r]
    valid = [r["valid_next_token"] for r in records if "valid_next_token" in r]
    assert not any("valid" in r for r in records)  # no masked-token records for a causal model
    assert window[-1] < window[0] - 1.0
    assert len(valid) == 2 and valid[1] < valid[0] < 8.0  # below uniform over 4096 tokens (8.32 nats)
    model, ckpt = load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert model.config.causal and ckpt["train"]["step"] == 40
    with pytest.raises(SystemExit):  # a causal checkpoint is not resumed as a diffusion run
        train.main(["--corpus", corpus_dir, "--out", str(tmp_path)] + ARGS[2:] + ["--max-steps", "60"])


@pytest.mark.parametrize("causal", [True, False])
def test_changing_a_later_token_leaves_earlier_positions_alone(causal):
    torch.manual_seed(0)
    model = LLaDA(ModelConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, max_sequence_length=32,
                              causal=causal)).eval()
    x = torch.randint(7, 4096, (2, 32))
    y = x.clone()
    y[:, 20] = 3 + (x[:, 20] - 6) % 4000  # another token at position 20
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.allclose(a[:, 20:], b[:, 20:])
    # Causal: positions 0..19 never see position 20 (its key gets exactly zero weight); bidirectional: they all do.
    assert torch.equal(a[:, :20], b[:, :20]) == causal


def test_causal_cached_steps_match_the_full_pass():
    """A cached step of a causal model (a key/value cache, as next-token decoding uses) computes the full pass."""
    torch.manual_seed(0)
    model = LLaDA(ModelConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, causal=True)).eval()
    x = torch.randint(7, 4096, (1, 24))
    with torch.no_grad():
        full = model.hidden_states(x, torch.ones_like(x))
        empty = torch.zeros(2, 2, 1, 4, 0, 16)
        _, past = model.hidden_states_cached(x[:, :16], torch.arange(16)[None], torch.ones(1, 16, dtype=torch.long), empty)
        tail, _ = model.hidden_states_cached(x[:, 16:], torch.arange(16, 24)[None], torch.ones_like(x), past)
    torch.testing.assert_close(tail, full[:, 16:], rtol=1e-5, atol=1e-5)


def test_next_token_loss_reads_token_i_plus_1_from_position_i():
    torch.manual_seed(0)
    model = LLaDA(ModelConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, causal=True))
    x = torch.randint(7, 4096, (2, 16))
    logits = model(x)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    torch.testing.assert_close(train.next_token_loss(model, x), expected)


def test_config_without_causal_is_unchanged():
    """Checkpoints and dllm.json of non-causal models keep their config; older ones load as non-causal."""
    config = ModelConfig(d_model=64, n_heads=4)
    assert "causal" not in config.to_dict()
    assert ModelConfig.from_dict(config.to_dict()) == config and not config.causal
    causal = ModelConfig(d_model=64, n_heads=4, causal=True)
    assert ModelConfig.from_dict(causal.to_dict()) == causal
    with pytest.raises(ValueError):
        ModelConfig(causal=True, block_size=16)


def test_adaptation_from_the_causal_checkpoint(corpus_dir, tmp_path):
    """The diffusion phase: --init-from the AR checkpoint, shifted logits, annealed attention; the model becomes
    bidirectional, keeps its weights at the start, and its masked-token loss falls."""
    ar, dream = tmp_path / "ar", tmp_path / "dream"
    train.main(["--corpus", corpus_dir, "--out", str(ar)] + ARGS + ["--max-steps", "20"])
    diffusion = ARGS[2:]  # without --objective ar
    train.main(["--corpus", corpus_dir, "--out", str(dream), "--init-from", str(ar / "ckpt.pt"), "--shift-logits",
                "--anneal-steps", "10", "--max-steps", "40"] + diffusion)
    model, ckpt = load_checkpoint(str(dream / "ckpt.pt"))
    assert model.config.shift_logits and not model.config.causal and model.config.to_dict()["shift_logits"]
    valid = [r["valid"]["mean"] for r in map(json.loads, open(dream / "log.jsonl")) if "valid" in r]
    assert len(valid) == 2 and valid[1] < valid[0]
    with pytest.raises(SystemExit):  # a shifted run is not resumed without the shift
        train.main(["--corpus", corpus_dir, "--out", str(dream), "--max-steps", "60"] + diffusion)


def test_shifted_predictions_read_the_previous_position():
    torch.manual_seed(0)
    model = LLaDA(ModelConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, shift_logits=True)).eval()
    x = torch.randint(7, 4096, (2, 16))
    with torch.no_grad():
        h = model.hidden_states(x)
        shifted = train.noisy_hidden_states(model, x, x)
    torch.testing.assert_close(shifted[:, 1:], h[:, :-1])
    torch.testing.assert_close(shifted[:, 0], h[:, 0])


def test_annealing_bias_grows_from_causal_to_full():
    torch.manual_seed(0)
    causal = train.annealing_bias(64, 0.0)[0, 0] == 0  # allowed
    assert torch.equal(causal, torch.ones(64, 64).tril().bool())
    assert bool((train.annealing_bias(64, 1.0) == 0).all())
    half = (train.annealing_bias(64, 0.5)[0, 0] == 0)
    later = ~torch.ones(64, 64).tril().bool()
    assert half[~later].all() and 0.4 < half[later].float().mean() < 0.6
