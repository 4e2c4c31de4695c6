"""MatMulNBits' native kernels: products that read the packed 2/4/8-bit weights instead of a float copy.

Layout (``pack``, done once when the node is lowered; plan constants, so the cache and AOT artifacts
keep it). The N output columns are cut into panels of ``NC`` columns (the last padded with zero
weights). A panel's weights are one contiguous stream of 32-bit words ``w[p, kw, c]`` (int32 dtype,
read as unsigned): word (kw, c) holds the ``per = 32 // bits`` quantised values q[n, kw*per ..
kw*per+per-1] of column n = p*NC + c, value i in bits [i*bits, (i+1)*bits). Scales ``s[p, b, c]``
and (when the model has them) zero points ``z[p, b, c]`` are float32, one per block b. K is padded
to whole blocks (with the values B holds there; A is padded with zeros, so they add nothing).

The product of block b then factors as
    sum_k a[k] * (q[k] - zp) * s  =  s * (sum_k a[k] * q[k]  -  zp * sum_k a[k]),
so the inner loop, over the NC columns of a panel, is pure lane arithmetic on 32-bit integers and
floats (mask, convert, fma) that LLVM vectorises without shuffles or gathers; the sums of A per
block (``asum``) are computed once per call. A value is masked in place, not shifted down (one
instruction less per value): A is pre-scaled by 2**-shift instead, exact for |a| above 2**-100
(smaller values lose bits as float32 subnormals; their products are below float32's resolution of
any sum they join anyway). Rounding differs from onnxruntime's (which dequantises w = (q - zp) * s,
then multiplies) in the last bits of float32 only.

``gemv4``/``gemv8`` run the rows of A (decode: M = 1..``GEMV_ROWS``) panel by panel, a panel's
packed weights staying in cache across rows. More rows (prefill) and 2-bit weights take
kernels/nbits_prefill.py: a panel dequantised into kernels/gemm.py's packed-B layout, then its
register tile over every row of A (never a float copy of the whole weight).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import carray, njit

from jitort.kernels import nbits_prefill, threads
from jitort.kernels.conv_parts import PartFactory
from jitort.kernels.native_parts import PART_SIG, CFuncs, addr, as_ptr, f32_arg, set_f32_arg

NC = 64          # output columns per panel: 4 AVX-512 / 8 AVX2 vectors of float32
# Rows of A up to which the packed GEMV beats nbits_prefill's dequantise-a-panel + GEMM tile:
# measured on the 2-vCPU Intel Xeon (Ice Lake) VM, 1 thread, int4 block 32, CPU time (load 2.9),
# GEMV vs prefill in us: 768 x 768 M=1 49 vs 127, M=2 91 vs 131, M=4 197 vs 140; 768 x 2048 M=2
# 220 vs 352, M=4 422 vs 348; 2048 x 768 M=2 399 vs 448, M=4 745 vs 484, M=16 1720 vs 704 (the GEMV
# costs ~M times its M=1 time; the prefill's dequantisation is paid once, whatever M).
GEMV_ROWS = 2
GEMV_MACS_PER_PART = 1e6  # ~40 us of one thread's GEMV work: less is not worth handing to another


class Packed:
    """MatMulNBits' constant weight in the packed layout (see the module doc)."""

    def __init__(self, w: np.ndarray, s: np.ndarray, z: np.ndarray | None, zdef: float, bits: int,
                 block: int, K: int, N: int) -> None:
        self.w, self.s, self.z, self.zdef = w, s, z, np.float32(zdef)
        self.bits, self.block, self.K, self.N = bits, block, K, N

    @property
    def blocks(self) -> int:
        return self.s.shape[1]

    @property
    def kp(self) -> int:
        """K padded to whole blocks."""
        return self.blocks * self.block


