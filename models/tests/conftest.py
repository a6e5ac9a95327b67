import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(MODELS)
sys.path.insert(0, MODELS)
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = os.path.join(MODELS, "tiny-llada")


def run_ort(model_path: str, feeds: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Runs the graph in onnxruntime-node (the server's runtime) through models/tests/ort_run.mjs."""
    types = {torch.float32: "float32", torch.int32: "int32", torch.int64: "int64"}
    inputs = {name: {"type": types[t.dtype], "dims": list(t.shape), "data": t.flatten().tolist()} for name, t in feeds.items()}
    proc = subprocess.run(["node", os.path.join(MODELS, "tests", "ort_run.mjs")], cwd=REPO, check=True,
                          input=json.dumps({"model": model_path, "inputs": inputs}), capture_output=True, text=True)
    raw = json.loads(proc.stdout)
    return {name: np.asarray(v["data"]).reshape(v["dims"]) for name, v in raw.items() if name != "__metadata"}


@pytest.fixture(scope="session")
def corpus_dir():
    """The real corpus (npm + Debian sources), built once into models/.cache."""
    from dllm import data

    out = os.path.join(MODELS, ".cache", "corpus")
    if not os.path.exists(os.path.join(out, "valid.txt")):
        split, provenance = data.build(os.path.join(MODELS, ".cache", "sources"))
        data.write(split, out, provenance)
    return out
