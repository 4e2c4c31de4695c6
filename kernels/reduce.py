"""Reductions: the ten Reduce* ops (ArgMax/ArgMin are in ``kernels/argminmax.py``, CumSum lives with
CumProd in ``kernels/cumulative.py``, TopK in ``kernels/topk.py``; the scalar building blocks of
the loops, ``vmax``/``radd``/``fexp``..., in ``kernels/reduce_math.py``).

Every reduction is brought to one of two layouts by a free reshape: ``[O, R]`` (the reduced axes
are contiguous and trailing: one row per output, the common case) or ``[O, R, I]`` (contiguous
reduced axes followed by ``I`` kept elements: vectorised across ``I``). A non-contiguous set of
reduced axes is transposed to ``[kept..., reduced...]`` first (one copy). Kernels therefore
specialise on dtype only, never on rank or shape. A node whose axes the plan knows (attribute,
constant input, none) is lowered to ``reduce_planned``, which remembers each input shape's layout and
kernel, so a run is one dictionary lookup and one kernel call.

Vectorisation: float sums add with a per-instruction ``reassoc`` flag (a reduction cannot
vectorise without reordering; NaN/inf semantics are untouched). Float max/min use LLVM's
``llvm.maximum``/``llvm.minimum``: they vectorise and propagate NaN, where a compare-and-select
chain does neither.

Semantics follow onnxruntime 1.31. An empty reduction gives Sum/Mean/L1/L2/SumSquare 0, Prod 1,
Max the dtype's lowest value (-inf), Min its highest (inf), LogSum/LogSumExp -inf (integers: the
minimum). Integer reductions other than Max/Min compute in float64, truncate and saturate at the
dtype's limits (no wrap-around; measured on onnxruntime 1.32: int32 sums past 2**31 - 1 saturate, an
int64 sum of 2**53 + 1 and 2 gives 2**53 + 2), in one kernel pass that accumulates in float64 and
saturates on the store (``_int_rows``/``_int_cols``); integer LogSumExp is max + log(count of the max).
``noop_with_empty_axes`` still applies the element map (L1 gives |x|, SumSquare x*x, LogSum
log x). Max/Min always propagate NaN, like numpy (onnxruntime's vectorised kernel does only
sometimes, depending on where the NaN falls).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.reduce_math import fexp, fmaximum, is_half, radd, rmul, vmax, vmin
from jitort.kernels.registry import Call, Ref, op

_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy")


# --- row kernels: x [O, R] -> out [O]; R >= 1 ------------------------------------------------------

@njit(**_JIT)
def _rows_sum(x, out):  # type: ignore[no-untyped-def]
    for o in range(x.shape[0]):
        s = x.dtype.type(0)
        for r in range(x.shape[1]):
            s = radd(s, x[o, r])
        out[o] = s


@njit(**_JIT)
def _rows_sumsq(x, out):  # type: ignore[no-untyped-def]
    for o in range(x.shape[0]):
        s = x.dtype.type(0)
        for r in range(x.shape[1]):
            v = x[o, r]
            s = radd(s, v * v)
        out[o] = s


@njit(**_JIT)
def _rows_l1(x, out):  # type: ignore[no-untyped-def]
    for o in range(x.shape[0]):
        s = x.dtype.type(0)
        for r in range(x.shape[1]):
            s = radd(s, abs(x[o, r]))
        out[o] = s


@njit(**_JIT)
def _rows_prod(x, out):  # type: ignore[no-untyped-def]
    for o in range(x.shape[0]):
        s = x.dtype.type(1)
        for r in range(x.shape[1]):
            s = rmul(s, x[o, r])
        out[o] = s


@njit(**_JIT)
def _rows_max(x, out):  # type: ignore[no-untyped-def]
    for o in range(x.shape[0]):
        m = x[o, 0]
        for r in range(1, x.shape[1]):
            m = vmax(m, x[o, r])
        out[o] = m


@njit(**_JIT)
def _rows_min(x, out):  # type: ignore[no-untyped-def]
    for o in range(x.shape[0]):
        m = x[o, 0]
        for r in range(1, x.shape[1]):
            m = vmin(m, x[o, r])
        out[o] = m


@njit(**_JIT)
def _rows_logsumexp(x, out):  # type: ignore[no-untyped-def]
    zero = x.dtype.type(0)
    for o in range(x.shape[0]):
        m = x[o, 0]
        for r in range(1, x.shape[1]):
            m = fmaximum(m, x[o, r])
        if m - m != zero:  # +-inf or NaN: shifting by it would turn inf - inf into NaN
            m = zero
        s = zero
        for r in range(x.shape[1]):
            s = radd(s, fexp(x[o, r] - m))
        out[o] = math.log(s) + m


# --- column kernels: x [O, R, I] -> out [O, I]; vectorised across I ---------------------------------

@njit(**_JIT)
def _cols_sum(x, out):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    for o in range(O):
        for i in range(I):
            out[o, i] = x[o, 0, i]
        for r in range(1, R):
            for i in range(I):
                out[o, i] += x[o, r, i]


@njit(**_JIT)
def _cols_sumsq(x, out):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    for o in range(O):
        for i in range(I):
            out[o, i] = x[o, 0, i] * x[o, 0, i]
        for r in range(1, R):
            for i in range(I):
                out[o, i] += x[o, r, i] * x[o, r, i]


@njit(**_JIT)
def _cols_l1(x, out):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    for o in range(O):
        for i in range(I):
            out[o, i] = abs(x[o, 0, i])
        for r in range(1, R):
            for i in range(I):
                out[o, i] += abs(x[o, r, i])


@njit(**_JIT)
def _cols_prod(x, out):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    for o in range(O):
        for i in range(I):
            out[o, i] = x[o, 0, i]
        for r in range(1, R):
            for i in range(I):
                out[o, i] *= x[o, r, i]


@njit(**_JIT)
def _cols_max(x, out):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    for o in range(O):
        for i in range(I):
            out[o, i] = x[o, 0, i]
        for r in range(1, R):
            for i in range(I):
                out[o, i] = vmax(out[o, i], x[o, r, i])


@njit(**_JIT)
def _cols_min(x, out):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    for o in range(O):
        for i in range(I):
            out[o, i] = x[o, 0, i]
        for r in range(1, R):
            for i in range(I):
                out[o, i] = vmin(out[o, i], x[o, r, i])


@njit(**_JIT)
def _cols_logsumexp(x, out):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    zero = x.dtype.type(0)
    m = np.empty(I, x.dtype)
    for o in range(O):
        for i in range(I):
            m[i] = x[o, 0, i]
        for r in range(1, R):
            for i in range(I):
                m[i] = fmaximum(m[i], x[o, r, i])
        for i in range(I):
            if m[i] - m[i] != zero:
                m[i] = zero
            out[o, i] = zero
        for r in range(R):
            for i in range(I):
                out[o, i] += fexp(x[o, r, i] - m[i])
        for i in range(I):
            out[o, i] = math.log(out[o, i]) + m[i]


# --- integer kernels: onnxruntime's float64 accumulation, truncated and saturated on the store -------
# kind: 0 sum, 1 sum of squares, 2 sum of |x|, 3 product; finish: 0 none, 1 divide by R (Mean),
# 2 sqrt (L2), 3 log (LogSum). lo/hi: the output dtype's limits as float64.

@njit(**_JIT)
def _saturate_store(v, lo, hi, out, k):  # type: ignore[no-untyped-def]
    """out[k] = v truncated toward zero where lo < v < hi; else the limit on v's side (NaN: lo's)."""
    if v < hi and v > lo:
        out[k] = v
    elif v >= hi:
        out[k] = np.iinfo(out.dtype).max
    else:
        out[k] = np.iinfo(out.dtype).min


@njit(**_JIT)
def _finish(s, finish, R):  # type: ignore[no-untyped-def]
    if finish == 1 and R != 1:
        return s / R
    if finish == 2:
        return math.sqrt(s)
    if finish == 3:
        return math.log(s)
    return s


@njit(**_JIT)
def _int_rows(x, out, kind, finish, lo, hi):  # type: ignore[no-untyped-def]
    O, R = x.shape
    for o in range(O):
        s = 1.0 if kind == 3 else 0.0
        if kind == 0:
            for r in range(R):
                s = radd(s, np.float64(x[o, r]))
        elif kind == 1:
            for r in range(R):
                v = np.float64(x[o, r])
                s = radd(s, v * v)
        elif kind == 2:
            for r in range(R):
                s = radd(s, abs(np.float64(x[o, r])))
        else:
            for r in range(R):
                s = rmul(s, np.float64(x[o, r]))
        _saturate_store(_finish(s, finish, R), lo, hi, out, o)


@njit(**_JIT)
def _int_cols(x, out, kind, finish, lo, hi):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    acc = np.empty(I, np.float64)
    ov = out.reshape(-1)
    for o in range(O):
        for i in range(I):
            acc[i] = 1.0 if kind == 3 else 0.0
        for r in range(R):
            for i in range(I):
                v = np.float64(x[o, r, i])
                if kind == 0:
                    acc[i] += v
                elif kind == 1:
                    acc[i] += v * v
                elif kind == 2:
                    acc[i] += abs(v)
                else:
                    acc[i] *= v
        for i in range(I):
            _saturate_store(_finish(acc[i], finish, R), lo, hi, ov, o * I + i)


# --- the shared driver -----------------------------------------------------------------------------

# op -> (row kernel over [O, R], column kernel over [O, R, I]); Mean, L2 and LogSum finish in
# _reduce_layout (divide, sqrt, log). noop_with_empty_axes runs them with R = 1.
_KERNELS = {
    "ReduceSum": (_rows_sum, _cols_sum), "ReduceMean": (_rows_sum, _cols_sum),
    "ReduceSumSquare": (_rows_sumsq, _cols_sumsq), "ReduceL2": (_rows_sumsq, _cols_sumsq),
    "ReduceL1": (_rows_l1, _cols_l1), "ReduceProd": (_rows_prod, _cols_prod),
    "ReduceMax": (_rows_max, _cols_max), "ReduceMin": (_rows_min, _cols_min),
    "ReduceLogSum": (_rows_sum, _cols_sum), "ReduceLogSumExp": (_rows_logsumexp, _cols_logsumexp),
}
_BOOL_OK = ("ReduceMax", "ReduceMin")


def normalize_axes(op_type: str, axes: Sequence[int], rank: int) -> tuple[int, ...]:
    """Sorted, deduplicated, non-negative axes; a scalar accepts axis 0 or -1 (and has none)."""
    out = set()
    for a in axes:
        a = int(a)
        if not -max(rank, 1) <= a < max(rank, 1):
            raise InvalidArgument(f"{op_type}: axis {a} is out of range for a tensor of rank {rank} "
                                  f"(expected [-{rank}, {rank - 1}])")
        if rank:
            out.add(a + rank if a < 0 else a)
    return tuple(sorted(out))


@lru_cache(maxsize=4096)
def _layout(op_type: str, shape: tuple[int, ...], axes: tuple[int, ...] | None, keepdims: bool, noop: bool
            ) -> tuple[tuple[int, ...], int, int, int, tuple[int, ...] | None]:
    """(output shape, O, R, I, transpose permutation or None) for reducing ``axes`` of ``shape``."""
    if not axes:
        if noop:  # no reduction: each element is its own group of one (the element map still applies)
            return shape, math.prod(shape), 1, 1, None
        axes = tuple(range(len(shape)))
    red = set(normalize_axes(op_type, axes, len(shape)))
    out_shape = tuple((1 if k in red else d) for k, d in enumerate(shape) if keepdims or k not in red)
    R = math.prod(shape[k] for k in red)
    # Size-1 axes do not affect the memory layout: ignore them when testing contiguity.
    eff = [k for k, d in enumerate(shape) if d != 1]
    flags = [k in red for k in eff]
    if True not in flags:
        return out_shape, math.prod(shape), 1, 1, None
    first, last = flags.index(True), len(flags) - 1 - flags[::-1].index(True)
    if all(flags[first:last + 1]):
        O = math.prod(shape[k] for k in eff[:first])
        I = math.prod(shape[k] for k in eff[last + 1:])
        return out_shape, O, R, I, None
    kept = [k for k in range(len(shape)) if k not in red]
    return out_shape, math.prod(shape[k] for k in kept), R, 1, tuple(kept + sorted(red))


def _empty_value(op_type: str, dt: np.dtype) -> Any:
    if op_type == "ReduceProd":
        return 1
    if op_type in ("ReduceMax", "ReduceLogSum", "ReduceLogSumExp"):
        if dt.kind == "f":
            return -np.inf
        return False if dt == np.bool_ else np.iinfo(dt).min
    if op_type == "ReduceMin":
        if dt.kind == "f":
            return np.inf
        return True if dt == np.bool_ else np.iinfo(dt).max
    return 0


def _saturate(v: np.ndarray, dt: np.dtype) -> np.ndarray:
    """float64 -> integer dtype as onnxruntime's integer reductions do: truncate toward zero,
    saturate at the dtype's limits, NaN (log of a non-positive sum) -> the minimum."""
    info = np.iinfo(dt)
    hi, lo = float(info.max), float(info.min)
    inside = (v < hi) & (v > lo)
    with np.errstate(invalid="ignore"):
        t = np.where(inside, v, 0).astype(dt)
    return np.where(inside, t, np.where(v >= hi, info.max, info.min)).astype(dt, copy=False)


