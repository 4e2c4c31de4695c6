"""jitort's float32 GEMM for MatMul and Gemm with constant weights: ``C = act(A @ B + bias [+ R])``.

B (the weights) is packed once, when the model is lowered (``pack_b``), into panels of ``PANEL`` = 16
columns: panel p holds ``B[k, 16p + c]`` at ``(p*K + k)*16 + c``, zero-padded past N. The layout does
not depend on the vector ISA (a panel is one zmm or two ymm per k), so a packed constant stored in the
cache or an AOT artifact runs on either path. A is read in place (row-major, no packing): a register
tile of R rows broadcasts A[r, k] and multiplies it into the tile's panels, which is also the small-M
(batch-1, classifier head) path: a 1-row tile streams B once with 8 panels of accumulators.

Summation order: every element of C is ``fma(a[K-1], b[K-1], ... fma(a[0], b[0], 0))`` in k order,
whatever the tile shape, the ISA path, the K block (a block resumes the chain from C, which float32
stores exactly) or the thread that computes it; then ``+ bias``, then ``+ R``, then the activation.
So results are bitwise equal across both ISA paths and any thread count (tests/test_gemm.py), and
identical weight columns give identical output columns (convgemm.py explains why that matters).

Tiles (rows x panels; accumulators = rows x panels x vectors per panel): AVX-512 (32 zmm) 6x4 (24),
AVX2 (16 ymm) 6x1 (12); a row tail takes the 1-, 2- or 4-row tile (``TILES``; 3 and 5 rows use the
next one up, its spare row computing on a clamped pointer and never stored: four tile shapes per ISA
keep the cold compile at ~5 s of CPU for both). Measured on the 2-vCPU AMD EPYC (Zen 4) dev VM, one
thread: 104-110 GFLOP/s on 16x1024x1024 and 128x768x768 on either path (Zen 4 runs a zmm FMA as two
ymm halves), where numpy's OpenBLAS sgemm gave 68-90. The vector width is a
literal argument of the kernels, not the import-time ``vecir.VB``: ``gemm_f32_avx512`` and
``gemm_f32_avx2`` are separate cached functions, chosen per call (``default_isa``; ``JITORT_ISA=avx2``
forces the narrower path on an AVX-512 host; the wider one is never taken on a host without it).

Threads: a product worth splitting (``parts``) is cut into chunks of whole tiles (``split``) that run
as one native job (threads.run_native): the chunk's C part function (``gemm_part_avx512`` /
``gemm_part_avx2``, compiled on first use) is called by address on the pool's workers, which never
take the GIL for it.

Epilogue: bias (a padded row vector), residual R [M, N], and Relu / Clip / LeakyRelu / HardSwish /
HardSigmoid run on the register tile before the store; Sigmoid, SiLU and GELU (erf, tanh) run on each
stored column strip while it is in cache, with jitort's vectorisable float32 math (fastmath.py).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable

import llvmlite.binding as ll
import numba
import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from jitort.allocator import aligned_zeros
from jitort.kernels.fastmath import gelu_erf_f32, gelu_tanh_f32, sigmoid_f32
from jitort.kernels.native_parts import PART_SIG, CFuncs, addr, as_ptr, call_part, f32_arg, set_f32_arg
from jitort.kernels.threads import intra_op_threads, run_native
from jitort.kernels.vecir import Vec, fma_rows

PANEL = 16  # columns per packed panel: fixed, so packed weights are the same on every host
MR = 6  # rows of the main register tile
KC = 256  # K block: a tile's B panels (KC x 16 x panels) stay in L1 while every row tile passes
_VBYTES = {"avx512": 64, "avx2": 32}
# rows -> panels per tile, per vector width in bytes
_TILES64 = (0, 8, 8, 0, 6, 0, 4, 0, 0, 0, 0, 0, 2)  # tiles of 1, 2, 4 and 6 rows; 12 (narrow columns)
_TILES32 = (0, 4, 3, 0, 1, 0, 1)
TILES = {64: _TILES64, 32: _TILES32}

# activation codes: < _POST on the register tile, the rest on the stored strip
ACTIVATIONS = {"": 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3, "HardSwish": 4, "HardSigmoid": 5,
               "Sigmoid": 6, "SiLU": 7, "Gelu": 8, "GeluTanh": 9}
_POST = 6


@functools.lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    """The features the host (or Numba's configured CPU) has, LLVM's names without the "+" (asked
    once: llvmlite's feature query costs ~0.7 ms)."""
    feats = numba.config.CPU_FEATURES or ll.get_host_cpu_features().flatten()
    return frozenset(f[1:] for f in feats.split(",") if f.startswith("+"))


def host_isa() -> str:
    """"avx512" when the host has AVX-512F, else "avx2"."""
    return "avx512" if "avx512f" in host_features() else "avx2"


def _isa_env() -> str | None:
    """JITORT_ISA, read in ~50 ns: ``os.environ.get`` of an unset name raises and catches a KeyError
    inside (~1-3 us measured, per GEMM call), so this looks in the environment's own dict."""
    data, key = getattr(os.environ, "_data", None), _ISA_KEY
    if data is None or key is None:
        return os.environ.get("JITORT_ISA")
    raw = data.get(key)
    return None if raw is None else os.environ.decodevalue(raw)  # type: ignore[attr-defined]


_ISA_KEY = os.environ.encodekey("JITORT_ISA") if hasattr(os.environ, "encodekey") else None
_ISA_SEEN: tuple[str | None, str] = (None, "")


def default_isa() -> str:
    """The GEMM path this process takes: the host's, or ``JITORT_ISA`` (``avx2`` / ``avx512``) when it
    names one the host has. Read per call, so a test can switch it."""
    global _ISA_SEEN
    want = _isa_env()
    seen = _ISA_SEEN
    if seen[1] and seen[0] == want:
        return seen[1]
    host = host_isa()
    w = (want or "").lower()
    isa = w if w == "avx2" or (w == "avx512" and host == "avx512") else host
    _ISA_SEEN = (want, isa)
    return isa


# --- the register tile ---------------------------------------------------------------------------

def _finish(v: Vec, act: ir.Value, lo: ir.Value, hi: ir.Value) -> Callable[[ir.Value], ir.Value]:
    """The in-tile activation for run-time code ``act`` (0-5, see ACTIVATIONS), as selects (NaN passes
    through Relu/Clip/LeakyRelu as in the elementwise ops)."""
    b = v.b
    zero, one = v.splat(ir.Constant(v.fty, 0.0)), v.splat(ir.Constant(v.fty, 1.0))
    los, his = v.splat(lo), v.splat(hi)
    sixth, half = v.splat(ir.Constant(v.fty, 1 / 6)), v.splat(ir.Constant(v.fty, 0.5))
    codes = [b.icmp_signed("==", act, v.c(k)) for k in range(6)]

    def clamp01(h: ir.Value) -> ir.Value:
        h = b.select(b.fcmp_ordered("<", h, zero), zero, h)
        return b.select(b.fcmp_ordered(">", h, one), one, h)

    def fin(x: ir.Value) -> ir.Value:
        relu = b.select(b.fcmp_ordered("<", x, zero), zero, x)
        clip = b.select(b.fcmp_ordered("<", x, los), los, x)
        clip = b.select(b.fcmp_ordered(">", clip, his), his, clip)
        leaky = b.select(b.fcmp_ordered(">=", x, zero), x, b.fmul(los, x))
        hswish = b.fmul(x, clamp01(b.fadd(b.fmul(x, sixth), half)))
        hsig = clamp01(b.fadd(b.fmul(los, x), his))
        y = x
        for code, val in ((1, relu), (2, clip), (3, leaky), (4, hswish), (5, hsig)):
            y = b.select(codes[code], val, y)
        return y
    return fin


@intrinsic
def _tile(typingctx, rows, vbytes, a, lda, mrows, bp, ps, npv, kb, c, ldc, init, ep, bias, hasb,  # type: ignore[no-untyped-def]
          r, ldr, hasr, act, lo, hi):
    """One register tile, on integer addresses: C[i, :16 npv] (i < mrows) = fin(C0 + sum_{k<kb} A[i, k]
    Bp[k, :]). A row-major (lda); Bp panels from ``bp``, ``ps`` elements apart; C0 zero, or C when
    init (resuming a K block). ep 0 stores the raw sums (a K block that is not the last); else
    + bias (when hasb; read from ``bias``, padded to whole panels), + R (when hasr; row stride ldr;
    any readable [mrows, 16 npv] block otherwise), then in-tile activation ``act`` with lo/hi.
    Every stored panel is whole: a partial last column tile goes through a scratch (``_strip``).
    rows and vbytes must be literals: the tile's rows and vector bytes; its panels come from TILES.
    Rows past mrows and panels past npv compute on clamped pointers and are not stored."""
    if not isinstance(rows, types.IntegerLiteral) or not isinstance(vbytes, types.IntegerLiteral):
        return None
    if lo != types.float32 or hi != types.float32:
        return None
    R, VB = rows.literal_value, vbytes.literal_value
    NP = TILES[VB][R]
    sig = types.void(rows, vbytes, a, lda, mrows, bp, ps, npv, kb, c, ldc, init, ep, bias, hasb, r, ldr, hasr,
                     act, lo, hi)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        (_, _, a_, lda_, mrows_, bp_, ps_, npv_, kb_, c_, ldc_, init_, ep_, bias_, hasb_, r_, ldr_, hasr_, act_,
         lo_, hi_) = [context.cast(builder, x, t, types.int64) if isinstance(t, types.Integer) else x
                      for x, t in zip(args, signature.args)]
        b = builder
        v = Vec(context, b, types.float32, VB)
        VL = v.VL
        VPP = PANEL // VL
        one = v.c(1)
        arow = []
        for i in range(R):
            ii = b.select(b.icmp_signed("<", v.c(i), mrows_), v.c(i), b.sub(mrows_, one))
            arow.append(v.at(v.address(a_), b.mul(ii, lda_)))
        pbase = []
        for p in range(NP):
            pp = b.select(b.icmp_signed("<", v.c(p), npv_), v.c(p), b.sub(npv_, one))
            pbase.append(v.at(v.address(bp_), b.mul(pp, ps_)))
        cbase, rbase, bbase = v.address(c_), v.address(r_), v.address(bias_)

        def each(body: Callable[[int, int, int], None]) -> None:
            """body(row, panel, vector) for every stored vector."""
            for i in range(R):
                with b.if_then(b.icmp_signed(">", mrows_, v.c(i)), likely=True):
                    for p in range(NP):
                        with b.if_then(b.icmp_signed(">", npv_, v.c(p)), likely=True):
                            for q in range(VPP):
                                body(i, p, q)

        def at(base: ir.Value, ld_: ir.Value, i: int, p: int, q: int) -> ir.Value:
            return v.at(base, b.add(b.mul(v.c(i), ld_), v.c(p * PANEL + q * VL)))

        slots = [[cgutils.alloca_once_value(b, v.zero) for _ in range(NP * VPP)] for _ in range(R)]

        def load_c(i: int, p: int, q: int) -> None:
            b.store(v.load(at(cbase, ldc_, i, p, q)), slots[i][p * VPP + q])

        with b.if_then(b.icmp_signed("!=", init_, v.c(0))):
            each(load_c)
        start = [[b.load(s) for s in row] for row in slots]

        def b_vecs(k: ir.Value) -> list[ir.Value]:
            off = b.mul(k, v.c(PANEL))
            return [v.load(v.at(pbase[p], b.add(off, v.c(q * VL)))) for p in range(NP) for q in range(VPP)]

        acc = fma_rows(v, R, NP * VPP, kb_, lambda k, i: b.load(v.at(arow[i], k)), b_vecs, start)
        fin = _finish(v, act_, lo_, hi_)
        use_b = b.icmp_signed("!=", hasb_, v.c(0))
        use_r = b.icmp_signed("!=", hasr_, v.c(0))

        def store(i: int, p: int, q: int) -> None:
            x = acc[i][p * VPP + q]
            x = b.select(use_b, b.fadd(x, v.load(v.at(bbase, v.c(p * PANEL + q * VL)))), x)
            x = b.select(use_r, b.fadd(x, v.load(at(rbase, ldr_, i, p, q))), x)
            v.store(fin(x), at(cbase, ldc_, i, p, q))

        def store_raw(i: int, p: int, q: int) -> None:
            v.store(acc[i][p * VPP + q], at(cbase, ldc_, i, p, q))

        with b.if_else(b.icmp_signed("==", ep_, v.c(0))) as (raw, finished):
            with raw:
                each(store_raw)
            with finished:
                each(store)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _call_row(typingctx, fn, p, n):  # type: ignore[no-untyped-def]
    """Call the C function at address fn, ``void f(float *row, int64 n)``, on the address p."""
    sig = types.void(fn, p, n)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        f32p = ir.FloatType().as_pointer()
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [f32p, i64])
        cast = [context.cast(builder, x, t, types.int64) for x, t in zip(args, signature.args)]
        f = builder.inttoptr(cast[0], fnty.as_pointer())
        builder.call(f, [builder.inttoptr(cast[1], f32p), cast[2]])
        return context.get_dummy_value()

    return sig, codegen


# --- activations on a stored strip: one C function per activation, compiled on first use ------
# Called by address from the GEMM kernels (which then compile without jitort's float32 math: that took
# two thirds of their cold compile), one call per output row of a column strip still in cache.

def _sigmoid_row(p, n):  # type: ignore[no-untyped-def]
    x = carray(p, (n,))
    for j in range(n):
        x[j] = sigmoid_f32(x[j])


def _silu_row(p, n):  # type: ignore[no-untyped-def]
    x = carray(p, (n,))
    for j in range(n):
        x[j] = x[j] * sigmoid_f32(x[j])


def _gelu_row(p, n):  # type: ignore[no-untyped-def]
    x = carray(p, (n,))
    for j in range(n):
        x[j] = gelu_erf_f32(x[j])


def _gelu_tanh_row(p, n):  # type: ignore[no-untyped-def]
    x = carray(p, (n,))
    for j in range(n):
        x[j] = gelu_tanh_f32(x[j])


_POST_FNS = {6: _sigmoid_row, 7: _silu_row, 8: _gelu_row, 9: _gelu_tanh_row}
_POST_C = CFuncs(__name__, types.void(types.CPointer(types.float32), types.int64), _POST_FNS)


def post_address(act: int) -> int:
    """Address of the row activation for code act (>= 6), compiled or loaded on first use; 0 for
    the codes the register tile applies itself."""
    return 0 if act < _POST else _POST_C.address(act)


# --- the blocked product -------------------------------------------------------------------------

@njit(nogil=True, error_model="numpy")
def _strip(R, VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1):  # type: ignore[no-untyped-def]
    """Rows m0..m1 (a multiple of R rows, or fewer than R) by panels p0..p1 with R-row tiles.
    R and VB arrive as literals (each caller's constants), so each (R, VB) is its own tile. A column
    tile that ends inside a panel computes into a scratch (with a copy of R's columns) and is
    copied out: the tile never stores or reads past N."""
    K = a.shape[1]
    N = c.shape[1]
    NP = _TILES64[R] if VB == 64 else _TILES32[R]
    ps = K * PANEL
    isz = 4
    ad, bd = addr(a), addr(bp)
    lda = a.shape[1]
    tact = act if act < _POST else 0
    for jt in range(p0, p1, NP):
        npv = min(NP, p1 - jt)
        j0 = jt * PANEL
        w = min(N, j0 + npv * PANEL) - j0
        if w == npv * PANEL:
            ldc = N
            cbase = addr(c) + (m0 * ldc + j0) * isz
            ldr = ldc
            rbase = cbase
            if hasr:
                ldr = res.shape[1]
                rbase = addr(res) + (m0 * ldr + j0) * isz
            cs = c[:0]
        else:
            cs = np.empty((m1 - m0, npv * PANEL), np.float32)
            ldc = ldr = npv * PANEL
            cbase = rbase = addr(cs)
            if hasr:
                rs = np.zeros((m1 - m0, ldr), np.float32)
                for i in range(m1 - m0):  # loops: a 2-D slice assignment costs seconds of compile
                    for j in range(w):
                        rs[i, j] = res[m0 + i, j0 + j]
                rbase = addr(rs)
        for k0 in range(0, max(K, 1), KC):
            kb = min(KC, K - k0)
            init = 1 if k0 > 0 else 0
            ep = 1 if k0 + KC >= K else 0
            for i in range(m0, m1, R):
                _tile(R, VB, ad + (i * lda + k0) * isz, lda, min(R, m1 - i), bd + (jt * K + k0) * PANEL * isz, ps,
                      npv, kb, cbase + (i - m0) * ldc * isz, ldc, init, ep, addr(bias) + j0 * isz, hasb,
                      rbase + (i - m0) * ldr * isz, ldr, hasr, tact, lo, hi)
        if cs.shape[0]:
            for i in range(m1 - m0):
                for j in range(w):
                    c[m0 + i, j0 + j] = cs[i, j]
        if post:
            for i in range(m0, m1):
                _call_row(post, addr(c) + (i * N + j0) * isz, w)


@njit(inline="always", nogil=True, error_model="numpy")
def _gemm(VB, NW, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1):  # type: ignore[no-untyped-def]
    """NW (a literal): 1 in the narrow kernels (``narrow_key``), which have AVX-512's 12 x 2 tile."""
    pm = p1
    if VB == 64 and NW == 1:
        # The 6-row tile spans 4 panels; on 1 or 2 it would compute the missing ones on clamped
        # pointers. Those columns take a 12 x 2 tile (24 accumulators, as the main tile) when there are
        # rows for it (a few rows' small tiles span 6-8 panels: unchanged). Same sums, in the same
        # order. Ice Lake-SP VM, 1 thread, 10,000 rows, K = 100 (ms, 6 x 4 -> 12 x 2): N = 16 0.64 ->
        # 0.36, 32 0.94 -> 0.40, 80 1.76 -> 1.38. A 12 x 1 or 10 x 1 tile for one panel measured no
        # faster (0.47 vs 0.49 ms at N = 16), 16 x 1 and 24 x 1 slower; an 8 x 3 tile for 3 panels
        # (0.88 -> 0.68 ms at N = 48) was left out. A tile adds ~2.8 s to a kernel's cold compile, so
        # the tile is in separate kernels, compiled when a product first needs them.
        pm = p0 + (p1 - p0) // 4 * 4
    narrow = VB == 64 and NW == 1 and p1 - pm in (1, 2) and m1 - m0 >= 12
    mn = m0 + (m1 - m0) // 12 * 12
    if narrow:
        _strip(12, VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, mn, pm, p1)
    else:
        pm = p1
    # the rest, by one call site (the tail tiles inlined twice cost ~2.5 s of compile): the narrow
    # columns' row tail, then the whole panels
    for reg in range(2 if narrow else 1):
        r0, q0, q1 = (mn, pm, p1) if narrow and reg == 0 else (m0, p0, pm)
        if r0 < m1 and q0 < q1:
            _rows(VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, r0, m1, q0, q1)


@njit(inline="always", nogil=True, error_model="numpy")
def _rows(VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1):  # type: ignore[no-untyped-def]
    """Rows m0..m1 by panels p0..p1 with the main tile, then the rows' tail; on AVX-512 rows that
    4-row tiles cover and 6-row tiles do not take 4-row tiles alone (``rows4``)."""
    if VB == 64 and _rows4(m1 - m0, p1 - p0):
        # one strip: B (the weights) is read once. A tail strip reads all of it again, from memory
        # when it is bigger than L2. Ice Lake-SP VM, 1 thread, B cold, ms (6-row tiles + tail ->
        # 4-row tiles, 4 x 6 panels, as many accumulators): 16x1024x1024 0.68 -> 0.54, 8x1024x1024
        # 0.56 -> 0.44, 20x768x768 0.44 -> 0.38, 128x768x768 1.26 -> 1.18; in cache 20x768x768
        # 0.25 -> 0.20; 128x768x3072 within noise. Not where the 4-row tile's 6-panel column tiles
        # would compute many more padding columns than the tail's pass costs (``rows4``).
        _strip(4, VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1)
        return
    mf = m0 + (m1 - m0) // MR * MR
    if mf > m0:
        _strip(6, VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, mf, p0, p1)
    t = m1 - mf  # a row tail takes the smallest tile that holds it (one of four shapes: compile time)
    if t >= 5:
        _strip(6, VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, mf, m1, p0, p1)
    elif t >= 3:
        _strip(4, VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, mf, m1, p0, p1)
    elif t == 2:
        _strip(2, VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, mf, m1, p0, p1)
    elif t == 1:
        _strip(1, VB, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, mf, m1, p0, p1)


_KW = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_KW)
def gemm_f32_avx512(a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1):  # type: ignore[no-untyped-def]
    """c[m0:m1, panels p0:p1] = act(a @ B + bias + res): a [M, K] and c [M, N] C-contiguous, bp the
    packed B (``pack_b``), bias padded to whole panels (read when hasb), res [M, N] (read when hasr;
    any [.., N] array otherwise), act an ACTIVATIONS code with lo/hi its parameters."""
    _gemm(64, 0, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1)


