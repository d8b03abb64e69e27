"""Rewrites of the exported ONNX graph that PyTorch gets for free and onnxruntime does not.

Each pass keeps the graph's values (export's parity gate checks the result against PyTorch) and removes
full-activation-sized work. Measured on eca_nfnet_l0 (bench/infer.py, RESULTS.md).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

_BROADCASTING_OPS = {"Mul", "Add", "Sub", "Div"}


class _Graph:
    """Name-level bookkeeping over a GraphProto: shapes, consumers, scalar initializers."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.shapes = {v.name: tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim)
                       for v in [*graph.value_info, *graph.input, *graph.output]
                       if v.type.tensor_type.HasField("shape")}
        self.inits = {i.name: i for i in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.users: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.users.setdefault(name, []).append(node)

    def shape(self, name):
        dims = self.shapes.get(name)
        return dims if dims is not None and all(d not in ("", 0) for d in dims) else None

    def size(self, name) -> float:
        """Elements per batch item (symbolic dims count 1); inf where the shape is unknown."""
        dims = self.shape(name)
        return math.prod(d for d in dims if isinstance(d, int)) if dims is not None else math.inf

    def scalar(self, name):
        init = self.inits.get(name)
        if init is None or math.prod(init.dims) != 1:
            return None
        return numpy_helper.to_array(init)

    def only_user(self, name):
        users = self.users.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def add_initializer(self, array: np.ndarray, hint: str) -> str:
        name = hint
        while name in self.inits or name in self.users:
            name += "_"
        init = numpy_helper.from_array(array, name)
        self.graph.initializer.append(init)
        self.inits[name] = init
        return name


def drop_broadcast_expands(graph: onnx.GraphProto) -> int:
    """Remove each Expand whose consumers are all broadcasting elementwise ops whose other operand already has
    the Expand's output shape.

    timm's ECA attention computes `x * gate.expand_as(x)`: a free view in PyTorch, but exported it materializes
    an activation-sized tensor before the Mul (12 % of fp32 onnxruntime time on eca_nfnet_l0 at 32 px).
    Broadcasting the gate gives the same values.
    """
    g = _Graph(graph)
    dropped = []
    for node in graph.node:
        out = node.output[0] if node.op_type == "Expand" else None
        if out is None or out in g.outputs or not g.users.get(out) or g.shape(out) is None:
            continue
        consumers = g.users[out]
        if all(c.op_type in _BROADCASTING_OPS and len(c.input) == 2 and c.input[0] != c.input[1] and
               g.shape(c.input[1] if c.input[0] == out else c.input[0]) == g.shape(out) for c in consumers):
            for c in consumers:
                c.input[list(c.input).index(out)] = node.input[0]
            dropped.append(node)
    for node in dropped:
        graph.node.remove(node)
    return len(dropped)


def fold_scalar_muls(graph: onnx.GraphProto) -> int:
    """Move multiplications by a constant scalar off full-sized activations.

    NFNet blocks end in `x * gate * attn_gain * alpha` and start with `act(x) * beta -> conv`: in PyTorch
    cheap, in onnxruntime a full pass over the activation per Mul (and a requantizing QLinearMul each in the
    int8 graph). Two rewrites, repeated until none applies:
      Mul(Mul(a, b), c) -> Mul(a, b * c)    c a scalar constant, b a constant or an operand smaller than a
                                            (a broadcast gate), Mul(a, b) used only here
      Conv(Mul(x, c), W) -> Conv(x, c * W)  c a scalar constant, every consumer a Conv taking it as its input
    (a convolution is linear and zero padding stays zero, so the bias is untouched).
    Returns the number of Mul nodes removed.
    """
    removed = 0
    while True:
        g = _Graph(graph)
        changed = False
        for node in list(graph.node):
            if node.op_type != "Mul" or len(node.input) != 2:
                continue
            constants = [g.scalar(i) for i in node.input]
            if (constants[0] is None) == (constants[1] is None):
                continue
            k = 0 if constants[0] is not None else 1
            c, x = constants[k], node.input[1 - k]
            out = node.output[0]
            inner = g.producer.get(x)
            consumers = g.users.get(out, [])
            inner_mul = inner is not None and inner.op_type == "Mul" and len(inner.input) == 2
            a, b = sorted(inner.input, key=g.size, reverse=True) if inner_mul else (None, None)
            b_const = g.scalar(b) if inner_mul else None
            if inner_mul and g.only_user(x) is node and (b_const is not None or g.size(b) < g.size(a)):
                if b_const is not None:
                    scaled = g.add_initializer((b_const * c).astype(b_const.dtype), f"{b}_x")
                else:
                    scaled = f"{b}_x{len(graph.node)}"
                    graph.node.insert(list(graph.node).index(inner),
                                      onnx.helper.make_node("Mul", [b, node.input[k]], [scaled]))
                    info = next(v for v in [*graph.value_info, *graph.input] if v.name == b)
                    graph.value_info.append(onnx.ValueInfoProto(name=scaled, type=info.type))
                inner.input[:] = [a, scaled]
                inner.output[0] = out
            elif consumers and out not in g.outputs and all(
                    n.op_type == "Conv" and n.input[0] == out and n.input[1] in g.inits for n in consumers):
                for conv in consumers:
                    w = numpy_helper.to_array(g.inits[conv.input[1]])
                    conv.input[0] = x
                    conv.input[1] = g.add_initializer((w * c).astype(w.dtype), f"{conv.input[1]}_x")
            else:
                continue
            graph.node.remove(node)
            removed += 1
            changed = True
            break                                  # bookkeeping is stale after a rewrite
        if not changed:
            return removed


def prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers nothing reads (the shape arithmetic of removed Expands, replaced weights)."""
    needed = {o.name for o in graph.output}
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            needed.update(node.input)
        else:
            graph.node.remove(node)
    for init in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(init)


def simplify(graph: onnx.GraphProto) -> dict:
    counts = {"expands": drop_broadcast_expands(graph), "scalar_muls": fold_scalar_muls(graph)}
    prune(graph)
    return counts
