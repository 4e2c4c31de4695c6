"""float32 2-D (and 1-D) MaxPool / AveragePool in explicit vector IR, one output row at a time, and its
split over planes as native parts (``pool.py`` picks it for undilated windows with column stride 1 or 2).

Why not the whole-plane loops of ``pool2d.py``: LLVM tunes Ice Lake for 256-bit auto-vectorisation,
turns the NaN-propagating ``np.maximum`` of a stride-2 read into gathers/scatters and blends, and
that kernel ran 3x3/2 on 64x111x111 at ~5 GB/s (0.46-0.75 ms), where onnxruntime's NCHWc pool (what it
runs inside a CNN) takes 0.19 ms. Here each output row is two short passes over L1-resident data:

- vertical: ``V[j] = op(rows of the window inside the input)[j]`` for the W input columns, whole
  vectors then one masked tail, into a row buffer that holds the reduction's identity in the left
  pad (pw values) and past W, so the horizontal pass needs no border case;
- horizontal: ``out[t] = op_e V[t*sw + e]`` for e < kw: column stride 1 is unaligned loads, stride 2
  two loads and an even-lane shuffle (``Vec.read``) per tap; averages then divide by the product of
  the window's per-axis tap counts (onnxruntime's divisor, either count_include_pad mode).

The input is read once from memory (a row shared by two windows is in L1 the second time) and the
output written once. The max is NaN-propagating (NaN if any tap is NaN, like ``np.maximum``: a
``maxps`` and a select on the accumulator's NaN); onnxruntime's SSE/AVX max returns the second
operand on NaN, so its result for a window holding a NaN depends on the position, and jitort's
propagation is the deterministic choice (the pooling docstring in pool.py says the same). The
identity of the max is -inf, so a window of -inf gives -inf.

The vector width is a literal (``VBYTES``), as in gemm.py: ``JITORT_ISA=avx2`` (``gemm.default_isa``)
runs the 32-byte kernels on an AVX-512 host, so tests cover both.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from jitort.kernels.gemm import default_isa
from jitort.kernels.native_parts import PART_SIG, CFuncs, addr, as_ptr
from jitort.kernels.threads import intra_op_threads, parts_for, run_native, scratch
from jitort.kernels.vecir import Vec

VBYTES = {"avx512": 64, "avx2": 32}
MAXV = 16  # the most float32 lanes of any path: buffers are padded by this many vectors' worth


def _op(v: Vec, avg: int, a: ir.Value, x: ir.Value) -> ir.Value:
    """Sum, or the plain max ``a > x ? a : x`` (one maxps; x when either is NaN: ``_reduce`` makes
    the max NaN-propagating)."""
    b = v.b
    if avg:
        return b.fadd(a, x)
    return b.select(b.fcmp_ordered(">", a, x), a, x)


def _unordered(v: Vec, a: ir.Value, x: ir.Value) -> ir.Value:
    """Lane mask: a or x is NaN (one compare)."""
    return v.b.fcmp_unordered("uno", a, x)


def _below(v: Vec, n: ir.Value) -> ir.Value:
    """Lane mask lane < n (0 <= n <= VL), compared in 32-bit lanes (one compare; ``Vec.below``
    compares 64-bit lane numbers, two compares and a mask merge for 16 lanes)."""
    i32v = ir.VectorType(v.i32, v.VL)
    ids = ir.Constant(i32v, list(range(v.VL)))
    u = ir.Constant(i32v, ir.Undefined)
    z = ir.Constant(i32v, [0] * v.VL)
    n32 = v.b.trunc(n, v.i32)
    nv = v.b.shuffle_vector(v.b.insert_element(u, n32, ir.Constant(v.i32, 0)), u, z)
    return v.b.icmp_signed("<", ids, nv)


def _vloop(v: Vec, n: ir.Value, body: Callable[[ir.Value, Any], None]) -> None:
    """body(j, None) for the whole vectors j = 0, VL, ... below n, then body(j, mask) once for the tail."""
    b = v.b
    nfull = b.mul(b.sdiv(n, v.c(v.VL)), v.c(v.VL))
    with cgutils.for_range_slice(b, v.c(0), nfull, v.c(v.VL)) as (j, _):
        body(j, None)
    with b.if_then(b.icmp_signed("<", nfull, n)):
        body(nfull, _below(v, b.sub(n, nfull)))


def _reduce(v: Vec, avg: int, k: ir.Value, first: ir.Value, tap: Callable[[ir.Value], ir.Value]) -> ir.Value:
    """op over tap(0) .. tap(k-1) (k >= 1): unrolled for k = 2 and 3 (the common windows), else a
    loop. The max is NaN-propagating: a chain of plain maxps, and a NaN flag from one unordered
    compare per two taps, then NaN where it is set. (A compare-and-select per max took two mask
    compares per tap on port 5, which the stride-2 shuffles and permutes need too; AVX-512's
    one-instruction ``vrangeps`` max returns the other operand for a quiet NaN, like maxNum.)"""
    b = v.b
    acc = cgutils.alloca_once(b, v.vty)
    b.store(first, acc)
    flag = cgutils.alloca_once_value(b, ir.Constant(v.mty, [0] * v.VL))
    with b.if_else(b.icmp_signed("<=", k, v.c(3))) as (small, big):
        with small:
            with b.if_then(b.icmp_signed(">=", k, v.c(2))):
                t1 = tap(v.c(1))
                two = _op(v, avg, first, t1)
                b.store(two, acc)
                if not avg:
                    b.store(_unordered(v, first, t1), flag)
                with b.if_then(b.icmp_signed("==", k, v.c(3))):
                    t2 = tap(v.c(2))
                    b.store(_op(v, avg, two, t2), acc)
                    if not avg:
                        b.store(b.or_(b.load(flag), _unordered(v, t2, t2)), flag)
        with big:
            if not avg:
                b.store(_unordered(v, first, first), flag)
            with cgutils.for_range_slice(b, v.c(1), k, v.c(1)) as (e, _):
                t = tap(e)
                b.store(_op(v, avg, b.load(acc), t), acc)
                if not avg:
                    b.store(b.or_(b.load(flag), _unordered(v, t, t)), flag)
    if avg:
        return b.load(acc)
    return b.select(b.load(flag), ir.Constant(v.vty, [float("nan")] * v.VL), b.load(acc))


def _literals(vbytes: Any, avg: Any) -> tuple[int, int] | None:
    if not isinstance(vbytes, types.IntegerLiteral) or not isinstance(avg, types.IntegerLiteral):
        return None
    return vbytes.literal_value, avg.literal_value


@intrinsic
def _vert(typingctx, vbytes, avg, src, step, n, dst, w):  # type: ignore[no-untyped-def]
    """dst[j] = op over r < n of src[r*step + j], j < w (src, dst: addresses; step in elements;
    vbytes and avg literals)."""
    lit = _literals(vbytes, avg)
    if lit is None:
        return None
    VB, AVG = lit
    sig = types.void(vbytes, avg, src, step, n, dst, w)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        _, _, src_, step_, n_, dst_, w_ = [context.cast(builder, x, t, types.int64)
                                           for x, t in zip(args, signature.args)]
        b = builder
        v = Vec(context, b, types.float32, VB)
        sp, dp = v.address(src_), v.address(dst_)

        def body(j: ir.Value, mask: Any) -> None:
            def tap(r: ir.Value) -> ir.Value:
                p = v.at(sp, b.add(b.mul(r, step_), j))
                return v.load(p) if mask is None else v.mload(p, mask)
            res = _reduce(v, AVG, n_, tap(v.c(0)), tap)
            if mask is None:
                v.store(res, v.at(dp, j))
            else:
                v.mstore(res, v.at(dp, j), mask)
        _vloop(v, w_, body)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _hori(typingctx, vbytes, avg, sw, kw, src, dst, ow, cx, cy):  # type: ignore[no-untyped-def]
    """dst[t] = op over e < kw of src[t*sw + e], t < ow (sw 1 or 2; src readable far enough past
    the last window, see ``scratch_floats``); averages divide by cx[t] * cy (cx: float32, padded to
    whole vectors)."""
    lit = _literals(vbytes, avg)
    if lit is None:
        return None
    VB, AVG = lit
    sig = types.void(vbytes, avg, sw, kw, src, dst, ow, cx, cy)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        _, _, sw_, kw_, src_, dst_, ow_, cx_, cy_ = [context.cast(builder, x, t, types.int64)
                                                     for x, t in zip(args, signature.args)]
        b = builder
        v = Vec(context, b, types.float32, VB)
        sp, dp, cp = v.address(src_), v.address(dst_), v.address(cx_)
        cyv = v.splat(b.sitofp(cy_, v.fty))

        def make(s: int) -> None:
            def body(j: ir.Value, mask: Any) -> None:
                base = v.at(sp, b.mul(j, v.c(s)))
                res = _reduce(v, AVG, kw_, v.read(base, s, v.c(s)), lambda e: v.read(v.at(base, e), s, v.c(s)))
                if AVG:
                    res = b.fdiv(res, b.fmul(v.load(v.at(cp, j)), cyv))
                if mask is None:
                    v.store(res, v.at(dp, j))
                else:
                    v.mstore(res, v.at(dp, j), mask)
            _vloop(v, ow_, body)

        with b.if_else(b.icmp_signed("==", sw_, v.c(1))) as (one, two):
            with one:
                make(1)
            with two:
                make(2)
        return context.get_dummy_value()
    return sig, codegen


# --- planes of at most 32 columns (AVX-512): one output row in registers ---------------------------
# Late CNN layers (7x7 .. 28x28 planes) have rows of one or two vectors: the row buffer's bookkeeping
# (two passes, their loop set-up and masks) cost ~45 cycles per row, more than the arithmetic. Here
# the window's rows are loaded (masked, the reduction's identity past W) into two registers V0, V1
# (columns 0..31), and each output vector's tap e is one two-source permute of them (``vpermt2ps``)
# with a lane table built once per shape (``small_table``): lane t reads column t*sw + e - pw, or the
# identity where that is outside the registers (the left pad).

TB_LANES = 16  # a table entry: 16 int32 column numbers; masks follow the 2 x KMAX entries
KMAX = 8


@intrinsic
def _small_row(typingctx, vbytes, avg, src, step, n, dst, w, ow, kw, tb, cx, cy):  # type: ignore[no-untyped-def]
    """dst[t] = op over e < kw of V[t*sw + e - pw] for t < ow, V[j] = op over r < n of src[r*step + j]
    (j < w <= 32, ow <= 32): see the section comment; tb, cx: addresses of ``small_table`` and the
    column counts. Emits nothing for 32-byte vectors (no two-source permute: callers never take it)."""
    lit = _literals(vbytes, avg)
    if lit is None:
        return None
    VB, AVG = lit
    sig = types.void(vbytes, avg, src, step, n, dst, w, ow, kw, tb, cx, cy)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if VB != 64:
            return context.get_dummy_value()
        _, _, src_, step_, n_, dst_, w_, ow_, kw_, tb_, cx_, cy_ = [
            context.cast(builder, x, t, types.int64) for x, t in zip(args, signature.args)]
        b = builder
        v = Vec(context, b, types.float32, VB)
        VL = v.VL
        i32v = ir.VectorType(v.i32, VL)
        ident = ir.Constant(v.vty, [0.0 if AVG else float("-inf")] * VL)
        mload_f = cgutils.get_or_insert_function(
            b.module, ir.FunctionType(v.vty, [v.vpty, v.i32, v.mty, v.vty]), f"llvm.masked.load.v{VL}f32.p0")
        perm_f = cgutils.get_or_insert_function(
            b.module, ir.FunctionType(v.vty, [v.vty, i32v, v.vty]), "llvm.x86.avx512.vpermi2var.ps.512")
        sp, dp, cp = v.address(src_), v.address(dst_), v.address(cx_)
        tp = b.inttoptr(tb_, v.i32.as_pointer())

        def rows(off: int) -> ir.Value:
            m = _below(v, b.sub(w_, v.c(off)))

            def tap(r: ir.Value) -> ir.Value:
                p = b.bitcast(v.at(sp, b.add(b.mul(r, step_), v.c(off))), v.vpty)
                return b.call(mload_f, [p, ir.Constant(v.i32, 4), m, ident])
            return _reduce(v, AVG, n_, tap(v.c(0)), tap)

        v0 = rows(0)
        v1s = cgutils.alloca_once_value(b, ident)
        with b.if_then(b.icmp_signed(">", w_, v.c(VL))):
            b.store(rows(VL), v1s)
        v1 = b.load(v1s)
        cyv = v.splat(b.sitofp(cy_, v.fty))

        def out_vector(u: int) -> None:
            def tap(e: ir.Value) -> ir.Value:
                ent = b.add(v.c(u * KMAX), e)
                idx = b.load(b.bitcast(b.gep(tp, [b.mul(ent, v.c(TB_LANES))]), i32v.as_pointer()), align=4)
                bits = b.trunc(b.load(b.gep(tp, [b.add(ent, v.c(2 * KMAX * TB_LANES))])), ir.IntType(VL))
                return b.select(b.bitcast(bits, v.mty), b.call(perm_f, [v0, idx, v1]), ident)
            res = _reduce(v, AVG, kw_, tap(v.c(0)), tap)
            if AVG:
                res = b.fdiv(res, b.fmul(v.load(v.at(cp, v.c(u * VL))), cyv))
            v.mstore(res, v.at(dp, v.c(u * VL)), _below(v, b.sub(ow_, v.c(u * VL))))

        out_vector(0)
        with b.if_then(b.icmp_signed(">", ow_, v.c(VL))):
            out_vector(1)
        return context.get_dummy_value()
    return sig, codegen


def small_table(w: int, ow: int, kw: int, sw: int, pw: int) -> np.ndarray:
    """``_small_row``'s lane table: for output vector u < 2 and tap e < kw, 16 column numbers
    (t*sw + e - pw for lane t = 16u + l), then per (u, e) a 16-bit mask of the lanes that read the
    registers (the others take the identity: the left pad, or columns past 32, all padding)."""
    tb = np.zeros(2 * KMAX * TB_LANES + 2 * KMAX, np.int32)
    for u in range(2):
        for e in range(min(kw, KMAX)):
            m = 0
            for lane in range(TB_LANES):
                t = u * TB_LANES + lane
                i = t * sw + e - pw
                if t < ow and 0 <= i < 2 * TB_LANES:
                    tb[(u * KMAX + e) * TB_LANES + lane] = i
                    m |= 1 << lane
            tb[2 * KMAX * TB_LANES + u * KMAX + e] = m
    return tb


# geometry vector g: the slots below (what depends on the input shape only; pool.py caches it)
H, W, OH, OW, KH, KW, SH, SW, PH, PW, EH, CIP, NSCR, SMALL = range(14)
GEO_SIZE = 14


BATCH = 8  # output rows whose vertical passes run before their horizontal ones (see _planes)


def _row_floats(g: np.ndarray) -> int:
    """float32 words of one row buffer: left pad, W (or the horizontal pass's reads past the last
    window: whole vectors of column stride 2, plus the taps), rounded to 64 bytes."""
    ow = -(-int(g[OW]) // MAXV) * MAXV
    return -(-(int(g[PW]) + max(int(g[W]), int(g[SW]) * ow) + int(g[KW]) + 2 * MAXV) // MAXV) * MAXV


def scratch_floats(g: np.ndarray) -> int:
    """float32 words of one thread's scratch: BATCH row descriptors (4 int64: valid input rows,
    divisor rows, first input row's address, output row's address), then BATCH row buffers,
    64-byte aligned."""
    return 8 * BATCH // MAXV * MAXV + BATCH * _row_floats(g)


@njit(inline="always")
def _planes(VB, AVG, xa, oa, scr, nscr, cxa, tba, g, p0, p1):  # type: ignore[no-untyped-def]
    """Planes p0..p1 of x (address xa, [P, H, W]) into out (oa, [P, OH, OW]) with nscr float32 words
    of scratch at scr (64-byte aligned); on AVX-512, planes of at most 32 columns (g[SMALL]) take
    ``_small_row`` (lane table at tba).

    Output rows (of any plane: late layers have planes of 6-14 rows) go in batches of BATCH: the
    vertical passes of a batch, then its horizontal passes, so a horizontal pass does not read what
    was stored an instant before at another alignment (a store the CPU cannot forward)."""
    h, w, oh_n, ow_n = g[H], g[W], g[OH], g[OW]
    kh, kw, sh, sw, ph, pw, eh, cip = g[KH], g[KW], g[SH], g[SW], g[PH], g[PW], g[EH], g[CIP]
    if VB == 64 and g[SMALL] != 0:
        for c in range(p0, p1):
            for oh in range(oh_n):
                y0 = oh * sh - ph
                lo = max(y0, 0)
                n = min(y0 + kh, h) - lo
                _small_row(VB, AVG, xa + (c * h + lo) * w * 4, w, n, oa + (c * oh_n + oh) * ow_n * 4, w, ow_n, kw,
                           tba, cxa, min(kh, h + eh - y0) if cip else n)
        return
    nmeta = 8 * BATCH // MAXV * MAXV
    meta = carray(as_ptr(scr, np.int64), (4 * BATCH,))
    L = (nscr - nmeta) // BATCH
    vba = scr + 4 * nmeta
    vb = carray(as_ptr(vba, np.float32), (BATCH * L,))
    ident = np.float32(0.0) if AVG else np.float32(-np.inf)
    for i in range(vb.shape[0]):
        vb[i] = ident
    c, oh = p0, 0
    q = p0 * oh_n
    q1 = p1 * oh_n
    while q < q1:
        nb = min(BATCH, q1 - q)
        for i in range(nb):
            y0 = oh * sh - ph
            lo = max(y0, 0)
            n = min(y0 + kh, h) - lo
            meta[4 * i] = n
            meta[4 * i + 1] = min(kh, h + eh - y0) if cip else n
            meta[4 * i + 2] = xa + (c * h + lo) * w * 4
            meta[4 * i + 3] = oa + (c * oh_n + oh) * ow_n * 4
            oh += 1
            if oh == oh_n:
                c, oh = c + 1, 0
        for i in range(nb):
            _vert(VB, AVG, meta[4 * i + 2], w, meta[4 * i], vba + (i * L + pw) * 4, w)
        for i in range(nb):
            _hori(VB, AVG, sw, kw, vba + i * L * 4, meta[4 * i + 3], ow_n, cxa, meta[4 * i + 1])
        q += nb


_KW = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_KW)
def maxpool_f32_avx512(x, out, scr, cx, tb, g, p0, p1):  # type: ignore[no-untyped-def]
    """out[p0:p1] = MaxPool of x[p0:p1] (x [P, H, W], out [P, OH, OW] C-contiguous float32; g the
    geometry vector; scr ``scratch_floats(g)`` float32, 64-byte aligned; cx unused)."""
    _planes(64, 0, addr(x), addr(out), addr(scr), g[NSCR], addr(cx), addr(tb), g, p0, p1)


@njit(**_KW)
def maxpool_f32_avx2(x, out, scr, cx, tb, g, p0, p1):  # type: ignore[no-untyped-def]
    _planes(32, 0, addr(x), addr(out), addr(scr), g[NSCR], addr(cx), addr(tb), g, p0, p1)


@njit(**_KW)
def avgpool_f32_avx512(x, out, scr, cx, tb, g, p0, p1):  # type: ignore[no-untyped-def]
    """AveragePool; cx: per output column the window's tap count, float32, padded to whole vectors."""
    _planes(64, 1, addr(x), addr(out), addr(scr), g[NSCR], addr(cx), addr(tb), g, p0, p1)


