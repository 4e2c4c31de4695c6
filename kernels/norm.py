"""Normalisation ops: BatchNormalization (inference; training mode from opset 14), InstanceNormalization,
GroupNormalization, LRN, LpNormalization, MeanVarianceNormalization.

Every op views its input as a small fixed-rank array (``[N, C, S]`` or ``[N, G, Cg, S]``: leading,
normalised and trailing extents collapsed) so one kernel per dtype serves every input rank and no
shape ever triggers a compile. Statistics accumulate in float64 (two passes: mean, then squared
deviations) with ``reassoc`` so the reductions vectorise; the output pass stays in the input's
dtype. float16/bfloat16 compute in float32 and are cast back.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.registry import BFLOAT16, Call, Ref, default_call, lookup, op

_JIT = dict(cache=True, nogil=True, error_model="numpy")
# Reassociation lets LLVM vectorise the float64 sums; it keeps NaN/inf semantics (no nnan/ninf).
_JIT_SUM = dict(_JIT, fastmath={"reassoc"})


def _compute(x: np.ndarray) -> np.ndarray:
    """The array a kernel computes on: float32/float64 as is, other floats widened to float32."""
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x
    if x.dtype.kind == "f" or x.dtype == BFLOAT16:
        return x.astype(np.float32)
    raise OrtNotImplemented(f"jitort's normalisation kernels do not support dtype {x.dtype}")


def _vec(a: np.ndarray | None, n: int, dt: np.dtype, op_name: str, what: str, fill: float) -> np.ndarray:
    if a is None:
        return np.full(n, fill, dt)
    if a.size != n:
        raise InvalidArgument(f"{op_name}: input '{what}' must have {n} elements, got shape {a.shape}")
    return np.ascontiguousarray(a.reshape(n), dtype=dt)


# --- kernels -------------------------------------------------------------------------------------

@njit(**_JIT)
def _scale_shift(x, s, t, out):  # type: ignore[no-untyped-def]
    """out[n, c, i] = x[n, c, i] * s[c] + t[c]."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            a = s[c]
            b = t[c]
            for i in range(x.shape[2]):
                out[n, c, i] = x[n, c, i] * a + b


@njit(**_JIT_SUM)
def _channel_stats(x, mean, var):  # type: ignore[no-untyped-def]
    """x: [N, C, S]; per channel c, the mean and the population variance over (n, i), in float64
    (two passes: the mean, then squared deviations)."""
    N, C, S = x.shape
    cnt = N * S
    for c in range(C):
        acc = 0.0
        for n in range(N):
            for i in range(S):
                acc += x[n, c, i]
        m = acc / cnt
        acc = 0.0
        for n in range(N):
            for i in range(S):
                d = x[n, c, i] - m
                acc += d * d
        mean[c] = m
        var[c] = acc / cnt