def _int_logsumexp(x: np.ndarray, out_shape: tuple[int, ...], O: int, R: int, I: int,
                   perm: tuple[int, ...] | None) -> np.ndarray:
    # onnxruntime: exp(v - max) truncates to 1 where v == max and to 0 elsewhere, so the result is
    # max + log(count of the max), computed in float64, truncated and saturated.
    if perm is not None:
        x = np.ascontiguousarray(x.transpose(perm))
    x3 = x.reshape(O, R, I)
    m = x3.max(axis=1)
    count = (x3 == m[:, None, :]).sum(axis=1)
    return _saturate(np.log(count) + m, x.dtype).reshape(out_shape)


def bool_attr(op_type: str, name: str, value: int) -> bool:
    """A 0/1 attribute. Other values are refused: onnx's inference reads them as true, onnxruntime's
    kernels as false, so any answer would contradict one of them."""
    if value not in (0, 1):
        raise InvalidArgument(f"{op_type}: attribute '{name}' must be 0 or 1, got {value}")
    return bool(value)


def reduce(op_type: str, x: np.ndarray, axes: tuple[int, ...] | None, keepdims: int,
           noop_with_empty_axes: int = 0) -> np.ndarray:
    """The reduction ``op_type`` of ``x`` over ``axes`` (None or () = all, or none with
    ``noop_with_empty_axes``)."""
    out_shape, O, R, I, perm = _layout(op_type, x.shape, axes, bool_attr(op_type, "keepdims", keepdims),
                                       bool(noop_with_empty_axes))
    if O * I == 0:
        return np.empty(out_shape, x.dtype)
    if R == 0:
        return np.full(out_shape, _empty_value(op_type, x.dtype), x.dtype)
    return _reduce_layout(op_type, x, out_shape, O, R, I, perm)


