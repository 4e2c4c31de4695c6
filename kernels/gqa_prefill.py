"""GroupQueryAttention's attention for many query rows (a prompt): tiles of scores from BLAS GEMMs.

``gqa_kernels.attend`` computes one query row at a time with dot products, which suits a decode
step (one row, keys streamed once) but not a prompt: there every key row is read by every later
query row, and a GEMM reuses what it loads. Here the work is cut into tasks of (batch b, KV head,
block of ``SB`` query rows); for each of the KV head's query heads and each block of ``TB`` keys
the block's scores come from one GEMM (``attention_gemm.gemm``: numpy's OpenBLAS sgemm, or a loop
without it), the rows outside each query row's visible keys ``[start_s, end_s)`` (causal end,
the batch's total length, the local window) are set to -inf, then an online softmax (running max
and sum, the partial output rescaled) and a second GEMM accumulates ``p @ V`` straight into the
output rows. Key blocks wholly outside a query block's rows are skipped, so a causal prompt of S
rows computes about ``S * (S + SB) / 2`` scores per head, not ``S * S``. Softcap, attention_bias and
the sink (smooth_softmax / head_sink) are applied per row, as ``gqa_kernels.attend`` does.

Tasks are split between threads, never shared: results do not depend on the thread count. Each
thread runs its GEMMs on one BLAS thread (``attention_gemm.set_blas_threads_here``).

Measured on the Intel Xeon (Ice Lake-SP) 2-vCPU VM, one thread, the benchmark decoder's shapes
(S = 128, 12 query / 4 KV heads, H = 64), caches warm: the attention of a 128-token prompt took
1.3-1.5 ms per layer with ``gqa_kernels.attend``, 0.62 ms here (0.37 ms of it the GEMMs, ~100
GFLOP/s; SB = 32 was 3 % faster, SB = 128 40 % slower). Each task rotates its query rows itself
(one head's block at a time, into an L1 scratch): inside the model run, where the caches are cold,
``prepare`` writing a rotated Q [B, N, S, H] took 255-280 us per layer, 100 us without Q, and the
whole node 1.45-1.75 ms per layer, 1.2-1.25 ms after (CPU time, the VM under load ~2).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from jitort.kernels.attention import max_shift, row_sums
from jitort.kernels.attention_gemm import gemm
from jitort.kernels.fastmath import exp_f32, tanh_f32
from jitort.kernels.gqa_kernels import rotate_rows
from jitort.kernels.softmax import exp_block as _exp

SB = 64   # query rows per task
TB = 128  # keys per score tile
_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


@njit(**_JIT)
def attend_tiles(fn, qs, qo, pos, cos, sin, rotary, interleaved, kc, vc, total, past, causal, window, scale, softcap,
                 bias, sink, use_sink, out, sc, pr, part, nparts):  # type: ignore[no-untyped-def]
    """Tasks (b, kv head, query block) with ``task % nparts == part``: out[b, s, h*H:(h+1)*H] =
    softmax over keys [start_s, end_s) of the scores, times V. The query heads are qs [B, S, *, H]
    from head qo, rotated here block by block at positions pos [B, S] (``rotary``; cos/sin [M, r/2]):
    writing a rotated Q [B, N, S, H] and reading it back cost more (caches cold in a model run).
    kc, vc [B, Nkv, L, H]; total, past [B]; bias [Bb, Nb, S, Tb] (Tb 0: none); sink [N]; out [B, S,
    N*H]; sc, pr: this thread's scratch of SB * TB floats. ``fn``: the cblas_sgemm address (0: loop
    kernel)."""
    B, S, H = qs.shape[0], qs.shape[1], qs.shape[3]
    D = out.shape[2]
    N = D // H
    K, L = kc.shape[1], kc.shape[2]
    g = N // K
    Bb, Nb, Tb = bias.shape[0], bias.shape[1], bias.shape[3]
    ninf = np.float32(-np.inf)
    zero = np.float32(0)
    one = np.float32(1)
    sc32 = np.float32(scale)
    cap = np.float32(softcap)
    qb = np.empty((SB, H), np.float32)  # one head's rotated query rows of a block
    qf = qb.reshape(-1)
    sci = sc.view(np.int32)
    kf, vf, of = kc.reshape(-1), vc.reshape(-1), out.reshape(-1)
    m = np.empty(SB, np.float32)
    shift = np.empty(SB, np.float32)
    lsum = np.empty(SB, np.float32)
    lo_s = np.empty(SB, np.int64)
    hi_s = np.empty(SB, np.int64)
    nsb = (S + SB - 1) // SB
    for task in range(part, B * K * nsb, nparts):
        unit = task // nsb
        sb = task % nsb
        if unit % 2:  # odd units take their blocks last first: a causal block's work grows with sb,
            sb = nsb - 1 - sb  # so 2 parts get the same work (else one got all the last blocks)
        b = unit // K
        kh = unit - b * K
        s0 = sb * SB
        ns = min(SB, S - s0)
        tb = total[b]
        lo, hi = L, 0
        for i in range(ns):
            end = min(past[b] + s0 + i + 1, tb) if causal else tb
            start = 0
            if window >= 0 and end > window:
                start = end - window
            lo_s[i], hi_s[i] = start, end
            if end > start:
                lo, hi = min(lo, start), max(hi, end)
        ko = (b * K + kh) * L * H
        bb = b if Bb > 1 else 0
        for r in range(g):
            h = kh * g + r
            rotate_rows(qs[b, s0:s0 + ns, qo + h], qb, 0, pos[b, s0:s0 + ns], cos, sin, rotary, interleaved)
            oo = (b * S + s0) * D + h * H
            for i in range(ns):
                m[i] = sink[h] if use_sink else ninf
                lsum[i] = zero
            for t0 in range(lo, hi, TB):
                nt = min(TB, hi - t0)
                gemm(fn, 0, 1, ns, nt, H, sc32, qf, H, kf[ko + t0 * H:], H, zero, sc, nt)
                sc2 = sc[:ns * nt].reshape(ns, nt)  # 2-D indices, not row views (an NRT count pair each)
                for i in range(ns):
                    if cap > zero:
                        for j in range(nt):
                            sc2[i, j] = cap * tanh_f32(sc2[i, j] / cap)
                    if Tb > 0:
                        hb = h if Nb > 1 else 0
                        for j in range(nt):
                            sc2[i, j] += bias[bb, hb, s0 + i, t0 + j]
                    a = lo_s[i] - t0
                    e = hi_s[i] - t0
                    if a > 0 or e < nt:  # one select pass (vectorises; a loop from a bound did not)
                        for j in range(nt):
                            sc2[i, j] = sc2[i, j] if a <= j < e else ninf
                max_shift(sc, sci, ns, nt, m, shift, t0 == lo and not use_sink)
                _exp(sc[:ns * nt], pr[:ns * nt])
                row_sums(pr, ns, nt, lsum, shift)
                if t0 > lo:
                    for i in range(ns):
                        a = shift[i]
                        if a != one:
                            for j in range(H):
                                out[b, s0 + i, h * H + j] *= a
                gemm(fn, 0, 0, ns, H, nt, one, pr, nt, vf[ko + t0 * H:], H, zero if t0 == lo else one, of[oo:], D)
            for i in range(ns):
                if lo >= hi:  # no row of this block sees a key
                    for j in range(H):
                        out[b, s0 + i, h * H + j] = zero
                    continue
                if use_sink:
                    lsum[i] += exp_f32(sink[h] - m[i])
                inv = one / lsum[i] if lsum[i] > zero else zero
                for j in range(H):
                    out[b, s0 + i, h * H + j] *= inv
