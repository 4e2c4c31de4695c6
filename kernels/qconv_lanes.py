"""QLinearConv with output channels in vector lanes: int8 products summed exactly by ``vpdpbusd``
(AVX-512 VNNI) or ``pmaddwd`` (AVX2).

onnxruntime runs quantised CNNs as int8 dot products on the host's integer instructions (its
QLinearConv, NHWC); jitort's portable path (qconv.py: centred integers in float32 and BLAS sgemm in
exact chunks) ran a quantised ResNet-style network 8.6x slower than it, and 2x slower than the same
network in float32. This path computes the same exact int32 sums in integer registers and
requantises them there.

Layout, as conv_lanes.py for float32: the input is copied once per call into the zero-point-padded
NHWC form (kernels/qconv_layout.py: per pixel its channels contiguous, padded to a multiple of 4;
with stride 2 split into its 2 x 2 phases, so every tap reads consecutive pixels of one phase
plane). A register tile holds RT output positions x 32 or 64 output channels;
per k = (tap, 4 input channels) it broadcasts each position's 4 channel bytes (one 32-bit load) and
multiplies them into the weights of its channels. Positions run over the phase plane's grid (row
length Wq), so a tile spans row ends; those past OW are computed and not stored. The tile stores NHWC
bytes: the output itself when it is NHWC with whole channel pairs (jitort/passes/quant_nhwc.py keeps
a quantised network NHWC between its convolutions), else a buffer that one pass copies out
(qconv_layout.py's ``to_nchw``, ``to_nhwc``). Work splits by blocks of positions, so threads never
write the same output line. kernels/qmatmul.py runs the integer matrix products on the same kernels
(A's rows as the positions of a 1 x 1 convolution), storing the requantised bytes, the int32 sums
or float32 (``mode``: Q8, I32, F32). The tiles (``TILES``):

- ``vnni``: 6 positions x 4 zmm of 16 int32 sums (64 channels; a last group of at most 32 channels
  takes an 8 x 2 tile, ``TAIL``); ``vpdpbusd`` adds 4 u8 x s8 products per lane (``pack``'s weights:
  per 16 channels and k, 16 words of 4 bytes). 6 x 4 against 8 x 2, alternating processes on the Ice
  Lake VM: ResNet-50's 3x3 and 1x1 QLinearConvs 0.43-0.55 ms against 0.46-0.76, the
  ``quantize_dynamic`` BERT-base layer 1.13-1.15x onnxruntime's time against 1.19-1.25x. With 12 x 2
  (24 sums, as the float32 kernel) the 12 broadcasts LLVM hoists ahead of the products did not fit
  the 32 registers: the sums spilled and 64->64 3x3 on 56x56 took 1.27 ms of tiles instead of 0.42.
- ``avx2`` (hosts without VNNI: AMD Zen 3, older Intel): 3 positions x 4 ymm of 8 int32 sums (12 of the
  16 ymm registers). AVX2 has no widening byte dot product that is exact (``pmaddubsw`` saturates
  its int16 pair sums: onnxruntime's u8s8 kernel on such hosts does), so the 4 input bytes become
  two zero-extended int16 pairs, (x0, x2) and (x1, x3), by a mask and a shift, and ``pmaddwd`` sums
  each with the matching sign-extended weight pairs (``wide``: made from ``pack``'s bytes at the
  first call) into int32, exactly. The weights are read as memory operands of ``pmaddwd`` (an empty
  asm barrier between positions keeps LLVM from hoisting the 8 weight vectors into registers, where
  they spilled the sums). On this Ice Lake VM with Zen 3 code generation (``NUMBA_CPU_NAME=znver3``,
  OpenBLAS on its Haswell kernels) the quantised ResNet of benchmarks/bench_quant.py ran 75-83 ms on
  the float32-BLAS path and 42-47 ms on these tiles.

Exactness and onnxruntime's semantics: x is read as u8 (an int8 input with its sign bit flipped,
x + 128, and so its zero point); the sum is sum(x w) over all taps + ``comp[m]`` = bias[m] -
zx * sum(w[m]), where padded pixels hold zx: the int32 sum (x - zx)(w) + bias, exactly, as qconv.py
forms it (weights must have zero zero points: what onnxruntime's quantisers write for int8
weights; others take qconv.py's path). The requantisation is qconv.py's ``_requantise`` in vector
form: float32(sum) * scale[m], clamped to [lo - zy, hi - zy], rounded half to even, + zy. A host
with neither instruction set runs ``qconv_lanes_portable``: the same bytes from the same packed
weights, slowly (integer loops).
"""
from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from jitort.allocator import aligned_empty
from jitort.kernels.convutil import share
from jitort.kernels.native_parts import PART_SIG, CFuncs, addr, f32_arg, set_f32_arg
from jitort.kernels.threads import intra_op_threads, run_native, run_parts