# op -> (kind, finish) of the integer kernels
_INT_KIND = {"ReduceSum": (0, 0), "ReduceMean": (0, 1), "ReduceSumSquare": (1, 0), "ReduceL2": (1, 2),
             "ReduceL1": (2, 0), "ReduceProd": (3, 0), "ReduceLogSum": (0, 3)}
_LIMITS: dict[np.dtype, tuple[float, float]] = {}


def _int_reduce(op_type: str, x: np.ndarray, out_shape: tuple[int, ...], O: int, R: int, I: int,
                perm: tuple[int, ...] | None) -> np.ndarray:
    """An integer reduction in one pass, no float64 copy: the kernels accumulate in float64 and
    store truncated and saturated, as ``_saturate`` would."""
    dt = x.dtype
    lim = _LIMITS.get(dt)
    if lim is None:
        info = np.iinfo(dt)
        lim = _LIMITS[dt] = (float(info.min), float(info.max))
    if perm is not None:
        x = np.ascontiguousarray(x.transpose(perm))
    kind, finish = _INT_KIND[op_type]
    out = np.empty(out_shape, dt)
    if I == 1:
        _int_rows(x.reshape(O, R), out.reshape(O), kind, finish, lim[0], lim[1])
    else:
        _int_cols(x.reshape(O, R, I), out.reshape(O, I), kind, finish, lim[0], lim[1])
    return out


