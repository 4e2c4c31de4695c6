"""Fold what follows a Conv into the Conv: an inference BatchNormalization and Mul/Add by per-channel
constants into its constant weights and bias, then a residual Add and one activation into its epilogue (bias, + residual, activation applied to
the output block while it is in cache; see kernels/conv_fused.py).

Invariant after the pass: no Conv with constant W and B (or no B) feeds a foldable inference
BatchNormalization as that value's only consumer; no Conv whose output's only consumer is a
residual Add/Sum (two operands of the same shape, dims known or symbolic and float dtype, the other one not the
Conv's output) keeps it as a separate node; and no Conv whose output's (or fused residual's) only
consumer is a supported activation (Relu, Clip with constant bounds, LeakyRelu, HardSigmoid,
HardSwish, Sigmoid, or the pair Mul(x, Sigmoid(x)) = SiLU) keeps that activation as a separate
node. A Conv that took a residual or an activation becomes a ``FusedConv`` (domain "jitort"):
activation(Conv + B + Z) with ``activation``/``alpha``/``beta`` attributes and Z its fourth input,
placed where the Add was (Z may be computed after the Conv); it produces the last absorbed node's
output. ``_absorbed`` lists the nodes folded into a Conv or FusedConv and ``_written_inputs`` its
input count as written (the profile names the ONNX nodes a step covers and counts their FLOPs as
written). A value that is a graph output or is read by a subgraph is never folded away. Every
decision is recorded in ``g.notes``. Runs before elementwise fusion, which would otherwise take
the Add and activation into a separate kernel.
"""
from __future__ import annotations


import numpy as np

from jitort.ir import Graph, Node, TensorType, Value
from jitort.kernels.conv_fused import make_fused
from jitort.passes.match import Reads, activation


def _add_const(g: Graph, base: str, data: np.ndarray) -> str:
    name = g.fresh_name(base)
    g.values[name] = Value(name, TensorType(data.dtype, tuple(data.shape)), np.ascontiguousarray(data))
    return name


class _Ctx(Reads):
    def __init__(self, g: Graph) -> None:
        super().__init__(g)
        self.removed: set[int] = set()

    def rewire(self, conv: Node, old_out: str, new_out: str, dead: list[Node]) -> None:
        """The conv now produces ``new_out``; the nodes in ``dead`` disappear."""
        conv.outputs[0] = new_out
        for n in dead:
            self.removed.add(id(n))
        self.g.values.pop(old_out, None)
        self.consumers = {k: [c for c in v if id(c) not in self.removed] for k, v in self.consumers.items()}
        self.consumers.pop(old_out, None)


def _const_weights(g: Graph, conv: Node) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The conv's constant float W (rank >= 3) and B (None when it has none), or None when either
    is not a compile-time constant: only then can what follows fold into them."""
    W = g.const(conv.inputs[1])
    has_b = len(conv.inputs) > 2 and bool(conv.inputs[2])
    B = g.const(conv.inputs[2]) if has_b else None
    if W is None or (has_b and B is None) or W.dtype.kind != "f" or W.ndim < 3:
        return None
    return W, B


def _fold_bn(ctx: _Ctx, conv: Node) -> Node | None:
    g = ctx.g
    bn = ctx.sole(conv.outputs[0])
    if bn is None or bn.op_type != "BatchNormalization" or bn.domain != "" or bn.inputs[0] != conv.outputs[0]:
        return None
    if any(o for o in bn.outputs[1:]) or len(bn.inputs) < 5:
        return None  # training outputs requested
    if bn.attrs.get("training_mode", 0) or bn.attrs.get("spatial", 1) != 1:
        return None
    if bn.version < 6:
        return None
    wb = _const_weights(g, conv)
    if wb is None:
        return None
    W, B = wb
    params = [g.const(i) for i in bn.inputs[1:5]]
    M = W.shape[0]
    if any(p is None or p.size != M for p in params):
        return None
    scale, bias, mean, var = (p.astype(np.float64).reshape(-1) for p in params)  # type: ignore[union-attr]
    eps = float(bn.attrs.get("epsilon", 1e-5))
    f = scale / np.sqrt(var + eps)
    # float32 (and float16) weights scale in float32 (as onnxruntime's fusion does): one pass, ~13x
    # faster than through float64 on 9 MB of weights; at most one ulp from the float64 product
    ct = np.float64 if W.dtype == np.float64 else np.float32
    w2 = (W.astype(ct, copy=False) * f.astype(ct).reshape((M,) + (1,) * (W.ndim - 1))).astype(W.dtype, copy=False)
    b0 = np.zeros(M) if B is None else B.astype(np.float64).reshape(-1)
    b2 = ((b0 - mean) * f + bias).astype(W.dtype)
    wname = _add_const(g, f"{conv.name}.W_bn", w2)
    bname = _add_const(g, f"{conv.name}.B_bn", b2)
    conv.inputs = [conv.inputs[0], wname, bname]
    ctx.rewire(conv, conv.outputs[0], bn.outputs[0], [bn])
    return bn


def _channel_vector(g: Graph, name: str, y: str, M: int) -> np.ndarray | None:
    """The constant ``name`` as M per-output-channel values when it broadcasts against the conv's
    output ``y`` along the channel axis only (a scalar, or [M, 1, ..], [1, M, 1, ..] of at most y's
    rank), without changing y's shape; else None."""
    c = g.const(name)
    ty = g.type_of(y)
    if c is None or ty.shape is None or c.dtype.kind != "f" or c.ndim > len(ty.shape):
        return None
    dims = (1,) * (len(ty.shape) - c.ndim) + tuple(c.shape)
    if any(d != 1 for k, d in enumerate(dims) if k != 1) or dims[1] not in (1, M):
        return None
    return np.broadcast_to(c.reshape(-1), (M,)) if c.size == 1 else c.reshape(-1)


