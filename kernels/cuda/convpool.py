"""Conv as an implicit GEMM, Max/AveragePool, and inference BatchNormalization (NCHW).

Conv: per image and group, Y[m, p] = sum_k W[m, k] * im2col(X)[k, p] with k = (c, kh, kw) and
p = (oh, ow); the im2col matrix is never built — each thread of a 16x16 block gathers its element
of the X tile straight from the input (zero outside the padding), the W tile comes from the
[M, Cg*KH*KW] weights, and the epilogue adds the bias and applies the activation fused by the
conv-epilogue pass (codes and parameters shared with ``jitort.kernels.conv``: 0 none, 1 Relu,
2 Clip, 3 LeakyRelu, 4 HardSigmoid, 5 HardSwish, 6 Sigmoid, 7 SiLU). 1-D convolutions run as 2-D
with H = 1. grid.z = N * group.

Pooling: one thread per output element (grid-stride), window bounds and the average's divisor as in
the CPU kernel (``count_include_pad`` counts taps inside input + pads). Geometry (output size,
padding from auto_pad, ceil_mode) is computed on the host by the CPU module's functions, so both
backends agree on every shape.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda, int64, void

from jitort.errors import InvalidArgument
from jitort.kernels.conv_setup import check_conv, conv_geometry
from jitort.kernels.cuda.runtime import FLOATS, SIMULATOR, A, cdiv, compiled, flat, grid1d, signatures
from jitort.kernels.pool2d import axis_count as cpu_axis_count
from jitort.kernels.pool_geometry import pool_attrs, pool_geometry

TILE = 8 if SIMULATOR else 16  # the simulator runs each thread as a Python thread: smaller blocks there
_MAX_Z = 65535


@cuda.jit(device=True, inline="always")
def activate(v, act, prm):  # type: ignore[no-untyped-def]
    """prm = [alpha, beta, 0, 1, 1/6, 1/2] in the compute dtype (jitort.kernels.conv_setup.epilogue_params)."""
    if act == 1:
        return prm[2] if v < prm[2] else v
    if act == 2:
        v = prm[0] if v < prm[0] else v
        return prm[1] if v > prm[1] else v
    if act == 3:
        return v if v >= prm[2] else prm[0] * v
    if act == 4:
        h = prm[0] * v + prm[1]
        h = prm[2] if h < prm[2] else h
        return prm[3] if h > prm[3] else h
    if act == 5:
        h = v * prm[4] + prm[5]
        h = prm[2] if h < prm[2] else h
        h = prm[3] if h > prm[3] else h
        return v * h
    if act == 6:
        return prm[3] / (prm[3] + math.exp(-v))
    if act == 7:
        return v * (prm[3] / (prm[3] + math.exp(-v)))
    return v


@signatures(FLOATS, lambda T: void(A(T), A(T), A(T), A(T), A(T), A(T), int64, int64, int64, int64, int64, int64,
                                   int64, int64, int64, int64, int64, int64, int64, int64, int64, int64,
                                   int64, int64))
def conv2d_igemm(x, w, bias, prm, y, res, C, H, W, M, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, group, act,
                 z0, has_res):  # type: ignore[no-untyped-def]
    """y[n, g*Mg + m, p] = act(sum_k w[g*Mg + m, k] * im2col(x[n, g])[k, p] + bias[g*Mg + m] (+ res[same]
    when has_res: jitort's FusedConv residual))."""
    sw_ = cuda.shared.array((TILE, TILE), x.dtype)
    sx = cuda.shared.array((TILE, TILE), x.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    z = cuda.blockIdx.z + z0
    n = z // group
    g = z - n * group
    Cg = C // group
    Mg = M // group
    KK = KH * KW
    K = Cg * KK
    P = OH * OW
    m = cuda.blockIdx.y * TILE + ty
    p = cuda.blockIdx.x * TILE + tx
    oh = p // OW
    ow = p - oh * OW
    ih0 = oh * sh - ph
    iw0 = ow * sw - pw
    xbase = (n * C + g * Cg) * H * W
    wrow = (g * Mg + m) * K
    acc = x.dtype.type(0)
    for k0 in range(0, K, TILE):
        kw_ = k0 + tx
        if m < Mg and kw_ < K:
            sw_[ty, tx] = w[wrow + kw_]
        else:
            sw_[ty, tx] = 0
        k = k0 + ty
        v = x.dtype.type(0)
        if k < K and p < P:
            c = k // KK
            r = k - c * KK
            kh = r // KW
            kx = r - kh * KW
            ih = ih0 + kh * dh
            iw = iw0 + kx * dw
            if ih >= 0 and ih < H and iw >= 0 and iw < W:
                v = x[xbase + (c * H + ih) * W + iw]
        sx[ty, tx] = v
        cuda.syncthreads()
        for kk in range(TILE):
            acc += sw_[ty, kk] * sx[kk, tx]
        cuda.syncthreads()
    if m < Mg and p < P:
        co = g * Mg + m
        v = acc + bias[co]
        if has_res:
            v += res[(n * M + co) * P + p]
        y[(n * M + co) * P + p] = activate(v, act, prm)


# taps of a window on one axis: the CPU kernel's function, compiled for the device
_axis_count = cuda.jit(device=True, inline="always")(cpu_axis_count.py_func)


@signatures(FLOATS, lambda T: void(A(T), A(T), int64, int64, int64, int64, int64, int64, int64, int64, int64,
                                   int64, int64, int64, int64, int64, int64, int64, int64, T))
def pool2d(x, y, total, H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, eh, ew, mode, cip,
           lowest):  # type: ignore[no-untyped-def]
    """mode 0: max (NaN propagates; lowest where the window holds no input); 1: average."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    zero = x.dtype.type(0)
    while i < total:
        ow = i % OW
        r = i // OW
        oh = r % OH
        nc = r // OH
        base = nc * H * W
        acc = lowest if mode == 0 else zero
        for a in range(KH):
            iy = oh * sh - ph + a * dh
            if iy < 0 or iy >= H:
                continue
            for b in range(KW):
                ix = ow * sw - pw + b * dw
                if ix < 0 or ix >= W:
                    continue
                v = x[base + iy * W + ix]
                if mode == 0:
                    if v > acc or v != v:
                        acc = v
                else:
                    acc += v
        if mode == 1:
            cnt = (_axis_count(oh, sh, dh, KH, ph, H, H + eh if cip else 0)
                   * _axis_count(ow, sw, dw, KW, pw, W, W + ew if cip else 0))
            acc = acc / x.dtype.type(cnt) if cnt > 0 else zero
        y[i] = acc
        i += step


@signatures(FLOATS, lambda T: void(A(T), A(T), A(T), A(T), int64, int64, int64))
def channel_affine(x, a, b, y, total, C, inner):  # type: ignore[no-untyped-def]
    """y = x * a[c] + b[c] for the channel c of each element of [N, C, inner] (BatchNormalization)."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < total:
        c = (i // inner) % C
        y[i] = x[i] * a[c] + b[c]
        i += step


# --- launchers -----------------------------------------------------------------------------------

def conv(ctx: Any, slots: tuple, x: Any, w2: Any, b: Any, prm: Any, z: Any = None, *, w_shape: tuple,
         auto_pad: str, group: int, strides: tuple, dilations: tuple, pads: tuple, act: int) -> Any:
    """Conv on packed weights (w2 [M, Cg*prod(kernel)], b [M], prm: the epilogue's parameters), with
    z (None or of the output's shape) added before the activation."""
    check_conv(x, tuple(w_shape), group, None)
    kernel = tuple(w_shape[2:])
    out_sp, begin = conv_geometry(tuple(x.shape[2:]), kernel, tuple(strides), tuple(dilations), tuple(pads),
                                  auto_pad)
    N, C = x.shape[0], x.shape[1]
    M = w_shape[0]
    y = ctx.alloc(slots[0], (N, M) + tuple(out_sp), x.dtype)
    if z is not None and tuple(z.shape) != tuple(y.shape):
        raise InvalidArgument(f"FusedConv: the residual input has shape {list(z.shape)}, the output {list(y.shape)}")
    if y.size == 0:
        return y
    if len(kernel) == 1:
        H, W, OH, OW, KH, KW = 1, x.shape[2], 1, out_sp[0], 1, kernel[0]
        sh, sw, ph, pw, dh, dw = 1, strides[0], 0, begin[0], 1, dilations[0]
    else:
        H, W = x.shape[2], x.shape[3]
        OH, OW = out_sp
        KH, KW = kernel
        (sh, sw), (ph, pw), (dh, dw) = strides, begin, dilations
    k = compiled(conv2d_igemm, np.dtype(x.dtype).name)
    Mg, P, Z = M // group, OH * OW, N * group
    for z0 in range(0, Z, _MAX_Z):
        grid = (cdiv(P, TILE), cdiv(Mg, TILE), min(_MAX_Z, Z - z0))
        k[grid, (TILE, TILE), ctx.stream](flat(x), flat(w2), flat(b), flat(prm), flat(y), flat(b if z is None else z),
                                          C, H, W, M, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, group, act, z0,
                                          0 if z is None else 1)
    return y


def pool(ctx: Any, slots: tuple, x: Any, *, op_name: str, auto_pad: str, ceil_mode: int, kernel_shape: tuple,
         strides: tuple | None, dilations: tuple | None, pads: tuple | None, count_include_pad: int) -> Any:
    k, s, dl, p = pool_attrs(op_name, x, kernel_shape, strides, dilations, pads,
                            check_pads=auto_pad in ("NOTSET", ""))
    out_sp, begin, end = pool_geometry(op_name, tuple(x.shape[2:]), k, s, dl, p, auto_pad, int(ceil_mode))
    dt = np.dtype(x.dtype)
    y = ctx.alloc(slots[0], tuple(x.shape[:2]) + tuple(out_sp), dt)
    if y.size == 0:
        return y
    if len(k) == 1:
        geo = (1, x.shape[2], 1, out_sp[0], 1, k[0], 1, s[0], 0, begin[0], 1, dl[0], 0, end[0])
    else:
        geo = (x.shape[2], x.shape[3], out_sp[0], out_sp[1], k[0], k[1], s[0], s[1], begin[0], begin[1],
               dl[0], dl[1], end[0], end[1])
    mode = 0 if op_name == "MaxPool" else 1
    kern = compiled(pool2d, dt.name)
    n = y.size
    blocks, threads = grid1d(n)
    kern[blocks, threads, ctx.stream](flat(x), flat(y), n, *geo, mode, int(count_include_pad),
                                      dt.type(np.finfo(dt).min))
    return y


def batchnorm(ctx: Any, slots: tuple, x: Any, a: Any, b: Any) -> Any:
    """y = x * a[c] + b[c]: inference BatchNormalization with a = scale / sqrt(var + eps), b = B - mean * a
    folded at compile time."""
    y = ctx.alloc(slots[0], x.shape, x.dtype)
    if y.size == 0:
        return y
    C = x.shape[1] if x.ndim > 1 else 1
    inner = math.prod(x.shape[2:])
    blocks, threads = grid1d(y.size)
    compiled(channel_affine, np.dtype(x.dtype).name)[blocks, threads, ctx.stream](
        flat(x), flat(a), flat(b), flat(y), y.size, C, inner)
    return y


KERNELS = (conv2d_igemm, pool2d, channel_affine)
