"""onnxruntime's layer normalisations: SkipLayerNormalization, SkipSimplifiedLayerNormalization,
EmbedLayerNormalization (com.microsoft), SimplifiedLayerNormalization (RMSNorm) and the pre-opset-17
LayerNormalization onnxruntime registers in the default domain.

One row kernel serves them all: ``t = x + skip + bias`` (each part optional), then LayerNorm
``(t - mean) / sqrt(var + eps) * gamma + beta`` or, simplified, ``t / sqrt(mean(t^2) + eps) * gamma``.
The statistics are the two-pass ones of LayerNormalization (kernels/softmax.py's row helpers).
float16 computes in float32, as onnxruntime's CPU kernels do.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, types

from jitort.errors import InvalidArgument
from jitort.ir import Graph, Node, TensorType
from jitort.kernels.entry import Entry, c_array
from jitort.kernels.reduce_math import radd
from jitort.kernels.registry import Call, Ref, default_call, lookup, op
from jitort.kernels.softmax import LayerNormalization as _LayerNormalization17
from jitort.kernels.softmax import axis_split, float_compute, row_sqdev, row_sum

MS = "com.microsoft"
_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

# Attribute defaults of onnxruntime's schemas (checked against them in tests/test_contrib_norm.py).
SKIP_EPSILON = 1e-12
EMBED_EPSILON = 1e-12
SIMPLIFIED_EPSILON = 1e-5


@njit(**_JIT)
def _norm_rows(x, skip, bias, gamma, beta, has_skip, has_bias, has_beta, simplified, eps, t, y, mean_out,
               inv_out):  # type: ignore[no-untyped-def]
    """Rows of x [N, D] (+ skip rows, taken modulo their count: a skip broadcast over the batch,
    + bias [D]) into t, normalised into y; per-row mean (0 when simplified) and 1/std."""
    N, D = x.shape
    ns = skip.shape[0]
    one = x.dtype.type(1)
    inv_d = one / x.dtype.type(D)
    for o in range(N):
        tr = t[o]
        xr = x[o]
        if has_skip:
            sr = skip[o % ns]
            if has_bias:
                for i in range(D):
                    tr[i] = xr[i] + sr[i] + bias[i]
            else:
                for i in range(D):
                    tr[i] = xr[i] + sr[i]
        else:
            for i in range(D):
                tr[i] = xr[i]
        mean = x.dtype.type(0) if simplified else row_sum(tr) * inv_d
        inv = one / math.sqrt(row_sqdev(tr, mean) * inv_d + eps)
        yr = y[o]
        if has_beta:
            for i in range(D):
                yr[i] = (tr[i] - mean) * inv * gamma[i] + beta[i]
        else:
            for i in range(D):
                yr[i] = (tr[i] - mean) * inv * gamma[i]
        mean_out[o] = mean
        inv_out[o] = inv


def _vec(op_name: str, what: str, v: np.ndarray | None, D: int, dt: np.dtype) -> np.ndarray:
    if v is None:
        return np.zeros(1, dt)
    if v.size != D:
        raise InvalidArgument(f"{op_name}: {what} of shape {list(v.shape)} does not match the normalised size {D}")
    return np.ascontiguousarray(v.reshape(D), dt)


def _normalize(op_name: str, x: np.ndarray, N: int, D: int, skip: np.ndarray | None, bias: np.ndarray | None,
               gamma: np.ndarray, beta: np.ndarray | None, simplified: bool, eps: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(y, t, mean, inv) in the compute dtype, y and t shaped [N, D]."""
    xc = float_compute(op_name, x).reshape(N, D)
    dt = xc.dtype
    if skip is not None:
        sc = float_compute(op_name, skip).reshape(-1, D) if skip.size else skip.reshape(0, D)
        if sc.shape[0] == 0 or N % sc.shape[0]:
            raise InvalidArgument(f"{op_name}: skip of shape {list(skip.shape)} does not broadcast to the input "
                                  f"{list(x.shape)}")
        sc = np.ascontiguousarray(sc, dt)
    else:
        sc = np.zeros((1, D), dt)
    t = np.empty((N, D), dt)
    y = np.empty((N, D), dt)
    mean, inv = np.empty(N, dt), np.empty(N, dt)
    if N and D:
        _norm_rows(xc, sc, _vec(op_name, "bias", bias, D, dt), _vec(op_name, "gamma", gamma, D, dt),
                   _vec(op_name, "beta", beta, D, dt), skip is not None, bias is not None, beta is not None,
                   simplified, dt.type(eps), t, y, mean, inv)
    return y, t, mean, inv