def _reduce_layout(op_type: str, x: np.ndarray, out_shape: tuple[int, ...], O: int, R: int, I: int,
                   perm: tuple[int, ...] | None) -> np.ndarray:
    dt = x.dtype
    if is_half(dt):
        return _reduce_layout(op_type, x.astype(np.float32), out_shape, O, R, I, perm).astype(dt)
    if dt.kind not in "fiu":
        if dt == np.bool_ and op_type in _BOOL_OK:
            return _reduce_layout(op_type, x.view(np.uint8), out_shape, O, R, I, perm).view(np.bool_)
        raise OrtNotImplemented(f"{op_type}: input dtype {dt} is not supported")
    if dt.kind != "f" and op_type not in _BOOL_OK:
        # onnxruntime accumulates integer reductions in float64 and saturates (no wrap-around)
        if op_type == "ReduceLogSumExp":
            return _int_logsumexp(x, out_shape, O, R, I, perm)
        return _int_reduce(op_type, x, out_shape, O, R, I, perm)
    if perm is not None:
        x = np.ascontiguousarray(x.transpose(perm))
    rows, cols = _KERNELS[op_type]
    out = np.empty(out_shape, dt)
    if I == 1:
        rows(x.reshape(O, R), out.reshape(O))
    else:
        cols(x.reshape(O, R, I), out.reshape(O, I))
    if op_type == "ReduceMean" and R != 1:
        np.divide(out, dt.type(R), out=out)
    elif op_type == "ReduceL2":
        np.sqrt(out, out=out)
    elif op_type == "ReduceLogSum":
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log(out, out=out)
    return out


