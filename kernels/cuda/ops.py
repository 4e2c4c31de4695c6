"""The CUDA op table: which nodes the CUDA provider runs, where their inputs live, how they launch.

For each op type an entry says

* ``check(node, graph)`` — None when a CUDA kernel covers the node (its dtypes, attributes, ranks as
  far as they are known at compile time), else the reason it stays on the CPU (kept in ``g.notes``);
* ``host_inputs`` — input slots read on the host: shape, axes, starts/ends tensors (onnxruntime's
  CUDA kernels declare the same inputs as CPU memory), so shape arithmetic never bounces through
  the device; ``meta_inputs`` — slots of which only the shape is read (Shape, Size): no copy either
  way; ``host_outputs`` — the outputs are host tensors (Shape, Size);
* ``view`` — output 0 aliases input 0's device memory (Reshape & co.), which the plan's buffer
  liveness must know;
* ``lower(node, graph) -> CudaCall`` — the launcher (``jitort.kernels.cuda.<family>``) and its
  arguments: ``Ref`` (a device value), ``HostRef`` (a host value), ``Dev`` (a constant computed
  at compile time, uploaded once when the plan is built), plain Python values; and the
  ``(kernel, key)`` pairs it may launch, which the PTX checks compile and the plan pre-compiles.

Fused elementwise groups are decided by ``jitort.codegen.cuda.fused_cuda_kernel``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.registry import Ref

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


@dataclass(frozen=True)
class CudaOp:
    check: Callable[[Node, Graph], str | None]
    lower: Callable[[Node, Graph], CudaCall]
    host_inputs: tuple[int, ...] = ()
    meta_inputs: tuple[int, ...] = ()
    host_outputs: bool = False
    view: bool = False


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

def _check_softmax(node: Node, g: Graph) -> str | None:
    def axis() -> str | None:
        r = _rank(g, node.inputs[0])
        if node.version >= 13:
            if r is None:
                return "rank unknown at compile time"
            a = int(node.attrs.get("axis", -1))
            if (a + r if a < 0 else a) != r - 1:
                return f"axis {a} is not the last axis (the CUDA kernel normalises rows)"
        return None
    return _first(lambda: _float_in(node, g), axis)


def _lower_softmax(node: Node, g: Graph) -> CudaCall:
    from jitort.kernels.cuda import rows
    default_axis = -1 if node.version >= 13 else 1
    kw = {"axis": int(node.attrs.get("axis", default_axis)), "log": int(node.op_type == "LogSoftmax"),
          "coerce_2d": int(node.version < 13)}
    return CudaCall(rows.softmax, [Ref(node.inputs[0])], kw, [(rows.softmax_rows, _key(g, node.inputs[0]))])


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
    from jitort.kernels.cuda import rows
    nout = max(k + 1 for k, o in enumerate(node.outputs) if o) if any(node.outputs) else 1
    kw = {"axis": int(node.attrs.get("axis", -1)), "epsilon": float(node.attrs.get("epsilon", 1e-5)), "nout": nout}
    args = [Ref(node.inputs[0]), Ref(node.inputs[1]), _dev(node.inputs[2]) if _present(node, 2) else None]
    return CudaCall(rows.layernorm, args, kw, [(rows.layernorm_rows, _key(g, node.inputs[0]))])


# --- Reduce* and Global pools --------------------------------------------------------------------

def _reduce_axes(node: Node, g: Graph) -> tuple[int, ...] | None | str:
    """The reduced axes (None: all), or a reason."""
    attr_form = node.version < (13 if node.op_type == "ReduceSum" else 18)
    if attr_form:
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


def _trailing(node: Node, g: Graph) -> int | str:
    """How many trailing axes the node reduces, or why it is not a trailing reduction."""
    r = _rank(g, node.inputs[0])
    if r is None:
        return "rank unknown at compile time"
    axes = _reduce_axes(node, g)
    if isinstance(axes, str):
        return axes
    if axes is None:
        return r
    norm = sorted({a + r if a < 0 else a for a in axes})
    if norm != list(range(r - len(norm), r)) or not norm or len(norm) != len(axes):
        return f"axes {list(axes)} are not the trailing axes of a rank-{r} input"
    return len(norm)


def _check_reduce(node: Node, g: Graph) -> str | None:
    dt = _dt(g, node.inputs[0])
    ok = _FLOATS if node.op_type in ("ReduceSum", "ReduceMean") else _FLOATS + (np.dtype(np.int32),
                                                                              np.dtype(np.int64))
    if dt not in ok:
        return f"dtype {dt} not supported by the CUDA reduction"
    t = _trailing(node, g)
    return t if isinstance(t, str) else None


def _lower_reduce(node: Node, g: Graph) -> CudaCall:
    from jitort.kernels.cuda import rows
    n = _trailing(node, g)
    kw = {"n_axes": n, "keepdims": int(node.attrs.get("keepdims", 1)), "op_type": node.op_type}
    return CudaCall(rows.reduce_last, [Ref(node.inputs[0])], kw, [(rows.reduce_rows, _key(g, node.inputs[0]))])


def _check_global(node: Node, g: Graph) -> str | None:
    r = _rank(g, node.inputs[0])
    return _float_in(node, g) or (None if r is not None and r >= 3 else "rank must be known and >= 3")


def _lower_global(node: Node, g: Graph) -> CudaCall:
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
        from jitort.kernels.conv import ACTIVATIONS
        from jitort.kernels.conv_fused import epilogue
        if epilogue(node)[0] not in ACTIVATIONS:
            return f"fused activation {epilogue(node)[0]!r}"
        return None
    return _first(lambda: _float_in(node, g), shapes)


def _lower_conv(node: Node, g: Graph) -> CudaCall:
    from jitort.kernels.conv import act_code
    from jitort.kernels.conv_setup import _attrs_norm, _prm
    from jitort.kernels.conv_fused import epilogue, residual
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
        if a.get("training_mode", 0) or any(o for o in node.outputs[1:]) or node.version < 6:
            return "training mode / statistics outputs / opset < 6"
        if not a.get("spatial", 1):
            return "spatial=0"
        ps = [g.const(i) if i else None for i in node.inputs[1:5]]
        if len(ps) != 4 or any(p is None or p.ndim != 1 for p in ps):
            return "scale/B/mean/var known only at run time"
        r = _rank(g, node.inputs[0])
        return None if r is not None and r >= 2 else "rank must be known and >= 2"
    return _first(lambda: _float_in(node, g), params)


def _lower_bn(node: Node, g: Graph) -> CudaCall:
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
    from jitort.kernels.cuda import movement
    perm = node.attrs.get("perm")
    kw = {"perm": None if perm is None else tuple(int(p) for p in perm)}
    return CudaCall(movement.transpose, [Ref(node.inputs[0])], kw,
                    [(movement.gather_strided, _move_key(g, node.inputs[0]))])


def _check_concat(node: Node, g: Graph) -> str | None:
    return _first(lambda: _tensor_types(node, g), lambda: _rank_at_most(node, g, 0),
                  lambda: None if len({_dt(g, i) for i in node.inputs if i}) == 1 else "input dtypes differ")


def _lower_concat(node: Node, g: Graph) -> CudaCall:
    from jitort.kernels.cuda import movement
    return CudaCall(movement.concat, [Ref(i) for i in node.inputs if i], {"axis": int(node.attrs.get("axis", 1))},
                    [(movement.scatter_strided, _move_key(g, node.inputs[0]))])


def _lower_split(node: Node, g: Graph) -> CudaCall:
    from jitort.kernels.cuda import movement
    a = node.attrs
    split_in = HostRef(node.inputs[1]) if _present(node, 1) else None
    sizes = a.get("split") if node.version < 13 else None
    kw = {"axis": int(a.get("axis", 0)), "sizes": None if not sizes else tuple(int(v) for v in sizes),
          "num_outputs": a.get("num_outputs"), "nout": len(node.outputs)}
    return CudaCall(movement.split, [Ref(node.inputs[0]), split_in], kw,
                    [(movement.gather_strided, _move_key(g, node.inputs[0]))])


def _lower_slice(node: Node, g: Graph) -> CudaCall:
    from jitort.kernels.cuda import movement
    key = [(movement.gather_strided, _move_key(g, node.inputs[0]))]
    if node.version < 10:
        a = node.attrs
        kw = {"attr_starts": tuple(a["starts"]), "attr_ends": tuple(a["ends"]),
              "attr_axes": None if a.get("axes") is None else tuple(a["axes"])}
        return CudaCall(movement.slice_, [Ref(node.inputs[0])], kw, key)
    args: list[Any] = [Ref(node.inputs[0])] + [HostRef(node.inputs[k]) if _present(node, k) else None
                                                 for k in range(1, 5)]
    return CudaCall(movement.slice_, args, {}, key)


def _check_expand(node: Node, g: Graph) -> str | None:
    return _first(lambda: _tensor_types(node, g), lambda: _rank_at_most(node, g, 0),
                  lambda: None if (g.type_of(node.outputs[0]).rank or 99) <= _MAX_RANK else "output rank > 6")


def _lower_expand(node: Node, g: Graph) -> CudaCall:
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
    from jitort.kernels.cuda import movement
    key = f"{_move_key(g, node.inputs[0])},{_key(g, node.inputs[1])}"
    return CudaCall(movement.gather, [Ref(node.inputs[0]), Ref(node.inputs[1])],
                    {"axis": int(node.attrs.get("axis", 0))}, [(movement.gather_axis, key)])


def _check_view(node: Node, g: Graph) -> str | None:
    return _tensor_types(node, g)


def _lower_view(node: Node, g: Graph) -> CudaCall:
    """The CPU op's lowering computes the output shape (on a dummy); the device array is reshaped."""
    from jitort.kernels.cuda import movement
    from jitort.kernels.registry import lower_node
    call = lower_node(node, g)
    if not call.args or call.args[0] != Ref(node.inputs[0]):
        raise OrtNotImplemented(f"{node.describe()}: unexpected CPU lowering for a CUDA view")
    rest = [HostRef(a.name) if isinstance(a, Ref) else a for a in call.args[1:]]
    return CudaCall(movement.view, [Ref(node.inputs[0]), *rest], {"fn": call.fn, "kwargs": dict(call.kwargs)})


