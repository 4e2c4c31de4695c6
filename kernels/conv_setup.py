"""Convolution's per-shape plan: geometry (onnxruntime's rules), shape checks, and which kernel path
a call takes with what scratch and how many units of work it splits into (``conv_plan``, cached per
input shape). The kernels are in conv.py (and winograd.py, conv_window.py); the paths and their
order are described in conv.py's docstring."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from numba import njit

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.conv_dwblock import dwblock_applies, dwblock_scratch
from jitort.kernels.conv_lanes import ACC as LANES_ACC, TB as LANES_TB, lanes_applies, lanes_rule
from jitort.kernels.conv_window import WIN_R, window_applies, window_cols, window_scratch
from jitort.kernels.convdirect import SLACK
from jitort.kernels.convgemm import BBLOCK, MR, ROW_TILES
from jitort.kernels.convutil import EP
from jitort.kernels.pool_geometry import trunc_div
from jitort.kernels.vecir import VB
from jitort.kernels.winograd import wino_rows, wino_strides

# im2col: aim for GEMMs of ~512 columns (the GEMM is efficient from there), with a column tile of
# at most 256K elements (1 MiB float32). Measured on the 3x3 64->64 56x56 case; flat beyond.
_BLOCK = 1 << 18
_GEMM_COLS = 512


def im2col_rows(K: int, OW: int, R: int) -> int:
    """Output rows per im2col block: GEMMs of ~_GEMM_COLS columns, a column tile of <= _BLOCK.
    Plain Python for the per-shape setup; ``im2col_rows_jit`` is the same function jitted."""
    rows = (_GEMM_COLS + OW - 1) // OW
    rows = min(rows, _BLOCK // max(K * OW, 1), R)
    return max(rows, 1)


im2col_rows_jit = njit(**EP)(im2col_rows)


# --- geometry (onnxruntime's rules, see conv_attributes.h) -----------------------------------------

def pad3(v: Sequence[int], fill: int) -> tuple[int, int, int]:
    v = tuple(int(t) for t in v)
    return (fill,) * (3 - len(v)) + v  # type: ignore[return-value]


@lru_cache(maxsize=1024)
def conv_geometry(in_sp: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                  dilations: tuple[int, ...], pads: tuple[int, ...], auto_pad: str,
                  op_name: str = "Conv") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Output spatial dims and begin pads of a convolution, exactly as onnxruntime computes them."""
    r = len(in_sp)
    out, begin = [], []
    for d in range(r):
        i, k, s, dl = in_sp[d], kernel[d], strides[d], dilations[d]
        dk = dl * (k - 1) + 1
        ph, pt = pads[d], pads[d + r]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = trunc_div(i + s - 1, s)
            need = (target - 1) * s + dk - i
            o = trunc_div(i + need - dk, s) + 1
            ph = trunc_div(need + 1, 2) if auto_pad == "SAME_LOWER" else trunc_div(need, 2)
        elif auto_pad == "VALID":
            ph = 0
            o = trunc_div(i - dk, s) + 1
        elif auto_pad in ("NOTSET", ""):
            o = int(np.float32(i + ph + pt - dk) / np.float32(s) + 1)
        else:
            raise InvalidArgument(f"{op_name}: auto_pad '{auto_pad}' is not one of NOTSET, SAME_UPPER, "
                                  "SAME_LOWER, VALID")
        if o <= 0:
            raise InvalidArgument(f"{op_name}: invalid input shape {list(in_sp)} for kernel {list(kernel)}, "
                                  f"strides {list(strides)}, dilations {list(dilations)}, pads {list(pads)}: "
                                  f"output dim {d} would be {o}")
        out.append(o)
        begin.append(ph)
    return tuple(out), tuple(begin)