@njit(**_JIT)
def _center_scale_shift(x, mh, ml, s, t, out):  # type: ignore[no-untyped-def]
    """out[n, c, i] = (x[n, c, i] - m[c]) * s[c] + t[c] with the float64 mean m split as mh + ml in
    the compute dtype: centred first, and x - mh is exact near the mean (Sterbenz), so a large mean
    with a small spread neither cancels (as x * s + (t - m * s) would) nor suffers the mean's
    rounding to float32."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            h = mh[c]
            lo = ml[c]
            a = s[c]
            b = t[c]
            for i in range(x.shape[2]):
                out[n, c, i] = ((x[n, c, i] - h) - lo) * a + b


@njit(**_JIT_SUM)
def _group_norm(x, scale, bias, eps_in, eps_out, out):  # type: ignore[no-untyped-def]
    """x, out: [N, G, Cg, S]; scale, bias: [G, Cg]. Statistics over each [Cg, S] block.

    y = (x - mean) / (sqrt(var + eps_in) + eps_out) * scale + bias, folded into one multiply-add.
    """
    N, G, Cg, S = x.shape
    cnt = Cg * S
    for n in range(N):
        for g in range(G):
            acc = 0.0
            for c in range(Cg):
                for i in range(S):
                    acc += x[n, g, c, i]
            mean = acc / cnt
            acc = 0.0
            for c in range(Cg):
                for i in range(S):
                    d = x[n, g, c, i] - mean
                    acc += d * d
            inv = 1.0 / (math.sqrt(acc / cnt + eps_in) + eps_out)
            mf = out.dtype.type(mean)
            for c in range(Cg):
                # (x - mean) * a + b, not x * a + (b - mean * a): with a tiny variance a is huge and
                # the folded offset would cancel catastrophically
                af = out.dtype.type(scale[g, c] * inv)
                bf = out.dtype.type(bias[g, c])
                for i in range(S):
                    out[n, g, c, i] = (x[n, g, c, i] - mf) * af + bf


@njit(**_JIT)
def _lrn(x, size, alpha, bias, beta, out):  # type: ignore[no-untyped-def]
    """x, out: [N, C, S]; sum of squares over a channel window, as the spec's LRN."""
    N, C, S = x.shape
    lo_off = (size - 1) // 2
    hi_off = size - 1 - lo_off
    sq = np.empty(S, x.dtype)
    a = x.dtype.type(alpha / size)
    b = x.dtype.type(bias)
    e = x.dtype.type(beta)
    for n in range(N):
        for c in range(C):
            lo = max(0, c - lo_off)
            hi = min(C - 1, c + hi_off)
            for i in range(S):
                sq[i] = 0
            for j in range(lo, hi + 1):
                for i in range(S):
                    v = x[n, j, i]
                    sq[i] += v * v
            for i in range(S):
                out[n, c, i] = x[n, c, i] / (b + a * sq[i]) ** e


@njit(**_JIT_SUM)
def _lp_norm(x, p, out):  # type: ignore[no-untyped-def]
    """x, out: [P, L, Q]; divide by the Lp norm over L (p is 1 or 2); a zero norm gives 0."""
    P, L, Q = x.shape
    nrm = np.empty(Q, np.float64)
    for pi in range(P):
        for q in range(Q):
            nrm[q] = 0.0
        for li in range(L):
            for q in range(Q):
                v = np.float64(x[pi, li, q])
                nrm[q] += abs(v) if p == 1 else v * v
        for q in range(Q):
            if p != 1:
                nrm[q] = math.sqrt(nrm[q])
        for li in range(L):
            for q in range(Q):
                out[pi, li, q] = x[pi, li, q] / nrm[q] if nrm[q] != 0.0 else 0.0


# --- BatchNormalization ------------------------------------------------------------------------

