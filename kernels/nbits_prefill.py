"""MatMulNBits' prefill product (more rows of A than the packed GEMV takes): dequantise a column
group, multiply it by kernels/gemm.py's register tile over every row of A, next group.

The weights stay packed (kernels/nbits.py's layout: groups of ``NC`` = 64 columns, 32-bit words of
2/4/8-bit values, scales and zero points per block). A *group* is one such panel of NC columns: its
float weights W[:K, group] = (q - zp) * s are written, once per call, into a 64-byte aligned scratch
in gemm.py's packed-B layout (NC / PANEL panels [K][16]), and gemm.py's kernel then computes
Y[:, group] for all M rows from it. The dequantisation is paid once per weight and call, however
many rows A has, and the group (K x 64 floats: 192 KiB at K = 768, 512 KiB at 2048) is still in
L2 when the register tile reads it. Nothing holds a float copy of the whole weight.

Measured on the 2-vCPU Intel Xeon (Ice Lake) VM, 1 thread, int4 block 32, M = 128, per-call CPU
time (load ~5), interleaved: 768 x 768 1.70 ms, 768 x 2048 3.26, 2048 x 768 3.44, 768 x 4096 6.62,
where the 256-column strips dequantised then multiplied by gemm.gemm (copied out) took 2.61, 4.68,
5.00, 8.81 and gemm.gemm on the float weights, packed beforehand, 1.76, 3.80, 3.82, 7.48: the
dequantisation costs about what reading float weights from L3 would.

Summation order: gemm.py's (each output one fma chain over k in order, from 0; then + bias) on
weights dequantised exactly as onnxruntime defines them, (q - zp) * s in float32 without
fast-math (no fma contraction, no reassociation). So Y does not depend on the thread count (a
group's columns are computed by one part, whichever), nor on the ISA path (gemm.py's guarantee;
the dequantisation is element-wise IEEE arithmetic), nor on the group size.

Threads: every call runs as native parts (threads.run_native; one part on one thread, a
native call without the pool): part k takes groups P*k//parts .. P*(k+1)//parts, split over N, and
its own K x NC slice of the scratch. One compiled path for every thread count, so there is no
second path to ready (unlike gemm.py's ``_BOTH_READY``): a part function per (ISA, bits) is
compiled (or loaded from the cache) on first use.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import carray, njit

from jitort.kernels import gemm, threads
from jitort.kernels.conv_parts import PartFactory
from jitort.kernels.gemm import PANEL
from jitort.kernels.native_parts import PART_SIG, CFuncs, as_ptr, f32_arg


@njit(inline="always")
def dequant_group(w, s, z, hasz, zdef, bits, block, K, p, out):  # type: ignore[no-untyped-def]
    """out[j, k, c] = W[k, p*NC + j*PANEL + c] = (q - zp) * s for k < K: group p of the packed weight
    (w [P, words, NC] int32, s/z [P, blocks, NC]; zp = z when hasz, else zdef) in gemm.py's packed
    layout (out [NC/PANEL, K, PANEL]).

    Inlined into part functions that pass ``bits`` as a constant: the loop over a word's fields then
    unrolls and the loop over a panel's 16 columns is the vector loop (one word, scale and zero point
    load per column, ``32 / bits`` values out of it; tests/test_contrib_quant_matmul.py checks)."""
    per = 32 // bits
    mask = np.int32((1 << bits) - 1)
    wpb = block // per  # words per block (block is a multiple of per: 16 or more, a power of 2)
    pw = out.shape[2]  # PANEL, but not a constant: a 16-trip loop LLVM would unroll to scalars
    npn = w.shape[2] // pw
    full = K // per
    for kw in range(full):
        b = kw // wpb
        k0 = kw * per
        for j in range(npn):
            for c in range(pw):
                col = j * pw + c
                v = w[p, kw, col]
                sc = s[p, b, col]
                zc = z[p, b, col] if hasz else zdef
                for i in range(per):
                    q = np.float32(np.int32((v >> np.int32(bits * i)) & mask))
                    out[j, k0 + i, c] = (q - zc) * sc
    if full * per < K:  # K inside the last word
        kw = full
        b = kw // wpb
        for j in range(npn):
            for i in range(K - full * per):
                for c in range(pw):
                    col = j * pw + c
                    q = np.float32(np.int32((w[p, kw, col] >> np.int32(bits * i)) & mask))
                    zc = z[p, b, col] if hasz else zdef
                    out[j, full * per + i, c] = (q - zc) * s[p, b, col]


# the argument vector of a prefill part
_A, _M, _K, _W, _P, _KW, _NC, _S, _BLOCKS, _Z, _HASZ, _ZDEF, _BLOCK, _BIAS, _HASB, _Y, _N, _BUF, _PARTS = range(19)


def prefill_argv(a: np.ndarray, w: np.ndarray, s: np.ndarray, z: np.ndarray, hasz: int, zdef: np.float32,
                 block: int, bias: np.ndarray, hasb: int, y: np.ndarray, buf: np.ndarray, parts: int) -> np.ndarray:
    """The argument vector of a prefill (z read when hasz, else every zero point is zdef; bias
    padded to whole panels, gemm.pad_bias, read when hasb; buf: 64-byte aligned, parts * K * NC
    floats). Built in Python (~5 us, against the milliseconds of a prefill): an ``njit`` builder
    costs a second of cold compile."""
    argv = np.zeros(19, np.int64)
    argv[_A], argv[_M], argv[_K] = a.ctypes.data, a.shape[0], a.shape[1]
    argv[_W], argv[_P], argv[_KW], argv[_NC] = w.ctypes.data, w.shape[0], w.shape[1], w.shape[2]
    argv[_S], argv[_BLOCKS], argv[_Z], argv[_HASZ] = s.ctypes.data, s.shape[1], z.ctypes.data, hasz
    argv.view(np.float32)[2 * _ZDEF] = zdef  # as native_parts.set_f32_arg
    argv[_BLOCK], argv[_BIAS], argv[_HASB] = block, bias.ctypes.data, hasb
    argv[_Y], argv[_N], argv[_BUF], argv[_PARTS] = y.ctypes.data, y.shape[1], buf.ctypes.data, parts
    return argv


@njit(inline="always")
def _prefill(kern, bits, k, v):  # type: ignore[no-untyped-def]
    """Part k: groups P*k//parts .. P*(k+1)//parts, each dequantised into this part's slice of the
    scratch and multiplied by ``kern`` (gemm.gemm_f32_avx512 / _avx2) into Y's columns."""
    f32 = np.float32
    M, K, P, nc, blocks, N = v[_M], v[_K], v[_P], v[_NC], v[_BLOCKS], v[_N]
    a = carray(as_ptr(v[_A], f32), (M, K))
    w = carray(as_ptr(v[_W], np.int32), (P, v[_KW], nc))
    s = carray(as_ptr(v[_S], f32), (P, blocks, nc))
    z = carray(as_ptr(v[_Z], f32), (P, blocks, nc))
    bias = carray(as_ptr(v[_BIAS], f32), (-(-N // PANEL) * PANEL,))
    y = carray(as_ptr(v[_Y], f32), (M, N))
    gp = nc // PANEL  # gemm panels per group
    gsize = K * nc
    base = v[_BUF] + k * gsize * 4
    out = carray(as_ptr(base, f32), (gp, K, PANEL))
    npan = -(-N // PANEL)
    parts = v[_PARTS]
    zero, off = f32(0.0), np.int64(0)  # not literals: the types of gemm.gemm's call, so one compiled kernel serves both
    for p in range(P * k // parts, P * (k + 1) // parts):
        dequant_group(w, s, z, v[_HASZ], f32_arg(v, _ZDEF), bits, v[_BLOCK], K, p, out)
        # gemm's kernels find panel j of B at addr(bp) + j*K*PANEL floats: this group's panels
        # p*gp .. are the scratch, so B "starts" p*gp panels before it (only those are read)
        bp = carray(as_ptr(base - p * gp * K * PANEL * 4, f32), (1,))
        kern(a, bp, y, bias, v[_HASB], y, off, off, zero, zero, off, off, M, p * gp, min(npan, (p + 1) * gp))


def _make_part(isa: str, bits: int) -> Any:
    """The part function of one (ISA path, bits). Its cells are constants: Numba prunes the ISA
    branch before typing, and bits constant unrolls dequant_group's loops (zero points or not is a
    run-time flag: a loop-invariant branch, which LLVM hoists out of the loops). gemm.py's kernels
    are reached as module globals, never captured."""
    def part(k, v):  # type: ignore[no-untyped-def]
        if isa == "avx512":
            _prefill(gemm.gemm_f32_avx512, bits, k, v)
        else:
            _prefill(gemm.gemm_f32_avx2, bits, k, v)
    return part


_PART_C = CFuncs(__name__, PART_SIG, PartFactory("prefill", _make_part))


def part_address(isa: str, bits: int) -> int:
    """Address of the prefill part function for (ISA path, bits), compiled or loaded from the cache
    on first use (~3 s of CPU cold, most of it gemm.py's kernel linked into it; a model compiles
    only the combinations it has)."""
    return _PART_C.address((isa, bits))


def matmul(a: np.ndarray, w: np.ndarray, s: np.ndarray, z: np.ndarray | None, zdef: np.float32, bits: int,
           block: int, bias: np.ndarray | None, N: int, isa: str | None = None) -> np.ndarray:
    """a [M, K] float32 @ the packed weight (kernels/nbits.py's layout: w, s, z, zdef, bits, block)
    -> float32 [M, N] (+ bias [N]), groups split over N into native parts over jitort's threads."""
    a = np.ascontiguousarray(a, np.float32)
    M, K = a.shape
    y = np.empty((M, N), np.float32)
    if M == 0 or N == 0:
        return y
    P, nc = w.shape[0], w.shape[2]
    parts = threads.parts_for(P, 2.0 * M * K * N)
    buf = threads.scratch(parts * K * nc, np.dtype(np.float32))  # this thread's; 64-byte aligned
    pb = gemm.pad_bias(bias, N)
    argv = prefill_argv(a, w, s, s if z is None else z, int(z is not None), zdef, block, pb, int(bias is not None), y,
                        buf, parts)
    threads.run_native(part_address(isa or gemm.default_isa(), bits), argv, parts)
    return y