def _lower_shape(node: Node, g: Graph) -> CudaCall:
    from jitort.kernels.cuda import movement
    if node.op_type == "Size":
        return CudaCall(movement.size_of, [HostRef(node.inputs[0])])
    kw = {"start": int(node.attrs.get("start", 0)), "end": node.attrs.get("end")}
    return CudaCall(movement.shape_of, [HostRef(node.inputs[0])], kw)


def _ok(node: Node, g: Graph) -> str | None:
    return None


OPS: dict[str, CudaOp] = {
    "Softmax": CudaOp(_check_softmax, _lower_softmax),
    "LogSoftmax": CudaOp(_check_softmax, _lower_softmax),
    "LayerNormalization": CudaOp(_check_layernorm, _lower_layernorm),
    "ReduceSum": CudaOp(_check_reduce, _lower_reduce, host_inputs=(1,)),
    "ReduceMean": CudaOp(_check_reduce, _lower_reduce, host_inputs=(1,)),
    "ReduceMax": CudaOp(_check_reduce, _lower_reduce, host_inputs=(1,)),
    "ReduceMin": CudaOp(_check_reduce, _lower_reduce, host_inputs=(1,)),
    "GlobalAveragePool": CudaOp(_check_global, _lower_global),
    "GlobalMaxPool": CudaOp(_check_global, _lower_global),
    "MatMul": CudaOp(_check_matmul, _lower_matmul),
    "Gemm": CudaOp(_check_gemm, _lower_gemm),
    "Conv": CudaOp(_check_conv, _lower_conv),
    "MaxPool": CudaOp(_check_pool, _lower_pool),
    "AveragePool": CudaOp(_check_pool, _lower_pool),
    "BatchNormalization": CudaOp(_check_bn, _lower_bn),
    "Transpose": CudaOp(_check_moves, _lower_transpose),
    "Concat": CudaOp(_check_concat, _lower_concat),
    "Split": CudaOp(_check_moves, _lower_split, host_inputs=(1,)),
    "Slice": CudaOp(_check_moves, _lower_slice, host_inputs=(1, 2, 3, 4)),
    "Expand": CudaOp(_check_expand, _lower_expand, host_inputs=(1,)),
    "Gather": CudaOp(_check_gather, _lower_gather),
    "Reshape": CudaOp(_check_view, _lower_view, host_inputs=(1,), view=True),
    "Flatten": CudaOp(_check_view, _lower_view, view=True),
    "Squeeze": CudaOp(_check_view, _lower_view, host_inputs=(1,), view=True),
    "Unsqueeze": CudaOp(_check_view, _lower_view, host_inputs=(1,), view=True),
    "Identity": CudaOp(_check_view, _lower_view, view=True),
    "Shape": CudaOp(_ok, _lower_shape, meta_inputs=(0,), host_outputs=True),
    "Size": CudaOp(_ok, _lower_shape, meta_inputs=(0,), host_outputs=True),
}


def cuda_op(node: Node) -> CudaOp | None:
    if node.domain == "jitort" and node.op_type == "FusedConv":  # Conv + activation (conv_fused.py)
        return OPS["Conv"]
    return OPS.get(node.op_type) if node.domain == "" else None


def supports(node: Node, g: Graph) -> str | None:
    """None when the CUDA provider can run ``node``, else the reason it cannot."""
    if node.op_type == FUSED and node.domain == "jitort":
        from jitort.codegen.cuda import fused_cuda_kernel
        try:
            fused_cuda_kernel(node, g)
        except OrtNotImplemented as e:
            return str(e)
        return None
    entry = cuda_op(node)
    if entry is None:
        return f"no CUDA kernel for {node.op_type}" + (f" (domain {node.domain})" if node.domain else "")
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