def bn_fold(x_dtype: np.dtype, C: int, scale: np.ndarray, B: np.ndarray, mean: np.ndarray, var: np.ndarray,
             epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel s = scale / sqrt(var + eps), t = B - mean * s (in float64, then the compute dtype)."""
    dt = _compute(np.empty(0, x_dtype)).dtype
    sc, b, m, v = (_vec(a, C, np.float64, "BatchNormalization", nm, 0.0)
                   for a, nm in ((scale, "scale"), (B, "B"), (mean, "mean"), (var, "var")))
    s64 = sc / np.sqrt(v + float(epsilon))
    return s64.astype(dt), (b - m * s64).astype(dt)


def _bn_apply(x: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Y = X * s[c] + t[c] over [N, C, ...], one pass."""
    if x.ndim < 2 or x.shape[1] != s.size:
        raise InvalidArgument(f"BatchNormalization: X must have shape [N, {s.size}, ...], got {x.shape}")
    xc = _compute(x)
    x3 = xc.reshape(x.shape[0], x.shape[1], -1)
    out = np.empty(x3.shape, xc.dtype)
    _scale_shift(x3, s, t, out)
    return out.reshape(x.shape).astype(x.dtype, copy=False)


def _lower_bn(node: Node, g: Graph) -> Call:
    """Constant scale/B/mean/var (the usual case): fold s and t once at compile time."""
    d = lookup(node.op_type, node.domain, node.version, node.name)
    params = [g.const(i) if i else None for i in node.inputs[1:5]]
    xt = g.type_of(node.inputs[0])
    a = node.attrs
    foldable = (len(node.inputs) == 5 and all(p is not None for p in params) and len(node.outputs) == 1
                and not a.get("training_mode", 0) and a.get("spatial", 1) and xt.dtype is not None
                and params[0].ndim == 1)  # type: ignore[union-attr]
    if not foldable:
        return default_call(d, node, g)
    s, t = bn_fold(np.dtype(xt.dtype), params[0].size, *params, a["epsilon"])  # type: ignore[union-attr,misc]
    return Call(_bn_apply, [Ref(node.inputs[0]), s, t])


def _bn_training(x: np.ndarray, scale: np.ndarray, B: np.ndarray, mean: np.ndarray, var: np.ndarray,
                 epsilon: float, momentum: float, nout: int) -> np.ndarray | tuple[np.ndarray, ...]:
    """training_mode=1 (opsets 14, 15): normalise with the batch statistics (mean and population
    variance over every axis but 1) and return Y, running_mean = mean * momentum + batch_mean *
    (1 - momentum) and running_var likewise (the outputs the node asks for, in input_mean's type)."""
    name = "BatchNormalization"
    if x.ndim < 2:
        raise InvalidArgument(f"{name}: X must have rank >= 2 ([N, C, ...]), got shape {x.shape}")
    C = x.shape[1]
    xc = _compute(x)
    x3 = xc.reshape(x.shape[0], C, -1)
    bm, bv = np.zeros(C), np.zeros(C)
    if x3.size:
        _channel_stats(x3, bm, bv)
    else:
        bm[:], bv[:] = np.nan, np.nan  # no samples: the statistics are undefined (0 / 0)
    sc = _vec(scale, C, np.float64, name, "scale", 1.0)
    b = _vec(B, C, np.float64, name, "B", 0.0)
    rm0 = _vec(mean, C, np.float64, name, "input_mean", 0.0)
    rv0 = _vec(var, C, np.float64, name, "input_var", 1.0)
    s = sc / np.sqrt(bv + float(epsilon))
    out = np.empty(x3.shape, xc.dtype)
    mh = bm.astype(xc.dtype)
    _center_scale_shift(x3, mh, (bm - mh).astype(xc.dtype), s.astype(xc.dtype), b.astype(xc.dtype), out)
    y = out.reshape(x.shape).astype(x.dtype, copy=False)
    if nout <= 1:
        return y
    m = float(momentum)
    rm = (rm0 * m + bm * (1.0 - m)).astype(mean.dtype).reshape(mean.shape)
    rv = (rv0 * m + bv * (1.0 - m)).astype(var.dtype).reshape(var.shape)
    return (y, rm, rv)[:nout]


@op("BatchNormalization", since=1, lower=_lower_bn)
def BatchNormalization(x: np.ndarray, scale: np.ndarray, B: np.ndarray, mean: np.ndarray, var: np.ndarray, *,
                       epsilon: float, momentum: float = 0.9, spatial: int = 1, training_mode: int = 0,
                       _nout: int = 1) -> np.ndarray | tuple[np.ndarray, ...]:
    """Batch normalisation, every opset (1, 6, 7, 9, 14, 15).

    Inference: Y = (X - mean) / sqrt(var + epsilon) * scale + B, computed as one pass X * s[c] + t[c]
    with s, t folded per channel. Opsets 1 and 6 (``is_test``) are run in inference mode when only Y
    is requested, as onnx's 6 -> 7 version converter does. ``training_mode=1`` (opsets 14, 15) uses
    the batch statistics and updates the running ones (``_bn_training``); the older opsets' training
    outputs (mean, var, saved_mean, saved_var) are not supported. ``spatial=0`` (opsets 1-8) takes
    per-activation statistics of shape [C, D1, ...].
    """
    if training_mode:
        return _bn_training(x, scale, B, mean, var, epsilon, momentum, _nout)
    if _nout > 1:
        raise OrtNotImplemented(f"BatchNormalization: {_nout} outputs requested without training_mode=1: jitort "
                                "produces the running statistics only in opset 14+ training mode; the training "
                                "outputs of opsets before 14 (mean, var, saved_mean, saved_var) are not supported")
    if x.ndim < 2:
        raise InvalidArgument(f"BatchNormalization: X must have rank >= 2 ([N, C, ...]), got shape {x.shape}")
    C = x.shape[1] if spatial else int(np.prod(x.shape[1:]))
    s, t = bn_fold(x.dtype, C, scale, B, mean, var, epsilon)
    if spatial:
        return _bn_apply(x, s, t)
    # per-activation statistics: one value per (c, d1, ...) element
    y = _compute(x).reshape(x.shape[0], C) * s + t
    return y.reshape(x.shape).astype(x.dtype, copy=False)


# --- instance / group / mean-variance normalisation ----------------------------------------------

def _normalize_groups(op_name: str, x: np.ndarray, G: int, scale: np.ndarray, bias: np.ndarray,
                      eps_in: float, eps_out: float, dt: np.dtype | None = None) -> np.ndarray:
    """x: [N, C, ...] with C divisible by G; scale/bias: [C] float64 (per channel)."""
    xc = _compute(x) if dt is None else x.astype(dt)
    N, C = x.shape[0], x.shape[1]
    x4 = xc.reshape(N, G, C // G, -1)
    out = np.empty(x4.shape, xc.dtype)
    _group_norm(x4, scale.reshape(G, C // G), bias.reshape(G, C // G), float(eps_in), float(eps_out), out)
    return out.reshape(x.shape)


def _check_nc(op_name: str, x: np.ndarray) -> None:
    if x.ndim < 2:
        raise InvalidArgument(f"{op_name}: input must have rank >= 2 ([N, C, ...]), got shape {x.shape}")


@op("InstanceNormalization", since=1)
def InstanceNormalization(x: np.ndarray, scale: np.ndarray, B: np.ndarray, *, epsilon: float) -> np.ndarray:
    """y = scale[c] * (x - mean) / sqrt(var + epsilon) + B[c], statistics per (n, c) (opsets 1, 6, 22)."""
    _check_nc("InstanceNormalization", x)
    C = x.shape[1]
    s = _vec(scale, C, np.float64, "InstanceNormalization", "scale", 1.0)
    b = _vec(B, C, np.float64, "InstanceNormalization", "B", 0.0)
    return _normalize_groups("InstanceNormalization", x, C, s, b, epsilon, 0.0).astype(x.dtype, copy=False)


def _group_norm_op(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, num_groups: int, epsilon: float,
                   per_channel: bool, stash: np.dtype | None) -> np.ndarray:
    name = "GroupNormalization"
    _check_nc(name, x)
    C = x.shape[1]
    if num_groups <= 0 or C % num_groups:
        raise InvalidArgument(f"{name}: num_groups ({num_groups}) must divide the number of channels ({C})")
    G = num_groups
    n = C if per_channel else G
    s = _vec(scale, n, np.float64, name, "scale", 1.0)
    b = _vec(bias, n, np.float64, name, "bias", 0.0)
    if not per_channel:
        s, b = np.repeat(s, C // G), np.repeat(b, C // G)
    if stash is None or stash == _compute(x[:0]).dtype:
        return _normalize_groups(name, x, G, s, b, epsilon, 0.0, stash).astype(x.dtype, copy=False)
    # stash_type differs from the compute type: normalise in the stash type, then cast back to X's
    # type and apply scale and bias there, as the opset-21 function body does.
    ones, zeros = np.ones(C), np.zeros(C)
    normed = _normalize_groups(name, x, G, ones, zeros, epsilon, 0.0, stash).astype(x.dtype)
    bc = (1, C) + (1,) * (x.ndim - 2)
    cdt = _compute(x[:0]).dtype
    y = normed.astype(cdt) * s.astype(cdt).reshape(bc) + b.astype(cdt).reshape(bc)
    return y.astype(x.dtype, copy=False)


@op("GroupNormalization", since=18)
def GroupNormalization_18(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, *, num_groups: int,
                          epsilon: float) -> np.ndarray:
    """Opset 18: ``scale`` and ``bias`` have one value per group (shape [num_groups])."""
    return _group_norm_op(x, scale, bias, num_groups, epsilon, per_channel=False, stash=None)


_STASH = {1: np.dtype(np.float32), 11: np.dtype(np.float64)}


@op("GroupNormalization", since=21)
def GroupNormalization_21(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, *, num_groups: int,
                          epsilon: float, stash_type: int) -> np.ndarray:
    """Opset 21: ``scale`` and ``bias`` have one value per channel (shape [C]); the normalisation
    stage runs in ``stash_type`` (float32 by default, float64 supported)."""
    if stash_type not in _STASH:
        raise OrtNotImplemented(f"GroupNormalization: stash_type {stash_type} is not supported by jitort "
                                "(1 = float32 and 11 = float64 are)")
    return _group_norm_op(x, scale, bias, num_groups, epsilon, per_channel=True, stash=_STASH[stash_type])


def _norm_axes(op_name: str, axes: list[int], rank: int) -> list[int]:
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise InvalidArgument(f"{op_name}: axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    return sorted(set(out))


@op("MeanVarianceNormalization", since=9)
def MeanVarianceNormalization(x: np.ndarray, *, axes: list[int]) -> np.ndarray:
    """(X - E[X]) / (sqrt(E[(X - E[X])^2]) + 1e-9) over ``axes`` (the schema's function body, with the
    variance taken as the mean squared deviation so it can never go negative)."""
    name = "MeanVarianceNormalization"
    ax = _norm_axes(name, list(axes), x.ndim)
    keep = [d for d in range(x.ndim) if d not in ax]
    perm = keep + ax
    xt = _compute(x).transpose(perm)
    M = int(np.prod([x.shape[d] for d in keep]))
    x4 = np.ascontiguousarray(xt).reshape(M, 1, 1, -1)
    out = np.empty(x4.shape, x4.dtype)
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    _group_norm(x4, one, zero, 0.0, 1e-9, out)
    y = out.reshape(xt.shape).transpose(np.argsort(perm))
    return np.ascontiguousarray(y, dtype=x.dtype)


# --- LRN, LpNormalization -------------------------------------------------------------------------

@op("LRN", since=1)
def LRN(x: np.ndarray, *, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """Local response normalisation across channels (opsets 1, 13)."""
    _check_nc("LRN", x)
    if size < 1:
        raise InvalidArgument(f"LRN: size must be >= 1, got {size}")
    xc = _compute(x)
    x3 = xc.reshape(x.shape[0], x.shape[1], -1)
    out = np.empty(x3.shape, xc.dtype)
    _lrn(x3, int(size), float(alpha), float(bias), float(beta), out)
    return out.reshape(x.shape).astype(x.dtype, copy=False)


@op("LpNormalization", since=1)
def LpNormalization(x: np.ndarray, *, axis: int, p: int) -> np.ndarray:
    """x / ||x||_p along ``axis`` for p in {1, 2}; where the norm is zero the output is zero."""
    if p not in (1, 2):
        raise InvalidArgument(f"LpNormalization: p must be 1 or 2, got {p}")
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise InvalidArgument(f"LpNormalization: axis {axis} is out of range for rank {x.ndim}")
    axis %= x.ndim
    xc = _compute(x)
    P = int(np.prod(x.shape[:axis]))
    x3 = xc.reshape(P, x.shape[axis], -1)
    out = np.empty(x3.shape, xc.dtype)
    _lp_norm(x3, int(p), out)
    return out.reshape(x.shape).astype(x.dtype, copy=False)