def _skip(op_name: str, input: np.ndarray, skip: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None,
          bias: np.ndarray | None, epsilon: float, nout: int, simplified: bool) -> Any:
    if input.ndim < 2:
        raise InvalidArgument(f"{op_name}: input must have rank >= 2, got shape {list(input.shape)}")
    D = input.shape[-1]
    tail = input.shape[input.ndim - skip.ndim:] if 1 <= skip.ndim <= input.ndim else None
    # skip is (batch, seq, hidden), or broadcast over the batch: (1, seq, hidden), (seq, hidden)
    if tail is None or any(s != t and not (k == 0 and s == 1) for k, (s, t) in enumerate(zip(skip.shape, tail))):
        raise InvalidArgument(f"{op_name}: skip of shape {list(skip.shape)} does not match the input "
                              f"{list(input.shape)}")
    N = math.prod(input.shape[:-1])
    y, t, mean, inv = _normalize(op_name, input, N, D, skip, bias, gamma, beta, simplified, epsilon)
    stat = input.shape[:-1] + (1,)
    outs = [y.reshape(input.shape).astype(input.dtype, copy=False), mean.reshape(stat).astype(np.float32, copy=False),
            inv.reshape(stat).astype(np.float32, copy=False), t.reshape(input.shape).astype(input.dtype, copy=False)]
    return outs[0] if nout == 1 else tuple(outs[:nout])


# --- lowered steps: what the plan fixed (dtypes, ranks, the normalised size, constant weights) is
# checked once; a run allocates and calls _norm_rows with the arguments the general path would pass,
# so the results are the same bitwise. Anything else (other shapes at run time) takes the general path.
# Float32 C-contiguous inputs (every run of a decoder): the skip norm runs as one compiled call
# (``_skip_step``); SimplifiedLayerNormalization calls _norm_rows' compiled entry for the steps' one
# signature (the dispatcher's typing of its four flags and epsilon cost ~2 us of a ~5 us call,
# kernels/entry.py).

_F32 = np.dtype(np.float32)
_R2, _R1, _B = c_array(_F32, 2), c_array(_F32, 1), types.boolean
_ROWS = Entry(_norm_rows, (_R2, _R2, _R1, _R1, _R1, _B, _B, _B, _B, types.float32, _R2, _R2, _R1, _R1))


def _const_vec(g: Graph, name: str, D: int) -> np.ndarray | None:
    """A constant float32 weight of D elements as the row kernel reads it, or None."""
    c = g.const(name) if name else None
    if c is None or c.dtype != _F32 or c.size != D:
        return None
    return np.ascontiguousarray(c.reshape(D))


def _static_last(g: Graph, name: str, axis: int) -> tuple[int, int] | None:
    """(normalised axis, product of the dims from it) of a float32 value whose rank and those dims
    the plan knows."""
    t = g.type_of(name)
    if t.dtype != _F32 or t.shape is None or not len(t.shape) or not -len(t.shape) <= axis < len(t.shape):
        return None
    a = axis + len(t.shape) if axis < 0 else axis
    tail = t.shape[a:]
    if not all(isinstance(d, int) and d > 0 for d in tail):
        return None
    return a, math.prod(tail)  # type: ignore[arg-type]