def pack(q: np.ndarray, s: np.ndarray, z: np.ndarray | None, zdef: float, bits: int, block: int,
         K: int) -> Packed:
    """q: uint8 [N, blocks * block] quantised values (those past K are multiplied by zeros); s, z:
    float32 [N, blocks] scales and zero points (z None: every zero point is ``zdef``)."""
    N, kp = q.shape
    per = 32 // bits
    P = -(-N // NC)
    qp = np.zeros((P * NC, kp), np.uint32)
    qp[:N] = q
    words = np.zeros((P * NC, kp // per), np.uint32)
    for i in range(per):
        words |= qp[:, i::per] << np.uint32(i * bits)
    w = np.ascontiguousarray(words.reshape(P, NC, kp // per).transpose(0, 2, 1)).view(np.int32)

    def panels(v: np.ndarray) -> np.ndarray:
        out = np.zeros((P * NC, v.shape[1]), np.float32)
        out[:N] = v
        return np.ascontiguousarray(out.reshape(P, NC, -1).transpose(0, 2, 1))

    return Packed(w, panels(s), None if z is None else panels(z), zdef, bits, block, K, N)


def prep(a: np.ndarray, pk: Packed) -> tuple[np.ndarray, np.ndarray]:
    """A [M, K] -> (A as float32 [M, kp], zero padded, each k scaled by 2**-(bits * (k % per)) but
    the last field of a word unscaled (see ``_q``); A's sums per block [M, blocks], unscaled)."""
    return scaled_sums(np.ascontiguousarray(a, np.float32), pk.kp, pk.block, pk.bits)


@njit(nogil=True, cache=True, error_model="numpy")
def scaled_sums(a, kp, block, bits):  # type: ignore[no-untyped-def]
    """``prep``'s kernel. The factors come from a table indexed by k & (per - 1) and each block's sum
    from 8 running sums (scalars: LLVM keeps them in registers, a small array it does not): the
    per-element 2**-(bits*i) and k % per and one dependent add per value cost 7.2 us (K=768) and
    15.7 us (K=2048) per call, now 3.7 -> ~1.5 us with the call itself (Intel Xeon Ice Lake, 1 thread)."""
    M, K = a.shape
    per = 32 // bits  # a power of 2
    f = np.empty(per, np.float32)
    for i in range(per):
        f[i] = np.float32(1.0) if i == per - 1 else np.float32(2.0 ** (-bits * i))
    out = np.zeros((M, kp), np.float32)
    sums = np.zeros((M, kp // block), np.float32)
    z = np.float32(0)
    for m in range(M):
        am, om = a[m], out[m]
        for k in range(K):
            om[k] = am[k] * f[k & (per - 1)]
        for b in range(-(-K // block)):
            lo, hi = b * block, min(K, (b + 1) * block)
            e = lo + (hi - lo) // 8 * 8
            t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = z
            for k in range(lo, e, 8):
                t0 += am[k]
                t1 += am[k + 1]
                t2 += am[k + 2]
                t3 += am[k + 3]
                t4 += am[k + 4]
                t5 += am[k + 5]
                t6 += am[k + 6]
                t7 += am[k + 7]
            t = ((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))
            for k in range(e, hi):
                t += am[k]
            sums[m, b] = t
    return out, sums


@njit(inline="always")
def _q(v, field):  # type: ignore[no-untyped-def]
    """The bit field ``field`` (a mask, below bit 31) of int32 word v, as float32 and still shifted:
    q * 2**shift, exact. Masked in place, not shifted down: one instruction less per value (A is
    pre-scaled by 2**-shift instead). Computed in int32: Numba's int64 promotion would convert with
    vcvtqq2ps (AVX-512DQ, not in AVX2)."""
    return np.float32(np.int32(v & np.int32(field)))


@njit(inline="always")
def _top(v, shift):  # type: ignore[no-untyped-def]
    """The top bit field of int32 word v (from bit ``shift``) as float32: a logical shift, no mask."""
    return np.float32(np.int32(np.uint32(v) >> np.uint32(shift)))


@njit(inline="always")
def _block_out(acc, tot, s, z, zdef, t, p, b):  # type: ignore[no-untyped-def]
    """tot += s * (acc - zp * t): block b's contribution (t: A's sum over the block)."""
    for c in range(NC):
        zc = zdef if z is None else z[p, b, c]
        tot[c] += s[p, b, c] * (acc[c] - zc * t)


@njit(inline="always")
def _store(tot, bias, y, m, n0):  # type: ignore[no-untyped-def]
    N = y.shape[1]
    for c in range(min(NC, N - n0)):
        if bias is None:
            y[m, n0 + c] = tot[c]
        else:
            y[m, n0 + c] = tot[c] + bias[n0 + c]


@njit(nogil=True, cache=True, fastmath=True, error_model="numpy")
def gemv4(a, asum, w, s, z, zdef, bias, y, p0, p1):  # type: ignore[no-untyped-def]
    """y[m, n] = sum_k a[m, k] * (q[n, k] - zp[n, b(k)]) * s[n, b(k)] (+ bias[n]) for the columns
    of panels p0..p1, 4-bit values (8 per word); a and asum from ``prep``."""
    M = y.shape[0]
    blocks = s.shape[1]
    wpb = w.shape[1] // blocks
    acc = np.empty(NC, np.float32)
    tot = np.empty(NC, np.float32)
    for p in range(p0, p1):
        for m in range(M):
            tot[:] = 0.0
            for b in range(blocks):
                acc[:] = 0.0
                for kw in range(b * wpb, (b + 1) * wpb):
                    k = kw * 8
                    a0, a1, a2, a3 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
                    a4, a5, a6, a7 = a[m, k + 4], a[m, k + 5], a[m, k + 6], a[m, k + 7]
                    for c in range(NC):
                        v = w[p, kw, c]
                        acc[c] += (((a0 * _q(v, 0xF) + a1 * _q(v, 0xF0))
                                    + (a2 * _q(v, 0xF00) + a3 * _q(v, 0xF000)))
                                   + ((a4 * _q(v, 0xF0000) + a5 * _q(v, 0xF00000))
                                      + (a6 * _q(v, 0xF000000) + a7 * _top(v, 28))))
                _block_out(acc, tot, s, z, zdef, asum[m, b], p, b)
            _store(tot, bias, y, m, p * NC)


@njit(nogil=True, cache=True, fastmath=True, error_model="numpy")
def gemv8(a, asum, w, s, z, zdef, bias, y, p0, p1):  # type: ignore[no-untyped-def]
    """``gemv4`` for 8-bit values (4 per word)."""
    M = y.shape[0]
    blocks = s.shape[1]
    wpb = w.shape[1] // blocks
    acc = np.empty(NC, np.float32)
    tot = np.empty(NC, np.float32)
    for p in range(p0, p1):
        for m in range(M):
            tot[:] = 0.0
            for b in range(blocks):
                acc[:] = 0.0
                for kw in range(b * wpb, (b + 1) * wpb):
                    k = kw * 4
                    a0, a1, a2, a3 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
                    for c in range(NC):
                        v = w[p, kw, c]
                        acc[c] += (a0 * _q(v, 0xFF) + a1 * _q(v, 0xFF00)) + (a2 * _q(v, 0xFF0000) + a3 * _top(v, 24))
                _block_out(acc, tot, s, z, zdef, asum[m, b], p, b)
            _store(tot, bias, y, m, p * NC)


@njit(nogil=True, cache=True, error_model="numpy")
def gemv_call(a, w, s, z, zdef, bias, bits, block, N):  # type: ignore[no-untyped-def]
    """``prep`` then ``gemv4``/``gemv8`` over every panel, one dispatch from Python: A [M, K] float32
    C-contiguous -> y [M, N]. A decode step's unsplit GEMV called prep and the kernel separately, two
    dispatches of ~1.5 us each (Intel Xeon Ice Lake VM)."""
    kp = s.shape[1] * block
    ap, asum = scaled_sums(a, kp, block, bits)
    y = np.empty((a.shape[0], N), np.float32)
    if bits == 4:
        gemv4(ap, asum, w, s, z, zdef, bias, y, 0, w.shape[0])
    else:
        gemv8(ap, asum, w, s, z, zdef, bias, y, 0, w.shape[0])
    return y


# --- the GEMV split: native parts (threads.run_native), panels P*i//parts .. P*(i+1)//parts each ------
_AP, _M, _KP, _ASUM, _BLOCKS, _W, _P, _KW, _S, _Z, _ZDEF, _BIAS, _Y, _N, _PARTS = range(15)


@njit(cache=True, nogil=True)
def _gemv_argv(ap, asum, w, s, z, zdef, bias, y, parts):  # type: ignore[no-untyped-def]
    """The argument vector of a split GEMV (z, bias: any float32 arrays where the model has none)."""
    argv = np.empty(15, np.int64)
    argv[_AP], argv[_M], argv[_KP] = addr(ap), ap.shape[0], ap.shape[1]
    argv[_ASUM], argv[_BLOCKS] = addr(asum), asum.shape[1]
    argv[_W], argv[_P], argv[_KW] = addr(w), w.shape[0], w.shape[1]
    argv[_S], argv[_Z], argv[_BIAS], argv[_Y], argv[_N] = addr(s), addr(z), addr(bias), addr(y), y.shape[1]
    set_f32_arg(argv, _ZDEF, zdef)
    argv[_PARTS] = parts
    return argv


@njit(inline="always")
def _gemv_args(k, v):  # type: ignore[no-untyped-def]
    """(a, asum, w, s, z, zdef, bias, y, p0, p1) of part k: z and bias as arrays (a part function
    passes None instead where the model has none)."""
    f32 = np.float32
    M, P, blocks = v[_M], v[_P], v[_BLOCKS]
    a = carray(as_ptr(v[_AP], f32), (M, v[_KP]))
    asum = carray(as_ptr(v[_ASUM], f32), (M, blocks))
    w = carray(as_ptr(v[_W], np.int32), (P, v[_KW], NC))
    s = carray(as_ptr(v[_S], f32), (P, blocks, NC))
    z = carray(as_ptr(v[_Z], f32), (P, blocks, NC))
    bias = carray(as_ptr(v[_BIAS], f32), (v[_N],))
    y = carray(as_ptr(v[_Y], f32), (M, v[_N]))
    parts = v[_PARTS]
    return a, asum, w, s, z, f32_arg(v, _ZDEF), bias, y, P * k // parts, P * (k + 1) // parts


def _make_gemv_part(bits: int, hasz: bool, hasb: bool) -> Any:
    """The GEMV part function of one (bits, zero points, bias). Its cells are plain constants on
    which Numba prunes the branches before typing: each compiles one kernel call, with None where the
    model has no zero points or bias (which the kernel then prunes at compile time), and Numba's
    cache keys it by them. The kernels are globals, never captured (a captured dispatcher is no
    constant the cache can key)."""
    def part(k, v):  # type: ignore[no-untyped-def]
        a, asum, w, s, z, zdef, bias, y, p0, p1 = _gemv_args(k, v)
        if not hasz:
            z = None
        if not hasb:
            bias = None
        if bits == 4:
            gemv4(a, asum, w, s, z, zdef, bias, y, p0, p1)
        else:
            gemv8(a, asum, w, s, z, zdef, bias, y, p0, p1)
    return part


_BOTH_READY: set[tuple[int, bool, bool]] = set()  # GEMV keys whose njit kernel and part function are both ready
_GEMV_C = CFuncs(__name__, PART_SIG, PartFactory("gemv_part", _make_gemv_part))


def gemv_part_address(bits: int, hasz: bool, hasb: bool) -> int:
    """Address of the GEMV part function for (bits, zero points, bias), compiled or loaded from the
    cache on first use (a model compiles only the combinations it has)."""
    return _GEMV_C.address((bits, hasz, hasb))


def matmul(a: np.ndarray, pk: Packed, bias: np.ndarray | None) -> np.ndarray:
    """a [M, K] float32 @ the packed weight -> float32 [M, N] (+ bias): ``gemv4``/``gemv8`` for M <=
    GEMV_ROWS, split into native parts (panels) over jitort's threads; else (and for 2-bit weights)
    kernels/nbits_prefill.py's dequantise-a-panel GEMM, panels split over jitort's threads."""
    M = a.shape[0]
    b32 = None if bias is None else np.ascontiguousarray(bias.reshape(-1), np.float32)
    P = pk.w.shape[0]
    if M <= GEMV_ROWS and pk.bits in (4, 8):
        parts = threads.parts_for(P, M * pk.kp * pk.N, GEMV_MACS_PER_PART)
        key = (pk.bits, pk.z is not None, b32 is not None)
        if parts <= 1:
            y = gemv_call(np.ascontiguousarray(a, np.float32), pk.w, pk.s, pk.z, pk.zdef, b32, pk.bits, pk.block,
                          pk.N)
            if key not in _BOTH_READY and threads.intra_op_threads() > 1:
                _BOTH_READY.add(key)
                gemv_part_address(*key)  # see gemm._BOTH_READY: an artifact holds both paths
            return y
        y = np.empty((M, pk.N), np.float32)
        ap, asum = prep(a, pk)
        kern = gemv4 if pk.bits == 4 else gemv8
        if key not in _BOTH_READY:
            _BOTH_READY.add(key)
            kern(ap, asum, pk.w, pk.s, pk.z, pk.zdef, b32, y, 0, 0)  # no panels: see gemm._BOTH_READY
        argv = _gemv_argv(ap, asum, pk.w, pk.s, pk.s if pk.z is None else pk.z, pk.zdef,
                          y[0] if b32 is None else b32, y, parts)
        threads.run_native(gemv_part_address(pk.bits, pk.z is not None, b32 is not None), argv, parts)
        return y
    return nbits_prefill.matmul(a, pk.w, pk.s, pk.z, pk.zdef, pk.bits, pk.block, b32, pk.N)