@njit(**_KW)
def avgpool_f32_avx2(x, out, scr, cx, tb, g, p0, p1):  # type: ignore[no-untyped-def]
    _planes(32, 1, addr(x), addr(out), addr(scr), g[NSCR], addr(cx), addr(tb), g, p0, p1)


KERNELS = {("avx512", 0): maxpool_f32_avx512, ("avx2", 0): maxpool_f32_avx2,
           ("avx512", 1): avgpool_f32_avx512, ("avx2", 1): avgpool_f32_avx2}


# --- native parts: a split over planes --------------------------------------------------------------
# argv: these slots, then the geometry vector; part k computes planes [k P / n, (k+1) P / n) with the
# scratch at SCR + k * NSCR float32 words
_X, _OUT, _SCR, _NSCR, _CX, _P, _N, _TB = range(8)
_G0 = 8


@njit(cache=True, nogil=True)
def part_argv(x, out, scr, nscr, cx, tb, g, nparts):  # type: ignore[no-untyped-def]
    """The argument vector of a split pooling (``*_part_*``)."""
    argv = np.empty(_G0 + GEO_SIZE, np.int64)
    argv[_X], argv[_OUT], argv[_SCR], argv[_NSCR], argv[_CX] = addr(x), addr(out), addr(scr), nscr, addr(cx)
    argv[_P], argv[_N], argv[_TB] = x.shape[0], nparts, addr(tb)
    for i in range(GEO_SIZE):
        argv[_G0 + i] = g[i]
    return argv


