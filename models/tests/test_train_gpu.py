"""The GPU route of train_dream.sh's recipe: `train.py --device`, dllm.parts, and models/train_gpu.sh run on the CPU
at a tiny size (pack the corpus, train the three phases, bring the runs back in parts, join and export)."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from dllm import parts, train
from dllm.data import DOC_SEPARATOR, read_documents
from dllm.model import load_checkpoint

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(MODELS, "train_gpu.sh")
TINY = ["--d-model", "32", "--n-heads", "2", "--n-layers", "1", "--mlp-hidden", "64", "--seq-len", "64",
        "--valid-seq-len", "64", "--batch-size", "4", "--valid-windows", "4", "--threads", "1"]


@pytest.mark.parametrize("size", [2_500_017, 3_000_000, 0])
def test_split_and_join_round_trip(tmp_path, size):
    data = random.Random(size).randbytes(size)
    (tmp_path / "ckpt.pt").write_bytes(data)
    parts.main(["split", str(tmp_path / "ckpt.pt"), str(tmp_path / "parts"), "--max-mb", "1"])
    manifest = json.loads((tmp_path / "parts" / "ckpt.pt.parts.json").read_text())
    sizes = [os.path.getsize(tmp_path / "parts" / p["file"]) for p in manifest["parts"]]
    assert sum(sizes) == size == manifest["bytes"] and all(s <= 1_000_000 for s in sizes)
    assert len(sizes) == max(1, -(-size // 1_000_000))
    parts.main(["join", str(tmp_path / "parts"), str(tmp_path / "back.pt")])  # the folder's one manifest
    assert (tmp_path / "back.pt").read_bytes() == data


def test_join_refuses_a_missing_or_altered_part(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(random.Random(0).randbytes(2500))
    manifest = parts.split(str(tmp_path / "ckpt.pt"), str(tmp_path / "parts"), 1000)
    (tmp_path / "parts" / "ckpt.pt.001").rename(tmp_path / "elsewhere")
    with pytest.raises(SystemExit, match=r"1 of 3 parts missing .*ckpt\.pt\.001"):
        parts.join(manifest, str(tmp_path / "back.pt"))
    altered = bytearray((tmp_path / "elsewhere").read_bytes())
    altered[10] ^= 1
    (tmp_path / "parts" / "ckpt.pt.001").write_bytes(altered)
    with pytest.raises(SystemExit, match=r"ckpt\.pt\.001: 1000 bytes"):
        parts.join(manifest, str(tmp_path / "back.pt"))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "elsewhere", "parts"]  # neither back.pt nor back.pt.tmp


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is there")
def test_device_cuda_without_cuda_fails_clearly(tmp_path):
    with pytest.raises(SystemExit, match=r"--device cuda: torch .* sees no CUDA device .*--device cpu"):
        train.main(["--device", "cuda", "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()  # refused before anything is read or written


def run_script(*args, **env):
    proc = subprocess.run(["bash", SCRIPT, *args], env=dict(os.environ, PY=sys.executable, **env), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def test_prepared_script_end_to_end_on_cpu(corpus_dir, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, count in (("train.txt", 150), ("valid.txt", 20)):
        docs = read_documents(os.path.join(corpus_dir, name))[:count]
        (corpus / name).write_text(DOC_SEPARATOR.join(docs), encoding="utf-8")
    packed, out, runs = tmp_path / "packed", tmp_path / "out", tmp_path / "runs"

    # Here: the corpus in xz parts, and the run calls that carry them.
    printed = run_script("pack", str(corpus), DEST=str(packed), PART_MB="0.02")
    corpus_parts = sorted(p for p in os.listdir(packed) if not p.endswith(".json"))
    assert len(corpus_parts) > 1 and all(os.path.getsize(packed / p) <= 20_000 for p in corpus_parts)
    assert printed.count("run(command=") == len(corpus_parts) and 'command="bash models/train_gpu.sh"' in printed

    # There: the recipe's three phases, at a hundredth of its steps and a tiny size, on the CPU.
    log = run_script(DEVICE="cpu", CORPUS=str(packed), OUT=str(out), RUNS=str(runs), STEP_SCALE="0.01",
                     TRAIN_ARGS=" ".join(TINY), RETURN_PART_MB="0.3")
    assert "halted at step 8" in log and "done: 31 steps" in log
    ar, dream = load_checkpoint(str(runs / "gpu-ar" / "ckpt.pt")), load_checkpoint(str(runs / "gpu-dream" / "ckpt.pt"))
    assert ar[0].config.causal and ar[1]["train"]["step"] == 8 and ar[1]["args"]["max_steps"] == 24
    args = dream[1]["args"]
    assert dream[0].config.shift_logits and not dream[0].config.causal and dream[1]["train"]["step"] == 31
    assert args["anneal_steps"] == 3 and args["init_from"].endswith("gpu-ar/ckpt.pt") and args["device"] == "cpu"
    assert args["d_model"] == 32 and args["batch_size"] == 4 and 0 < args["time_limit_min"] < 9
    returned = sorted(os.listdir(out))
    run_parts = [p for p in returned if p.startswith("gpu-run.tar.0")]
    assert returned == sorted(run_parts + ["gpu-run.tar.parts.json", "train.log"]) and len(returned) <= 8
    assert len(run_parts) > 1 and all(os.path.getsize(out / p) <= 300_000 for p in run_parts)

    # Here again: the parts joined into runs, the model exported.
    back, folder = tmp_path / "back", tmp_path / "tiny-dream-gpu"
    run_script("unpack", str(out), RUNS=str(back), FOLDER=str(folder))
    weights, ckpt = load_checkpoint(str(back / "gpu-dream" / "ckpt.pt"))
    assert "optimizer" not in ckpt and ckpt["train"] == dream[1]["train"]
    for name, tensor in dream[0].state_dict().items():
        assert torch.equal(weights.state_dict()[name], tensor), name
    assert "optimizer" not in load_checkpoint(str(back / "gpu-ar" / "ckpt.pt"))[1]
    with open(folder / "dllm.json") as f:
        exported = json.load(f)
    assert exported["architecture"] == "dream" and exported["model_config"]["d_model"] == 32
    assert os.path.getsize(folder / "model.onnx") + os.path.getsize(folder / "weights.data") <= 40_000_000

    # The returned checkpoint continues with --init-from; resumed in place it is refused (no optimiser state), while
    # the full checkpoint the run left resumes.
    common = ["--corpus", str(runs / "gpu-corpus"), "--shift-logits"] + TINY
    train.main(common + ["--out", str(tmp_path / "more"), "--init-from", str(back / "gpu-dream" / "ckpt.pt"),
                         "--max-steps", "2"])
    assert load_checkpoint(str(tmp_path / "more" / "ckpt.pt"))[1]["train"]["step"] == 2
    with pytest.raises(SystemExit, match="no optimiser state"):
        train.main(common + ["--out", str(back / "gpu-dream"), "--max-steps", "33"])
    train.main(common + ["--out", str(runs / "gpu-dream"), "--max-steps", "33"])
    assert load_checkpoint(str(runs / "gpu-dream" / "ckpt.pt"))[1]["train"]["step"] == 33