@njit(**_JIT)
def _skip_step(x, skip, bias, gamma, beta, has_bias, has_beta, simplified, eps):  # type: ignore[no-untyped-def]
    """``SkipNorm_step``'s float32 C-contiguous case in one compiled call (allocations, reshapes and
    the rows): (y, mean, inv, t) of x [..., D] + skip (same shape) + bias. A decode step's norm was
    ~10 us of Python around a ~1 us kernel (Intel Xeon Ice Lake VM, the tiny decoder, 1 thread)."""
    D = x.shape[-1]
    N = x.size // D
    stat = x.shape[:-1] + (1,)
    y, t = np.empty_like(x), np.empty_like(x)
    mean, inv = np.empty(stat, x.dtype), np.empty(stat, x.dtype)
    if N:
        _norm_rows(x.reshape(N, D), skip.reshape(N, D), bias, gamma, beta, True, has_bias, has_beta, simplified,
                   x.dtype.type(eps), t.reshape(N, D), y.reshape(N, D), mean.reshape(N), inv.reshape(N))
    return y, mean, inv, t


def SkipNorm_step(input: np.ndarray, skip: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bias: np.ndarray,
                  step: tuple[Any, ...], attrs: dict[str, Any]) -> Any:
    """Skip(Simplified)LayerNormalization lowered by ``_lower_skip``: ``step`` = (op, D, epsilon,
    has_beta, has_bias, simplified, output count); ``attrs`` the general call's keywords."""
    name, D, eps, has_beta, has_bias, simplified, nout = step
    shape = input.shape
    if skip.shape != shape or shape[-1] != D:
        general = SkipSimplifiedLayerNormalization if simplified else SkipLayerNormalization
        if simplified:
            return general(input, skip, gamma, bias if has_bias else None, **attrs)
        return general(input, skip, gamma, beta if has_beta else None, bias if has_bias else None, **attrs)
    if input.dtype == _F32 and skip.dtype == _F32 and input.flags.c_contiguous and skip.flags.c_contiguous:
        outs = _skip_step(input, skip, bias, gamma, beta, has_bias, has_beta, simplified, eps)
        return outs[0] if nout == 1 else outs[:nout]
    N = input.size // D
    stat = shape[:-1] + (1,)
    y, t = np.empty(shape, _F32), np.empty(shape, _F32)
    mean, inv = np.empty(stat, _F32), np.empty(stat, _F32)
    if N:
        _norm_rows(input.reshape(N, D), skip.reshape(N, D), bias, gamma, beta, True, has_bias, has_beta,
                   simplified, np.float32(eps), t.reshape(N, D), y.reshape(N, D), mean.reshape(N), inv.reshape(N))
    return y if nout == 1 else (y, mean, inv, t)[:nout]


def _lower_skip(node: Node, g: Graph) -> Call:
    call = default_call(lookup(node.op_type, node.domain, node.version, node.name), node, g)
    simplified = node.op_type == "SkipSimplifiedLayerNormalization"
    ins = list(node.inputs) + [""] * (5 - len(node.inputs))
    if simplified:
        ins = ins[:3] + ["", ins[3]]  # (input, skip, gamma, bias) -> the kernel's (.., beta, bias)
    x = _static_last(g, ins[0], -1)
    if x is None or len(node.inputs) > (4 if simplified else 5) or len(g.type_of(ins[0]).shape or ()) < 2 \
            or not ins[1] or g.type_of(ins[1]).dtype != _F32:
        return call
    D = x[1]
    gamma = _const_vec(g, ins[2], D)
    beta = _const_vec(g, ins[3], D) if ins[3] else np.zeros(1, _F32)
    bias = _const_vec(g, ins[4], D) if ins[4] else np.zeros(1, _F32)
    if gamma is None or beta is None or bias is None:
        return call
    step = (node.op_type, D, float(call.kwargs.get("epsilon", SKIP_EPSILON)), bool(ins[3]), bool(ins[4]), simplified,
            len(node.outputs))
    kw = dict(call.kwargs)
    return Call(SkipNorm_step, [Ref(ins[0]), Ref(ins[1]), gamma, beta, bias, step, kw])