def attrs_norm(rank: int, kernel: Sequence[int], strides: Sequence[int] | None,
               dilations: Sequence[int] | None, pads: Sequence[int] | None
               ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    k = tuple(int(v) for v in kernel)
    s = tuple(int(v) for v in strides) if strides else (1,) * rank
    dl = tuple(int(v) for v in dilations) if dilations else (1,) * rank
    p = tuple(int(v) for v in pads) if pads else (0,) * (2 * rank)
    return k, s, dl, p


def geometry_array(group: int, k: tuple[int, ...], s: tuple[int, ...], dl: tuple[int, ...],
                   begin: tuple[int, ...]) -> np.ndarray:
    return np.array((group,) + pad3(k, 1) + pad3(s, 1) + pad3(dl, 1) + pad3(begin, 0), np.int64)


def epilogue_params(dt: np.dtype, alpha: float, beta: float) -> np.ndarray:
    return np.array([alpha, beta, 0.0, 1.0, 1.0 / 6.0, 0.5], dt)


def compute_dtype(dt: np.dtype, op_name: str) -> np.dtype:
    dt = np.dtype(dt)
    if dt in (np.float32, np.float64):
        return dt
    if dt == np.float16 or dt.name == "bfloat16":
        return np.dtype(np.float32)
    raise OrtNotImplemented(f"{op_name}: jitort does not support dtype {dt} (float16/32/64 only)")


def as5d(x: np.ndarray) -> np.ndarray:
    sp = x.shape[2:]
    return x.reshape(x.shape[:2] + (1,) * (3 - len(sp)) + sp)


# --- checks and the per-shape plan ---------------------------------------------------------------

def check_conv(x: np.ndarray, w_shape: tuple[int, ...], group: int, kernel_shape: Sequence[int] | None) -> None:
    _check_conv_shapes(x.shape, w_shape, group)
    if kernel_shape and tuple(kernel_shape) != tuple(w_shape[2:]):
        raise Fail(f"Conv: kernel_shape {list(kernel_shape)} is not compatible with W shape {list(w_shape)}")


def _check_conv_shapes(x_shape: tuple[int, ...], w_shape: tuple[int, ...], group: int) -> None:
    if len(x_shape) != len(w_shape):
        raise Fail(f"Conv: X has rank {len(x_shape)} but W has rank {len(w_shape)} (shapes {list(x_shape)}, "
                   f"{list(w_shape)})")
    if len(x_shape) < 3:
        raise InvalidArgument(f"Conv: X must have rank >= 3, got shape {list(x_shape)}")
    if len(x_shape) > 5:
        raise OrtNotImplemented(f"Conv: jitort supports 1-D, 2-D and 3-D convolutions, got X of rank {len(x_shape)}")
    if group <= 0 or x_shape[1] != w_shape[1] * group:
        raise Fail(f"Conv: input channels C={x_shape[1]} is not equal to kernel channels {w_shape[1]} * "
                   f"group {group}")
    if w_shape[0] % group:
        raise Fail(f"Conv: output channels M={w_shape[0]} is not divisible by group {group}")


DIRECT, GEMM_1X1, WINOGRAD, IM2COL, IMPLICIT, WINDOW, DWBLOCK, LANES = range(8)
_IMPLICIT_MAX_K = 256  # the implicit GEMM keeps the whole K sum in registers (no K blocks)
IMPLICIT_KC = 256  # its K block when K is larger (the tile resumes the fma chain from the output)
IMPLICIT_GROUPS = 8  # column groups (of 2 vectors) per K-block pass
_IMPLICIT_MAX_MK = 400_000  # beyond one K block, the implicit GEMM's limit on Mg x K (see _implicit_fits)
IMPLICIT_MCT = 20  # row tiles per A block (120 rows x KC: L2)
# Winograd on one tile-row block (small planes) splits by output channels from this much work: on the
# Intel Xeon (Ice Lake) VM at 2 threads, load ~1.3, 512->512 at 7x7 (231 MFLOP) 3.6 -> 2.4 ms median;
# 64->256 at 13x13 (50 MFLOP) 496 -> 588 us median (min 431 -> 303): the worker's wake-up ate the gain
_WINO_SPLIT_FLOPS = 6e7


@lru_cache(maxsize=1024)
def conv_plan(x_shape: tuple[int, ...], w_shape: tuple[int, ...], group: int, strides: tuple[int, ...],
              dilations: tuple[int, ...], pads: tuple[int, ...], auto_pad: str, winograd: bool, lanes: int = 0
              ) -> tuple[tuple[int, ...], int, np.ndarray, tuple[int, int, int], tuple[int, ...], tuple[int, ...], int,
                      float, int, int]:
    """Per input shape, once: (output shape, path, geometry array, (OD, OH, OW), the input as the
    kernel sees it, the output as [N, M, P], scratch elements, flops, units of work the kernel
    can split between threads, the kernel's block: Winograd's tile rows per block, else 0).
    winograd: whether the Winograd weights exist; 2: they are the only weights (the lowering's host
    took Winograd for this shape), so Winograd runs wherever it can whatever this host's rule
    (``_winograd_pays``): an artifact built on another host stays correct. Saves ~8 us of Python per
    call (a conv is often under 100 us). The geometry array is shared: kernels only read it. lanes:
    the weights are packed for conv_lanes.py (the lowering took it for this shape: ``lanes_pays``),
    whose path then runs."""
    _check_conv_shapes(x_shape, w_shape, group)
    kernel = tuple(w_shape[2:])
    out_sp, begin = conv_geometry(tuple(x_shape[2:]), kernel, strides, dilations, pads, auto_pad)
    N, M = x_shape[0], w_shape[0]
    odhw = pad3(out_sp, 1)
    geo = geometry_array(group, kernel, strides, dilations, begin)
    x5 = tuple(x_shape[:2]) + pad3(x_shape[2:], 1)
    if lanes:
        if len(x_shape) != 4 or not lanes_applies(w_shape, group, strides, dilations,
                                                  _lanes_pads(x_shape, w_shape, begin, out_sp)):
            raise Fail(f"Conv: the weights were prepared for the lanes path only (the input shape known when the "
                       f"model was lowered), but input shape {list(x_shape)} takes another")
        path, xs = LANES, x5
    elif window_applies(w_shape, group):
        path, xs = WINDOW, x5
    elif dwblock_applies(len(x_shape), w_shape, group, odhw[2]):
        path, xs = DWBLOCK, x5
    elif w_shape[1] == 1:
        path, xs = DIRECT, x5
    elif all(k == 1 for k in kernel) and out_sp == tuple(x_shape[2:]) and not any(begin) and all(s == 1 for s in strides):
        path, xs = GEMM_1X1, x5
    elif _implicit_fits(w_shape, group, odhw[2], small_k=True):
        path, xs = IMPLICIT, x5
    elif winograd and odhw[1] >= 4 and odhw[2] >= 4 and (winograd == 2 or _winograd_pays(w_shape[1], odhw[1] * odhw[2])):
        path, xs = WINOGRAD, tuple(x_shape)
    elif _implicit_fits(w_shape, group, odhw[2], small_k=False, strided=any(int(t) > 1 for t in strides)):
        path, xs = IMPLICIT, x5
    else:
        path, xs = IM2COL, x5
    blk = wino_rows(x_shape[1], M, odhw[1], odhw[2]) if path == WINOGRAD else 0
    nsc = _scratch_size(path, x_shape, w_shape, geo, odhw, blk)
    P = int(np.prod(out_sp))
    flops = 2.0 * N * M * P * int(np.prod(w_shape[1:]))
    Mgt = -(-(M // group) // MR)
    if path == DIRECT:
        units = x_shape[1]
    elif path == WINDOW:
        units = -(-odhw[2] // WIN_R)
    elif path == DWBLOCK:
        units = -(-x_shape[1] // 8)
    elif path == WINOGRAD:  # tile-row blocks, or when they are few, row tiles of output channels
        units = -(-((odhw[1] + 1) // 2) // blk)
        if flops >= _WINO_SPLIT_FLOPS:
            units = max(units, Mgt)
    elif path == IM2COL:  # row blocks, or (fewer blocks than threads) the output channels' row tiles
        units = max(-(-(odhw[0] * odhw[1]) // im2col_rows(int(np.prod(w_shape[1:])), odhw[2], odhw[0] * odhw[1])), Mgt)
    elif path == LANES:  # channel pairs x blocks of tiles (AVX-512's: conv_lanes.lanes_conv)
        units = -(-M // 32) * -(-(odhw[1] * (odhw[2] + w_shape[3] - 1)) // (12 * LANES_TB))
    elif path == GEMM_1X1:  # columns (32 at a time), or with fewer positions than channels, row tiles
        units = -(-P // 32) if P >= M // group else Mgt
    else:
        units = Mgt
    return (N, M) + out_sp, path, geo, odhw, xs, (N, M, P), nsc, flops, units, blk


def _lanes_pads(x_shape: tuple[int, ...], w_shape: tuple[int, ...], begin: tuple[int, ...],
                out_sp: tuple[int, ...]) -> tuple[int, ...]:
    """(top, left, bottom, right) pads of a 2-D stride-1 conv with these output sizes."""
    ph, pw = begin[-2], begin[-1]
    return ph, pw, out_sp[-2] + w_shape[-2] - 1 - x_shape[-2] - ph, out_sp[-1] + w_shape[-1] - 1 - x_shape[-1] - pw


def lanes_pays(x_shape: tuple[int, ...], w_shape: tuple[int, ...], group: int, strides: tuple[int, ...],
               dilations: tuple[int, ...], pads: tuple[int, ...], auto_pad: str) -> bool:
    """Whether the lowering packs a conv's weights for conv_lanes.py (float32, static shape, an
    activation of none, Relu or Clip: the caller checks those): on an AVX-512 host (the rule's), where
    the kernel applies and ``lanes_rule`` takes it."""
    if len(x_shape) != 4 or len(w_shape) != 4 or VB != 64:
        return False
    out_sp, begin = conv_geometry(tuple(x_shape[2:]), tuple(w_shape[2:]), strides, dilations, pads, auto_pad)
    return (lanes_applies(w_shape, group, strides, dilations, _lanes_pads(x_shape, w_shape, begin, out_sp))
            and lanes_rule(w_shape, (out_sp[0], out_sp[1])))


def _winograd_pays(channels: int, positions: int) -> bool:
    """Whether Winograd beats im2col for a 3x3 stride-1 conv with this many input channels (its
    GEMMs' K) and output positions per plane. On AVX-512 (two row tiles per register tile) only with
    >= 64 channels on >= 14x14, or >= 256: with short K and few tiles its transforms cost about what
    the 2.25x fewer multiplies save. Measured on Ice Lake-SP, 1 thread, one session with both weight
    sets, the rules alternated per run (this rule vs Winograd whenever it applies, ms): 32->128 on
    27x27 0.79 vs 0.93 (implicit GEMM instead), 48->192 on 13x13 0.41 vs 0.43, 64->256 on 13x13 0.53
    vs 0.53, 32->96 on 28x28 0.48 vs 0.46; the run-to-run noise there was +-10 % (64->64 on 56x56,
    Winograd both ways: 2.07 vs 2.33), so the rule is a small gain at best. Elsewhere always."""
    return not WIDE_TILE_RULES or channels >= 256 or (channels >= 64 and positions >= 196)


# Whether conv_plan picks Winograd by the rule measured with the two-row-tile GEMM (AVX-512,
# ``_winograd_pays``). Tests of that kernel turn it off to keep it covered on every host (then clear
# conv_plan's cache).
WIDE_TILE_RULES = ROW_TILES == 2


def _implicit_fits(w_shape: tuple[int, ...], group: int, ow: int, small_k: bool, strided: bool = False) -> bool:
    """Whether the implicit GEMM beats the alternatives: its tiles hold vectors of one output row (the rule was
    measured with two per tile), so rows must fill them (>= 75 %, the host's vectors); with K <= one K block
    it beats Winograd and im2col (no copies); with more, only while the weights of a group stay small (Mg x K
    <= 400K), and strided only with few input channels (<= 16 per group: alexnet's 11x11 stride 4 on 3
    channels, 2.66 vs 3.24 ms). Never for a 1x1 kernel (its phase-split copy takes the whole input where
    im2col gathers the used columns only). Re-measured after im2col became a table-driven gather (Intel Xeon
    Ice Lake, 1 thread, interleaved, implicit -> im2col): 5x5 48->128 on 14x14 1.10 -> 0.73 ms, grouped 3x3 on
    13x13 1.13 -> 0.69 (rows of 13-14 half-fill a 32-column AVX-512 tile), 3x3 128->128 stride 2 on 56x56 3.68
    -> 2.85; kept: 5x5 on 28x28 (0.25 vs 0.43 ms), grouped 5x5 27x27, resnet50's conv1 (7x7 stride 2, K = 147:
    2.95 vs 4.03). Still so with the two-row-tile GEMM (same host, loaded, implicit vs im2col, ms): resnet50's
    stem 3.32 vs 4.96, alexnet's 11x11 3.26 vs 4.25, squeezenet's 3x3 16->64 on 55x55 0.67 vs 0.88, 5x5 16->32
    on 28x28 0.30 vs 0.49."""
    if int(np.prod(w_shape[2:])) == 1:
        return False
    K = int(np.prod(w_shape[1:]))
    nr = 2 * VB // 4  # two float32 vectors: the rule was measured with tiles of 2 vectors and half-tile tails
    if ow < nr * 3 // 4 or ow / (ow // nr * nr + (nr if ow % nr > nr // 2 else nr // 2 if ow % nr else 0)) < 0.75:
        return False
    if small_k:
        return K <= _IMPLICIT_MAX_K
    return (not strided or w_shape[1] <= 16) and (w_shape[0] // group) * K <= _IMPLICIT_MAX_MK


def _scratch_size(path: int, x_shape: tuple[int, ...], w_shape: tuple[int, ...], geo: np.ndarray,
                  odhw: tuple[int, int, int], blk: int) -> int:
    """Elements of working memory a kernel takes from ``_scratch`` (instead of allocating per call:
    a buffer over glibc's mmap threshold is mapped and page-faulted on every call)."""
    od, oh, ow = odhw
    kd, kh, kw, sd, sh, sw, dd, dh, dw = (int(v) for v in geo[1:10])
    if path == DIRECT:
        dp, hp = (od - 1) * sd + (kd - 1) * dd + 1, (oh - 1) * sh + (kh - 1) * dh + 1
        return dp * hp * ((ow - 1) * sw + (kw - 1) * dw + 1) + SLACK * max(sw, 1)
    if path == GEMM_1X1:
        return BBLOCK
    if path == LANES:
        return LANES_ACC
    if path == DWBLOCK:
        return dwblock_scratch(oh, ow, kh, kw, sh, sw, dh, dw, 4)
    if path == WINDOW:
        return window_scratch(w_shape[1], ow, kw, sw, dw, window_cols(w_shape[0], np.dtype(np.float32)))
    if path == IMPLICIT:
        dp, hp = (od - 1) * sd + (kd - 1) * dd + 1, (oh - 1) * sh + (kh - 1) * dh + 1
        return w_shape[1] * sw * dp * hp * (ow + ((kw - 1) * dw) // sw) + SLACK
    if path == WINOGRAD:
        C, M = x_shape[1], w_shape[0]
        sv, sm = wino_strides(C, M, blk * ((ow + 1) // 2))
        return C * (2 * ((oh + 1) // 2) + 2) * (2 * ((ow + 1) // 2) + 2) + 16 * (sv + sm) + BBLOCK
    K = int(np.prod(w_shape[1:]))
    return K * im2col_rows(K, ow, od * oh) * ow + BBLOCK