R = 8  # positions per VNNI register tile, the most of any tile
VLANES = 16  # output channels per weight block (one zmm of int32 lanes)
TB = 16  # tiles per unit of work
STRIDES = (1, 2)
Q8, I32, F32 = 0, 1, 2  # what a kernel stores (``mode``): requantised 8-bit values, the int32 sums, or float32


def applies(x_dtype: np.dtype, w: np.ndarray, w_zp: np.ndarray | None, group: int, strides: tuple[int, ...],
            dilations: tuple[int, ...], begin: tuple[int, ...]) -> bool:
    """Whether this kernel computes the conv: 2-D, one group, int8 weights with zero zero points,
    8-bit input, equal strides of 1 or 2, no dilation, no negative begin pads."""
    return (w.ndim == 4 and w.dtype == np.int8 and group == 1 and np.dtype(x_dtype) in (np.dtype(np.uint8),
                                                                                    np.dtype(np.int8))
            and (w_zp is None or not np.any(w_zp)) and len(set(strides)) == 1 and strides[0] in STRIDES
            and all(d == 1 for d in dilations) and all(p >= 0 for p in begin))


def pack(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 W [M, C, KH, KW] -> (the weights as int32 words [2 ceil(M / 32), KH KW ceil(C / 4), 16]:
    block i, tap t = kh KW + kw, channel quad q, lane l holds the 4 bytes W[16 i + l, 4 q .. 4 q + 3,
    kh, kw], zero past M and C; the row sums sum(W[m]) as int64 [M])."""
    M, C, KH, KW = w.shape
    C4 = -(-C // 4)
    nb = 2 * -(-M // 32)
    full = np.zeros((nb * VLANES, KH, KW, C4 * 4), np.int8)
    full[:M, :, :, :C] = w.transpose(0, 2, 3, 1)
    words = full.reshape(nb, VLANES, KH * KW * C4, 4).transpose(0, 2, 1, 3)
    out = aligned_empty((nb, KH * KW * C4 * VLANES), np.int32)  # whole-vector loads on 64-byte lines
    out[:] = np.ascontiguousarray(words).view(np.int32).reshape(nb, KH * KW * C4 * VLANES)
    return out, w.reshape(M, -1).astype(np.int64).sum(axis=1)


def unpack(wl: np.ndarray, M: int, C: int) -> np.ndarray:
    """The int8 W [M, C] that ``pack`` packed as 1 x 1 filters (for a fallback that needs the matrix)."""
    nb = wl.shape[0]
    return wl.view(np.int8).reshape(nb, -1, VLANES, 4).transpose(0, 2, 1, 3).reshape(nb * VLANES, -1)[:M, :C]


def wide(wl: np.ndarray) -> np.ndarray:
    """``pack``'s weights as the AVX2 tiles read them: per block and k, for lanes 0-7 then 8-15, the
    lanes' (w0, w2) then (w1, w3) as sign-extended int16 pairs (32 bytes each; 128 bytes per k)."""
    b = wl.view(np.int8).reshape(wl.shape[0], -1, 2, 8, 4).astype(np.int16)  # block, k, half, lane, byte
    out = aligned_empty((wl.shape[0], b.shape[1] * 64), np.int16)
    v = out.reshape(wl.shape[0], -1, 2, 2, 8, 2)  # block, k, half, lo/hi, lane, pair
    v[:, :, :, 0] = b[..., 0::2]
    v[:, :, :, 1] = b[..., 1::2]
    return out


_WIDE: dict[int, np.ndarray] = {}


def wide_of(wl: np.ndarray) -> np.ndarray:
    """``wide(wl)``, made at wl's first call on AVX2 tiles and kept while wl lives."""
    w = _WIDE.get(id(wl))
    if w is None:
        w = _WIDE[id(wl)] = wide(wl)
        weakref.finalize(wl, _WIDE.pop, id(wl), None)
    return w


TILES = {  # kind: (positions per tile, output channels per tile, int32 lanes per vector)
    "vnni": (6, 64, 16),  # 6 x 4 zmm of sums
    "avx2": (3, 32, 8),  # 3 x 4 ymm of sums (16 ymm registers: 12 sums, the broadcast bytes as 2 pairs)
}
TAIL = {"vnni": (R, 32)}  # the tile of a last group of at most 32 channels (positions, channels)


def _make_tile(kind: str, RT: int, width: int) -> Any:
    """The register tile of ``kind`` (RT positions x width channels) as an intrinsic on integer
    addresses (see ``TILES``: holding only its own instruction set's intrinsics)."""
    L = TILES[kind][2]

    def tile(typingctx, x, off, K, w, kw, skip, rows, p0, Cp, Wq, OW, out, Mp, c0, comp, scale, zy, lo, hi, mode, bias):  # type: ignore[no-untyped-def]
        """One tile: positions p0 .. p0 + RT - 1 of the phase grid (row length Wq), of which
        p0 + skip .. p0 + rows - 1 are stored (those at ow >= OW not), output channels c0 ..
        c0 + width - 1. x: the padded NHWC bytes at position 0 (position p at p Cp bytes); off:
        int64 [K] byte offsets of each k; w: the tile's first weight block at k = 0, the next kw
        bytes after it (vnni: 64 bytes per k, 16 channels x 4 bytes; avx2: ``wide``'s 128); out:
        the NHWC output, position oh OW + ow at element (oh OW + ow) Mp, of bytes (mode Q8: the
        sums plus comp requantised), int32 (mode I32: the sums plus comp) or float32 (mode F32:
        float32(sums plus comp) * scale + bias); comp int32, scale and bias float32 per channel
        (>= c0 + width elements; bias read in mode F32 only)."""
        sig = types.void(x, off, K, w, kw, skip, rows, p0, Cp, Wq, OW, out, Mp, c0, comp, scale, zy, lo, hi, mode, bias)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            b = builder
            i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
            (x_, off_, K_, w_, kw_, skip_, rows_, p0_, Cp_, Wq_, OW_, out_, Mp_, c0_, comp_, scale_) = [
                context.cast(b, a, t, types.int64) for a, t in zip(args[:16], signature.args[:16])]
            zy_, lo_, hi_ = args[16:19]  # float32
            mode_, bias_ = [context.cast(b, a, t, types.int64) for a, t in zip(args[19:], signature.args[19:])]
            vi = ir.VectorType(i32, L)
            vf = ir.VectorType(ir.FloatType(), L)
            vb = ir.VectorType(i8, L)
            vh = ir.VectorType(i16, 2 * L)
            rint = cgutils.get_or_insert_function(b.module, ir.FunctionType(vf, [vf]), f"llvm.rint.v{L}f32")
            NV = width // L  # vectors of sums per position
            if kind == "vnni":
                dot = cgutils.get_or_insert_function(b.module, ir.FunctionType(vi, [vi, vi, vi]),
                                                     "llvm.x86.avx512.vpdpbusd.512")
                wq = [b.add(w_, b.mul(kw_, ir.Constant(i64, q))) for q in range(NV)]  # vector q: block q
                kstep = 64
            else:
                madd = cgutils.get_or_insert_function(b.module, ir.FunctionType(vi, [vh, vh]),
                                                      "llvm.x86.avx2.pmadd.wd")
                # vector q: lanes 8 (q % 2) .. of block q // 2; its (w0, w2) pairs, the (w1, w3) 32 bytes on
                wq = [b.add(w_, b.add(b.mul(kw_, ir.Constant(i64, q // 2)), ir.Constant(i64, 64 * (q % 2))))
                      for q in range(NV)]
                kstep = 128

            def c(v: int) -> ir.Constant:
                return ir.Constant(i64, v)

            def ptr(a: ir.Value, ty: ir.Type) -> ir.Value:
                return b.inttoptr(a, ty.as_pointer())

            def splat(v: ir.Value, vt: ir.VectorType) -> ir.Value:
                u = ir.Constant(vt, ir.Undefined)
                return b.shuffle_vector(b.insert_element(u, v, ir.Constant(i32, 0)), u,
                                        ir.Constant(ir.VectorType(i32, vt.count), [0] * vt.count))

            h8 = ir.Constant(vh, [8] * 2 * L)
            lowb = ir.Constant(vh, [0xFF] * 2 * L)
            xb = b.add(x_, b.mul(p0_, Cp_))
            pre = b.block
            loop = b.append_basic_block("q.k")
            done = b.append_basic_block("q.done")
            zero = ir.Constant(vi, [0] * L)
            b.cbranch(b.icmp_signed(">", K_, c(0)), loop, done)
            b.position_at_end(loop)
            k = b.phi(i64)
            k.add_incoming(c(0), pre)
            acc = [[b.phi(vi) for _ in range(NV)] for _ in range(RT)]
            for r in range(RT):
                for q in range(NV):
                    acc[r][q].add_incoming(zero, pre)
            o = b.load(b.gep(ptr(off_, i64), [k]))
            kb = b.mul(k, c(kstep))
            if kind == "vnni":
                wv = [b.load(ptr(b.add(w, kb), vi), align=4) for w in wq]
            else:  # an empty asm that may write memory: no load is reused across it
                barrier = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), "", "~{memory}", side_effect=True)
            xo = b.add(xb, o)
            new = []
            for r in range(RT):
                if kind == "avx2":
                    if r:  # the weights' loads again, folded into pmaddwd (hoisted once per k, they spilled)
                        b.call(barrier, [])
                    wlo = [b.load(ptr(b.add(w, kb), vh), align=4) for w in wq]
                    whi = [b.load(ptr(b.add(b.add(w, kb), c(32)), vh), align=4) for w in wq]
                a = b.load(ptr(b.add(xo, b.mul(c(r), Cp_)), i32), align=4)
                av = splat(a, vi)
                if kind == "vnni":
                    new.append([b.call(dot, [acc[r][q], av, wv[q]]) for q in range(NV)])
                    continue
                # the 4 input bytes x0..x3 as int16 pairs (x0, x2) and (x1, x3), zero-extended: products
                # of pairs summed into int32 by pmaddwd, exactly (|x w| <= 255 x 128)
                ah = b.bitcast(av, vh)
                xlo, xhi = b.and_(ah, lowb), b.lshr(ah, h8)
                new.append([b.add(b.add(acc[r][q], b.call(madd, [xlo, wlo[q]])), b.call(madd, [xhi, whi[q]]))
                            for q in range(NV)])
            k1 = b.add(k, c(1))
            end = b.block
            k.add_incoming(k1, end)
            for r in range(RT):
                for q in range(NV):
                    acc[r][q].add_incoming(new[r][q], end)
            b.cbranch(b.icmp_signed("<", k1, K_), loop, done)
            b.position_at_end(done)
            fin = []
            for r in range(RT):
                row = []
                for q in range(NV):
                    p = b.phi(vi)
                    p.add_incoming(zero, pre)
                    p.add_incoming(new[r][q], end)
                    row.append(p)
                fin.append(row)
            # requantise (qconv._requantise per lane) and store each position's channel bytes
            compv = [b.load(ptr(b.add(comp_, b.mul(b.add(c0_, c(L * q)), c(4))), vi), align=4) for q in range(NV)]
            scalev = [b.load(ptr(b.add(scale_, b.mul(b.add(c0_, c(L * q)), c(4))), vf), align=4) for q in range(NV)]
            flo = splat(b.fsub(lo_, zy_), vf)
            fhi = splat(b.fsub(hi_, zy_), vf)
            zyv = splat(b.fptosi(zy_, i32), vi)
            oh = b.sdiv(p0_, Wq_)
            ow = b.sub(p0_, b.mul(oh, Wq_))
            one = c(1)
            for r in range(RT):
                if r:
                    ow = b.add(ow, one)
                    wrap = b.icmp_signed("==", ow, Wq_)
                    ow = b.select(wrap, c(0), ow)
                    oh = b.select(wrap, b.add(oh, one), oh)
                keep = b.and_(b.and_(b.icmp_signed("<=", skip_, c(r)), b.icmp_signed("<", c(r), rows_)),
                              b.icmp_signed("<", ow, OW_))
                with b.if_then(keep, likely=True):
                    at = b.add(b.mul(b.add(b.mul(oh, OW_), ow), Mp_), c0_)  # the element of channel c0
                    with b.if_else(b.icmp_signed("==", mode_, c(Q8)), likely=True) as (as_q8, wide_out):
                        with wide_out:  # 4-byte elements: the int32 sums themselves, or as float32
                            is_f32 = b.icmp_signed("==", mode_, c(F32))
                            for q in range(NV):
                                dst = b.add(out_, b.mul(b.add(at, c(L * q)), c(4)))
                                v = b.add(fin[r][q], compv[q])
                                with b.if_else(is_f32) as (as_f32, as_i32):
                                    with as_f32:
                                        ch = b.mul(b.add(c0_, c(L * q)), c(4))
                                        bv = b.load(ptr(b.add(bias_, ch), vf), align=4)
                                        b.store(b.fadd(b.fmul(b.sitofp(v, vf), scalev[q]), bv), ptr(dst, vf), align=4)
                                    with as_i32:
                                        b.store(v, ptr(dst, vi), align=4)
                        with as_q8:
                            for q in range(NV):
                                f = b.fmul(b.sitofp(b.add(fin[r][q], compv[q]), vf), scalev[q])
                                f = b.select(b.fcmp_ordered(">=", f, flo), f, flo)
                                f = b.select(b.fcmp_ordered(">", f, fhi), fhi, f)
                                y = b.add(b.fptosi(b.call(rint, [f]), vi), zyv)
                                b.store(b.trunc(y, vb), ptr(b.add(b.add(out_, at), c(L * q)), vb), align=1)
            return context.get_dummy_value()

        return sig, codegen

    tile.__name__ = f"_qtile_{kind}"
    return intrinsic(tile)


def _make_run(kind: str, RT: int, width: int) -> Any:
    """The tiles of RT positions x width channels over positions pb0 .. pb1 - 1 (of PV) of one
    channel group: a tile past the grid's end is moved back to end at its last position (it reads
    inside the grid: an NHWC input read in place has nothing after it) and stores only its own."""
    tile = _make_tile(kind, RT, width)

    @njit(inline="always")
    def run(xa, offa, K, wg, kb, pb0, pb1, PV, Cp, Wq, OW, oa, Mp, c0, ca, sa, zy, lo, hi, mode, ba):  # type: ignore[no-untyped-def]
        for p0 in range(pb0, pb1, RT):
            n = min(RT, pb1 - p0)
            q0 = p0
            if p0 + RT > PV and PV >= RT:
                q0 = PV - RT
            tile(xa, offa, K, wg, kb, p0 - q0, p0 - q0 + n, q0, Cp, Wq, OW, oa, Mp, c0, ca, sa, zy, lo, hi, mode, ba)

    return run


def _make_lanes(kind: str) -> Any:
    """The kernel's loop over tiles of ``kind``, on addresses (what the native part functions have):
    units of (channel group, block of TB tiles' positions), position-block-major, so parts write
    disjoint output rows (a row is one cache line of Mp = 64 bytes at 64 channels: split by channels,
    two threads wrote halves of every line and the 2-thread call took longer than one thread's)."""
    RT, width, _ = TILES[kind]
    main = _make_run(kind, RT, width)
    RT2, width2 = TAIL.get(kind, (RT, width))
    tail = _make_run(kind, RT2, width2) if kind in TAIL else main
    kstep = 64 if kind == "vnni" else 128  # bytes of a weight block (16 channels) per k

    @njit(inline="always")
    def lanes(xa, Cp, offa, K, wa, ca, sa, zy, lo, hi, Wq, OH, OW, M, oa, Mp, mode, ba, part, nparts):  # type: ignore[no-untyped-def]
        ng = (M + width - 1) // width
        PV = (OH - 1) * Wq + OW
        blk = RT * TB
        u0, u1 = share(ng * ((PV + blk - 1) // blk), part, nparts)
        kb = K * kstep
        for u in range(u0, u1):
            g = u % ng
            pb0 = (u // ng) * blk
            pb1 = min(PV, pb0 + blk)
            c0 = width * g
            wg = wa + (c0 // VLANES) * kb
            if M - c0 <= width2:  # a last group the narrower tile covers
                tail(xa, offa, K, wg, kb, pb0, pb1, PV, Cp, Wq, OW, oa, Mp, c0, ca, sa, zy, lo, hi, mode, ba)
            else:
                main(xa, offa, K, wg, kb, pb0, pb1, PV, Cp, Wq, OW, oa, Mp, c0, ca, sa, zy, lo, hi, mode, ba)

    return lanes


@njit(inline="always")
def _row(o, mode):  # type: ignore[no-untyped-def]
    """Elements per output row: o is the output's bytes [positions, row bytes] in every mode (one
    compiled kernel whatever it stores)."""
    return o.shape[1] if mode == Q8 else o.shape[1] // 4


_lanes_vnni = _make_lanes("vnni")
_lanes_avx2 = _make_lanes("avx2")


@njit(cache=True, nogil=True)
def qconv_lanes_vnni(xp, Cp, off, wl, comp, scale, zy, lo, hi, Wq, OH, OW, M, o, mode, bias, part, nparts):  # type: ignore[no-untyped-def]
    """One image: o [OH OW, Mp] (NHWC, Mp >= ceil(M / 32) 32 elements of what ``mode`` stores, as
    bytes) from the padded phase planes xp (flat bytes, pixels of Cp bytes, R pixels' worth beyond),
    this part's share of (32 channels, block of TB tiles) units, on VNNI tiles (wl: ``pack``'s
    weights)."""
    _lanes_vnni(addr(xp), Cp, addr(off), off.shape[0], addr(wl), addr(comp), addr(scale), zy, lo, hi, Wq, OH, OW, M,
                addr(o), _row(o, mode), mode, addr(bias), part, nparts)


@njit(cache=True, nogil=True)
def qconv_lanes_avx2(xp, Cp, off, wl, comp, scale, zy, lo, hi, Wq, OH, OW, M, o, mode, bias, part, nparts):  # type: ignore[no-untyped-def]
    """``qconv_lanes_vnni`` on AVX2 tiles (wl: ``wide``'s weights)."""
    _lanes_avx2(addr(xp), Cp, addr(off), off.shape[0], addr(wl), addr(comp), addr(scale), zy, lo, hi, Wq, OH, OW, M,
                addr(o), _row(o, mode), mode, addr(bias), part, nparts)


# the split form's argument vector (``part_argv``): addresses, sizes, and the float32 scalars' bits
_XA, _CP, _OFF, _K, _WA, _CA, _SA, _ZY, _LO, _HI, _WQ, _OH, _OW, _M, _OA, _MP, _MODE, _BA, _NP = range(19)


@njit(cache=True, nogil=True)
def part_argv(xp, Cp, off, wl, comp, scale, zy, lo, hi, Wq, OH, OW, M, o, mode, bias, nparts):  # type: ignore[no-untyped-def]
    """The argument vector of a split ``qconv_lanes_*`` (``part_address``), the arrays kept alive by the caller."""
    a = np.zeros(19, np.int64)
    a[_XA], a[_CP], a[_OFF], a[_K], a[_WA], a[_CA], a[_SA] = (addr(xp), Cp, addr(off), off.shape[0], addr(wl),
                                                            addr(comp), addr(scale))
    set_f32_arg(a, _ZY, zy)
    set_f32_arg(a, _LO, lo)
    set_f32_arg(a, _HI, hi)
    a[_WQ], a[_OH], a[_OW], a[_M], a[_OA], a[_MP], a[_MODE], a[_BA], a[_NP] = (Wq, OH, OW, M, addr(o), _row(o, mode),
                                                                       mode, addr(bias), nparts)
    return a


def part_vnni(k, argv):  # type: ignore[no-untyped-def]
    """Part k of a split ``qconv_lanes_vnni`` (native: the pool's workers run it without the GIL)."""
    _lanes_vnni(argv[_XA], argv[_CP], argv[_OFF], argv[_K], argv[_WA], argv[_CA], argv[_SA], f32_arg(argv, _ZY),
                f32_arg(argv, _LO), f32_arg(argv, _HI), argv[_WQ], argv[_OH], argv[_OW], argv[_M], argv[_OA],
                argv[_MP], argv[_MODE], argv[_BA], k, argv[_NP])


def part_avx2(k, argv):  # type: ignore[no-untyped-def]
    """Part k of a split ``qconv_lanes_avx2``."""
    _lanes_avx2(argv[_XA], argv[_CP], argv[_OFF], argv[_K], argv[_WA], argv[_CA], argv[_SA], f32_arg(argv, _ZY),
                f32_arg(argv, _LO), f32_arg(argv, _HI), argv[_WQ], argv[_OH], argv[_OW], argv[_M], argv[_OA],
                argv[_MP], argv[_MODE], argv[_BA], k, argv[_NP])


_PARTS = CFuncs(__name__, PART_SIG, {"vnni": part_vnni, "avx2": part_avx2})


def part_address(kind: str) -> int:
    """Address of the part function of ``kind``'s tiles (compiled or loaded from the cache on first use)."""
    return _PARTS.address(kind)


@njit(cache=True, nogil=True)
def qconv_lanes_portable(xp, Cp, off, wl, comp, scale, zy, lo, hi, Wq, OH, OW, M, o, mode, bias, part, nparts):  # type: ignore[no-untyped-def]
    """``qconv_lanes_vnni`` on neither VNNI nor AVX2 (a plan taken to such a host), on ``pack``'s
    weights and the same float32 requantisation: integer sums of the bytes, vectorised by LLVM over
    the 16 lanes of a weight block."""
    K = off.shape[0]
    ng = (M + 31) // 32
    wb = wl.view(np.int8).reshape(wl.shape[0], K, VLANES, 4)
    P = OH * OW
    p0, p1 = share(P, part, nparts)  # parts write disjoint output rows (see _make_lanes)
    flo, fhi = lo - zy, hi - zy
    izy = np.int32(zy)
    acc = np.empty(VLANES, np.int32)
    oi, of = o.view(np.int32), o.view(np.float32)  # o: bytes in every mode, 4 per element but in Q8
    for g in range(ng):
        for p in range(p0, p1):
            oh = p // OW
            pos = (oh * Wq + p - oh * OW) * Cp
            for q in range(2):
                blk = 2 * g + q
                for l in range(VLANES):
                    acc[l] = 0
                for k in range(K):
                    a = pos + off[k]
                    x0, x1, x2, x3 = np.int32(xp[a]), np.int32(xp[a + 1]), np.int32(xp[a + 2]), np.int32(xp[a + 3])
                    wk = wb[blk, k]
                    for l in range(VLANES):
                        acc[l] += (x0 * np.int32(wk[l, 0]) + x1 * np.int32(wk[l, 1]) + x2 * np.int32(wk[l, 2])
                                   + x3 * np.int32(wk[l, 3]))
                for l in range(VLANES):
                    m = blk * VLANES + l
                    if mode == I32:
                        oi[p, m] = acc[l] + comp[m]
                        continue
                    if mode == F32:
                        of[p, m] = np.float32(acc[l] + comp[m]) * scale[m] + bias[m]
                        continue
                    f = np.float32(acc[l] + comp[m]) * scale[m]
                    if not f >= flo:
                        f = flo
                    if f > fhi:
                        f = fhi
                    o[p, m] = np.int32(np.rint(f)) + izy


def kernel(kind: str) -> Any:
    """The kernel of ``kind``'s tiles (``tile_kind`` in qconv.py): ``qconv_lanes_vnni``,
    ``qconv_lanes_avx2`` or ``qconv_lanes_portable``."""
    return {"vnni": qconv_lanes_vnni, "avx2": qconv_lanes_avx2}.get(kind, qconv_lanes_portable)


def run(kind: str, args: tuple[Any, ...], nparts: int) -> None:
    """``kind``'s kernel over ``args`` (its arguments but part, nparts) in nparts parts: native parts
    for the tiles (the pool's workers start them without the GIL; their part function is compiled
    at the first call of a multi-thread session, split or not, so warm-up covers it), Python parts
    for the portable loops."""
    if kind in TILES:
        if nparts > 1:
            run_native(part_address(kind), part_argv(*args, nparts), nparts)
            return
        if intra_op_threads() > 1:
            part_address(kind)
        kernel(kind)(*args, 0, 1)
    elif nparts > 1:
        run_parts(lambda k: qconv_lanes_portable(*args, k, nparts), nparts)
    else:
        qconv_lanes_portable(*args, 0, 1)


def weights(kind: str, wl: np.ndarray) -> np.ndarray:
    """``pack``'s weights wl as ``kind``'s kernel reads them."""
    return wide_of(wl) if kind == "avx2" else wl


def units(M: int, OH: int, OW: int, Wq: int, kind: str) -> int:
    """Units of work a call on ``kind``'s tiles splits into (channel groups x position blocks)."""
    RT, width, _ = TILES.get(kind, TILES["vnni"])
    return -(-M // width) * -(-((OH - 1) * Wq + OW) // (RT * TB))