@njit(inline="always")
def _part(VB, AVG, k, args):  # type: ignore[no-untyped-def]
    a = carray(args, (_G0 + GEO_SIZE,))
    g = a[_G0:]
    P, n, nscr = a[_P], a[_N], a[_NSCR]
    _planes(VB, AVG, a[_X], a[_OUT], a[_SCR] + k * nscr * 4, nscr, a[_CX], a[_TB], g, k * P // n, (k + 1) * P // n)


def maxpool_part_avx512(k, args):  # type: ignore[no-untyped-def]
    """Part k of a split MaxPool (``part_argv``'s argument vector)."""
    _part(64, 0, k, args)


def maxpool_part_avx2(k, args):  # type: ignore[no-untyped-def]
    _part(32, 0, k, args)


def avgpool_part_avx512(k, args):  # type: ignore[no-untyped-def]
    _part(64, 1, k, args)


def avgpool_part_avx2(k, args):  # type: ignore[no-untyped-def]
    _part(32, 1, k, args)


_PART_C = CFuncs(__name__, PART_SIG, {("avx512", 0): maxpool_part_avx512, ("avx2", 0): maxpool_part_avx2,
                                      ("avx512", 1): avgpool_part_avx512, ("avx2", 1): avgpool_part_avx2})


def part_address(isa: str, avg: int) -> int:
    """Address of the part function (compiled or loaded from the cache on first use)."""
    return _PART_C.address((isa, avg))


# A split is worth it from ~0.5 MiB of input and output per thread (~25 us at the ~20 GB/s these
# kernels run at; a native part's hand-over costs a few us).
_BYTES_PER_PART = 512 << 10
_BOTH_READY: set[tuple[str, int]] = set()
_SMALL_ROWS = True  # False: every plane through the row buffer (for comparisons)


def geometry(h: int, w: int, oh: int, ow: int, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int, eh: int,
             cip: int) -> np.ndarray:
    """The geometry vector g (with its scratch size)."""
    g = np.array([h, w, oh, ow, kh, kw, sh, sw, ph, pw, eh, cip, 0, 0], np.int64)
    g[NSCR] = scratch_floats(g)
    g[SMALL] = int(w <= 2 * TB_LANES and ow <= 2 * TB_LANES and kw <= KMAX and _SMALL_ROWS)
    return g


def run(x: np.ndarray, out: np.ndarray, g: np.ndarray, cx: np.ndarray, tb: np.ndarray, avg: int) -> None:
    """x [P, H, W] -> out [P, OH, OW] (float32, C-contiguous): MaxPool (avg 0) or AveragePool (avg 1,
    cx the per-column tap counts; tb ``small_table``), on the session's threads when the planes are worth splitting."""
    key = (default_isa(), avg)
    nscr = int(g[NSCR])
    P = x.shape[0]
    nt = intra_op_threads()
    nparts = parts_for(P, x.nbytes + out.nbytes, _BYTES_PER_PART) if nt > 1 else 1
    if nparts <= 1:
        KERNELS[key](x, out, scratch(nscr, np.dtype(np.float32)), cx, tb, g, 0, P)
        if nt > 1 and key not in _BOTH_READY:  # a later split finds its part compiled (see gemm.py)
            _BOTH_READY.add(key)
            part_address(*key)
        return
    if key not in _BOTH_READY:
        _BOTH_READY.add(key)
        KERNELS[key](x, out, scratch(nscr, np.dtype(np.float32)), cx, tb, g, 0, 0)
    n = min(P, 2 * nparts)  # a few parts per thread: a late thread costs at most one
    scr = scratch(n * nscr, np.dtype(np.float32))
    run_native(part_address(*key), part_argv(x, out, scr, nscr, cx, tb, g, n), n, nt)