def _fold_affine(ctx: _Ctx, conv: Node) -> list[Node]:
    """Mul and Add of per-output-channel constants after the conv (caffe2's BatchNormalization +
    scale layers: inception_v2, densenet) into its weights and bias, in graph order, as
    onnxruntime's ConvMulFusion/ConvAddFusion do: one pass over the output fewer per node."""
    g = ctx.g
    done: list[Node] = []
    while True:
        y = conv.outputs[0]
        n = ctx.sole(y)
        if n is None or n.domain != "" or n.op_type not in ("Mul", "Add") or n.version < 7:
            return done
        if len(n.inputs) != 2 or len(n.outputs) != 1 or y not in n.inputs or n.inputs[0] == n.inputs[1]:
            return done
        wb = _const_weights(g, conv)
        if wb is None:
            return done
        W, B = wb
        M = W.shape[0]
        other = n.inputs[1] if n.inputs[0] == y else n.inputs[0]
        c = _channel_vector(g, other, y, M)
        ty = g.type_of(n.outputs[0])
        if c is None or c.dtype != W.dtype or (ty.dtype is not None and np.dtype(ty.dtype) != W.dtype):
            return done
        b0 = np.zeros(M, W.dtype) if B is None else B.reshape(-1)
        if n.op_type == "Mul":
            w2 = W * c.reshape((M,) + (1,) * (W.ndim - 1))
            b2 = b0 * c
            conv.inputs = [conv.inputs[0], _add_const(g, f"{conv.name}.W_mul", w2),
                           _add_const(g, f"{conv.name}.B_mul", b2)]
        else:
            conv.inputs = [conv.inputs[0], conv.inputs[1], _add_const(g, f"{conv.name}.B_add", b0 + c)]
        ctx.rewire(conv, y, n.outputs[0], [n])
        done.append(n)


def _absorb_activation(ctx: _Ctx, conv: Node) -> list[Node]:
    y = conv.outputs[0]
    act = ctx.sole(y)
    p = activation(ctx.g, act) if act is not None and act.inputs[0] == y else None
    if p is not None:
        make_fused(conv, *p)
        ctx.rewire(conv, y, act.outputs[0], [act])  # type: ignore[union-attr]
        return [act]  # type: ignore[list-item]
    silu = ctx.silu(y)
    if silu is None:
        return []
    make_fused(conv, "SiLU")
    ctx.g.values.pop(silu[0][0].outputs[0], None)
    ctx.rewire(conv, y, silu[1], silu[0])
    return silu[0]


def _absorb_residual(ctx: _Ctx, conv: Node) -> Node | None:
    """A residual Add(y, z) / Sum(y, z) as y's only consumer: z of y's static shape and dtype."""
    g = ctx.g
    y = conv.outputs[0]
    add = ctx.sole(y)
    if add is None or add.domain != "" or len(add.outputs) != 1 or len([i for i in add.inputs if i]) != 2:
        return None
    if not ((add.op_type == "Add" and add.version >= 7) or (add.op_type == "Sum" and add.version >= 6)):
        return None
    z = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
    if z == y or y not in add.inputs:
        return None
    ty, tz = g.type_of(y), g.type_of(z)
    if ty.shape is None or tz.shape is None or not all(isinstance(d, (int, str)) for d in ty.shape):
        return None  # symbolic dims of one name are one size
    if tuple(ty.shape) != tuple(tz.shape) or ty.dtype is None or np.dtype(ty.dtype) != np.dtype(tz.dtype):
        return None
    if np.dtype(ty.dtype) not in (np.float32, np.float64):
        return None
    make_fused(conv, z=z)
    ctx.rewire(conv, y, add.outputs[0], [add])
    ctx.consumers.setdefault(z, []).append(conv)  # z's producer must not fold z away now
    return add


def fuse_conv_epilogue(g: Graph) -> Graph:
    """Fold BatchNormalization, a residual Add and one activation into each Conv (see the module
    docstring)."""
    ctx = _Ctx(g)
    moved: dict[int, Node] = {}  # id(residual Add) -> the FusedConv that takes its place
    for conv in list(g.nodes):
        if conv.op_type != "Conv" or conv.domain != "" or id(conv) in ctx.removed:
            continue
        if len(conv.outputs) != 1 or not conv.outputs[0]:
            continue
        t = g.type_of(conv.outputs[0]).dtype
        if t is not None and np.dtype(t).kind != "f":
            continue
        parts = [conv.name]
        written = len(conv.inputs)  # a folded BatchNormalization may give the Conv a bias
        bn = _fold_bn(ctx, conv)
        affine = _fold_affine(ctx, conv)
        add = _absorb_residual(ctx, conv)
        if add is not None:
            moved[id(add)] = conv
        absorbed = ([bn] if bn is not None else []) + affine + ([add] if add is not None else []) + \
            _absorb_activation(ctx, conv)
        parts += [n.name for n in absorbed]
        if absorbed:
            conv.attrs["_absorbed"], conv.attrs["_written_inputs"] = absorbed, written
            g.notes.append("conv epilogue: " + " + ".join(parts))
    placed = {id(c) for c in moved.values()}
    nodes = []
    for n in g.nodes:
        if id(n) in moved:
            nodes.append(moved[id(n)])
        elif id(n) not in ctx.removed and id(n) not in placed:
            nodes.append(n)
    g.nodes = nodes
    return g