@njit(**_KW)
def gemm_f32_avx512n(a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1):  # type: ignore[no-untyped-def]
    """``gemm_f32_avx512`` with the 12 x 2 tile for products ending in 1 or 2 panels (``narrow_key``)."""
    _gemm(64, 1, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1)


@njit(**_KW)
def gemm_f32_avx2(a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1):  # type: ignore[no-untyped-def]
    """``gemm_f32_avx512`` with 32-byte vectors and AVX2's tile shapes."""
    _gemm(32, 0, a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, m0, m1, p0, p1)


KERNELS = {"avx512": gemm_f32_avx512, "avx512n": gemm_f32_avx512n, "avx2": gemm_f32_avx2}


def narrow_key(isa: str, M: int, n: int) -> str:
    """The kernel key for an M x n product on isa: "avx512n" where AVX-512's narrow tile runs (12 rows
    or more, whole panels ending in 1 or 2 past a multiple of 4), else isa."""
    return "avx512n" if isa == "avx512" and narrow_rule(M, -(-n // PANEL)) else isa


def narrow_rule(M: int, npan: int) -> bool:
    """``narrow_key``'s rule on M rows by npan panels."""
    return M >= 12 and (npan % 4 == 1 or npan % 4 == 2)


_narrow = njit(inline="always")(narrow_rule)  # the copy compiled into ``_small_product``


# --- packing -------------------------------------------------------------------------------------

def pack_b(b: np.ndarray) -> np.ndarray:
    """B [K, N] float32 -> the packed panels (1-D, ``panels(N) * K * 16`` elements)."""
    K, N = b.shape
    npan = panels(N)
    out = aligned_zeros((npan, K, PANEL), np.float32)  # 64-byte aligned: see jitort.allocator
    full = N // PANEL
    out[:full] = b[:, :full * PANEL].reshape(K, full, PANEL).transpose(1, 0, 2)
    if full < npan:
        out[full, :, :N - full * PANEL] = b[:, full * PANEL:]
    return out.reshape(-1)


def panels(n: int) -> int:
    return -(-n // PANEL)


def pad_bias(bias: np.ndarray | None, n: int) -> np.ndarray:
    """bias [N] (or None: zeros) as float32 padded to whole panels, what the kernels read."""
    out = np.zeros(panels(n) * PANEL, np.float32)
    if bias is not None:
        out[:n] = bias.reshape(-1)
    return out


# --- threads -------------------------------------------------------------------------------------
# A split product runs as a native job (threads.run_native): its parts are the C functions
# ``gemm_part_avx512`` / ``gemm_part_avx2`` (one chunk of the output each, through the same ``_gemm``
# as the one-thread kernels, so every element is bitwise what one thread computes), called by the pool's
# workers without the GIL. Handing a part to a worker then costs a cache line or two, not a GIL
# hand-over (20-45 us measured on the 2-vCPU Zen 4 VM with Python parts).

_FLOPS_PER_PART = 4e6  # below ~50 us of work per thread, handing work to a thread costs more
# Small-M products (decode steps, batch-1 MatMul): one part per 3 MiB of B, so products from 6 MiB of
# weights split (GPT-2's 768x2304 and 3072x768, a 768x2048 FFN at decode; not 768x768). Measured on
# the quiet 2-vCPU Zen 4 VM (``bench_gemm.py --split-sweep``, load 1.2, native parts; median time of
# a forced split / one thread, calls back to back): M=1 at 4.6 MiB 1.44, 6.9 MiB 1.02, 9 MiB 0.82,
# 16 MiB 0.62 (Python parts 2.18, 1.32, 0.83, 0.83); M=4 0.69 at 4.6 MiB, 0.64 at 9.2. In the
# decoders (bench_llm_decode.py --python-parts, 2 threads) this threshold ran 4-8 % faster than Python
# parts with 16 MiB. A worker that has slept (after JITORT_THREAD_SPIN cycles) is woken through a
# condition variable, which is what a split below ~7 MiB cannot pay for.
_BYTES_PER_PART = 3 << 20


def parts(M: int, N: int, K: int, threads: int) -> int:
    """How many threads a product is worth: one per ``_FLOPS_PER_PART`` of arithmetic, and for
    small-M products (fewer rows than a register tile: batch-1 MatMul, decode steps, classifier
    heads), which stream B once and are bound by reading it, one per ``_BYTES_PER_PART`` of B."""
    work = 2.0 * M * N * K / _FLOPS_PER_PART
    if M < MR:
        work = max(work, 4.0 * K * N / _BYTES_PER_PART)
    return max(1, min(threads, int(work)))


def rows4(M: int, npan: int) -> bool:
    """Whether M rows by npan panels take AVX-512's 4-row tiles alone (``_rows``): M a multiple of 4
    but not of 6, and the padding panels their 6-panel column tiles add over the 6-row tile's 4-panel
    ones, over all M rows, cost at most what re-reading B costs (counted as 6 rows' worth):
    16 x 64 panels yes (2 padding panels), 200 x 19 no (5 against 1)."""
    return M % MR != 0 and M % 4 == 0 and ((-npan) % 6 - (-npan) % 4) * M <= 6 * npan


_rows4 = njit(inline="always")(rows4)  # the kernels' copy (the Python one plans splits: no compile)


def _tile_rows(M: int, isa: str, npan: int) -> int:
    """Rows of the register tile ``_gemm`` uses for M rows by npan panels (the main tile, or the tail's)."""
    if isa == "avx512" and rows4(M, npan):
        return 4
    return MR if M >= MR else 1 if M == 1 else 2 if M == 2 else 4 if M <= 4 else 6


def split(M: int, N: int, K: int, isa: str, threads: int) -> list[tuple[int, int, int, int]]:
    """(m0, m1, p0, p1) chunks of the output: whole column tiles when there are enough of them (always
    for small M: a GEMV splits by N), else row blocks of whole tiles. One chunk when the work is too
    small to share (``parts``)."""
    nparts = parts(M, N, K, threads)
    out = np.empty(8 * nparts, np.int64)
    n = _split_into(M, panels(N), nparts, TILES[_VBYTES[isa]][_tile_rows(M, isa, panels(N))], out, 0)
    return [tuple(int(x) for x in out[4 * i:4 * i + 4]) for i in range(n)]  # type: ignore[misc]


@njit(inline="always")
def _split_into(M, npan, nparts, np_tile, out, at):  # type: ignore[no-untyped-def]
    """``split``'s chunks written as (m0, m1, p0, p1) rows from out[at]; returns their count."""
    if nparts <= 1:
        out[at], out[at + 1], out[at + 2], out[at + 3] = 0, M, 0, npan
        return 1
    ntiles = -(-npan // np_tile)
    want = 2 * nparts  # a few chunks per thread: a late thread costs at most one chunk
    mt = -(-M // MR)
    n = 0
    if ntiles >= want or ntiles >= mt:
        per = -(-ntiles // min(want, ntiles))
        for t in range(0, ntiles, per):
            o = at + 4 * n
            out[o], out[o + 1], out[o + 2], out[o + 3] = 0, M, t * np_tile, min(npan, (t + per) * np_tile)
            n += 1
        return n
    per = -(-mt // min(want, mt))
    for t in range(0, mt, per):
        o = at + 4 * n
        out[o], out[o + 1], out[o + 2], out[o + 3] = t * MR, min(M, (t + per) * MR), 0, npan
        n += 1
    return n


# the argument vector of a GEMM part: these slots, then (m0, m1, p0, p1) per chunk from slot _ARGC
_A, _M, _K, _BP, _BPN, _C, _N, _BIAS, _BIASN, _HASB, _R, _RM, _RN, _HASR, _ACT, _LO, _HI, _POSTF = range(18)
_ARGC = 20


@njit(cache=True, nogil=True)
def _gemm_argv(a, bp, c, bias, hasb, res, hasr, act, lo, hi, post, nparts, np_tile):  # type: ignore[no-untyped-def]
    """The argument vector of a split product (``gemm_part_*``) and its number of chunks."""
    argv = np.empty(_ARGC + 8 * nparts, np.int64)
    M, K = a.shape
    argv[_A], argv[_M], argv[_K] = addr(a), M, K
    argv[_BP], argv[_BPN] = addr(bp), bp.size
    argv[_C], argv[_N] = addr(c), c.shape[1]
    argv[_BIAS], argv[_BIASN], argv[_HASB] = addr(bias), bias.size, hasb
    argv[_R], argv[_RM], argv[_RN], argv[_HASR] = addr(res), res.shape[0], res.shape[1], hasr
    argv[_ACT], argv[_POSTF] = act, post
    set_f32_arg(argv, _LO, lo)
    set_f32_arg(argv, _HI, hi)
    n = _split_into(M, -(-c.shape[1] // PANEL), nparts, np_tile, argv, _ARGC)
    return argv, n


@njit(inline="always")
def _part(VB, NW, k, args):  # type: ignore[no-untyped-def]
    f32 = np.float32
    M = args[_M]
    a = carray(as_ptr(args[_A], f32), (M, args[_K]))
    bp = carray(as_ptr(args[_BP], f32), (args[_BPN],))
    c = carray(as_ptr(args[_C], f32), (M, args[_N]))
    bias = carray(as_ptr(args[_BIAS], f32), (args[_BIASN],))
    res = carray(as_ptr(args[_R], f32), (args[_RM], args[_RN]))
    o = _ARGC + 4 * k
    _gemm(VB, NW, a, bp, c, bias, args[_HASB], res, args[_HASR], args[_ACT], f32_arg(args, _LO), f32_arg(args, _HI),
          args[_POSTF], args[o], args[o + 1], args[o + 2], args[o + 3])


def gemm_part_avx512(k, args):  # type: ignore[no-untyped-def]
    """Part k of a split product (``_gemm_argv``'s argument vector), 64-byte vectors."""
    _part(64, 0, k, args)


def gemm_part_avx512n(k, args):  # type: ignore[no-untyped-def]
    """``gemm_part_avx512`` of the narrow kernel."""
    _part(64, 1, k, args)


def gemm_part_avx2(k, args):  # type: ignore[no-untyped-def]
    """``gemm_part_avx512`` with AVX2's vectors and tiles."""
    _part(32, 0, k, args)


_PARTS = {"avx512": gemm_part_avx512, "avx512n": gemm_part_avx512n, "avx2": gemm_part_avx2}
_PART_C = CFuncs(__name__, PART_SIG, _PARTS)


def part_address(isa: str) -> int:
    """Address of the GEMM part function for isa, compiled (or loaded from the cache) on first use."""
    return _PART_C.address(isa)


def threads() -> int:
    """The session's intra-op thread count; unset, the usable cores."""
    return intra_op_threads()


# The one-thread kernel and the split's part function are separate compiled code. A warm-up (a
# session's, ``jitort compile``'s, jitort.ray's on the driver) may take one path and a later process
# the other: jitort.ray's driver warmed up at 2 threads and split its products, and its 1-thread Ray
# workers then compiled ``gemm_f32_avx512`` at their first batch (6.4 s of CPU, seen with Numba's
# compile events in the actor). Whichever path runs first in a process also compiles (or loads) the
# other, so an artifact holds both.
# The same holds for AVX-512's narrow kernel: the first products (a short sequence) may have too few
# rows for it and a later, longer one take it, so a product with narrow columns readies it whatever
# its rows (tests/test_transformer_fusion.py: a second sequence length compiles nothing).
_BOTH_READY: set[str] = set()
_Z2 = np.zeros((1, 1), np.float32)  # R when there is none (never read)
_F0 = np.float32(0.0)


def _ready(key: str, a: np.ndarray, bp: np.ndarray, out: np.ndarray, bias: np.ndarray) -> None:
    """Compile (or load) both paths of kernel key: the one-thread kernel, run on no rows with
    ``gemm``'s argument types, and the split's part function."""
    _BOTH_READY.add(key)
    KERNELS[key](a, bp, out, bias, 0, _Z2, 0, 0, _F0, _F0, 0, 0, 0, 0, 0)
    part_address(key)


def gemm(a: np.ndarray, bp: np.ndarray, n: int, bias: np.ndarray, hasb: bool, res: np.ndarray | None = None,
         act: int = 0, lo: float = 0.0, hi: float = 0.0, out: np.ndarray | None = None,
         isa: str | None = None, nthreads: int | None = None) -> np.ndarray:
    """act(a @ B + bias [+ res]) for a [M, K] float32 and B packed by ``pack_b`` (N = n columns):
    bias padded by ``pad_bias`` (added when hasb), res [M, N] or None, act an ACTIVATIONS code."""
    M, K = a.shape
    if out is None:
        out = np.empty((M, n), np.float32)
    if M == 0 or n == 0:
        return out
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    isa = isa or default_isa()
    r = _Z2 if res is None else res
    hasr = 0 if res is None else 1
    flo = _F0 if lo == 0.0 else np.float32(lo)  # a NumPy scalar costs ~0.1 us to make: most calls have none
    fhi = _F0 if hi == 0.0 else np.float32(hi)
    post = post_address(act) if act >= _POST else 0
    nt = nthreads or intra_op_threads()
    nparts = parts(M, n, K, nt) if nt > 1 else 1
    key = narrow_key(isa, M, n)
    if isa == "avx512" and key == isa and narrow_rule(12, panels(n)) and "avx512n" not in _BOTH_READY:
        _ready("avx512n", a, bp, out, bias)  # more rows take it: see _BOTH_READY
    if nparts <= 1:  # one thread's work: no split
        KERNELS[key](a, bp, out, bias, int(hasb), r, hasr, act, flo, fhi, post, 0, M, 0, -(-n // PANEL))
        if nt > 1 and key not in _BOTH_READY:
            _ready(key, a, bp, out, bias)
        return out
    if key not in _BOTH_READY:
        _ready(key, a, bp, out, bias)
    argv, nchunks = _gemm_argv(a, bp, out, bias, int(hasb), r, hasr, act, flo, fhi, post, nparts,
                               TILES[_VBYTES[isa]][_tile_rows(M, isa, panels(n))])
    run_native(part_address(key), argv, nchunks, nt)
    return out


# --- small products, one thread: one compiled call ------------------------------------------------
# A decode step's projections (1 x 64 x 128 in the tiny decoder) compute for well under a
# microsecond, and the Python around them is what a call costs. Measured on the Intel Xeon (Ice Lake)
# dev VM, 1 thread, a [1, 1, 64] @ [64, 128] MatMul through ``gemm_ops.matmul_packed``: 8.3 us when it
# looked up the ISA's kernel, checked, reshaped and called the kernel's compiled entry (1.3 us of
# that the entry call, 15 arguments); ``_small_product`` instead reshapes, builds the argument vector
# and calls the split path's part function (the same ``_gemm``: bitwise what ``gemm`` computes) in one
# compiled call. Both its kernels (wide and AVX-512's narrow one) are addresses, so it compiles none.

@njit(cache=True, nogil=True, error_model="numpy")
def _small_product(fn, fnn, a, bp, bias, out, k, n, hasb, act, lo, hi, post):  # type: ignore[no-untyped-def]
    """out = act(a @ B + bias) for a [..., k] and out [..., n] float32 (C-contiguous, M = a.size / k
    rows each) through the part function at fn, or at fnn (AVX-512's narrow kernel, 0: none) where
    ``narrow_key`` takes it."""
    M = a.size // k
    if M == 0:
        return
    a2 = a.reshape(M, k)
    npan = (n + PANEL - 1) // PANEL
    f = fnn if fnn != 0 and _narrow(M, npan) else fn
    argv = np.empty(_ARGC + 4, np.int64)
    argv[_A], argv[_M], argv[_K] = addr(a2), M, k
    argv[_BP], argv[_BPN] = addr(bp), bp.size
    argv[_C], argv[_N] = addr(out), n
    argv[_BIAS], argv[_BIASN], argv[_HASB] = addr(bias), bias.size, hasb
    argv[_R], argv[_RM], argv[_RN], argv[_HASR] = addr(bias), 1, 1, 0  # no residual (never read)
    argv[_ACT], argv[_POSTF] = act, post
    set_f32_arg(argv, _LO, lo)
    set_f32_arg(argv, _HI, hi)
    argv[_ARGC], argv[_ARGC + 1], argv[_ARGC + 2], argv[_ARGC + 3] = 0, M, 0, npan  # one chunk: everything
    call_part(f, 0, addr(argv))


_SMALL_FNS: dict[str, tuple[int, int]] = {}


def gemm_small(a: np.ndarray, bp: np.ndarray, n: int, bias: np.ndarray, hasb: int, act: int, lo: float, hi: float,
               out: np.ndarray) -> bool:
    """out = act(a @ B + bias) on this thread when the product is not worth splitting (``parts``):
    True when done, False (nothing written) when the caller must take ``gemm``. The caller guarantees
    the types: a [..., K] and out [..., n] float32 with the same M = a.size / K rows (M > 0),
    C-contiguous and aligned, bp from ``pack_b``, bias from ``pad_bias``, hasb and act ints, lo and
    hi floats (float32 in the kernel, as in ``gemm``). Bitwise what ``gemm`` computes."""
    K = a.shape[-1]
    nt = intra_op_threads()
    if nt > 1 and parts(a.size // K, n, K, nt) > 1:
        return False
    isa = default_isa()
    fns = _SMALL_FNS.get(isa)
    if fns is None:
        fns = _SMALL_FNS[isa] = (part_address(isa), part_address("avx512n") if isa == "avx512" else 0)
        a2, o2 = a.reshape(-1, K), out.reshape(-1, n)
        for key in (isa, "avx512n") if isa == "avx512" else (isa,):
            if key not in _BOTH_READY:  # a later product with more rows, or split, runs gemm
                _ready(key, a2, bp, o2, bias)
    _small_product(fns[0], fns[1], a, bp, bias, out, K, n, hasb, act, lo, hi,
                   post_address(act) if act >= _POST else 0)
    return True
