"""Integer matrix products: MatMulInteger (opset 10: the exact int32 product (A - a_zero_point) @
(B - b_zero_point)), QLinearMatMul (that product requantised), and onnxruntime's MatMulIntegerToFloat
(the product in float32, times a_scale * b_scale, plus bias) and DynamicQuantizeMatMul (A quantised
by DynamicQuantizeLinear first).

onnxruntime's ``quantize_dynamic`` (how int8 transformers are made) writes every MatMul with
constant weights as DynamicQuantizeLinear(A) -> MatMulInteger(A, B int8, a_zp, 0) -> Cast -> Mul by
the scales (-> Add bias), which jitort/passes/qdq_fusion.py turns into MatMulIntegerToFloat as
onnxruntime does; its optimiser saves DynamicQuantizeMatMul and MatMulIntegerToFloat; ``quantize_static``
writes QLinearMatMul (or its QDQ form, fused to it). With constant int8 B and zero B zero points (what
the quantisers write: symmetric weights) on an AVX2 host each runs on kernels/qconv_lanes.py's integer
tiles as a 1 x 1 convolution: the rows of A are the positions, K the input channels, N the output
channels; the tiles add ``comp[n] = -a_zp sum_k B[k, n]`` to the sums (exactly the product with A
centred on its zero point) and store them as int32 (mode ``I32``), as float32 times the scales plus
the bias (``F32``, onnxruntime's float32 operations) or requantised as QLinearConv's (``Q8``). A with
K a multiple of 4 and at least 8 rows is read in place (no copy); otherwise its rows are copied once,
zero-padded to a multiple of 4. Every other case (B at run time, B zero points, per-row zero points or
scales of A, 1-D operands, float16 scales) takes the numpy path: float64 products of the centred
operands, exact for 8-bit operands.

The ``quantize_dynamic`` BERT-base layer (hidden 768, 128 tokens; Ice Lake VM, 1 thread): 71.5 ms on
the float64 products against onnxruntime's 9.1 ms; 7.2 ms against its 6.6 ms on the tiles (README).
Single products at 128 rows: 768 x 3072 and 3072 x 768 at 0.87-1.08x onnxruntime's time (145-165
GMAC/s), 768 x 768 at 1.22x (the tiles' epilogue and the call's Python weigh more on short products).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from jitort import memory
from jitort.arrays import contiguous
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, TensorType
from jitort.kernels import qconv_lanes as V
from jitort.kernels import qconv_layout as L
from jitort.kernels.contrib_infer import infer_as
from jitort.kernels.qconv import int8_lanes, tile_kind
from jitort.kernels.quant import DynamicQuantizeLinear, centered
from jitort.kernels.registry import Call, Ref, default_call, lookup, op
from jitort.kernels.threads import parts_for, scratch

MS = "com.microsoft"
_TYPES = (np.dtype(np.int8), np.dtype(np.uint8))
_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _check(A: np.ndarray, B: np.ndarray | None, op_name: str = "MatMulInteger") -> None:
    for v, name in ((A, "A"), (B, "B")):
        if v is not None and v.dtype not in _TYPES:
            raise InvalidArgument(f"{op_name}: {name} must be int8 or uint8, got {v.dtype}")


def _matrix(wl: np.ndarray, K: int, N: int) -> np.ndarray:
    """The constant B [K, N] packed in wl, for the numpy path's cases (it is not kept beside wl)."""
    return np.ascontiguousarray(V.unpack(wl, N, K).T)


# --- the product on the tiles ---------------------------------------------------------------------