def _axes_tuple(op_type: str, axes: np.ndarray | Sequence[int] | None) -> tuple[int, ...] | None:
    if axes is None or isinstance(axes, tuple):
        return axes
    if isinstance(axes, np.ndarray):
        if axes.ndim > 1 or axes.dtype.kind not in "iu":
            raise InvalidArgument(f"{op_type}: 'axes' must be a 1-D int64 tensor, got {axes.dtype} "
                                  f"of shape {list(axes.shape)}")
        return tuple(axes.reshape(-1).tolist())
    return tuple(int(a) for a in axes)


_PLANS: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_PLANS_MAX = 4096


def _plan(op_type: str, x: np.ndarray, axes: tuple[int, ...] | None, keepdims: bool, noop: bool
          ) -> tuple[Any, ...] | None:
    """How ``reduce`` runs this case as one kernel call: (kernel, x's 2-D/3-D shape, output shape,
    output's 1-D/2-D shape, the kernel's extra arguments, finish: 0, R for Mean, -1 sqrt, -2 log);
    None for the cases ``reduce`` handles otherwise (empty, transposed, half, bool, integer LogSumExp)."""
    out_shape, O, R, I, perm = _layout(op_type, x.shape, axes, keepdims, noop)
    dt = x.dtype
    if perm is not None or O * I == 0 or R == 0 or dt.kind not in "fiu" or is_half(dt):
        return None
    flat = (O,) if I == 1 else (O, I)
    shape = (O, R) if I == 1 else (O, R, I)
    if dt.kind != "f" and op_type not in _BOOL_OK:  # integer Max/Min run the float kernels' path
        if op_type == "ReduceLogSumExp":
            return None
        info = np.iinfo(dt)
        kind, finish = _INT_KIND[op_type]
        limits = (kind, finish, float(info.min), float(info.max))
        return (_int_cols if I != 1 else _int_rows), shape, out_shape, flat, limits, 0
    finish = {"ReduceMean": R if R != 1 else 0, "ReduceL2": -1, "ReduceLogSum": -2}.get(op_type, 0)
    return _KERNELS[op_type][I != 1], shape, out_shape, flat, (), finish


