"""Winograd F(2x2, 3x3) convolution: 3x3, stride 1, dilation 1, one group (see ``winograd_kernel``).

2.25x fewer multiplications than the direct sum; measured on Zen 3 it beats the direct GEMMs from
~32 input channels (below, convolution's implicit GEMM wins and Conv picks it). The 16 products
are ``convgemm.gemm_packed`` GEMMs on weights transformed and packed once (``winograd_weights``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit

from jitort.kernels.convgemm import BBLOCK, MR, gemm_at, pack_weights
from jitort.kernels.convutil import EP, epilogue_row, pad_phases, share, epilogue_residual

_KW = dict(cache=True, nogil=True, error_model="numpy")


@njit(**EP)
def _wino_in(xp, V, C, Tb, ty0, ty1, TW):  # type: ignore[no-untyped-def]
    """V[4i+j, c*Tb + t] = (B^T d B)[i, j] for the 4x4 input patch d of tile t (tile rows ty0..ty1)."""
    for c in range(C):
        xc = xp[c]
        base = c * Tb
        for ty in range(ty0, ty1):
            r0 = xc[2 * ty]
            r1 = xc[2 * ty + 1]
            r2 = xc[2 * ty + 2]
            r3 = xc[2 * ty + 3]
            t0 = base + (ty - ty0) * TW
            t1 = t0 + TW
            v0, v1, v2, v3 = V[0, t0:t1], V[1, t0:t1], V[2, t0:t1], V[3, t0:t1]
            v4, v5, v6, v7 = V[4, t0:t1], V[5, t0:t1], V[6, t0:t1], V[7, t0:t1]
            v8, v9, v10, v11 = V[8, t0:t1], V[9, t0:t1], V[10, t0:t1], V[11, t0:t1]
            v12, v13, v14, v15 = V[12, t0:t1], V[13, t0:t1], V[14, t0:t1], V[15, t0:t1]
            for tx in range(TW):
                q = 2 * tx
                # rows of B^T d
                a0, a1, a2, a3 = r0[q] - r2[q], r0[q + 1] - r2[q + 1], r0[q + 2] - r2[q + 2], r0[q + 3] - r2[q + 3]
                b0, b1, b2, b3 = r1[q] + r2[q], r1[q + 1] + r2[q + 1], r1[q + 2] + r2[q + 2], r1[q + 3] + r2[q + 3]
                c0, c1, c2, c3 = r2[q] - r1[q], r2[q + 1] - r1[q + 1], r2[q + 2] - r1[q + 2], r2[q + 3] - r1[q + 3]
                d0, d1, d2, d3 = r1[q] - r3[q], r1[q + 1] - r3[q + 1], r1[q + 2] - r3[q + 2], r1[q + 3] - r3[q + 3]
                # (B^T d) B
                v0[tx], v1[tx], v2[tx], v3[tx] = a0 - a2, a1 + a2, a2 - a1, a1 - a3
                v4[tx], v5[tx], v6[tx], v7[tx] = b0 - b2, b1 + b2, b2 - b1, b1 - b3
                v8[tx], v9[tx], v10[tx], v11[tx] = c0 - c2, c1 + c2, c2 - c1, c1 - c3
                v12[tx], v13[tx], v14[tx], v15[tx] = d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(**EP)
def _wino_out(Mt, out, zn, b, Tb, ty0, ty1, TW, OH, OW, act, prm, ep, c0, c1):  # type: ignore[no-untyped-def]
    """out[m, 2ty + a, 2tx + e] = (A^T Mt A)[a, e] for tile rows ty0..ty1 and channels c0..c1, then
    bias (+ the residual zn [M, OH*OW] when not None) + activation."""
    full_w = 2 * TW == OW
    TWf = TW if full_w else TW - 1
    for m in range(c0, c1):
        om = out[m]
        oma = out[m, ::1]  # layout 'A' for the epilogue, as elsewhere (one compile of it per dtype)
        for ty in range(ty0, ty1):
            t0 = m * Tb + (ty - ty0) * TW
            t1 = t0 + TW
            m0, m1, m2, m3 = Mt[0, t0:t1], Mt[1, t0:t1], Mt[2, t0:t1], Mt[3, t0:t1]
            m4, m5, m6, m7 = Mt[4, t0:t1], Mt[5, t0:t1], Mt[6, t0:t1], Mt[7, t0:t1]
            m8, m9, m10, m11 = Mt[8, t0:t1], Mt[9, t0:t1], Mt[10, t0:t1], Mt[11, t0:t1]
            m12, m13, m14, m15 = Mt[12, t0:t1], Mt[13, t0:t1], Mt[14, t0:t1], Mt[15, t0:t1]
            y0 = 2 * ty
            row0 = om[y0 * OW:(y0 + 1) * OW]
            # odd OH: the last tile's second row is computed into row 0's storage, then overwritten
            y1 = y0 + 1 if y0 + 1 < OH else y0
            row1 = om[y1 * OW:(y1 + 1) * OW]
            for tx in range(TW):
                s00 = m0[tx] + m4[tx] + m8[tx]
                s01 = m1[tx] + m5[tx] + m9[tx]
                s02 = m2[tx] + m6[tx] + m10[tx]
                s10 = m4[tx] - m8[tx] - m12[tx]
                s11 = m5[tx] - m9[tx] - m13[tx]
                s12 = m6[tx] - m10[tx] - m14[tx]
                row1[2 * tx] = s10 + s11 + s12
                row0[2 * tx] = s00 + s01 + s02
                if tx < TWf:
                    s03 = m3[tx] + m7[tx] + m11[tx]
                    s13 = m7[tx] - m11[tx] - m15[tx]
                    row1[2 * tx + 1] = s11 - s12 - s13
                    row0[2 * tx + 1] = s01 - s02 - s03
        r0 = 2 * ty0
        r1 = min(2 * ty1, OH)
        seg = oma[r0 * OW:r1 * OW]
        if zn is None:
            epilogue_row(seg, b[m], act, prm, ep)
        else:
            epilogue_row(seg, b[m], 0, prm, ep)
            epilogue_residual(seg, zn[m, ::1][r0 * OW:r1 * OW], act, prm, ep)


@njit(**_KW)
def winograd_kernel(x, U, b, out, z, ph, pw, OH, OW, rows, act, prm, ep, ga, sc, part,  # type: ignore[no-untyped-def]
                    nparts):
    """x [N, C, H, W]; U [16, packed M x C]; out [N, M, OH*OW]; z None or the residual like out; 3x3, stride 1, dilation 1, group 1;
    rows: tile rows per block (``wino_rows``); ga: the GEMM's address (``convgemm.gemm_address``).

    Winograd F(2x2, 3x3): 2.25x fewer multiplications than the direct sum. Per block of tile rows,
    the input tiles are transformed (V = B^T d B), the 16 products U[k] @ V[k] are GEMMs, and
    the output transform (A^T m A) writes the block, which the epilogue then finishes in place.
    sc: scratch of ``_scratch_size`` elements; this call computes its ``part`` of the tile-row
    blocks, or when there are too few blocks to share evenly (small planes: resnet50's 7x7,
    squeezenet's 13x13 are one block), of the output channels' row tiles; each part pads and
    transforms the input itself (1/M of the GEMMs' work)."""
    N, C, H, W = x.shape
    M = out.shape[1]
    TH = (OH + 1) // 2
    TW = (OW + 1) // 2
    zero = prm[2]
    Tb = rows * TW
    sv, sm = _wino_strides(C, M, Tb)
    nxp = C * (2 * TH + 2) * (2 * TW + 2)
    xp = sc[:nxp].reshape(C, 1, 2 * TH + 2, 2 * TW + 2)
    V = sc[nxp:nxp + 16 * sv].reshape(16, sv)
    Mt = sc[nxp + 16 * sv:nxp + 16 * (sv + sm)].reshape(16, sm)
    bp = sc[nxp + 16 * (sv + sm):nxp + 16 * (sv + sm) + BBLOCK]
    nb = (TH + rows - 1) // rows
    if nb % nparts == 0 or nb >= 2 * nparts:  # every channel, a share of the blocks
        b0, b1 = share(nb, part, nparts)
        t0, t1 = 0, (M + MR - 1) // MR
    else:  # every block, a share of the row tiles (a GEMM row's sum does not depend on its tile)
        b0, b1 = 0, nb
        t0, t1 = share((M + MR - 1) // MR, part, nparts)
    c0, c1 = t0 * MR, min(M, t1 * MR)
    if b0 >= b1 or c0 >= c1:
        return
    for n in range(N):
        for c in range(C):
            pad_phases(x, (n * C + c) * H * W, 1, H, W, xp[c], 1, 2 * TH + 2, 2 * TW + 2, 0, ph, pw, 1, zero, n > 0)
        xp3 = xp[:, 0]
        on = out[n]
        for ty0 in range(b0 * rows, min(TH, b1 * rows), rows):
            ty1 = min(TH, ty0 + rows)
            tb = (ty1 - ty0) * TW
            _wino_in(xp3, V, C, Tb, ty0, ty1, TW)
            for k in range(16):
                gemm_at(ga, U[k], t0 * C * MR, c1 - c0, C, V[k, :C * Tb].reshape(C, Tb)[:, :tb],
                        Mt[k, :M * Tb].reshape(M, Tb)[c0:c1, :tb], b, 0, 0, zero, zero, bp, None)
            if z is None:
                _wino_out(Mt, on, None, b, Tb, ty0, ty1, TW, OH, OW, act, prm, ep, c0, c1)
            else:
                _wino_out(Mt, on, z[n], b, Tb, ty0, ty1, TW, OH, OW, act, prm, ep, c0, c1)


def wino_rows(C: int, M: int, OH: int, OW: int) -> int:
    """Tile rows per block (the per-shape plan's choice, ``conv_setup.conv_plan``). Each block reads all
    16 transformed weight matrices (16 M x C) again; its V and Mt hold 16 (C + M) values per tile. A
    block is at least ``_WINO_BLOCK`` values of V and Mt (they stay in L2), and at least M C / (C + M)
    tiles, so that the weights read per tile are at most what V and Mt hold: with 512 channels in and
    out that is 256 tiles, where the L2 rule alone gave 16 (one 28-wide tile row), and the 16 GEMMs
    were 512 x 512 x 14, bound by reading the 16 MiB of weights again per block. Measured on the Intel
    Xeon (Ice Lake) VM, 1 thread, old and new blocks alternating in one process: 512->512 at 28x28
    47.4 -> 17.5 ms, at 14x14 14.4 -> 6.7 ms, 256->512 at 28x28 23.2 -> 10.4 ms, 256->256 at 56x56
    22.7 -> 19.2 ms; at 2 threads 256->256 at 14x14 (one block, split by output channels instead of
    two blocks) ~10 % slower."""
    TH = (OH + 1) // 2
    TW = (OW + 1) // 2
    return max(1, min(TH, max(_WINO_BLOCK // (16 * (C + M)), M * C // (C + M)) // TW))


def wino_strides(C: int, M: int, Tb: int) -> tuple[int, int]:
    """Row strides of V and Mt for blocks of Tb tiles: 4 KiB multiples + 64 B, so the 16 planes read
    together fall in different L1 sets (a power-of-two stride made the transforms 3.5x slower at
    some block sizes). Plain Python for the per-shape setup; ``_wino_strides`` is the same function
    jitted for the kernel."""
    return (C * Tb + 1023) // 1024 * 1024 + 16, (M * Tb + 1023) // 1024 * 1024 + 16


_wino_strides = njit(**EP)(wino_strides)


_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


_WINO_BLOCK = 1 << 18
_GG = np.kron(_G, _G)  # [16, 9]


def winograd_weights(w: np.ndarray, dt: np.dtype) -> np.ndarray:
    """U[4i+j] = the [M, C] matrix (G w[m, c] G^T)[i, j] for 3x3 weights w [M, C, 3, 3], packed for
    ``gemm_packed`` (one group per k)."""
    # one GEMM: (G w G^T)[i, j] = sum_ab (G kron G)[4i+j, 3a+b] w[a, b] (an einsum took 35 ms a layer;
    # through float64 twice this GEMM's time), in the compute dtype: G's entries are 0, +-1/2, 1
    M, C = w.shape[:2]
    u = _GG.astype(dt) @ w.reshape(M * C, 9).astype(dt, copy=False).T  # [16, M*C], no transposing copy
    return pack_weights(u.reshape(16 * M, C), 16)


def winograd_applies(w_shape: tuple[int, ...], group: int, strides: Sequence[int], dilations: Sequence[int]) -> bool:
    """3x3, stride 1, dilation 1, one group, and enough channels that the GEMMs dominate."""
    return (len(w_shape) == 4 and tuple(w_shape[2:]) == (3, 3) and group == 1 and tuple(strides) == (1, 1)
            and tuple(dilations) == (1, 1) and w_shape[0] >= 16 and w_shape[1] >= 16)