@lru_cache(maxsize=64)
def _offsets(Cp: int) -> np.ndarray:
    return L.offsets(Cp // 4, 1, 1, 1, 1, Cp, 1)  # the 4-byte words of one row


@lru_cache(maxsize=64)
def _zeros(n: int) -> np.ndarray:
    """n float32 zeros, never written: the tiles' scales and bias where they go unread (mode I32) or
    add nothing (no bias); a read-only array would be another type to Numba, and another compile."""
    return np.zeros(n, np.float32)


def _product(name: str, A: np.ndarray, a_zero_point: np.ndarray | None, K: int, N: int, wl: np.ndarray,
             wsum: np.ndarray, mode: int, scale: np.ndarray | None = None, bias: np.ndarray | None = None,
             out: np.dtype | None = None, zy: int = 0) -> np.ndarray:
    """(A - a_zero_point) @ B on the tiles (B: ``qconv_lanes.pack``'s wl, its column sums wsum), A
    8-bit [..., K] with a scalar zero point (checked by the caller): the int32 product (mode I32),
    float32(product) * scale + bias per column (F32; scale float32 [N], bias float32 [N] or None),
    or the product requantised to ``out`` (uint8/int8) with per-column multipliers ``scale`` and
    zero point ``zy`` (Q8)."""
    if A.shape[-1] != K:
        raise InvalidArgument(f"{name}: A's last dimension {A.shape[-1]} does not match B's first {K} "
                              f"(A {list(A.shape)}, B [{K}, {N}])")
    if a_zero_point is not None and a_zero_point.dtype != A.dtype:
        raise InvalidArgument(f"{name}: a_zero_point type {a_zero_point.dtype} differs from A's {A.dtype}")
    lead = A.shape[:-1]
    P = int(np.prod(lead))
    out_dt = np.dtype(np.int32 if mode == V.I32 else np.float32) if out is None else out
    memory.check(name, lead + (N,), out_dt)
    y = np.empty(lead + (N,), out_dt)
    if y.size == 0:
        return y
    Np = -(-N // 32) * 32
    sc = bs = _zeros(Np)
    if mode != V.I32:
        assert scale is not None
        sc = np.zeros(Np, np.float32)
        sc[:N] = scale
        if bias is not None:
            bs = np.zeros(Np, np.float32)
            bs[:N] = bias
    if K == 0:
        y[...] = 0 if mode == V.I32 else bs[:N] if mode == V.F32 else np.clip(zy, *_RANGES[out_dt])
        return y
    flip = 128 if A.dtype == np.int8 else 0
    za = (0 if a_zero_point is None else int(a_zero_point.reshape(-1)[0])) + flip  # as the u8 the tiles read
    comp = np.zeros(Np, np.int32)
    comp[:N] = -za * wsum
    Cp = -(-K // 4) * 4
    a2 = A.reshape(P, K).view(np.uint8)
    y2 = y.reshape(P, N)
    as_is = flip == 0 and Cp == K and P >= V.R and a2.flags.c_contiguous
    # this thread's buffer: A's padded rows (unless read in place), then the output rows when N is
    # not a whole number of tiles' channels (bytes; 64-byte aligned)
    na = 0 if as_is else -(-(P * Cp + V.R * Cp) // 64) * 64
    no = 0 if Np == N else P * Np * out_dt.itemsize
    buf = scratch(na + no, np.dtype(np.uint8))
    if as_is:
        src = a2.reshape(-1)  # the rows as they are: a tile reads whole 4-byte words of one row
    else:
        src = buf[:na]
        rows = src[:P * Cp].reshape(P, Cp)
        np.bitwise_xor(a2, np.uint8(flip), out=rows[:, :K])
        rows[:, K:] = 0
        src[P * Cp:] = 0  # the tile of the last rows reads up to R rows past them
    o = y2 if Np == N else buf[na:na + no].view(out_dt).reshape(P, Np)
    kind = tile_kind()
    lo, hi = _RANGES.get(out_dt, (0, 0))
    args = (src, Cp, _offsets(Cp), V.weights(kind, wl), comp, sc, np.float32(zy), np.float32(lo), np.float32(hi), P,
            1, P, N, o.view(np.uint8), mode, bs)
    V.run(kind, args, parts_for(V.units(N, 1, P, P, kind), 2.0 * P * N * K / 4) if kind in V.TILES else 1)
    if o is not y2:
        y2[...] = o[:, :N]
    return y


def weights_on_tiles(node: Node, g: Graph, b: str, bz: str, a_types: tuple[np.dtype, ...] = _TYPES
                     ) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """(B's packed weights, their column sums, K, N) when node's B (input ``b``, zero point ``bz``) is a
    constant 2-D int8 matrix with zero zero points, its A (input 0) of a type in ``a_types`` and rank
    >= 2 or unknown, and the host runs the tiles; else None."""
    B = g.const(b)
    z = g.const(bz) if bz else None
    at = g.type_of(node.inputs[0])
    if not (int8_lanes() and B is not None and B.ndim == 2 and B.dtype == np.int8 and (not bz or z is not None)
            and (z is None or not np.any(z)) and at.dtype is not None and np.dtype(at.dtype) in a_types
            and (at.rank is None or at.rank >= 2) and B.shape[0] > 0 and B.shape[1] > 0):
        return None
    wl, wsum = V.pack(np.ascontiguousarray(B.T).reshape(B.shape[1], B.shape[0], 1, 1))
    return wl, wsum, int(B.shape[0]), int(B.shape[1])


def _on_tiles(fn: Any, arity: int, b: int, bz: int, keep: tuple[int, ...], a_types: tuple[np.dtype, ...] = _TYPES
              ) -> Any:
    """The lowering of an op whose B (input ``b``, its zero point input ``bz``) may run on the tiles
    (``weights_on_tiles``): ``fn(inputs keep..., packed B, column sums, K=, N=)``, else the op's own."""
    def lower(node: Node, g: Graph) -> Call:
        ins = list(node.inputs) + [""] * (arity - len(node.inputs))
        t = weights_on_tiles(node, g, ins[b], ins[bz], a_types)
        if t is None:
            return default_call(lookup(node.op_type, node.domain, node.version, node.name), node, g)
        return Call(fn, [Ref(ins[i]) if ins[i] else None for i in keep] + list(t[:2]), dict(K=t[2], N=t[3]))
    return lower


# --- MatMulInteger --------------------------------------------------------------------------------

def matmul_integer_lanes(A: np.ndarray, a_zero_point: np.ndarray | None, wl: np.ndarray, wsum: np.ndarray, *,
                         K: int, N: int) -> np.ndarray:
    """MatMulInteger with constant int8 B (zero zero points), packed by ``qconv_lanes.pack`` as the
    weights of N 1 x 1 filters; a per-row a_zero_point or a 1-D A takes the numpy product."""
    _check(A, None)
    if A.ndim < 2 or (a_zero_point is not None and a_zero_point.size != 1):
        return MatMulInteger(A, _matrix(wl, K, N), a_zero_point)
    return _product("MatMulInteger", A, a_zero_point, K, N, wl, wsum, V.I32)


@op("MatMulInteger", since=10, lower=_on_tiles(matmul_integer_lanes, 4, 1, 3, (0, 2)))
def MatMulInteger(A: np.ndarray, B: np.ndarray, a_zero_point: np.ndarray | None = None,
                  b_zero_point: np.ndarray | None = None) -> np.ndarray:
    _check(A, B)
    c = np.matmul(centered(A, a_zero_point, True, "MatMulInteger", "a_zero_point"),
                  centered(B, b_zero_point, False, "MatMulInteger", "b_zero_point"))
    return contiguous(c.astype(np.int32))


# --- QLinearMatMul --------------------------------------------------------------------------------

def qlinear_matmul_lanes(a: np.ndarray, a_scale: np.ndarray, a_zero_point: np.ndarray | None, b_scale: np.ndarray,
                         y_scale: np.ndarray, y_zero_point: np.ndarray | None, wl: np.ndarray, wsum: np.ndarray,
                         *, K: int, N: int) -> np.ndarray:
    """QLinearMatMul with constant int8 b (zero zero points) on the tiles: the exact product
    requantised as QLinearConv's is (float32 multiplier a_scale * b_scale / y_scale, round half to
    even, y_zero_point, saturation); per-row scales or zero points of a, or a 1-D a, take the numpy
    path."""
    name = "QLinearMatMul"
    if a.dtype not in _TYPES:
        raise OrtNotImplemented(f"{name}: a of type {a.dtype} is not supported (int8/uint8 only)")
    if (a.ndim < 2 or a_scale.size != 1 or (a_zero_point is not None and a_zero_point.size != 1)
            or y_scale.size != 1 or (y_zero_point is not None and y_zero_point.size != 1)
            or b_scale.size not in (1, N)):
        return QLinearMatMul(a, a_scale, a_zero_point, _matrix(wl, K, N), b_scale, None, y_scale, y_zero_point)
    out = np.dtype(y_zero_point.dtype if y_zero_point is not None else a.dtype)
    if out not in _RANGES:
        raise InvalidArgument(f"{name}: y_zero_point must be uint8 or int8, got {out}")
    sa, sy = np.float32(a_scale.reshape(-1)[0]), np.float32(y_scale.reshape(-1)[0])
    scale = np.broadcast_to((sa * b_scale.astype(np.float32).reshape(-1)) / sy, (N,))
    zy = 0 if y_zero_point is None else int(y_zero_point.reshape(-1)[0])
    return _product(name, a, a_zero_point, K, N, wl, wsum, V.Q8, scale, out=out, zy=zy)


@op("QLinearMatMul", since=10, lower=_on_tiles(qlinear_matmul_lanes, 8, 3, 5, (0, 1, 2, 4, 6, 7)))
def QLinearMatMul(a: np.ndarray, a_scale: np.ndarray, a_zero_point: np.ndarray | None, b: np.ndarray,
                  b_scale: np.ndarray, b_zero_point: np.ndarray | None, y_scale: np.ndarray,
                  y_zero_point: np.ndarray | None = None) -> np.ndarray:
    for v, name in ((a, "a"), (b, "b")):
        if v.dtype not in (np.int8, np.uint8):
            raise OrtNotImplemented(f"QLinearMatMul: {name} of type {v.dtype} is not supported (int8/uint8 only)")
    c = np.matmul(centered(a, a_zero_point, True, "QLinearMatMul", "a_zero_point"),
               centered(b, b_zero_point, False, "QLinearMatMul", "b_zero_point"))
    # The scale product in float32 (the scales' type), applied to the integer product in float64.
    sa, sb, sy = (s.astype(np.float32) for s in (a_scale, b_scale, y_scale))
    if sa.ndim == 1 and sa.size > 1:
        sa = sa.reshape(-1, 1)  # per row of a
    factor = (sa * sb) / sy.reshape(())
    d = c * factor
    out = y_zero_point.dtype if y_zero_point is not None else a.dtype
    if y_zero_point is not None:
        d = d + y_zero_point.astype(np.float64)
    lo, hi = _RANGES[np.dtype(out)]
    return contiguous(np.clip(np.rint(d), lo, hi).astype(out))


# --- MatMulIntegerToFloat, DynamicQuantizeMatMul (com.microsoft) ----------------------------------

def _float_scale(name: str, a_scale: np.ndarray, b_scale: np.ndarray, N: int) -> np.ndarray:
    """a_scale * b_scale per column in float32, as onnxruntime's multiplier."""
    if a_scale.size != 1:
        raise InvalidArgument(f"{name}: a_scale must be a scalar, got {list(a_scale.shape)}")
    if b_scale.size not in (1, N):
        raise InvalidArgument(f"{name}: b_scale must be a scalar or have N={N} elements, got {list(b_scale.shape)}")
    return np.broadcast_to(a_scale.astype(np.float32).reshape(()) * b_scale.astype(np.float32).reshape(-1), (N,))


def _float_bias(name: str, bias: np.ndarray | None, N: int) -> np.ndarray | None:
    if bias is not None and bias.size != N:
        raise InvalidArgument(f"{name}: bias must have N={N} elements, got {list(bias.shape)}")
    return None if bias is None else bias.astype(np.float32).reshape(N)


def matmul_integer_to_float_lanes(A: np.ndarray, a_scale: np.ndarray, b_scale: np.ndarray,
                                  a_zero_point: np.ndarray | None, bias: np.ndarray | None, wl: np.ndarray,
                                  wsum: np.ndarray, *, K: int, N: int) -> np.ndarray:
    """com.microsoft MatMulIntegerToFloat with constant int8 B (zero zero points) on the tiles:
    float32(the int32 product) * (a_scale * b_scale) + bias, as onnxruntime computes it; float16
    scales, a per-row a_zero_point or a 1-D A take the float64 path."""
    name = "MatMulIntegerToFloat"
    _check(A, None, name)
    if (A.ndim < 2 or (a_zero_point is not None and a_zero_point.size != 1) or a_scale.dtype != np.float32
            or b_scale.dtype != np.float32):
        return MatMulIntegerToFloat(A, _matrix(wl, K, N), a_scale, b_scale, a_zero_point, None, bias)
    return _product(name, A, a_zero_point, K, N, wl, wsum, V.F32, _float_scale(name, a_scale, b_scale, N),
                    _float_bias(name, bias, N))


def dynamic_quantize_matmul_lanes(A: np.ndarray, b_scale: np.ndarray, bias: np.ndarray | None, wl: np.ndarray,
                                  wsum: np.ndarray, *, K: int, N: int) -> np.ndarray:
    """com.microsoft DynamicQuantizeMatMul with constant int8 B (zero zero points): A quantised by
    DynamicQuantizeLinear, then ``matmul_integer_to_float_lanes``."""
    if A.dtype != np.float32 or A.ndim < 2 or b_scale.dtype != np.float32:
        return DynamicQuantizeMatMul(A, _matrix(wl, K, N), b_scale, None, bias)
    qa, sa, za = DynamicQuantizeLinear(A)
    name = "DynamicQuantizeMatMul"
    return _product(name, qa, za, K, N, wl, wsum, V.F32, _float_scale(name, sa, b_scale, N),
                    _float_bias(name, bias, N))


def _per_column(v: np.ndarray, N: int, what: str, op_name: str) -> np.ndarray:
    """A scalar, or one value per output column ([N]), as float64 broadcasting over [..., N]."""
    f = v.astype(np.float64)
    if f.size == 1:
        return f.reshape(())
    if f.size != N:
        raise InvalidArgument(f"{op_name}: {what} must be a scalar or have N={N} elements, got {list(v.shape)}")
    return f.reshape(N)


def _int_to_float(op_name: str, A: np.ndarray, B: np.ndarray, a_scale: np.ndarray, b_scale: np.ndarray,
                  a_zero_point: np.ndarray | None, b_zero_point: np.ndarray | None, bias: np.ndarray | None,
                  out: np.dtype) -> np.ndarray:
    for v, name in ((A, "A"), (B, "B")):
        if v.dtype not in (np.int8, np.uint8):
            raise InvalidArgument(f"{op_name}: {name} must be int8 or uint8, got {v.dtype}")
    N = B.shape[-1]
    if a_zero_point is not None and a_zero_point.size != 1:
        raise InvalidArgument(f"{op_name}: a_zero_point must be a scalar")
    bz = None if b_zero_point is None else _per_column(b_zero_point, N, "b_zero_point", op_name)
    c = np.matmul(centered(A, a_zero_point, False, op_name, "a_zero_point"), B.astype(np.float64) -
                  (0.0 if bz is None else bz))
    scale = (a_scale.astype(np.float32).reshape(()) * b_scale.astype(np.float32)).astype(np.float64)
    y = c * _per_column(scale, N, "b_scale", op_name)
    if bias is not None:
        y = y + _per_column(bias, N, "bias", op_name)
    return np.ascontiguousarray(y.astype(out))


def _infer_matmul_like(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    a, b = ins[0], ins[1] if len(ins) > 1 else None
    scale = ins[2] if len(ins) > 2 else None
    out = infer_as("MatMulInteger", 10, {}, [a, b])
    if not out or out[0] is None or scale is None:
        return []
    dt = a.dtype if node.op_type == "DynamicQuantizeMatMul" and a is not None else scale.dtype
    return [TensorType(dt, out[0].shape)]


@op("MatMulIntegerToFloat", since=1, domain=MS, infer=_infer_matmul_like,
    lower=_on_tiles(matmul_integer_to_float_lanes, 7, 1, 5, (0, 2, 3, 4, 6)))
def MatMulIntegerToFloat(A: np.ndarray, B: np.ndarray, a_scale: np.ndarray, b_scale: np.ndarray,
                         a_zero_point: np.ndarray | None = None, b_zero_point: np.ndarray | None = None,
                         bias: np.ndarray | None = None) -> np.ndarray:
    """(A - a_zp) @ (B - b_zp) * a_scale * b_scale + bias, b_zp and b_scale per column or scalar."""
    return _int_to_float("MatMulIntegerToFloat", A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias,
                         a_scale.dtype)


@op("DynamicQuantizeMatMul", since=1, domain=MS, infer=_infer_matmul_like,
    lower=_on_tiles(dynamic_quantize_matmul_lanes, 5, 1, 3, (0, 2, 4), (np.dtype(np.float32),)))
def DynamicQuantizeMatMul(A: np.ndarray, B: np.ndarray, b_scale: np.ndarray, b_zero_point: np.ndarray | None = None,
                          bias: np.ndarray | None = None) -> np.ndarray:
    """A quantised to uint8 as DynamicQuantizeLinear does, then MatMulIntegerToFloat."""
    qa, sa, za = DynamicQuantizeLinear(A.astype(np.float32, copy=False))
    return _int_to_float("DynamicQuantizeMatMul", qa, B, sa, b_scale, za, b_zero_point, bias, A.dtype)


for _f in (matmul_integer_lanes, qlinear_matmul_lanes, matmul_integer_to_float_lanes, dynamic_quantize_matmul_lanes):
    _f.own_threads = True  # type: ignore[attr-defined]  # jitort.compiled.Artifact.own_threads
