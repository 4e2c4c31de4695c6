"""The CUDA provider's registrations in the op table: which nodes it runs and how they launch.

Each ``implement(CUDA, op, since=...)`` joins the CPU registration of the op with the same opset
range (``jitort.kernels.registry``), so an opset's semantic change is a second registration here
as on the CPU side, never a version test inside a check. A registration gives

* ``check(node, graph)`` — None when the CUDA kernel covers the node (its dtypes, attributes, ranks
  as far as they are known at compile time), else the reason it stays on the CPU (kept in
  ``g.notes``);
* ``view`` — output 0 aliases input 0's device memory (Reshape & co.), which the plan's buffer
  liveness must know;
* ``lower(node, graph) -> CudaCall`` — the launcher (``jitort.kernels.cuda.<family>``) and its
  arguments: ``Ref`` (a device value), ``HostRef`` (a host value), ``Dev`` (a constant computed
  at compile time, uploaded once when the plan is built), plain Python values; and the
  ``(kernel, key)`` pairs it may launch, which the PTX checks compile and the plan pre-compiles.

Where inputs live is the op's fact, declared by its CPU registration: ``host_inputs`` (shape, axes,
starts/ends tensors, read on the host as onnxruntime's CUDA kernels declare them, so shape
arithmetic never bounces through the device), ``meta_inputs`` (only the shape is read: Shape,
Size) and ``host_outputs`` (Shape, Size). ``cuda_op(node)`` puts both halves together.

Fused elementwise groups are decided by ``jitort.codegen.cuda.fused_cuda_kernel``. This module
imports no device runtime: the registry loads it with the kernel families.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from jitort.codegen.cuda import fused_cuda_kernel
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.conv import ACTIVATIONS, act_code
from jitort.kernels.conv_fused import epilogue, residual
from jitort.kernels.conv_setup import attrs_norm, epilogue_params
from jitort.kernels.cuda.call import (FLOATS, CudaCall, Dev, dev_ref, dtype_key, dtype_of, first_reason, float_in,
                                      present, rank_of)
from jitort.kernels.cuda.movement_ops import MOVEMENT_TABLE
from jitort.kernels.registry import Ref, implement, provider_impl

CUDA = "CUDAExecutionProvider"
FUSED = "FusedElementwise"


# --- Softmax / LogSoftmax ------------------------------------------------------------------------

def _check_softmax_1(node: Node, g: Graph) -> str | None:
    return float_in(node, g)  # opsets 1-12 coerce the input to 2-D at the axis: rows whatever it is


def _check_softmax(node: Node, g: Graph) -> str | None:
    def axis() -> str | None:
        r = rank_of(g, node.inputs[0])
        if r is None:
            return "rank unknown at compile time"
        a = int(node.attrs.get("axis", -1))
        if (a + r if a < 0 else a) != r - 1:
            return f"axis {a} is not the last axis (the CUDA kernel normalises rows)"
        return None
    return first_reason(lambda: float_in(node, g), axis)


def _softmax_call(node: Node, g: Graph, axis: int, coerce_2d: int) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import rows
    kw = {"axis": axis, "log": int(node.op_type == "LogSoftmax"), "coerce_2d": coerce_2d}
    return CudaCall(rows.softmax, [Ref(node.inputs[0])], kw, [(rows.softmax_rows, dtype_key(g, node.inputs[0]))])


def _lower_softmax_1(node: Node, g: Graph) -> CudaCall:
    return _softmax_call(node, g, int(node.attrs.get("axis", 1)), 1)


def _lower_softmax(node: Node, g: Graph) -> CudaCall:
    return _softmax_call(node, g, int(node.attrs.get("axis", -1)), 0)


# --- LayerNormalization --------------------------------------------------------------------------

def _check_layernorm(node: Node, g: Graph) -> str | None:
    def params() -> str | None:
        xt = g.type_of(node.inputs[0])
        if xt.shape is None:
            return "rank unknown at compile time"
        r = len(xt.shape)
        a = int(node.attrs.get("axis", -1))
        a = a + r if a < 0 else a
        tail = xt.shape[a:]
        for k in (1, 2):
            if not present(node, k):
                continue
            pt = g.type_of(node.inputs[k])
            if pt.shape is None or not all(isinstance(d, int) for d in pt.shape):
                return f"shape of '{node.inputs[k]}' unknown at compile time"
            if tuple(pt.shape) != tuple(tail) and not (
                    all(isinstance(d, int) for d in tail) and math.prod(pt.shape) == math.prod(tail)):  # type: ignore
                return f"Scale/B shape {list(pt.shape)} is broadcast over {list(tail)} (not supported on CUDA)"
            if dtype_of(g, node.inputs[k]) != dtype_of(g, node.inputs[0]):
                return "Scale/B dtype differs from X"
        for o in node.outputs[1:]:
            if o and dtype_of(g, o) != dtype_of(g, node.inputs[0]):
                return "Mean/InvStdDev stash type differs from X's dtype"
        return None
    return first_reason(lambda: float_in(node, g), params)


def _lower_layernorm(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import rows
    nout = max(k + 1 for k, o in enumerate(node.outputs) if o) if any(node.outputs) else 1
    kw = {"axis": int(node.attrs.get("axis", -1)), "epsilon": float(node.attrs.get("epsilon", 1e-5)), "nout": nout}
    args = [Ref(node.inputs[0]), Ref(node.inputs[1]), dev_ref(node.inputs[2]) if present(node, 2) else None]
    return CudaCall(rows.layernorm, args, kw, [(rows.layernorm_rows, dtype_key(g, node.inputs[0]))])


# --- Reduce* and Global pools --------------------------------------------------------------------

def _reduce_axes(node: Node, g: Graph, axes_input: bool) -> tuple[int, ...] | None | str:
    """The reduced axes (None: all), or a reason. ``axes_input``: the registration of the opset
    that made axes an input (ReduceSum 13, the others 18); before it, the attribute."""
    if not axes_input:
        axes = node.attrs.get("axes")
    elif present(node, 1):
        c = g.const(node.inputs[1])
        if c is None:
            return "axes known only at run time"
        axes = [int(v) for v in c.reshape(-1)]
    else:
        axes = None
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return "noop_with_empty_axes"
        return None
    return tuple(int(a) for a in axes)


def _trailing(node: Node, g: Graph, axes_input: bool) -> int | str:
    """How many trailing axes the node reduces, or why it is not a trailing reduction."""
    r = rank_of(g, node.inputs[0])
    if r is None:
        return "rank unknown at compile time"
    axes = _reduce_axes(node, g, axes_input)
    if isinstance(axes, str):
        return axes
    if axes is None:
        return r
    norm = sorted({a + r if a < 0 else a for a in axes})
    if norm != list(range(r - len(norm), r)) or not norm or len(norm) != len(axes):
        return f"axes {list(axes)} are not the trailing axes of a rank-{r} input"
    return len(norm)


def _reduce_impl(axes_input: bool) -> tuple[Callable[[Node, Graph], str | None], Callable[[Node, Graph], CudaCall]]:
    def check(node: Node, g: Graph) -> str | None:
        dt = dtype_of(g, node.inputs[0])
        ok = FLOATS if node.op_type in ("ReduceSum", "ReduceMean") else FLOATS + (np.dtype(np.int32),
                                                                                  np.dtype(np.int64))
        if dt not in ok:
            return f"dtype {dt} not supported by the CUDA reduction"
        t = _trailing(node, g, axes_input)
        return t if isinstance(t, str) else None

    def lower(node: Node, g: Graph) -> CudaCall:
        # deferred: numba.cuda, imported only for CUDA sessions
        from jitort.kernels.cuda import rows
        n = _trailing(node, g, axes_input)
        kw = {"n_axes": n, "keepdims": int(node.attrs.get("keepdims", 1)), "op_type": node.op_type}
        return CudaCall(rows.reduce_last, [Ref(node.inputs[0])], kw, [(rows.reduce_rows, dtype_key(g, node.inputs[0]))])
    return check, lower


def _check_global(node: Node, g: Graph) -> str | None:
    r = rank_of(g, node.inputs[0])
    return float_in(node, g) or (None if r is not None and r >= 3 else "rank must be known and >= 3")


def _lower_global(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import rows
    r = rank_of(g, node.inputs[0])
    kw = {"n_axes": r - 2, "keepdims": 1, "op_type": node.op_type}  # type: ignore[operator]
    return CudaCall(rows.reduce_last, [Ref(node.inputs[0])], kw, [(rows.reduce_rows, dtype_key(g, node.inputs[0]))])


# --- MatMul / Gemm -------------------------------------------------------------------------------

def _check_matmul(node: Node, g: Graph) -> str | None:
    def same() -> str | None:
        if dtype_of(g, node.inputs[1]) != dtype_of(g, node.inputs[0]):
            return "operand dtypes differ"
        ra, rb = rank_of(g, node.inputs[0]), rank_of(g, node.inputs[1])
        if ra is None or rb is None:
            return "rank unknown at compile time"
        return None
    return first_reason(lambda: float_in(node, g), same)


def _lower_matmul(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import gemm
    return CudaCall(gemm.matmul, [Ref(node.inputs[0]), Ref(node.inputs[1])], {},
                    [(gemm.gemm_tiled, dtype_key(g, node.inputs[0]))])


def _check_gemm(node: Node, g: Graph) -> str | None:
    def same() -> str | None:
        if any(dtype_of(g, i) != dtype_of(g, node.inputs[0]) for i in node.inputs if i):
            return "operand dtypes differ"
        return None
    return first_reason(lambda: float_in(node, g), same)


def _lower_gemm(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import gemm
    a = node.attrs
    kw = {"alpha": float(a.get("alpha", 1.0)), "beta": float(a.get("beta", 1.0)),
          "transA": int(a.get("transA", 0)), "transB": int(a.get("transB", 0))}
    args = [Ref(node.inputs[0]), Ref(node.inputs[1]), dev_ref(node.inputs[2]) if present(node, 2) else None]
    return CudaCall(gemm.gemm, args, kw, [(gemm.gemm_tiled, dtype_key(g, node.inputs[0]))])


# --- Conv, pools, BatchNormalization -------------------------------------------------------------

def _check_conv(node: Node, g: Graph) -> str | None:
    def shapes() -> str | None:
        r = rank_of(g, node.inputs[0])
        if r not in (3, 4):
            return f"input rank {r}: the CUDA Conv is 1-D/2-D"
        W = g.const(node.inputs[1])
        if W is None or (present(node, 2) and g.const(node.inputs[2]) is None):
            return "weights or bias known only at run time"
        if W.ndim != r:
            return "W rank differs from X"
        if epilogue(node)[0] not in ACTIVATIONS:
            return f"fused activation {epilogue(node)[0]!r}"
        return None
    return first_reason(lambda: float_in(node, g), shapes)


def _lower_conv(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import convpool
    W = g.const(node.inputs[1])
    assert W is not None
    B = g.const(node.inputs[2]) if present(node, 2) else None
    dt = dtype_of(g, node.inputs[0])
    a = node.attrs
    _, s, dl, p = attrs_norm(W.ndim - 2, W.shape[2:], a.get("strides"), a.get("dilations"), a.get("pads"))
    w2 = np.ascontiguousarray(W.reshape(W.shape[0], -1), dt)
    b = np.zeros(W.shape[0], dt) if B is None else np.ascontiguousarray(B.reshape(-1), dt)
    activation, alpha, beta = epilogue(node)
    prm = epilogue_params(dt, alpha, beta)  # type: ignore[arg-type]
    kw = dict(w_shape=tuple(int(d) for d in W.shape), auto_pad=a.get("auto_pad", "NOTSET"),
              group=int(a.get("group", 1)), strides=s, dilations=dl, pads=p,
              act=act_code(activation))
    z = residual(node)
    args = [Ref(node.inputs[0]), Dev(w2, f"{node.name}.W"), Dev(b, f"{node.name}.B"), Dev(prm, f"{node.name}.act"),
            Ref(z) if z else None]
    return CudaCall(convpool.conv, args, kw, [(convpool.conv2d_igemm, str(dt.name))])  # type: ignore[union-attr]


def _check_pool(node: Node, g: Graph) -> str | None:
    def shapes() -> str | None:
        if len([o for o in node.outputs if o]) > 1:
            return "MaxPool's Indices output"
        r = rank_of(g, node.inputs[0])
        if r not in (3, 4):
            return f"input rank {r}: the CUDA pools are 1-D/2-D"
        if node.op_type == "MaxPool" and node.attrs.get("storage_order", 0):
            return "storage_order"
        return None
    return first_reason(lambda: float_in(node, g), shapes)


def _lower_pool(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import convpool
    a = node.attrs
    tup = lambda v: None if v is None else tuple(int(t) for t in v)  # noqa: E731
    kw = dict(op_name=node.op_type, auto_pad=a.get("auto_pad", "NOTSET"), ceil_mode=int(a.get("ceil_mode", 0)),
              kernel_shape=tup(a.get("kernel_shape")), strides=tup(a.get("strides")),
              dilations=tup(a.get("dilations")), pads=tup(a.get("pads")),
              count_include_pad=int(a.get("count_include_pad", 0)))
    return CudaCall(convpool.pool, [Ref(node.inputs[0])], kw, [(convpool.pool2d, dtype_key(g, node.inputs[0]))])


def _check_bn(node: Node, g: Graph) -> str | None:
    def params() -> str | None:
        a = node.attrs
        if a.get("training_mode", 0) or any(o for o in node.outputs[1:]):
            return "training mode / statistics outputs"
        if not a.get("spatial", 1):
            return "spatial=0"
        ps = [g.const(i) if i else None for i in node.inputs[1:5]]
        if len(ps) != 4 or any(p is None or p.ndim != 1 for p in ps):
            return "scale/B/mean/var known only at run time"
        r = rank_of(g, node.inputs[0])
        return None if r is not None and r >= 2 else "rank must be known and >= 2"
    return first_reason(lambda: float_in(node, g), params)


def _lower_bn(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import convpool
    scale, bias, mean, var = (g.const(i).astype(np.float64) for i in node.inputs[1:5])  # type: ignore[union-attr]
    dt = dtype_of(g, node.inputs[0])
    a = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    b = bias - mean * a
    args = [Ref(node.inputs[0]), Dev(a.astype(dt), f"{node.name}.a"), Dev(b.astype(dt), f"{node.name}.b")]
    return CudaCall(convpool.batchnorm, args, {}, [(convpool.channel_affine, str(dt.name))])  # type: ignore


_reduce_attr = _reduce_impl(axes_input=False)
_reduce_input = _reduce_impl(axes_input=True)

# (op, since, check, lower, view): ``since`` is the opset of the CPU registration it joins, or a
# later one where the CUDA kernel covers only part of that range (BatchNormalization from 6).
_TABLE: list[tuple[str, int, Callable[[Node, Graph], str | None], Callable[[Node, Graph], CudaCall], bool]] = [
    ("Softmax", 1, _check_softmax_1, _lower_softmax_1, False),
    ("Softmax", 13, _check_softmax, _lower_softmax, False),
    ("LogSoftmax", 1, _check_softmax_1, _lower_softmax_1, False),
    ("LogSoftmax", 13, _check_softmax, _lower_softmax, False),
    ("LayerNormalization", 1, _check_layernorm, _lower_layernorm, False),  # onnxruntime's, before onnx's 17
    ("LayerNormalization", 17, _check_layernorm, _lower_layernorm, False),
    ("ReduceSum", 1, *_reduce_attr, False),
    ("ReduceSum", 13, *_reduce_input, False),
    ("ReduceMean", 1, *_reduce_attr, False),
    ("ReduceMean", 18, *_reduce_input, False),
    ("ReduceMax", 1, *_reduce_attr, False),
    ("ReduceMax", 18, *_reduce_input, False),
    ("ReduceMin", 1, *_reduce_attr, False),
    ("ReduceMin", 18, *_reduce_input, False),
    ("GlobalAveragePool", 1, _check_global, _lower_global, False),
    ("GlobalMaxPool", 1, _check_global, _lower_global, False),
    ("MatMul", 1, _check_matmul, _lower_matmul, False),
    ("Gemm", 1, _check_gemm, _lower_gemm, False),
    ("Gemm", 7, _check_gemm, _lower_gemm, False),
    ("Conv", 1, _check_conv, _lower_conv, False),
    ("MaxPool", 1, _check_pool, _lower_pool, False),
    ("AveragePool", 1, _check_pool, _lower_pool, False),
    ("BatchNormalization", 6, _check_bn, _lower_bn, False),  # opsets 1-5: is_test/consumed_inputs
] + MOVEMENT_TABLE
for _op, _since, _check, _lower, _view in _TABLE:
    implement(CUDA, _op, since=_since, check=_check, lower=_lower, view=_view)


@dataclass(frozen=True)
class CudaOp:
    """A node's CUDA kernel (``check``, ``lower``, ``view``) with its op's memory facts."""

    check: Callable[[Node, Graph], str | None]
    lower: Callable[[Node, Graph], CudaCall]
    host_inputs: tuple[int, ...] = ()
    meta_inputs: tuple[int, ...] = ()
    host_outputs: bool = False
    view: bool = False


def cuda_op(node: Node) -> CudaOp | None:
    """The op table's CUDA registration serving ``node`` (its domain and opset), or None. A jitort
    FusedConv (Conv + residual + activation, ``kernels.conv_fused``) is served by Conv's."""
    if node.domain == "jitort" and node.op_type == "FusedConv":
        node = Node("Conv", node.inputs, node.outputs, node.attrs, node.name, "", 11)
    found = provider_impl(CUDA, node)
    if found is None:
        return None
    d, impl = found
    return CudaOp(impl.check, impl.lower, d.host_inputs, d.meta_inputs, d.host_outputs, impl.view)


def supports(node: Node, g: Graph) -> str | None:
    """None when the CUDA provider can run ``node``, else the reason it cannot."""
    if node.op_type == FUSED and node.domain == "jitort":
        try:
            fused_cuda_kernel(node, g)
        except OrtNotImplemented as e:
            return str(e)
        return None
    entry = cuda_op(node)
    if entry is None:
        return f"no CUDA kernel for {node.op_type}" + (f" (domain {node.domain})" if node.domain else "") + \
            f" at opset {node.version}"
    if any(isinstance(a, Graph) for a in node.attrs.values()):
        return "has a subgraph"
    try:
        return entry.check(node, g)
    except (OrtNotImplemented, KeyError, TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


def lower(node: Node, g: Graph) -> CudaCall:
    entry = cuda_op(node)
    if entry is None:
        raise OrtNotImplemented(f"{node.describe()}: no CUDA kernel")
    return entry.lower(node, g)
