"""The GEMM under convolution: packed weights @ activations, one fma chain per output element.

``gemm_packed`` computes ``C[M, N] = A[M, K] @ B[K, N]`` (then bias + activation) for the Conv paths
(1x1, im2col, the 16 Winograd products). A is a weight matrix packed once at compile time
(``pack_weights``); B is the activation matrix, any row stride; C any row stride. The conv kernels
call it through one compiled C entry point (``gemm_address``, ``gemm_at``; see the end of this file).

Why not BLAS: OpenBLAS sums an element's K products in an order that depends on where the element
falls in its register tile (measured on its Haswell/Zen sgemm: output rows 0-5 and 6-11 of each
12-row tile, and the tail tiles, differ in the last bit for identical weight rows). A network
whose output channels share weights then gets channel-dependent rounding, which onnxruntime (MLAS:
every element one sequential fma chain) does not have. light_squeezenet's shipped input drives all
1000 logits to 9.48e9, equal in onnxruntime; one ulp (1024 there) between channels turned its
final Softmax into a one-hot instead of the uniform 0.001 the expected output holds.

Here every element of C is ``fma(a[K-1], b[K-1], ... fma(a[1], b[1], a[0] * b[0]))`` in k order,
whatever its row, column, tile or K block (a K block resumes the chain from C, which float32/64
stores exactly), then ``+ bias``, then the activation. Identical rows of A give bitwise identical
rows of C, and the result does not depend on the blocking parameters below (nor on threads).

Blocking: B is packed per (K block x column block) into panels of NR columns ([KB][NR]
contiguous; the block, KC x NC, stays in L2), A's layout is [M/MR][K][MR] so a row tile's K block
is contiguous (and stays in L1 while it passes every panel of the block). Row tiles are the outer
loop, so C is written row by row in runs, and each tile prefetches its output lines for writing
before its k loop: on the Intel Xeon Ice Lake-SP VM, with C and B not in cache (1 thread), resnet50's
1x1 256x64 @ 64x3136 took 1.89 ms with panels outermost (Goto/BLIS order: C written down 120 rows
per panel) and no prefetch, 1.47 with the prefetch, 1.00 with both; 512x128 @ 128x784 1.21 -> 0.91;
with everything in cache the two orders are within noise. The register tile is vector IR (vecir.py):
MR = 6 rows x ``PANEL_VECS`` vectors, 24 accumulators on AVX-512 (6 x 64 floats), 12 on AVX2 (6 x 16),
with a panel's last columns on 1 to PANEL_VECS - 1 vectors. Measured on the 2-vCPU Intel Xeon Ice
Lake-SP VM (AVX-512, fp32 FMA peak 177 GFLOP/s at 1 thread): a register-only loop of the tile from
L1 runs at 166 GFLOP/s as 12 rows x 2 vectors (14 loads per 24 fmas) but 176-178 as 6 x 4 (10
loads), and 6 x 4 holds 176 streaming B from L2 where 12 x 2 drops to 148. Whole GEMMs, 1 thread,
warm, 12 x 2 -> 6 x 4 (with 256 KiB column blocks): M 256 K 64 N 3136 124 -> 135 GFLOP/s, 512x128x784
131 -> 146, 256x256x1024 128 -> 152, 2048x512x49 107 -> 123. Inside light_resnet50 (its convs'
inputs and outputs mostly out of L2) the gain shrinks to 2-3 % of the 1x1 and Winograd convs' time
(per-node profiles against onnxruntime's, old and new code alternating), within the whole model's
noise: there the convs are bound by moving data, where onnxruntime's NCHWc kernels (its 1x1 at
160 GFLOP/s) keep it in cache. On a 2-vCPU AMD EPYC (Zen 3, AVX2): the 6 x 16 tile alone runs at
103 GFLOP/s float32, whole GEMMs at 85-105 % of OpenBLAS (~84).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numba
import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from jitort.allocator import aligned_zeros
from jitort.cache import record_compile
from jitort.kernels.jit import njit_one
from jitort.kernels.vecir import VB, Vec, fma_rows, fma_tile

MR = 6  # rows per register tile: the packed-weight layout depends on it, so it is fixed everywhere
# Row tiles per register tile where a tile has at most two vectors of columns (the implicit GEMM's
# short rows and row tails, conv.py): with AVX-512's 32 vector registers two MR-row tiles run as one
# 2 MR x NR tile (24 accumulators; two B vector loads per 24 fmas instead of per 12). conv_setup's
# Winograd rule (``WIDE_TILE_RULES``) was measured with these tiles. Measured on the
# Intel Xeon Ice Lake-SP VM (AVX-512), 1 thread, whole GEMMs with A and B in cache: 240x256x768 105 ->
# 139 GFLOP/s, 128x512x784 104 -> 127, 256x1024x196 102 -> 122, 1024x256x196 117 -> 133;
# light_resnet50 106 -> 85 ms. AVX2's 16 registers hold one tile. The packed layout is the same either
# way, and so is every element's fma chain (bitwise-identical results).
ROW_TILES = 2 if VB == 64 else 1
_KC = 256  # K block: a row tile's weights (MR x KC) stay in L1 while it passes the block's panels
# Vectors per packed B panel (the register tile is MR rows x PANEL_VECS vectors): AVX-512 6 x 4 (24
# accumulators), AVX2 6 x 2 (12 of its 16 registers).
PANEL_VECS = 4 if VB == 64 else 2
_BPANELS = 65536  # elements of packed B panels per column block (KC x NC: 256 KiB, in L2)
_BSLACK = 16  # elements skipped to start the panels on a 64-byte boundary (jitort.allocator: +15-19 % on Ice Lake)
BBLOCK = _BPANELS + _BSLACK  # elements of gemm_packed's packing scratch


# --- the register tile ---------------------------------------------------------------------------

def tile_codegen(v: Vec, nvec: int, a: ir.Value, K: ir.Value, b_vecs: Callable[[ir.Value], list[ir.Value]],
                 c: ir.Value, ldc: ir.Value, mrows: ir.Value, ncols: ir.Value, spill: ir.Value, init: ir.Value,
                 bias: ir.Value, fin: ir.Value, lo: ir.Value, hi: ir.Value, a2: ir.Value | None = None,
                 z: ir.Value | None = None, ldz: ir.Value | None = None) -> None:
    """An MR x (nvec vectors) tile: C[r, :ncols] = fin(C0 + sum_k a[k*MR + r] * B[k, :]) for
    r < mrows (a, c, bias: element pointers; ldc: C's row stride). C0 is zero, or C itself when
    init != 0 (resuming an earlier K block's fma chain). fin: ``Vec.epilogue``. Stores (and
    init's loads) are full vectors when ncols fills them or ``spill`` != 0 (the columns past
    ncols belong to data written later), else masked past ncols. With ``a2`` (the next row tile's
    weights) the tile is 2 MR rows: rows MR + r read a2[k*MR + r] (mrows up to 2 MR). With ``z``
    (a pointer, null for none; row stride ldz) and fin != 0, z[r, :ncols] is added after the bias,
    before the activation (a fused residual Add)."""
    b = v.b
    MR2 = MR if a2 is None else 2 * MR
    NR = nvec * v.VL
    full = b.or_(b.icmp_signed(">=", ncols, v.c(NR)), b.icmp_signed("!=", spill, v.c(0)))
    masks = [v.below(ncols, j * v.VL) for j in range(nvec)]

    def each_row(body: Callable[[int, ir.Value, bool], None]) -> None:
        for r in range(MR2):
            with b.if_then(b.icmp_signed(">", mrows, v.c(r)), likely=True):
                row = v.at(c, b.mul(v.c(r), ldc))
                with b.if_else(full, likely=True) as (then, other):
                    with then:
                        body(r, row, True)
                    with other:
                        body(r, row, False)

    # starting accumulators: zero, or C (through stack slots: mem2reg makes them registers)
    slots = [[cgutils.alloca_once_value(b, v.zero) for _ in range(nvec)] for _ in range(MR2)]

    def load_c(r: int, row: ir.Value, is_full: bool) -> None:
        for j in range(nvec):
            p = v.at(row, j * v.VL)
            b.store(v.load(p) if is_full else v.mload(p, masks[j]), slots[r][j])

    with b.if_then(b.icmp_signed("!=", init, v.c(0))):
        each_row(load_c)
    # the output lines' write misses overlap the k loop instead of stalling the stores after it
    for r in range(MR2):
        with b.if_then(b.icmp_signed(">", mrows, v.c(r)), likely=True):
            row = v.at(c, b.mul(v.c(r), ldc))
            for j in range(0, NR, 64 // v.isz):
                v.prefetch_write(v.at(row, j))
    start = [[b.load(slots[r][j]) for j in range(nvec)] for r in range(MR2)]
    if a2 is None:
        res = fma_tile(v, MR, nvec, K, lambda k: v.at(a, b.mul(k, v.c(MR))), b_vecs, start)
    else:
        res = fma_rows(v, MR2, nvec, K, lambda k, r: b.load(v.at(a if r < MR else a2, b.add(b.mul(k, v.c(MR)),
                                                                                          v.c(r % MR)))),
                       b_vecs, start)
    finish = v.epilogue(fin, lo, hi)

    def store_c(r: int, row: ir.Value, is_full: bool, zrow: ir.Value | None = None) -> None:
        bv = v.splat(b.load(v.at(bias, r)))
        for j in range(nvec):
            zv = None
            if zrow is not None:
                zp = v.at(zrow, j * v.VL)
                zv = v.load(zp) if is_full else v.mload(zp, masks[j])
            x, p = finish(res[r][j], bv, zv), v.at(row, j * v.VL)
            if is_full:
                v.store(x, p)
            else:
                v.mstore(x, p, masks[j])

    if z is None:
        each_row(store_c)
        return
    hasz = b.and_(b.icmp_unsigned("!=", b.ptrtoint(z, v.i64), v.c(0)), b.icmp_signed("!=", fin, v.c(0)))
    with b.if_else(hasz) as (then, other):
        with then:
            each_row(lambda r, row, is_full: store_c(r, row, is_full, v.at(z, b.mul(v.c(r), ldz))))
        with other:
            each_row(store_c)


@intrinsic
def _tile(typingctx, a, ao, ao2, bp, cp, ldc, kb, mrows, ncols, init, bias, bo, fin, lo, hi, zp, ldz,  # type: ignore[no-untyped-def]
          nv, rt):
    """``tile_codegen`` on a packed B panel at address ``bp`` (rows of nv vectors), A from element
    ao of a, C at address cp: C[r, :ncols] = fin(C0 + sum_k A[r, k] Bp[k, :]) for r < mrows,
    k < kb. fin 0: the sums; 1: + bias[bo + r]; 2: + bias, Relu; 3: + bias, Clip(lo, hi).
    rt (literal): row tiles, 1 or 2 (``ROW_TILES``: rows MR + r from element ao2 of a). zp: the
    address of a residual added with the bias (row stride ldz), or 0."""
    if not all(isinstance(t, types.IntegerLiteral) for t in (nv, rt)) or not isinstance(a, types.Array):
        return None
    dt = a.dtype
    if bias.dtype != dt or lo != dt or hi != dt:
        return None
    NV, RT = nv.literal_value, rt.literal_value
    sig = types.void(a, ao, ao2, bp, cp, ldc, kb, mrows, ncols, init, bias, bo, fin, lo, hi, zp, ldz, nv, rt)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        av, ao_, ao2_, bp_, cp_, ldc_, kb_, mrows_, ncols_, init_, biasv, bo_, fin_, lo_, hi_, zp_, ldz_, _, _ = args
        v = Vec(context, builder, dt)
        bbase = v.address(bp_)

        def b_vecs(k: ir.Value) -> list[ir.Value]:
            row = v.at(bbase, builder.mul(k, v.c(NV * v.VL)))
            return [v.load(v.at(row, j * v.VL)) for j in range(NV)]

        a2 = v.data(signature.args[0], av, ao2_) if RT == 2 else None
        tile_codegen(v, NV, v.data(signature.args[0], av, ao_), kb_, b_vecs, v.address(cp_), ldc_, mrows_, ncols_,
                     v.c(0), init_, v.data(signature.args[10], biasv, bo_), fin_, lo_, hi_, a2, v.address(zp_), ldz_)
        return context.get_dummy_value()

    return sig, codegen


# --- packing -------------------------------------------------------------------------------------

def pack_weights(w: np.ndarray, group: int = 1) -> np.ndarray:
    """W [M, K] (group blocks of M/group rows) -> [group, Mb*K*MR]: row tile i of group g holds
    ``W[g*Mg + i*MR + r, k]`` at ``(i*K + k)*MR + r``, zero-padded to whole tiles."""
    M, K = w.shape
    Mg = M // group
    Mb = -(-Mg // MR)
    out = aligned_zeros((group, Mb, K, MR), w.dtype)
    wg = w.reshape(group, Mg, K)
    full = Mg // MR
    # one strided copy per tile row r (long contiguous reads): 2-3x faster than copying a
    # transposed [.., MR, K] view, whose inner loop is MR elements long
    for r in range(MR):
        out[:, :full, :, r] = wg[:, r:full * MR:MR, :]
    for r in range(Mg - full * MR):
        out[:, full, :, r] = wg[:, full * MR + r, :]
    return out.reshape(group, -1)


@intrinsic
def _pack_panel(typingctx, b, src, ldb, dst, kb, ncols, nv):  # type: ignore[no-untyped-def]
    """Panel[k, :] = B[k, :ncols] for k < kb, zero-filled to nv vectors: ``src`` is the address of
    B[0, 0] (row stride ldb elements), ``dst`` of the panel ([kb][nv*VL] contiguous). b: any
    array of the element type (typing only)."""
    if not isinstance(nv, types.IntegerLiteral) or not isinstance(b, types.Array):
        return None
    NV = nv.literal_value
    dt = b.dtype
    sig = types.void(b, src, ldb, dst, kb, ncols, nv)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        _, src_, ldb_, dst_, kb_, ncols_, _ = args
        v = Vec(context, builder, dt)
        sbase, dbase = v.address(src_), v.address(dst_)
        masks = [v.below(ncols_, j * v.VL) for j in range(NV)]
        with builder.if_else(builder.icmp_signed(">=", ncols_, v.c(NV * v.VL)), likely=True) as (then, other):
            for is_full in (True, False):
                with (then if is_full else other):
                    with cgutils.for_range(builder, kb_) as loop:
                        srow = v.at(sbase, builder.mul(loop.index, ldb_))
                        drow = v.at(dbase, builder.mul(loop.index, v.c(NV * v.VL)))
                        for j in range(NV):
                            sp = v.at(srow, j * v.VL)
                            v.store(v.load(sp) if is_full else v.mload(sp, masks[j]), v.at(drow, j * v.VL))
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", nogil=True, error_model="numpy")
def _pack_cols(b, src, ldb, dst, kb, ncols, nv):  # type: ignore[no-untyped-def]
    """``_pack_panel`` with a run-time vector count nv (1 to 4: one literal instance each)."""
    if nv == 4:
        _pack_panel(b, src, ldb, dst, kb, ncols, 4)
    elif nv == 3:
        _pack_panel(b, src, ldb, dst, kb, ncols, 3)
    elif nv == 2:
        _pack_panel(b, src, ldb, dst, kb, ncols, 2)
    else:
        _pack_panel(b, src, ldb, dst, kb, ncols, 1)


@njit(inline="always", nogil=True, error_model="numpy")
def _pack_b(b, k0, k1, j0, j1, NR, bp):  # type: ignore[no-untyped-def]
    """bp <- B[k0:k1, j0:j1] as panels [KB][NR]; a last, narrower panel of w columns is
    [KB][ceil(w / VL) vectors], zero-filled past j1."""
    kb = k1 - k0
    n = j1 - j0
    nf = n // NR
    w = n - nf * NR
    isz = b.itemsize
    VL = VB // isz
    ldb = b.strides[0] // isz
    src = b.ctypes.data + (k0 * ldb + j0) * isz
    dst = bp.ctypes.data
    for p in range(nf):
        _pack_cols(bp, src + p * NR * isz, ldb, dst + p * kb * NR * isz, kb, NR, NR // VL)
    if w:
        _pack_cols(bp, src + nf * NR * isz, ldb, dst + nf * kb * NR * isz, kb, w, (w + VL - 1) // VL)


@njit(inline="always", nogil=True, error_model="numpy")
def _tile_nv(ap, a1, pp, cpt, ldc, kb, mr, w, init, bias, bi, f, lo, hi, zpt, ldz, nv):  # type: ignore[no-untyped-def]
    """``_tile`` (one row tile) with a run-time vector count nv (1 to 4)."""
    if nv == 4:
        _tile(ap, a1, a1, pp, cpt, ldc, kb, mr, w, init, bias, bi, f, lo, hi, zpt, ldz, 4, 1)
    elif nv == 3:
        _tile(ap, a1, a1, pp, cpt, ldc, kb, mr, w, init, bias, bi, f, lo, hi, zpt, ldz, 3, 1)
    elif nv == 2:
        _tile(ap, a1, a1, pp, cpt, ldc, kb, mr, w, init, bias, bi, f, lo, hi, zpt, ldz, 2, 1)
    else:
        _tile(ap, a1, a1, pp, cpt, ldc, kb, mr, w, init, bias, bi, f, lo, hi, zpt, ldz, 1, 1)


@njit(inline="always", nogil=True, error_model="numpy")  # compiled inside its callers only: _gemm_c, ConvTranspose
def gemm_packed(ap, ao, M, K, b, c, bias, bo, fin, lo, hi, bp, zp, ldz):  # type: ignore[no-untyped-def]
    """c[:M] = fin(A @ b (+ z)): A packed (``pack_weights``) starting at element ``ao`` of ap, b [K, N]
    and c [M, N] 2-D views with unit inner stride. fin as in ``_tile`` (bias[bo:bo+M]); bp is a
    scratch of ``BBLOCK`` elements (allocate it once per conv call). zp: the address of a residual
    z [M, N] (row stride ldz, unit inner stride) added after the bias (fin != 0 only), or 0."""
    N = b.shape[1]
    if M == 0 or N == 0:
        return
    isz = c.itemsize
    VL = VB // isz
    NR = PANEL_VECS * VL
    ldc = c.strides[0] // isz
    Mb = (M + MR - 1) // MR
    kc = min(K, _KC)
    NC = max(NR, ((bp.shape[0] - _BSLACK) // max(kc, 1)) // NR * NR)
    nkb = max(1, (K + _KC - 1) // _KC)
    bpd = bp.ctypes.data
    bpd += (-bpd) & 63  # whole-vector panel loads never straddle two cache lines
    bp = bp[(bpd - bp.ctypes.data) // isz:]
    cpd = c.ctypes.data
    for j0 in range(0, N, NC):
        j1 = min(N, j0 + NC)
        nf = (j1 - j0) // NR
        w = (j1 - j0) - nf * NR
        for kbi in range(nkb):
            k0 = kbi * _KC
            kb = min(K, k0 + _KC) - k0
            init = 1 if kbi > 0 else 0
            f = fin if kbi == nkb - 1 else 0
            _pack_b(b, k0, k0 + kb, j0, j1, NR, bp)
            # row tiles outermost: a tile's weights (MR x KC) stay in L1 while it passes the
            # panels (L2), and C is written row by row, in runs the hardware prefetcher follows
            for i in range(Mb):
                a1 = ao + (i * K + k0) * MR
                bi = bo + i * MR
                mr = min(MR, M - i * MR)
                zrow = zp + (i * MR * ldz + j0) * isz if zp != 0 and f != 0 else 0
                for p in range(nf):
                    pp = bpd + p * kb * NR * isz
                    cpt = cpd + (i * MR * ldc + j0 + p * NR) * isz
                    zpt = zrow + p * NR * isz if zrow != 0 else 0
                    _tile_nv(ap, a1, pp, cpt, ldc, kb, mr, NR, init, bias, bi, f, lo, hi, zpt, ldz, PANEL_VECS)
                if w:  # the last, narrower panel
                    pp = bpd + nf * kb * NR * isz
                    cpt = cpd + (i * MR * ldc + j0 + nf * NR) * isz
                    zpt = zrow + nf * NR * isz if zrow != 0 else 0
                    _tile_nv(ap, a1, pp, cpt, ldc, kb, mr, w, init, bias, bi, f, lo, hi, zpt, ldz, (w + VL - 1) // VL)


# --- one compiled GEMM per process, called by address ----------------------------------------------
# Numba links a callee's code into every kernel that calls it, and LLVM optimises and emits it again
# there: the packed GEMM (~1.5 s of cold compile) was processed once on its own and once more in
# each conv kernel. The kernels instead call one C entry point (a ``cfunc``, cached on disk like
# every library kernel) through its address, which conv passes in at run time: the address is never
# part of a kernel's code, so kernels stay cacheable across processes. One indirect call per GEMM
# (a column block of a conv) costs nothing measurable.

def _gemm_c(ap, nap, ao, M, K, b, ldb, N, c, ldc, bias, nbias, bo, fin, lo, hi, bp, nbp,  # type: ignore[no-untyped-def]
            zp, ldz):
    """``gemm_packed`` on raw pointers: A (nap elements), B [K, N] with row stride ldb, C [M, N] with
    row stride ldc, bias (nbias), the packing scratch (nbp), the residual's address (or 0) and row
    stride."""
    gemm_packed(carray(ap, (nap,)), ao, M, K, carray(b, (K, ldb))[:, :N], carray(c, (M, ldc))[:, :N],
                carray(bias, (nbias,)), bo, fin, lo, hi, carray(bp, (nbp,)), zp, ldz)


_GEMM_C: dict[str, Any] = {}  # dtype -> the cfunc; kept alive for the process (callers hold its address)
_GEMM_C_LOCK = threading.Lock()


def gemm_part(dt: np.dtype) -> str:
    """The GEMM entry point's name as a compile part (``jitort.compile_pool``): one per dtype and
    process, whichever conv path needs it."""
    return f"{__name__}.gemm[{np.dtype(dt)}]"


def gemm_address(dt: np.dtype) -> int:
    """The address of the GEMM's C entry point for element type dt (float32/64), compiled or loaded
    from the cache on first use in this process."""
    f = _GEMM_C.get(dt.str)
    if f is None:
        with _GEMM_C_LOCK:
            f = _GEMM_C.get(dt.str)
            if f is None:
                T = numba.from_dtype(dt)
                P = types.CPointer(T)
                i = types.intp
                sig = types.void(P, i, i, i, i, P, i, i, P, i, P, i, i, i, T, T, P, i, i, i)
                t0 = time.perf_counter()
                f = _GEMM_C[dt.str] = cfunc(sig, cache=True, error_model="numpy")(_gemm_c)
                if not f.cache_hits:  # compiled, not loaded: report it like the kernels' compiles
                    record_compile(f"{__name__}._gemm_c[{dt}]", time.perf_counter() - t0)
    return int(f.address)


@intrinsic
def _call_gemm(typingctx, addr, ap, nap, ao, M, K, b, ldb, N, c, ldc, bias, nbias, bo, fin, lo, hi,  # type: ignore[no-untyped-def]
               bp, nbp, zp, ldz):
    """Call the C entry point at ``addr`` (``gemm_address``); the pointer arguments come as integer
    addresses (``arr.ctypes.data``) and become element pointers here."""
    if not isinstance(lo, types.Float) or hi != lo:
        return None
    T = lo
    argtys = (addr, ap, nap, ao, M, K, b, ldb, N, c, ldc, bias, nbias, bo, fin, lo, hi, bp, nbp, zp, ldz)
    pointers = {1, 6, 9, 11, 17}  # positions (in argtys) of the arrays' addresses

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fty = context.get_value_type(T)
        i64 = ir.IntType(64)
        vals, tys = [], []
        for k in range(1, len(args)):
            v = args[k]
            if k in pointers:
                v = builder.inttoptr(context.cast(builder, v, argtys[k], types.intp), fty.as_pointer())
                tys.append(fty.as_pointer())
            elif k in (15, 16):
                v = context.cast(builder, v, argtys[k], T)
                tys.append(fty)
            else:
                v = context.cast(builder, v, argtys[k], types.intp)
                tys.append(i64)
            vals.append(v)
        fnty = ir.FunctionType(ir.VoidType(), tys)
        fn = builder.inttoptr(context.cast(builder, args[0], argtys[0], types.intp), fnty.as_pointer())
        builder.call(fn, vals)
        return context.get_dummy_value()

    return types.void(*argtys), codegen


@njit_one(any_layout=("b", "c", "z"), nogil=True, error_model="numpy", cache=True)
def gemm_at(addr, ap, ao, M, K, b, c, bias, bo, fin, lo, hi, bp, z):  # type: ignore[no-untyped-def]
    """``gemm_packed(ap, ao, M, K, b, c, bias, bo, fin, lo, hi, bp, z...)`` through the C entry point
    at ``addr`` (``gemm_address`` of the element type). b, c and z (a residual [M, N] added after
    the bias, or None) need a unit inner stride, as there."""
    isz = c.itemsize
    N = b.shape[1]
    ldb = b.strides[0] // isz if K > 1 else N
    ldc = c.strides[0] // isz if M > 1 else N
    zp, ldz = 0, 0
    if z is not None:
        zp = z.ctypes.data
        ldz = z.strides[0] // isz if M > 1 else N
    _call_gemm(addr, ap.ctypes.data, ap.shape[0], ao, M, K, b.ctypes.data, ldb, N, c.ctypes.data, ldc,
               bias.ctypes.data, bias.shape[0], bo, fin, lo, hi, bp.ctypes.data, bp.shape[0], zp, ldz)
