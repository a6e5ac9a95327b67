"""Files cut into parts small enough to travel, and joined again byte for byte; checkpoints stripped for the trip.

A lent GPU machine (models/train_gpu.sh, docs/models.md) takes the repository and what it carries up to 64 MiB in
all, and gives back at most 8 files of at most 16 MiB each. So the corpus goes there in parts and the trained
checkpoints come back in parts. `split` cuts a file into numbered parts of at most --max-mb megabytes (10^6 bytes:
the default 16 is under 16 MiB) and writes a manifest beside them with the size and sha256 of every part and of the
whole; `join` checks every part against it, then the joined file, so a missing, truncated or foreign part is named
rather than silently producing a broken checkpoint. `strip` drops a checkpoint's optimiser state (AdamW's two moments,
two thirds of its bytes): what `--init-from`, `dllm.export` and `dllm.card` read stays.

    python3 -m dllm.parts split models/runs/gpu/run.tar $OUT --max-mb 16   # $OUT/run.tar.000, .001, ..., run.tar.parts.json
    python3 -m dllm.parts join returned/run.tar.parts.json models/runs/gpu/run.tar
    python3 -m dllm.parts strip models/runs/gpu/dream/ckpt.pt models/runs/gpu/dream/weights.pt
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os

MB = 1_000_000
MANIFEST_SUFFIX = ".parts.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(path: str, out_dir: str, max_bytes: int) -> str:
    """path -> out_dir/NAME.000, NAME.001, ... of at most max_bytes each, and out_dir/NAME.parts.json; -> its path."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    name = os.path.basename(path)
    os.makedirs(out_dir, exist_ok=True)
    whole, parts = hashlib.sha256(), []
    with open(path, "rb") as f:
        while True:
            chunk = f.read(max_bytes)
            if not chunk and parts:
                break
            part = f"{name}.{len(parts):03d}"
            with open(os.path.join(out_dir, part), "wb") as out:
                out.write(chunk)
            whole.update(chunk)
            parts.append({"file": part, "bytes": len(chunk), "sha256": sha256_bytes(chunk)})
            if len(chunk) < max_bytes:
                break
    manifest = {"file": name, "bytes": sum(p["bytes"] for p in parts), "sha256": whole.hexdigest(), "parts": parts}
    manifest_path = os.path.join(out_dir, name + MANIFEST_SUFFIX)
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return manifest_path


def find_manifest(path: str) -> str:
    """A manifest's path, or a folder holding exactly one manifest."""
    if not os.path.isdir(path):
        return path
    found = glob.glob(os.path.join(path, "*" + MANIFEST_SUFFIX))
    if len(found) != 1:
        raise SystemExit(f"{path}: {len(found)} manifests (*{MANIFEST_SUFFIX}); name the one to join")
    return found[0]


def join(manifest_path: str, dest: str) -> None:
    """The parts a manifest lists (in its folder) -> dest, each part and the whole checked against the manifest."""
    manifest_path = find_manifest(manifest_path)
    with open(manifest_path) as f:
        manifest = json.load(f)
    folder = os.path.dirname(manifest_path)
    missing = [p["file"] for p in manifest["parts"] if not os.path.exists(os.path.join(folder, p["file"]))]
    if missing:
        raise SystemExit(f"{manifest['file']}: {len(missing)} of {len(manifest['parts'])} parts missing from "
                         f"{folder or '.'}: {', '.join(missing)}")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    whole = hashlib.sha256()
    try:
        with open(dest + ".tmp", "wb") as out:
            for p in manifest["parts"]:
                with open(os.path.join(folder, p["file"]), "rb") as f:
                    chunk = f.read()
                if len(chunk) != p["bytes"] or sha256_bytes(chunk) != p["sha256"]:
                    raise SystemExit(f"{p['file']}: {len(chunk)} bytes, sha256 {sha256_bytes(chunk)[:16]}..., but the "
                                     f"manifest says {p['bytes']} bytes, {p['sha256'][:16]}...: a part of another file?")
                out.write(chunk)
                whole.update(chunk)
        if whole.hexdigest() != manifest["sha256"]:
            raise SystemExit(f"{dest}: the joined parts do not hash to the manifest's sha256")
    except BaseException:
        os.remove(dest + ".tmp")
        raise
    os.replace(dest + ".tmp", dest)


def strip(src: str, dest: str) -> None:
    """A checkpoint without its optimiser state (config, weights, training state, args and generator states stay)."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=False)  # our own checkpoints hold numpy RNG state
    ckpt.pop("optimizer", None)
    torch.save(ckpt, dest + ".tmp")
    os.replace(dest + ".tmp", dest)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="FILE -> DIR/FILE.000, ... and DIR/FILE.parts.json")
    s.add_argument("file")
    s.add_argument("dir")
    s.add_argument("--max-mb", type=float, default=16, help="largest part, in 10^6 bytes")
    j = sub.add_parser("join", help="MANIFEST (or a folder with one) -> FILE, checked")
    j.add_argument("manifest")
    j.add_argument("file")
    t = sub.add_parser("strip", help="CKPT -> OUT without the optimiser state")
    t.add_argument("ckpt")
    t.add_argument("out")
    args = p.parse_args(argv)
    if args.command == "split":
        manifest = split(args.file, args.dir, int(args.max_mb * MB))
        with open(manifest) as f:
            count = len(json.load(f)["parts"])
        print(f"{args.file}: {count} part{'s' if count > 1 else ''}, manifest {manifest}")
    elif args.command == "join":
        join(args.manifest, args.file)
        print(f"{args.file}: joined and checked")
    else:
        strip(args.ckpt, args.out)


if __name__ == "__main__":
    main()
