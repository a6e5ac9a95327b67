"""Our reader and writer of the safetensors format (Hugging Face's weight files), memory-mapped and tensor by tensor.

The format (huggingface/safetensors, "Format" in its README): an 8-byte little-endian header length, a JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}} (offsets relative to the end of the header, plus an
optional "__metadata__"), then the raw little-endian tensors. A sharded checkpoint adds
`model.safetensors.index.json` whose `weight_map` names the shard of every tensor.

Reading never loads a whole shard: each tensor is a view of a read-only memory map, copied out in blocks of rows
(or of columns, for weights the graph wants transposed) and converted to float32 block by block; the pages a block
touched are released from this process at once (madvise MADV_DONTNEED), so what conversion holds is one block, not
the shard (the file stays in the page cache, which is the kernel's to reclaim). The `safetensors` package is not
needed (nor installable on our machines).
"""

from __future__ import annotations

import glob
import json
import mmap
import os
from dataclasses import dataclass

import numpy as np

INDEX = "model.safetensors.index.json"
# safetensors dtype -> numpy dtype of the stored bytes (bfloat16 is read as its 16 bits and widened exactly).
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
          "I32": np.int32}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


class SafetensorsError(ValueError):
    """A weight file or index that cannot be read; the message names the file and tensor."""


@dataclass(frozen=True)
class TensorInfo:
    file: str  # path of the shard
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int


def read_header(path: str) -> dict[str, TensorInfo]:
    """The tensors of one .safetensors file, from its header alone."""
    with open(path, "rb") as f:
        raw_len = f.read(8)
        header_len = int.from_bytes(raw_len, "little")
        if len(raw_len) < 8 or header_len > os.path.getsize(path) - 8:
            raise SafetensorsError(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as e:
            raise SafetensorsError(f"{path}: unreadable safetensors header ({e})") from e
    tensors = {}
    base = 8 + header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - begin != int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[info["dtype"]]).itemsize:
            raise SafetensorsError(f"{path}: tensor {name}: data_offsets do not match shape {list(shape)}")
        tensors[name] = TensorInfo(path, info["dtype"], shape, base + begin, base + end)
    return tensors


def shard_files(folder: str) -> list[str]:
    """The weight files of a checkpoint folder: those its index names, else every *.safetensors."""
    index = os.path.join(folder, INDEX)
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise SafetensorsError(f"{folder}: no *.safetensors weights found")
    paths = [os.path.join(folder, name) for name in files]
    for path in paths:
        if not os.path.exists(path):
            raise SafetensorsError(f"{path}: listed in the index but missing")
    return paths


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values -> float32; bfloat16 is the high half of a float32, so widening it is exact."""
    if dtype == "BF16":
        wide = raw.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    return raw.astype(np.float32)


class Checkpoint:
    """The tensors of a checkpoint folder (one file or shards), read block by block through memory maps."""

    def __init__(self, folder: str):
        self.files = shard_files(folder)
        self.tensors: dict[str, TensorInfo] = {}
        for path in self.files:
            for name, info in read_header(path).items():
                if name in self.tensors:
                    raise SafetensorsError(f"{path}: tensor {name} is also in {self.tensors[name].file}")
                self.tensors[name] = info
        self._maps: dict[str, tuple[object, mmap.mmap]] = {}

    def dtypes(self) -> list[str]:
        return sorted({t.dtype for t in self.tensors.values()})

    def nbytes(self) -> int:
        return sum(t.end - t.begin for t in self.tensors.values())

    def _view(self, name: str) -> tuple[np.ndarray, mmap.mmap, TensorInfo]:
        info = self.tensors[name]
        if info.file not in self._maps:
            f = open(info.file, "rb")
            self._maps[info.file] = (f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        mm = self._maps[info.file][1]
        count = (info.end - info.begin) // np.dtype(DTYPES[info.dtype]).itemsize
        view = np.frombuffer(mm, dtype=DTYPES[info.dtype], count=count, offset=info.begin).reshape(info.shape)
        return view, mm, info

    def _release(self, mm: mmap.mmap, info: TensorInfo) -> None:
        start = info.begin - info.begin % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, start, info.end - start)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """float32 copy of tensor[start:stop] (a 1-D tensor: its elements)."""
        view, mm, info = self._view(name)
        block = to_float32(view[start:stop], info.dtype)
        self._release(mm, info)
        return block

    def columns(self, name: str, start: int, stop: int) -> np.ndarray:
        """float32 copy of tensor[:, start:stop] of a 2-D tensor."""
        view, mm, info = self._view(name)
        block = to_float32(np.ascontiguousarray(view[:, start:stop]), info.dtype)
        self._release(mm, info)
        return block

    def close(self) -> None:
        for f, mm in self._maps.values():
            mm.close()
            f.close()
        self._maps.clear()


def write(path: str, shapes: list[tuple[str, tuple[int, ...]]], values, dtype: str = "F32") -> None:
    """Writes a .safetensors file tensor by tensor: `shapes` lists (name, shape) in file order, `values(name)` gives
    each tensor (a float array) only when it is written, so a large checkpoint never sits in memory (tests and the
    conversion benchmark build checkpoints with it). "BF16" rounds to nearest even, as torch does."""
    header, offset = {}, 0
    itemsize = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    for name, shape in shapes:
        size = int(np.prod(shape, dtype=np.int64)) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header with spaces to an 8-byte boundary
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for name, shape in shapes:
            array = np.asarray(values(name), dtype=np.float32)
            if tuple(array.shape) != tuple(shape):
                raise ValueError(f"{name}: shape {list(array.shape)}, header says {list(shape)}")
            f.write(encode(array, dtype))


def encode(array: np.ndarray, dtype: str) -> bytes:
    """float32 array -> stored bytes; bfloat16 by round-to-nearest-even of the float32 bits."""
    if dtype == "F32":
        return array.astype("<f4").tobytes()
    if dtype == "F16":
        return array.astype("<f2").tobytes()
    bits = array.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2").tobytes()