def reduce_planned(x: np.ndarray, op_type: str, axes: tuple[int, ...] | None, keepdims: bool,
                   noop: bool) -> np.ndarray:
    """``reduce`` for a node whose axes and attributes the plan fixed (``lower``): the layout of each
    input shape and dtype is worked out once and remembered, so a run is one kernel call."""
    key = (x.shape, x.dtype, op_type, axes, keepdims, noop)
    p = _PLANS.get(key)
    if p is None:
        out = reduce(op_type, x, axes, keepdims, noop)  # raises what reduce raises
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        _PLANS[key] = _plan(op_type, x, axes, keepdims, noop) or ()
        return out
    if not p:
        return reduce(op_type, x, axes, keepdims, noop)
    kernel, shape, out_shape, flat, extra, finish = p
    out = np.empty(out_shape, x.dtype)
    kernel(x.reshape(shape), out.reshape(flat), *extra)
    if finish:
        if finish > 0:
            np.divide(out, x.dtype.type(finish), out=out)
        elif finish == -1:
            np.sqrt(out, out=out)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                np.log(out, out=out)
    return out


def _register_reduce(op_type: str, input_since: int) -> None:
    # static: axes known when the plan is built (the attribute, or a constant 'axes' input)
    def static(data: np.ndarray, *, axes: Sequence[int] | None = None, keepdims: int = 1,
               noop_with_empty_axes: int = 0) -> np.ndarray:
        return reduce(op_type, data, _axes_tuple(op_type, axes), keepdims, noop_with_empty_axes)

    def dynamic(data: np.ndarray, axes: np.ndarray | None = None, *, keepdims: int = 1,
                noop_with_empty_axes: int = 0) -> np.ndarray:
        return reduce(op_type, data, _axes_tuple(op_type, axes), keepdims, noop_with_empty_axes)

    def lower(node: Node, g: Graph) -> Call:
        """Axes fixed (an attribute, a constant input or none) and 0/1 flags: ``reduce_planned``
        with them as literals; axes from a feed: ``dynamic``."""
        axes_name = node.inputs[1] if len(node.inputs) > 1 else ""
        keepdims, noop = node.attrs.get("keepdims", 1), node.attrs.get("noop_with_empty_axes", 0)
        kw = {"keepdims": keepdims, "noop_with_empty_axes": noop}
        x = Ref(node.inputs[0])
        c = g.const(axes_name) if axes_name else None
        if axes_name and c is None:
            return Call(dynamic, [x, Ref(axes_name)], kw)
        if axes_name:
            axes = _axes_tuple(op_type, c)
        else:
            a = node.attrs.get("axes")
            axes = None if a is None else tuple(int(v) for v in a)
        if keepdims not in (0, 1) or noop not in (0, 1):
            return Call(static, [x], dict(kw, axes=axes))  # refused at run time, as before
        return Call(reduce_planned, [x, op_type, axes, bool(keepdims), bool(noop)])

    for f, form in ((static, "static"), (dynamic, "dynamic")):
        f.__name__ = f.__qualname__ = f"{op_type}_{form}"
        globals()[f.__name__] = f  # a module-level name, so the plan imports it instead of hoisting
    op(op_type, since=1, lower=lower)(static)
    op(op_type, since=input_since, lower=lower, host_inputs=(1,))(dynamic)


for _name in _KERNELS:
    _register_reduce(_name, 13 if _name == "ReduceSum" else 18)
