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
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from jitort.codegen.cuda import fused_cuda_kernel
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.conv import ACTIVATIONS, act_code
from jitort.kernels.conv_fused import epilogue, residual
from jitort.kernels.conv_setup import _attrs_norm, _prm
from jitort.kernels.registry import Ref, implement, lower_node, provider_impl

CUDA = "CUDAExecutionProvider"
FUSED = "FusedElementwise"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_MAX_RANK = 6


@dataclass(frozen=True)
class HostRef:
    """A run-time value the launcher reads on the host."""

    name: str


@dataclass(frozen=True, eq=False)
class Dev:
    """A compile-time array the launcher reads on the device (uploaded when the plan is built)."""

    data: np.ndarray
    label: str = ""


@dataclass
class CudaCall:
    fn: Callable[..., Any]
    args: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    kernels: list[tuple[Callable, str]] = field(default_factory=list)


# --- helpers -------------------------------------------------------------------------------------

def _dt(g: Graph, name: str) -> np.dtype | None:
    t = g.type_of(name).dtype
    return None if t is None else np.dtype(t)


def _rank(g: Graph, name: str) -> int | None:
    return g.type_of(name).rank


def _tensor_types(node: Node, g: Graph) -> str | None:
    """Every input and output is a tensor of a known, fixed-size dtype."""
    for v in [*node.inputs, *node.outputs]:
        if not v:
            continue
        dt = _dt(g, v)
        if dt is None:
            return f"dtype of '{v}' unknown at compile time"
        if dt.kind in "OUSV" and dt.name != "bfloat16" or dt.itemsize not in (1, 2, 4, 8):
            return f"dtype {dt} of '{v}' is not a device tensor type"
    return None


def _float_in(node: Node, g: Graph, k: int = 0) -> str | None:
    dt = _dt(g, node.inputs[k])
    if dt not in _FLOATS:
        return f"dtype {dt}: the CUDA kernel computes float32/float64"
    return None


def _first(*reasons: Callable[[], str | None]) -> str | None:
    for r in reasons:
        why = r()
        if why:
            return why
    return None


def _rank_at_most(node: Node, g: Graph, k: int, limit: int = _MAX_RANK) -> str | None:
    r = _rank(g, node.inputs[k])
    if r is None:
        return "rank unknown at compile time"
    if r > limit:
        return f"rank {r} > {limit}"
    return None


def _present(node: Node, k: int) -> bool:
    return len(node.inputs) > k and bool(node.inputs[k])


def _dev(name: str) -> Ref | None:
    return Ref(name) if name else None


def _key(g: Graph, name: str) -> str:
    return str(_dt(g, name).name)  # type: ignore[union-attr]


def _move_key(g: Graph, name: str) -> str:
    return f"uint{8 * _dt(g, name).itemsize}"  # type: ignore[union-attr]


# --- Softmax / LogSoftmax ------------------------------------------------------------------------

def _check_softmax_1(node: Node, g: Graph) -> str | None:
    return _float_in(node, g)  # opsets 1-12 coerce the input to 2-D at the axis: rows whatever it is


def _check_softmax(node: Node, g: Graph) -> str | None:
    def axis() -> str | None:
        r = _rank(g, node.inputs[0])
        if r is None:
            return "rank unknown at compile time"
        a = int(node.attrs.get("axis", -1))
        if (a + r if a < 0 else a) != r - 1:
            return f"axis {a} is not the last axis (the CUDA kernel normalises rows)"
        return None
    return _first(lambda: _float_in(node, g), axis)


def _softmax_call(node: Node, g: Graph, axis: int, coerce_2d: int) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import rows
    kw = {"axis": axis, "log": int(node.op_type == "LogSoftmax"), "coerce_2d": coerce_2d}
    return CudaCall(rows.softmax, [Ref(node.inputs[0])], kw, [(rows.softmax_rows, _key(g, node.inputs[0]))])


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
            if not _present(node, k):
                continue
            pt = g.type_of(node.inputs[k])
            if pt.shape is None or not all(isinstance(d, int) for d in pt.shape):
                return f"shape of '{node.inputs[k]}' unknown at compile time"
            if tuple(pt.shape) != tuple(tail) and not (
                    all(isinstance(d, int) for d in tail) and math.prod(pt.shape) == math.prod(tail)):  # type: ignore
                return f"Scale/B shape {list(pt.shape)} is broadcast over {list(tail)} (not supported on CUDA)"
            if _dt(g, node.inputs[k]) != _dt(g, node.inputs[0]):
                return "Scale/B dtype differs from X"
        for o in node.outputs[1:]:
            if o and _dt(g, o) != _dt(g, node.inputs[0]):
                return "Mean/InvStdDev stash type differs from X's dtype"
        return None
    return _first(lambda: _float_in(node, g), params)