def SimplifiedLayerNormalization_step(X: np.ndarray, scale: np.ndarray, zero_row: np.ndarray, zero: np.ndarray,
                                      step: tuple[Any, ...], attrs: dict[str, Any]) -> Any:
    """SimplifiedLayerNormalization lowered by ``_lower_simplified`` (float32 in and out, a constant
    scale): ``step`` = (normalised axis, D, epsilon, output count); ``attrs`` the general call's
    keywords, for a run whose shape disagrees with the plan's."""
    a, D, eps, nout = step
    shape = X.shape
    if X.ndim <= a or math.prod(shape[a:]) != D:
        return SimplifiedLayerNormalization(X, scale, **attrs)
    N = X.size // D
    y = np.empty(shape, _F32)
    t, mean, inv = np.empty((N, D), _F32), np.empty(N, _F32), np.empty(N, _F32)
    if N:
        rows = _norm_rows
        if X.dtype == _F32 and X.flags.c_contiguous:
            rows = _ROWS.fn or _ROWS.get()  # the step's signature (see above)
        rows(X.reshape(N, D), zero_row, zero, scale, zero, False, False, False, True, np.float32(eps), t,
             y.reshape(N, D), mean, inv)
    return y if nout == 1 else (y, inv.reshape(shape[:a] + (1,) * (len(shape) - a)))


def _lower_simplified(node: Node, g: Graph) -> Call:
    call = default_call(lookup(node.op_type, node.domain, node.version, node.name), node, g)
    kw = call.kwargs
    x = _static_last(g, node.inputs[0], int(kw.get("axis", -1)))
    dts = kw.get("_dtypes", ())
    if x is None or len(node.inputs) != 2 or len(node.outputs) > 2 or any(d != _F32 for d in dts if d is not None):
        return call
    a, D = x
    scale = _const_vec(g, node.inputs[1], D)
    if scale is None:
        return call
    step = (a, D, float(kw.get("epsilon", SIMPLIFIED_EPSILON)), len(node.outputs))
    zeros = [np.zeros((1, D), _F32), np.zeros(1, _F32)]
    return Call(SimplifiedLayerNormalization_step, [Ref(node.inputs[0]), scale, *zeros, step, dict(kw)])


