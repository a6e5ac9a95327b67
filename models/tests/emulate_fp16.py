"""Runs an ONNX graph in numpy with native float16 arithmetic, as a GPU runs it.

ONNX Runtime's CPU provider has float16 kernels for few ops; it inserts casts around the others and then removes
the casts between neighbours, so chains of float16 ops silently run in float32 on the CPU and precision problems
of a float16 graph never show there. Here every tensor keeps the element type the graph declares: float16 results
are rounded to float16 after each op (numpy computes half ufuncs through float32 and rounds, like elementwise CUDA
kernels; products accumulate in float32 and round, like cuBLAS with float16 inputs).

`naive=True` runs an fp32 graph as if every float32 tensor were float16 (initializers, casts to float, every op),
i.e. what a plain float16 conversion computes; the tests use it as the control.

Only the ops our exported graphs use are implemented (opset 17 semantics).
"""

from __future__ import annotations


import numpy as np
import onnx
from onnx import numpy_helper

TYPES = {1: np.float32, 10: np.float16, 11: np.float64, 7: np.int64, 6: np.int32, 9: np.bool_}


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _same(result, like):
    return np.asarray(result).astype(like.dtype, copy=False)


def _unsqueeze(x, axes):
    rank = x.ndim + len(axes)
    for axis in sorted(int(a) % rank for a in axes):
        x = np.expand_dims(x, axis)
    return x


def _reshape(x, shape, allowzero=0):
    shape = [x.shape[i] if s == 0 else int(s) for i, s in enumerate(shape)]
    return x.reshape(shape)


def _slice(x, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a)] = slice(int(max(min(s, 2**62), -2**62)), int(max(min(e, 2**62), -2**62)), int(st))
    return x[tuple(index)]


def _matmul(a, b):
    if a.dtype == np.float16:
        return (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    return a @ b


def _softmax(x, axis):
    wide = x.astype(np.float32) if x.dtype == np.float16 else x
    e = np.exp(wide - wide.max(axis=axis, keepdims=True))
    return _same(e / e.sum(axis=axis, keepdims=True), x)


def _topk(x, k, axis=-1, largest=1, sorted=1):
    order = np.argsort(-x if largest else x, axis=axis, kind="stable")
    ids = np.take(order, np.arange(int(k[0])), axis=axis)
    return np.take_along_axis(x, ids, axis=axis), ids.astype(np.int64)


def _div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return _same(np.trunc(a / b), a)
    return _same(a / b, a)


OPS = {
    "Identity": lambda x: x,
    "Shape": lambda x: np.array(x.shape, dtype=np.int64),
    "Gather": lambda x, i, axis=0: np.take(x, i, axis=axis),
    "GatherElements": lambda x, i, axis=0: np.take_along_axis(x, i, axis=axis),
    "Unsqueeze": _unsqueeze,
    "Squeeze": lambda x, axes=None: np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes)),
    "Concat": lambda *xs, axis: np.concatenate(xs, axis=axis),
    "Reshape": _reshape,
    "Transpose": lambda x, perm: np.transpose(x, perm),
    "Slice": _slice,
    "Expand": lambda x, shape: np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))).copy(),
    "ConstantOfShape": lambda shape, value: np.full(tuple(shape), numpy_helper.to_array(value).reshape(-1)[0]),
    "Where": lambda c, a, b: np.where(c, a, b).astype(a.dtype),
    "Equal": np.equal,
    "Greater": np.greater,
    "Add": lambda a, b: _same(a + b, a),
    "Sub": lambda a, b: _same(a - b, a),
    "Mul": lambda a, b: _same(a * b, a),
    "Div": _div,
    "Pow": lambda a, b: _same(np.power(a, b.astype(a.dtype)), a),
    "Neg": np.negative,
    "Sqrt": np.sqrt,
    "Exp": np.exp,
    "Log": np.log,
    "Cos": np.cos,
    "Sin": np.sin,
    "Sigmoid": lambda x: _same(1 / (1 + np.exp(-x)), x),
    "MatMul": _matmul,
    "ReduceMean": lambda x, axes, keepdims=1: _same(x.mean(axis=tuple(axes), keepdims=bool(keepdims)), x),
    "ReduceSum": lambda x, axes, keepdims=1: _same(x.sum(axis=tuple(int(a) for a in axes), keepdims=bool(keepdims)), x),
    "Softmax": lambda x, axis=-1: _softmax(x, axis),
    "TopK": _topk,
    "CumSum": lambda x, axis: np.cumsum(x, axis=int(axis)).astype(x.dtype),
    "Clip": lambda x, lo=None, hi=None: np.clip(x, lo, hi).astype(x.dtype),
}


def run(path: str, feeds: dict[str, np.ndarray], naive: bool = False) -> dict[str, np.ndarray]:
    """The graph's outputs for `feeds`; float16 outputs come back as float32, like the graph's own boundary."""
    proto = onnx.load(path)  # with its external data
    narrow = (lambda a: a.astype(np.float16) if a.dtype == np.float32 else a) if naive else (lambda a: a)
    values = {t.name: narrow(numpy_helper.to_array(t)) for t in proto.graph.initializer}
    values.update({k: narrow(np.asarray(v)) for k, v in feeds.items()})
    for node in proto.graph.node:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # float16 overflow is the point
            _step(node, values, narrow, naive)
    return {o.name: values[o.name].astype(np.float32) if values[o.name].dtype == np.float16 else values[o.name]
            for o in proto.graph.output}


def _step(node, values: dict, narrow, naive: bool) -> None:
    attrs = _attrs(node)
    if node.op_type == "Constant":
        outs = (narrow(numpy_helper.to_array(attrs["value"])),)
    elif node.op_type == "Cast":
        to = TYPES[attrs["to"]]
        outs = (values[node.input[0]].astype(np.float16 if naive and to == np.float32 else to),)
    else:
        args = [values[i] if i else None for i in node.input]
        while args and args[-1] is None:
            args.pop()
        result = OPS[node.op_type](*args, **attrs)
        outs = result if isinstance(result, tuple) else (result,)
    for name, value in zip(node.output, outs):
        values[name] = narrow(np.asarray(value))