def _lower_layernorm(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import rows
    nout = max(k + 1 for k, o in enumerate(node.outputs) if o) if any(node.outputs) else 1
    kw = {"axis": int(node.attrs.get("axis", -1)), "epsilon": float(node.attrs.get("epsilon", 1e-5)), "nout": nout}
    args = [Ref(node.inputs[0]), Ref(node.inputs[1]), _dev(node.inputs[2]) if _present(node, 2) else None]
    return CudaCall(rows.layernorm, args, kw, [(rows.layernorm_rows, _key(g, node.inputs[0]))])


# --- Reduce* and Global pools --------------------------------------------------------------------

def _reduce_axes(node: Node, g: Graph, axes_input: bool) -> tuple[int, ...] | None | str:
    """The reduced axes (None: all), or a reason. ``axes_input``: the registration of the opset
    that made axes an input (ReduceSum 13, the others 18); before it, the attribute."""
    if not axes_input:
        axes = node.attrs.get("axes")
    elif _present(node, 1):
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
    r = _rank(g, node.inputs[0])
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
        dt = _dt(g, node.inputs[0])
        ok = _FLOATS if node.op_type in ("ReduceSum", "ReduceMean") else _FLOATS + (np.dtype(np.int32),
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
        return CudaCall(rows.reduce_last, [Ref(node.inputs[0])], kw, [(rows.reduce_rows, _key(g, node.inputs[0]))])
    return check, lower


def _check_global(node: Node, g: Graph) -> str | None:
    r = _rank(g, node.inputs[0])
    return _float_in(node, g) or (None if r is not None and r >= 3 else "rank must be known and >= 3")


def _lower_global(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import rows
    r = _rank(g, node.inputs[0])
    kw = {"n_axes": r - 2, "keepdims": 1, "op_type": node.op_type}  # type: ignore[operator]
    return CudaCall(rows.reduce_last, [Ref(node.inputs[0])], kw, [(rows.reduce_rows, _key(g, node.inputs[0]))])


# --- MatMul / Gemm -------------------------------------------------------------------------------

def _check_matmul(node: Node, g: Graph) -> str | None:
    def same() -> str | None:
        if _dt(g, node.inputs[1]) != _dt(g, node.inputs[0]):
            return "operand dtypes differ"
        ra, rb = _rank(g, node.inputs[0]), _rank(g, node.inputs[1])
        if ra is None or rb is None:
            return "rank unknown at compile time"
        return None
    return _first(lambda: _float_in(node, g), same)


def _lower_matmul(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import gemm
    return CudaCall(gemm.matmul, [Ref(node.inputs[0]), Ref(node.inputs[1])], {},
                    [(gemm.gemm_tiled, _key(g, node.inputs[0]))])


def _check_gemm(node: Node, g: Graph) -> str | None:
    def same() -> str | None:
        if any(_dt(g, i) != _dt(g, node.inputs[0]) for i in node.inputs if i):
            return "operand dtypes differ"
        return None
    return _first(lambda: _float_in(node, g), same)


def _lower_gemm(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import gemm
    a = node.attrs
    kw = {"alpha": float(a.get("alpha", 1.0)), "beta": float(a.get("beta", 1.0)),
          "transA": int(a.get("transA", 0)), "transB": int(a.get("transB", 0))}
    args = [Ref(node.inputs[0]), Ref(node.inputs[1]), _dev(node.inputs[2]) if _present(node, 2) else None]
    return CudaCall(gemm.gemm, args, kw, [(gemm.gemm_tiled, _key(g, node.inputs[0]))])


# --- Conv, pools, BatchNormalization -------------------------------------------------------------

def _check_conv(node: Node, g: Graph) -> str | None:
    def shapes() -> str | None:
        r = _rank(g, node.inputs[0])
        if r not in (3, 4):
            return f"input rank {r}: the CUDA Conv is 1-D/2-D"
        W = g.const(node.inputs[1])
        if W is None or (_present(node, 2) and g.const(node.inputs[2]) is None):
            return "weights or bias known only at run time"
        if W.ndim != r:
            return "W rank differs from X"
        if epilogue(node)[0] not in ACTIVATIONS:
            return f"fused activation {epilogue(node)[0]!r}"
        return None
    return _first(lambda: _float_in(node, g), shapes)


def _lower_conv(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import convpool
    W = g.const(node.inputs[1])
    assert W is not None
    B = g.const(node.inputs[2]) if _present(node, 2) else None
    dt = _dt(g, node.inputs[0])
    a = node.attrs
    _, s, dl, p = _attrs_norm(W.ndim - 2, W.shape[2:], a.get("strides"), a.get("dilations"), a.get("pads"))
    w2 = np.ascontiguousarray(W.reshape(W.shape[0], -1), dt)
    b = np.zeros(W.shape[0], dt) if B is None else np.ascontiguousarray(B.reshape(-1), dt)
    activation, alpha, beta = epilogue(node)
    prm = _prm(dt, alpha, beta)  # type: ignore[arg-type]
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
        r = _rank(g, node.inputs[0])
        if r not in (3, 4):
            return f"input rank {r}: the CUDA pools are 1-D/2-D"
        if node.op_type == "MaxPool" and node.attrs.get("storage_order", 0):
            return "storage_order"
        return None
    return _first(lambda: _float_in(node, g), shapes)


def _lower_pool(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import convpool
    a = node.attrs
    tup = lambda v: None if v is None else tuple(int(t) for t in v)  # noqa: E731
    kw = dict(op_name=node.op_type, auto_pad=a.get("auto_pad", "NOTSET"), ceil_mode=int(a.get("ceil_mode", 0)),
              kernel_shape=tup(a.get("kernel_shape")), strides=tup(a.get("strides")),
              dilations=tup(a.get("dilations")), pads=tup(a.get("pads")),
              count_include_pad=int(a.get("count_include_pad", 0)))
    return CudaCall(convpool.pool, [Ref(node.inputs[0])], kw, [(convpool.pool2d, _key(g, node.inputs[0]))])


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
        r = _rank(g, node.inputs[0])
        return None if r is not None and r >= 2 else "rank must be known and >= 2"
    return _first(lambda: _float_in(node, g), params)


def _lower_bn(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import convpool
    scale, bias, mean, var = (g.const(i).astype(np.float64) for i in node.inputs[1:5])  # type: ignore[union-attr]
    dt = _dt(g, node.inputs[0])
    a = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    b = bias - mean * a
    args = [Ref(node.inputs[0]), Dev(a.astype(dt), f"{node.name}.a"), Dev(b.astype(dt), f"{node.name}.b")]
    return CudaCall(convpool.batchnorm, args, {}, [(convpool.channel_affine, str(dt.name))])  # type: ignore


# --- data movement -------------------------------------------------------------------------------

def _check_moves(node: Node, g: Graph) -> str | None:
    return _first(lambda: _tensor_types(node, g), lambda: _rank_at_most(node, g, 0))


def _lower_transpose(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    perm = node.attrs.get("perm")
    kw = {"perm": None if perm is None else tuple(int(p) for p in perm)}
    return CudaCall(movement.transpose, [Ref(node.inputs[0])], kw,
                    [(movement.gather_strided, _move_key(g, node.inputs[0]))])


def _check_concat(node: Node, g: Graph) -> str | None:
    return _first(lambda: _tensor_types(node, g), lambda: _rank_at_most(node, g, 0),
                  lambda: None if len({_dt(g, i) for i in node.inputs if i}) == 1 else "input dtypes differ")


def _lower_concat(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    return CudaCall(movement.concat, [Ref(i) for i in node.inputs if i], {"axis": int(node.attrs.get("axis", 1))},
                    [(movement.scatter_strided, _move_key(g, node.inputs[0]))])


def _split_call(node: Node, g: Graph, sizes: Any) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    a = node.attrs
    split_in = HostRef(node.inputs[1]) if _present(node, 1) else None
    kw = {"axis": int(a.get("axis", 0)), "sizes": None if not sizes else tuple(int(v) for v in sizes),
          "num_outputs": a.get("num_outputs"), "nout": len(node.outputs)}
    return CudaCall(movement.split, [Ref(node.inputs[0]), split_in], kw,
                    [(movement.gather_strided, _move_key(g, node.inputs[0]))])


def _lower_split_1(node: Node, g: Graph) -> CudaCall:
    return _split_call(node, g, node.attrs.get("split"))  # opsets 1-12: the 'split' attribute


def _lower_split(node: Node, g: Graph) -> CudaCall:
    return _split_call(node, g, None)  # opset 13 on: sizes come from the 'split' input


def _lower_slice_1(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    key = [(movement.gather_strided, _move_key(g, node.inputs[0]))]
    a = node.attrs
    kw = {"attr_starts": tuple(a["starts"]), "attr_ends": tuple(a["ends"]),
          "attr_axes": None if a.get("axes") is None else tuple(a["axes"])}
    return CudaCall(movement.slice_, [Ref(node.inputs[0])], kw, key)


def _lower_slice(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    key = [(movement.gather_strided, _move_key(g, node.inputs[0]))]
    args: list[Any] = [Ref(node.inputs[0])] + [HostRef(node.inputs[k]) if _present(node, k) else None
                                                 for k in range(1, 5)]
    return CudaCall(movement.slice_, args, {}, key)


def _check_expand(node: Node, g: Graph) -> str | None:
    return _first(lambda: _tensor_types(node, g), lambda: _rank_at_most(node, g, 0),
                  lambda: None if (g.type_of(node.outputs[0]).rank or 99) <= _MAX_RANK else "output rank > 6")


def _lower_expand(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    return CudaCall(movement.expand, [Ref(node.inputs[0]), HostRef(node.inputs[1])], {},
                    [(movement.gather_strided, _move_key(g, node.inputs[0]))])


def _check_gather(node: Node, g: Graph) -> str | None:
    def idx() -> str | None:
        if _dt(g, node.inputs[1]) not in (np.dtype(np.int32), np.dtype(np.int64)):
            return "indices must be int32/int64"
        return None if _rank(g, node.inputs[0]) is not None else "rank unknown at compile time"
    return _first(lambda: _tensor_types(node, g), idx)


def _lower_gather(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    key = f"{_move_key(g, node.inputs[0])},{_key(g, node.inputs[1])}"
    return CudaCall(movement.gather, [Ref(node.inputs[0]), Ref(node.inputs[1])],
                    {"axis": int(node.attrs.get("axis", 0))}, [(movement.gather_axis, key)])


def _check_view(node: Node, g: Graph) -> str | None:
    return _tensor_types(node, g)


def _lower_view(node: Node, g: Graph) -> CudaCall:
    """The CPU op's lowering computes the output shape (on a dummy); the device array is reshaped."""
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    call = lower_node(node, g)
    if not call.args or call.args[0] != Ref(node.inputs[0]):
        raise OrtNotImplemented(f"{node.describe()}: unexpected CPU lowering for a CUDA view")
    rest = [HostRef(a.name) if isinstance(a, Ref) else a for a in call.args[1:]]
    return CudaCall(movement.view, [Ref(node.inputs[0]), *rest], {"fn": call.fn, "kwargs": dict(call.kwargs)})


def _lower_shape(node: Node, g: Graph) -> CudaCall:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import movement
    if node.op_type == "Size":
        return CudaCall(movement.size_of, [HostRef(node.inputs[0])])
    kw = {"start": int(node.attrs.get("start", 0)), "end": node.attrs.get("end")}
    return CudaCall(movement.shape_of, [HostRef(node.inputs[0])], kw)


def _ok(node: Node, g: Graph) -> str | None:
    return None


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
    ("Transpose", 1, _check_moves, _lower_transpose, False),
    ("Concat", 1, _check_concat, _lower_concat, False),
    ("Split", 1, _check_moves, _lower_split_1, False),
    ("Split", 2, _check_moves, _lower_split_1, False),
    ("Split", 13, _check_moves, _lower_split, False),
    ("Slice", 1, _check_moves, _lower_slice_1, False),
    ("Slice", 10, _check_moves, _lower_slice, False),
    ("Expand", 8, _check_expand, _lower_expand, False),
    ("Gather", 1, _check_gather, _lower_gather, False),
    ("Reshape", 1, _check_view, _lower_view, True),
    ("Reshape", 5, _check_view, _lower_view, True),
    ("Flatten", 1, _check_view, _lower_view, True),
    ("Squeeze", 1, _check_view, _lower_view, True),
    ("Squeeze", 13, _check_view, _lower_view, True),
    ("Unsqueeze", 1, _check_view, _lower_view, True),
    ("Unsqueeze", 13, _check_view, _lower_view, True),
    ("Identity", 1, _check_view, _lower_view, True),
    ("Shape", 1, _ok, _lower_shape, False),
    ("Size", 1, _ok, _lower_shape, False),
]
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