def _infer_skip(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    x = ins[0]
    if x is None or x.dtype is None or x.shape is None:
        return []
    stat = TensorType(np.dtype(np.float32), tuple(x.shape[:-1]) + (1,))
    return [TensorType(x.dtype, x.shape), stat, stat, TensorType(x.dtype, x.shape)]


@op("SkipLayerNormalization", since=1, domain=MS, infer=_infer_skip, lower=_lower_skip)
def SkipLayerNormalization(input: np.ndarray, skip: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None = None,
                           bias: np.ndarray | None = None, *, epsilon: float = SKIP_EPSILON, _nout: int = 1) -> Any:
    return _skip("SkipLayerNormalization", input, skip, gamma, beta, bias, epsilon, _nout, False)


@op("SkipSimplifiedLayerNormalization", since=1, domain=MS, infer=_infer_skip, lower=_lower_skip)
def SkipSimplifiedLayerNormalization(input: np.ndarray, skip: np.ndarray, gamma: np.ndarray,
                                     bias: np.ndarray | None = None, *, epsilon: float = SKIP_EPSILON,
                                     _nout: int = 1) -> Any:
    """Output 1 (mean) is zeros: the simplified form has no mean (onnxruntime leaves it unset)."""
    return _skip("SkipSimplifiedLayerNormalization", input, skip, gamma, None, bias, epsilon, _nout, True)


# --- SimplifiedLayerNormalization and LayerNormalization before opset 17 (default domain) ----------

def _stat_shape(shape: tuple[Any, ...], axis: int) -> tuple[Any, ...]:
    a = axis + len(shape) if axis < 0 else axis
    return tuple(shape[:a]) + (1,) * (len(shape) - a)


def _stat_dtype(dt: Any) -> np.dtype:
    return np.dtype(np.float64 if np.dtype(dt) == np.float64 else np.float32)


def _infer_simplified(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    x, scale = ins[0], ins[1] if len(ins) > 1 else None
    if x is None or x.dtype is None or x.shape is None:
        return []
    axis = int(node.attrs.get("axis", -1))
    ydt = scale.dtype if scale is not None and scale.dtype is not None else x.dtype
    return [TensorType(ydt, x.shape), TensorType(_stat_dtype(x.dtype), _stat_shape(x.shape, axis))]


@op("SimplifiedLayerNormalization", since=1, infer=_infer_simplified, lower=_lower_simplified)
def SimplifiedLayerNormalization(X: np.ndarray, scale: np.ndarray, *, axis: int = -1,
                                 epsilon: float = SIMPLIFIED_EPSILON, stash_type: int = 1, _nout: int = 1,
                                 _dtypes: tuple = ()) -> Any:
    """RMSNorm over the dims from ``axis``: ``X / sqrt(mean(X^2) + epsilon) * scale``."""
    N, D, _ = axis_split("SimplifiedLayerNormalization", X.shape, axis, True)
    if scale.size != D:
        raise InvalidArgument(f"SimplifiedLayerNormalization: scale of shape {list(scale.shape)} does not match "
                              f"the normalised size {D} of input {list(X.shape)} at axis {axis}")
    y, _, _, inv = _normalize("SimplifiedLayerNormalization", X, N, D, None, None, scale, None, True, epsilon)
    ydt = _dtypes[0] if _dtypes and _dtypes[0] is not None else scale.dtype
    y = y.reshape(X.shape).astype(ydt, copy=False)
    if _nout == 1:
        return y
    idt = _dtypes[1] if len(_dtypes) > 1 and _dtypes[1] is not None else _stat_dtype(X.dtype)
    return y, inv.reshape(_stat_shape(X.shape, axis)).astype(idt, copy=False)


def _infer_layernorm(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    x = ins[0]
    if x is None or x.dtype is None or x.shape is None:
        return []
    stat = TensorType(_stat_dtype(x.dtype), _stat_shape(x.shape, int(node.attrs.get("axis", -1))))
    return [TensorType(x.dtype, x.shape), stat, stat]


@op("LayerNormalization", since=1, infer=_infer_layernorm)
def LayerNormalization(X: np.ndarray, Scale: np.ndarray, B: np.ndarray | None = None, *, axis: int = -1,
                       epsilon: float = 1e-5, stash_type: int = 1, _nout: int = 1, _dtypes: tuple = ()) -> Any:
    """onnxruntime registers LayerNormalization from opset 1 (onnx from 17): the same op."""
    return _LayerNormalization17(X, Scale, B, axis=axis, epsilon=epsilon, stash_type=stash_type, _nout=_nout,
                                 _dtypes=_dtypes)


# --- EmbedLayerNormalization ------------------------------------------------------------------------

def _ids(op_name: str, what: str, ids: np.ndarray, limit: int) -> np.ndarray:
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= limit):
        raise InvalidArgument(f"{op_name}: {what} must be in [0, {limit}), got values in "
                              f"[{int(ids.min())}, {int(ids.max())}]")
    return ids


def _infer_embed(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    ids, word = ins[0], ins[2] if len(ins) > 2 else None
    if ids is None or ids.shape is None or len(ids.shape) != 2 or word is None or word.dtype is None \
            or word.shape is None:
        return []
    out = TensorType(word.dtype, tuple(ids.shape) + (word.shape[-1],))
    return [out, TensorType(np.dtype(np.int32), (ids.shape[0],)), out]


@op("EmbedLayerNormalization", since=1, domain=MS, infer=_infer_embed)
def EmbedLayerNormalization(input_ids: np.ndarray, segment_ids: np.ndarray | None, word_embedding: np.ndarray,
                            position_embedding: np.ndarray, segment_embedding: np.ndarray | None = None,
                            gamma: np.ndarray | None = None, beta: np.ndarray | None = None,
                            mask: np.ndarray | None = None, position_ids: np.ndarray | None = None, *,
                            epsilon: float = EMBED_EPSILON, mask_index_type: int = 1, _nout: int = 1) -> Any:
    """LayerNorm(word[ids] + position[pos] + segment[seg]); mask_index is each row's mask sum
    (int32 [batch]; zeros without a mask); embedding_sum the sum before normalising."""
    name = "EmbedLayerNormalization"
    if input_ids.ndim != 2:
        raise InvalidArgument(f"{name}: input_ids must be 2-D (batch, sequence), got shape {list(input_ids.shape)}")
    if gamma is None or beta is None:
        raise InvalidArgument(f"{name}: gamma and beta are required inputs")
    if (segment_ids is None) != (segment_embedding is None):
        raise InvalidArgument(f"{name}: segment_ids and segment_embedding must be given together")
    B, S = input_ids.shape
    D = word_embedding.shape[1]
    for what, t in (("position_embedding", position_embedding), ("segment_embedding", segment_embedding)):
        if t is not None and (t.ndim != 2 or t.shape[1] != D):
            raise InvalidArgument(f"{name}: {what} of shape {list(t.shape)} must be 2-D with hidden size {D}")
    for what, t in (("segment_ids", segment_ids), ("mask", mask)):
        if t is not None and t.shape != input_ids.shape:
            raise InvalidArgument(f"{name}: {what} of shape {list(t.shape)} must match input_ids "
                                  f"{list(input_ids.shape)}")
    if position_ids is None:
        pos = np.broadcast_to(np.arange(S, dtype=np.int64), (B, S))
    else:
        if position_ids.size not in (S, B * S):
            raise InvalidArgument(f"{name}: position_ids of shape {list(position_ids.shape)} must be (1, {S}) or "
                                  f"({B}, {S})")
        pos = np.broadcast_to(position_ids.reshape(-1, S), (B, S))
    dt = float_compute(name, word_embedding).dtype
    emb = np.take(word_embedding, _ids(name, "input_ids", input_ids, word_embedding.shape[0]), axis=0).astype(dt)
    emb = emb.reshape(B * S, D)
    extra = np.take(position_embedding, _ids(name, "position_ids", pos, position_embedding.shape[0]),
                    axis=0).astype(dt).reshape(B * S, D)
    if segment_ids is not None:
        assert segment_embedding is not None
        extra += np.take(segment_embedding, _ids(name, "segment_ids", segment_ids, segment_embedding.shape[0]),
                         axis=0).astype(dt).reshape(B * S, D)
    y, t, _, _ = _normalize(name, emb, B * S, D, extra, None, gamma, beta, False, epsilon)
    outs = [y.reshape(B, S, D).astype(word_embedding.dtype, copy=False)]
    if _nout > 1:
        outs.append(np.zeros(B, np.int32) if mask is None else mask.astype(np.int32).sum(axis=1, dtype=np.int32))
    if _nout > 2:
        outs.append(t.reshape(B, S, D).astype(word_embedding.dtype, copy=False))
    return outs[0] if _nout == 1 else tuple(outs)


# --- FusedNorm (domain jitort): what jitort.passes.norm_fusion writes ------------------------------

@njit(**_JIT)
def _fused_rows(x, skip, gamma, beta, has_skip, has_gamma, has_beta, simplified, eps, y, t, write_t):  # type: ignore[no-untyped-def]
    """Rows of y = norm(x + skip) * gamma + beta ([N, D]; skip, gamma, beta optional), the sum into t
    when write_t. Passes over one L1-resident row: sum, (mean,) squared deviations, normalise."""
    N, D = x.shape
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    inv_d = one / x.dtype.type(D)
    tmp = np.empty(D, x.dtype)
    for o in range(N):
        xr = x[o]
        yr = y[o]
        if has_skip:
            tr = t[o] if write_t else tmp
            sr = skip[o]
            acc = zero
            for i in range(D):
                v = xr[i] + sr[i]
                tr[i] = v
                acc = radd(acc, v)
        else:
            tr = xr
            acc = row_sum(xr)
        mean = zero if simplified else acc * inv_d
        inv = one / math.sqrt(row_sqdev(tr, mean) * inv_d + eps)
        if has_gamma and has_beta:
            for i in range(D):
                yr[i] = (tr[i] - mean) * inv * gamma[i] + beta[i]
        elif has_gamma:
            for i in range(D):
                yr[i] = (tr[i] - mean) * inv * gamma[i]
        elif has_beta:
            for i in range(D):
                yr[i] = (tr[i] - mean) * inv + beta[i]
        else:
            for i in range(D):
                yr[i] = (tr[i] - mean) * inv


def _row_vec(name: str, v: np.ndarray | None, D: int, dt: np.dtype) -> np.ndarray:
    if v is None:
        return np.zeros(1, dt)
    if v.dtype == dt and v.ndim == 1 and v.shape[0] == D and v.flags.c_contiguous:
        return v
    return _vec("FusedNorm", name, v, D, dt)


@op("FusedNorm", since=1, domain="jitort")
def FusedNorm(x: np.ndarray, skip: np.ndarray | None = None, gamma: np.ndarray | None = None,
              beta: np.ndarray | None = None, *, epsilon: float, simplified: int = 0, _nout: int = 1) -> Any:
    """LayerNorm (or RMSNorm when ``simplified``) over the last axis of ``t = x + skip`` (skip of x's
    shape, or None), times gamma, plus beta (each [D] or None): ``(y, t)`` when two outputs are asked
    for (the residual sum read elsewhere), else y. One row kernel pass per row (_norm_rows)."""
    name = "FusedNorm"
    if x.ndim < 1:
        raise InvalidArgument(f"{name}: the input must have rank >= 1, got a scalar")
    D = x.shape[-1]
    N = math.prod(x.shape[:-1])
    if skip is not None and skip.shape != x.shape:
        try:
            shape = np.broadcast_shapes(x.shape, skip.shape)
        except ValueError:
            raise InvalidArgument(f"{name}: the residual {list(skip.shape)} does not broadcast to "
                                  f"{list(x.shape)}") from None
        x, skip = np.broadcast_to(x, shape), np.ascontiguousarray(np.broadcast_to(skip, shape))
        x = np.ascontiguousarray(x)
        D, N = shape[-1], math.prod(shape[:-1])
    xc = float_compute(name, x)
    dt = xc.dtype
    xc = np.ascontiguousarray(xc).reshape(N, D)
    sc = np.ascontiguousarray(skip, dt).reshape(N, D) if skip is not None else xc
    y = np.empty((N, D), dt)
    t = np.empty((N, D), dt) if _nout > 1 and skip is not None else y
    if N and D:
        _fused_rows(xc, sc, _row_vec("gamma", gamma, D, dt), _row_vec("beta", beta, D, dt), skip is not None,
                    gamma is not None, beta is not None, bool(simplified), dt.type(epsilon), y, t,
                    _nout > 1 and skip is not None)
    out_shape = x.shape
    y = y.reshape(out_shape).astype(x.dtype, copy=False)
    if _nout == 1:
        return y
    s_out = t if skip is not None else xc
    return y, s_out.reshape(out_shape).astype(x.dtype, copy=False)
