"""Conv on few output positions as a transposed GEMM on the MatMul engine (gemm.py).

The NCHW conv paths put output positions in vector lanes: a 7x7 output (resnet50's last stage: 49
positions) fills 49 of 64 lanes (AVX-512, 77 %), and their tile (6 rows x 2 vectors) is narrower
than the MatMul engine's (6 x 4 zmm). For 1x1 and strided kernels on such outputs the product is
turned around: ``out^T[P, M] = X^T[P, K] @ W^T[K, M]`` with output channels in the lanes (M is a
multiple of 16 in every CNN), on the engine with W^T packed once when the model is lowered
(``pack_t_weights``). Per image: X is transposed into X^T (im2col first unless the kernel is 1x1
without stride or padding), the engine runs, and its [P, M] result is transposed into the output
with the epilogue the other paths use (convutil's ``epilogue_row`` / ``epilogue_residual``).

Measured on the 2-vCPU AMD EPYC (Zen 4, AVX-512) dev VM, 1 thread, conv 1x1 512->2048 on 7x7:
1.40 ms through convgemm (74 GFLOP/s), 1.05 ms here (the engine's product 0.94, the transposes 0.09).

Rounding: every output is one fma chain in k order (the engine's guarantee), then + bias, then the
residual and the activation, in the same order as convgemm's paths: identical weight rows still
give identical output channels, and results do not depend on the thread count or the ISA path.
float32 only (the engine's type); float16 computes in float32 as elsewhere.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from jitort.kernels import gemm
from jitort.kernels.convutil import epilogue_row, epilogue_residual
from jitort.kernels.threads import scratch

_KW = dict(cache=True, nogil=True, error_model="numpy")

P_MAX = 256  # output positions per image at most (the NCHW paths are efficient beyond)
_LANES = 16  # float32 lanes of a zmm: the NCHW paths' unit of positions (on any host, so the
# lowering decides alike everywhere)
_MIN_WASTE = 0.15  # the lane share the NCHW paths would waste, from which this path may win
_MOVE = 25.0  # the transposes' cost per element moved, in units of multiply-adds (~0.5 ns, 100 GFLOP/s)
_MIN_GAIN = 0.08  # wasted lane share minus the transposes' share of the work, at least
_MAX_PK = 1 << 21  # elements of the transposed X (8 MiB float32): beyond, the other paths


def gemm_t_applies(w_shape: tuple[int, ...], group: int, positions: int, strides: tuple[int, ...]) -> bool:
    """Whether a float32 conv of weights ``w_shape`` with ``positions`` output positions per image
    takes this path: one group; a 1x1 kernel (any stride) or a strided larger one (no Winograd
    there); at most ``P_MAX`` positions of which the NCHW paths' vectors would leave >= 15 % of
    lanes empty (7x7: 49 of 64); and that waste exceeding the transposes' share of the work,
    (K + M) P moves against M K P multiply-adds, by ``_MIN_GAIN``. Measured interleaved, 1 thread
    (old path -> this one): 7x7 512->2048 1.45 -> 1.23 ms, 2048->512 1.41 -> 1.17, 832->384 0.376
    -> 0.352, but 1024->128 0.167 -> 0.172 (taken no longer: the transposes cost 22 %); 14x14 (94 %
    of lanes used) 1024->256 1.01 -> 1.08. Not unstrided larger kernels: a 3x3 512->512 on 7x7
    took 2.75 ms here where Winograd takes 2.6."""
    if group != 1 or len(w_shape) < 3 or w_shape[0] == 0 or not 0 < positions <= P_MAX:
        return False
    K = int(np.prod(w_shape[1:]))
    one = all(int(k) == 1 for k in w_shape[2:])
    if not (one or any(int(s) > 1 for s in strides)) or K == 0 or positions * K > _MAX_PK:
        return False
    waste = 1.0 - positions / (-(-positions // _LANES) * _LANES)
    return waste >= _MIN_WASTE and waste - _MOVE * (1.0 / w_shape[0] + 1.0 / K) >= _MIN_GAIN


def pack_t_weights(W: np.ndarray) -> np.ndarray:
    """W [M, C, *kernel] -> W^T [K, M] packed for the engine (1-D: ``gemm.pack_b``); float32."""
    M = W.shape[0]
    return gemm.pack_b(np.ascontiguousarray(W.reshape(M, -1).T, np.float32))


def pad_t_bias(b: np.ndarray) -> np.ndarray:
    """The bias [M] padded to the engine's whole panels (it reads whole panels)."""
    return gemm.pad_bias(b, b.shape[0])


def engine_part() -> str:
    """The engine's kernel as a compile part (``jitort.compile_pool``), shared with MatMul's calls."""
    return f"{gemm.__name__}.gemm_f32_{gemm.default_isa()}"


@njit(**_KW)
def _im2col(x, geo, OD, OH, OW, col):  # type: ignore[no-untyped-def]
    """col[c*T + t, p] = x[c, od*sd + a*dd - pd, oh*sh + b*dh - ph, ow*sw + e*dw - pw] (0 outside)
    for output position p = (od, oh, ow) and tap t = (a*kh + b)*kw + e (W's row order); x
    [C, D, H, W], col [K, P], both C-contiguous. Each tap's offset in a plane (or -1) is worked out
    once; rows are then written contiguously from one plane (in L1 for the small outputs here)."""
    C, D, H, W = x.shape
    kd, kh, kw = geo[1], geo[2], geo[3]
    sd, sh, sw, dd, dh, dw, pd, ph, pw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10], geo[11], geo[12]
    P = OD * OH * OW
    T = kd * kh * kw
    S = D * H * W
    zero = np.float32(0.0)
    xf = x.reshape(C * S)
    idx = np.empty((T, P), np.int64)
    for p in range(P):
        od = p // (OH * OW)
        r = p - od * OH * OW
        oh = r // OW
        ow = r - oh * OW
        for a in range(kd):
            iz = od * sd + a * dd - pd
            for b in range(kh):
                iy = oh * sh + b * dh - ph
                for e in range(kw):
                    ix = ow * sw + e * dw - pw
                    inside = 0 <= iz < D and 0 <= iy < H and 0 <= ix < W
                    idx[(a * kh + b) * kw + e, p] = (iz * H + iy) * W + ix if inside else -1
    for c in range(C):
        base = c * S
        for t in range(T):
            row = col[c * T + t]
            it = idx[t]
            for p in range(P):
                o = it[p]
                row[p] = xf[base + o] if o >= 0 else zero


@njit(**_KW)
def _transpose(x, xt):  # type: ignore[no-untyped-def]
    """xt [P, C] = x [C, P]^T through 16 x 16 blocks (a row at a time for 16 positions thrashed L1
    where a row of xt is 4 KiB long: 1024 channels x 196 took 0.57 ms, blocks 0.11)."""
    C, P = x.shape
    buf = np.empty((16, 16), x.dtype)
    for c0 in range(0, C - 15, 16):
        for p0 in range(0, P - 15, 16):
            for i in range(16):
                for j in range(16):
                    buf[j, i] = x[c0 + i, p0 + j]
            for j in range(16):
                for i in range(16):
                    xt[p0 + j, c0 + i] = buf[j, i]
        for p in range(P - P % 16, P):
            for i in range(16):
                xt[p, c0 + i] = x[c0 + i, p]
    for c in range(C - C % 16, C):
        for p in range(P):
            xt[p, c] = x[c, p]


@njit(**_KW)
def _finish_t(ct, o, z, b, act, prm, ep):  # type: ignore[no-untyped-def]
    """o[m, p] = ct[p, m] (o [M, P], ct [P, M], both C-contiguous), then act(o + z) with a residual
    z [M, P] (the engine added the bias), else for activations past Clip bias + act (convutil's
    ``epilogue_row``; the engine added nothing), else nothing (the engine applied bias, Relu or Clip on
    its tile)."""
    M = o.shape[0]
    _transpose(ct, o)
    if z is not None:  # elementwise (the bias is in): one call over the whole output, not one per row
        # (2048 rows of 49: ~100 ns a call, 0.20 ms of a 0.28 ms finish on the Ice Lake VM)
        epilogue_residual(o.reshape(-1), z.reshape(-1), act, prm, ep)
    elif act > 2:  # the bias per channel, then the activation in one call over the whole output
        P = o.shape[1]
        for m in range(M):
            bm = b[m]
            for p in range(P):
                o[m, p] += bm
        epilogue_row(o.reshape(-1), prm[2], act, prm, ep)


def conv_gemm_t(x: np.ndarray, wt: np.ndarray, b: np.ndarray, o3: np.ndarray, z3: np.ndarray | None,
                geo: np.ndarray, od: int, oh: int, ow: int, act: int, prm: np.ndarray, ep: bool | None) -> None:
    """o3 [N, M, P] = act(conv(x) + b (+ z3)) for x [N, C, D, H, W] float32, wt from
    ``pack_t_weights``, b from ``pad_t_bias``. Threads: the engine's split of each product
    (output channel panels or position rows; bitwise the same at any thread count)."""
    N = x.shape[0]
    M, P = o3.shape[1], o3.shape[2]
    K = x.shape[1] * int(geo[1] * geo[2] * geo[3])
    # a 1x1 kernel without stride or padding: X^T is a plain transpose (else im2col, then that)
    plain = K == x.shape[1] and P == x.shape[2] * x.shape[3] * x.shape[4] and not geo[10:13].any()
    sc = scratch(P * K + P * M + (0 if plain else K * P), np.dtype(np.float32))
    xt = sc[:P * K].reshape(P, K)
    ct = sc[P * K:P * (K + M)].reshape(P, M)
    if z3 is None and act <= 2:  # bias + Relu/Clip on the engine's register tile
        eact, hasb = act, True
    else:  # z: bias on the tile, act(+ z) after; other activations: bias + act after
        eact, hasb = 0, z3 is not None
    lo, hi = float(prm[0]), float(prm[1])
    for n in range(N):
        xn = np.ascontiguousarray(x[n])
        if plain:
            _transpose(xn.reshape(K, P), xt)
        else:
            col = sc[P * (K + M):P * (2 * K + M)].reshape(K, P)
            _im2col(xn, geo, od, oh, ow, col)
            _transpose(col, xt)
        gemm.gemm(xt, wt, M, b, hasb, None, eact, lo, hi, out=ct)
        _finish_t(ct, o3[n], None if z3 is None else z3[n], b, act, prm, ep)
