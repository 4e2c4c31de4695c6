"""The compiled kernels of GroupQueryAttention (``kernels/contrib_gqa.py`` states the semantics and
checks the inputs): ``prepare`` rotates Q and writes the KV caches, ``attend`` runs the online
softmax per (batch, KV head) unit, and ``decode_step`` does both for the common case of a model's
step (past caches given, no bias, sink or position_ids, one thread's work) after checking the
shapes and lengths itself, so the Python around it is a few attribute reads per call. There the
attention itself copies the past rows into the present, block by block just before it reads them
(``_attend``), so each past row comes from memory once: a decode step of the 4-layer, 12/4-head
decoder at 512 positions spent ~330 us per layer in GroupQueryAttention, mostly memory traffic,
when the whole cache was copied first and read again (Intel Xeon Ice Lake VM, 1 thread).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from jitort.kernels.fastmath import exp_f32, tanh_f32

BLOCK = 64  # keys per online-softmax block: scores of one block live in a small scratch row
_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
# the score and softmax sums may reassociate (vectorised dot products); max/exp keep inf semantics
_FAST: dict[str, Any] = dict(_JIT, fastmath={"contract", "reassoc"})


@njit(inline="always")
def _scores(kb, q, b, h0, s, j0, n, sc, buf):  # type: ignore[no-untyped-def]
    """buf[r, j] = sc * q[b, h0 + r, s] . kb[j0 + j] for j < n and the g = buf.shape[0] query heads
    from h0, key rows kb [L, H]: four keys per pass over a query row (four independent sums: one
    load of q per four FMAs, and four reductions in flight instead of one). Rows are indexed, not
    taken as views (each view costs an NRT reference count pair, ~5 per key): a decode step's
    attention of the benchmark decoder at 512 positions, 4 layers, caches warm, took 641 us with
    views, 569 indexed (Intel Ice Lake VM, 1 thread; a numpy copy of the 4 pasts alone: 271)."""
    g, H = buf.shape[0], kb.shape[1]
    zero = np.float32(0)
    j = 0
    while j + 4 <= n:
        t = j0 + j
        for r in range(g):
            h = h0 + r
            x0 = x1 = x2 = x3 = zero
            for i in range(H):
                qi = q[b, h, s, i]
                x0 += qi * kb[t, i]
                x1 += qi * kb[t + 1, i]
                x2 += qi * kb[t + 2, i]
                x3 += qi * kb[t + 3, i]
            buf[r, j], buf[r, j + 1], buf[r, j + 2], buf[r, j + 3] = x0 * sc, x1 * sc, x2 * sc, x3 * sc
        j += 4
    while j < n:
        t = j0 + j
        for r in range(g):
            h = h0 + r
            x = zero
            for i in range(H):
                x += q[b, h, s, i] * kb[t, i]
            buf[r, j] = x * sc
        j += 1


@njit(inline="always")
def _weighted_rows(vb, buf, j0, n, acc):  # type: ignore[no-untyped-def]
    """acc[r] += sum_j buf[r, j] * vb[j0 + j] for j < n: four value rows per pass over acc[r] (one
    load and store of the accumulator per four FMAs); rows indexed, not views (see ``_scores``)."""
    g, H = acc.shape
    for r in range(g):
        j = 0
        while j + 4 <= n:
            p0, p1, p2, p3 = buf[r, j], buf[r, j + 1], buf[r, j + 2], buf[r, j + 3]
            t = j0 + j
            for i in range(H):
                acc[r, i] += (p0 * vb[t, i] + p1 * vb[t + 1, i]) + (p2 * vb[t + 2, i] + p3 * vb[t + 3, i])
            j += 4
        while j < n:
            p = buf[r, j]
            t = j0 + j
            for i in range(H):
                acc[r, i] += p * vb[t, i]
            j += 1


@njit(inline="always")
def _max_of(x, n):  # type: ignore[no-untyped-def]
    """max(x[:n]) (-inf when n is 0) in four running maxima: one dependent compare per four values."""
    neg = np.float32(-np.inf)
    m0 = m1 = m2 = m3 = neg
    j = 0
    while j + 4 <= n:
        m0, m1, m2, m3 = max(m0, x[j]), max(m1, x[j + 1]), max(m2, x[j + 2]), max(m3, x[j + 3])
        j += 4
    while j < n:
        m0 = max(m0, x[j])
        j += 1
    return max(max(m0, m1), max(m2, m3))


@njit(**_FAST)
def attend(q, kc, vc, total, past, causal, window, scale, softcap, bias, sink, use_sink, out, part, nparts):
    """Units (b, kv head) with ``unit % nparts == part``: for the query heads sharing that KV head
    (each K/V row is read once for all of them), out[b, s, h*H:(h+1)*H] = the softmax-weighted sum
    of V rows, every query row s. q [B, N, S, H]; kc, vc [B, Nkv, L, H]; total, past [B]; bias
    [Bb, Nb, S, Tb] (Bb in {1, B}, Nb in {1, N}; Tb 0: none); sink [N]; out [B, S, N*H]."""
    _attend(q, kc, vc, total, past, causal, window, scale, softcap, bias, sink, use_sink, out, part, nparts, kc, vc,
            np.zeros(q.shape[0], np.int64))


@njit(inline="always")
def _copy_rows(src, dst, lo, hi):  # type: ignore[no-untyped-def]
    """Rows [lo, hi) of contiguous 2-D src into contiguous 2-D dst (one flat loop: a memcpy). The
    early return tells LLVM the indices are not negative: with a possibly negative start the
    wrap-around of each index kept the loop scalar (36 us for 128 KiB instead of ~4)."""
    H = src.shape[1]
    o, n = lo * H, (hi - lo) * H
    if o < 0 or n <= 0:
        return
    a, d = src.reshape(-1), dst.reshape(-1)
    for i in range(n):
        d[o + i] = a[o + i]


@njit(**_FAST)
def _attend(q, kc, vc, total, past, causal, window, scale, softcap, bias, sink, use_sink, out, part, nparts, pk, pv,
            ncopy):
    """``attend``, and with ``ncopy[b]`` > 0 it first fills cache rows [0, ncopy[b]) of unit (b, kv
    head) from pk, pv [B, Nkv, P, H], block by block just before the first query row reads them (the
    row is then read from L1, not again from memory after a copy of the whole cache)."""
    B, N, S, H = q.shape
    K = kc.shape[1]
    g = N // K
    Bb, Nb, Tb = bias.shape[0], bias.shape[1], bias.shape[3]
    neg = np.float32(-np.inf)
    zero = np.float32(0)
    sc = np.float32(scale)
    cap = np.float32(softcap)
    acc = np.empty((g, H), np.float32)
    buf = np.empty((g, BLOCK), np.float32)
    m = np.empty(g, np.float32)
    lsum = np.empty(g, np.float32)
    for unit in range(part, B * K, nparts):
        b = unit // K
        kh = unit - b * K
        tb = total[b]
        bb = b if Bb > 1 else 0
        nc = ncopy[b]
        kb, vb = kc[b, kh], vc[b, kh]
        for s in range(S):
            end = min(past[b] + s + 1, tb) if causal else tb
            start = 0
            if window >= 0 and end > window:
                start = end - window
            if s == 0 and nc > 0:  # rows before the first window
                _copy_rows(pk[b, kh], kb, 0, min(start, nc))
                _copy_rows(pv[b, kh], vb, 0, min(start, nc))
            for r in range(g):
                m[r] = sink[kh * g + r] if use_sink else neg
                lsum[r] = zero
                acc[r, :] = zero
            for j0 in range(start, end, BLOCK):
                n = min(BLOCK, end - j0)
                if s == 0 and j0 < nc:
                    _copy_rows(pk[b, kh], kb, j0, min(j0 + n, nc))
                    _copy_rows(pv[b, kh], vb, j0, min(j0 + n, nc))
                _scores(kb, q, b, kh * g, s, j0, n, sc, buf)
                for r in range(g):
                    br = buf[r]
                    if cap > zero:
                        for j in range(n):
                            br[j] = cap * tanh_f32(br[j] / cap)
                    if Tb > 0:
                        bias_row = bias[bb, kh * g + r if Nb > 1 else 0, s]
                        for j in range(n):
                            br[j] += bias_row[j0 + j]
                    bm = _max_of(br, n)
                    if bm > m[r]:  # rescale what was summed under the old max
                        c = exp_f32(m[r] - bm) if m[r] > neg else zero
                        lsum[r] *= c
                        for i in range(H):
                            acc[r, i] *= c
                        m[r] = bm
                    mr = m[r]  # a local: a store to br could alias m[r] for all LLVM knows, keeping the loop scalar
                    t = zero
                    for j in range(n):
                        e = exp_f32(br[j] - mr)
                        br[j] = e
                        t += e
                    lsum[r] += t
                _weighted_rows(vb, buf, j0, n, acc)
            if s == 0 and nc > max(start, end):  # rows after the first query row's keys
                _copy_rows(pk[b, kh], kb, max(start, end), nc)
                _copy_rows(pv[b, kh], vb, max(start, end), nc)
            o = out[b, s]
            for r in range(g):
                h = kh * g + r
                if use_sink:
                    lsum[r] += exp_f32(sink[h] - m[r])
                inv = np.float32(1) / lsum[r] if lsum[r] > zero else zero
                for i in range(H):
                    o[h * H + i] = acc[r, i] * inv


@njit(inline="always")
def rotate_rows(x, y, y0, pos, cos, sin, rotary, interleaved):  # type: ignore[no-untyped-def]
    """y[y0 + s] = x[s] rotated at position pos[s], for the S rows of x [S, H] (a head's rows, strided)
    into y [*, H] (cos/sin [M, r/2]; features past r copied). Row by row with 2-D indices on two
    views per head: called per row with four row views (NRT reference counts each) it cost ~0.1 us a
    row, and flat offsets kept the loops scalar (the index wrap-around): ``prepare`` of a 128-token
    prompt of the benchmark decoder (2048 Q/K rows rotated, 512 V rows) took ~230 us, ~95 us this
    way (Intel Ice Lake VM, 1 thread)."""
    S, H = x.shape
    half = cos.shape[1] if rotary else 0
    for s in range(S):
        p = pos[s]
        t = y0 + s
        if interleaved:
            for i in range(half):
                a, b = x[s, 2 * i], x[s, 2 * i + 1]
                c, n = cos[p, i], sin[p, i]
                y[t, 2 * i] = a * c - b * n
                y[t, 2 * i + 1] = b * c + a * n
        else:
            for i in range(half):
                a, b = x[s, i], x[s, i + half]
                c, n = cos[p, i], sin[p, i]
                y[t, i] = a * c - b * n
                y[t, i + half] = b * c + a * n
        if half == 0:  # (a loop from a start LLVM cannot prove >= 0 stays scalar: ~2x slower copies)
            for i in range(H):
                y[t, i] = x[s, i]
        else:
            for i in range(2 * half, H):
                y[t, i] = x[s, i]


@njit(**_JIT)
def _copy_flat(src, dst, n):
    """The first n elements of contiguous 2-D src into contiguous 2-D dst (one flat loop: a memcpy)."""
    a, d = src.reshape(-1), dst.reshape(-1)
    for i in range(n):
        d[i] = a[i]


@njit(**_JIT)
def prepare(qs, ks, vs, qo, ko, vo, pk, pv, npast, pos, cos, sin, rotary, interleaved, q, kc, vc, copy_past=True):
    """Q heads of qs [B, S, *, H] (from head qo) rotated into q [B, N, S, H] (q [B, N, 0, H]: none,
    the caller rotates Q itself); the caches kc, vc [B, Nkv, L, H]: past rows [0, npast[b]) of pk,
    pv, the new K (rotated) and V rows of ks, vs (from heads ko, vo) after them, zeros after that.
    pos [B, S] rotary positions."""
    B, S, H = qs.shape[0], qs.shape[1], qs.shape[3]
    N = q.shape[1]
    K = kc.shape[1]
    for b in range(B):
        pb = pos[b]
        for h in range(N if q.shape[2] == S else 0):
            rotate_rows(qs[b, :, qo + h], q[b, h], 0, pb, cos, sin, rotary, interleaved)
        n0 = npast[b]
        for k in range(K):
            kd, vd = kc[b, k], vc[b, k]
            if n0 > 0 and copy_past:  # (no past: pk, pv are a placeholder without rows)
                _copy_flat(pk[b, k], kd, n0 * H)
                _copy_flat(pv[b, k], vd, n0 * H)
            rotate_rows(ks[b, :, ko + k], kd, n0, pb, cos, sin, rotary, interleaved)
            rotate_rows(vs[b, :, vo + k], vd, n0, pb, cos, sin, False, False)
            kf, vf = kd.reshape(-1), vd.reshape(-1)
            for i in range((n0 + S) * H, kf.shape[0]):
                kf[i] = np.float32(0)
                vf[i] = np.float32(0)


@njit(**_JIT)
def prepare_attend(qs, ks, vs, qo, ko, vo, pk, pv, npast, pos, cos, sin, rotary, interleaved, q, kc, vc, total, past,
                    causal, window, scale, softcap, bias, sink, use_sink, out):
    """``prepare`` then ``attend`` on one thread."""
    prepare(qs, ks, vs, qo, ko, vo, pk, pv, npast, pos, cos, sin, rotary, interleaved, q, kc, vc)
    attend(q, kc, vc, total, past, causal, window, scale, softcap, bias, sink, use_sink, out, 0, 1)


@njit(**_JIT)
def decode_step(qs, ks, vs, pk, pv, seqlens, T, cos, sin, N, K, packed, scale, softcap, rotary, interleaved, window,
                causal, max_bytes, max_work):  # type: ignore[no-untyped-def]
    """GroupQueryAttention with past caches and none of bias, sink, position_ids, query_seqlens or the
    windowed cache: ``prepare`` then ``attend`` on this thread. qs [B, S, N*H] (``packed``: [B, S,
    (N + 2K) * H], ks and vs the same array), ks, vs [B, S, K*H]; pk, pv [B, K, P, H]; seqlens [B]
    (int32, total length - 1); T the total_sequence_length. -> (0, out, present_key,
    present_value), or (1, empty arrays) where a shape, a length, the caches' size (``max_bytes``)
    or the work (``max_work`` flops: more is split over threads) is outside this case: the caller
    runs the general path, which raises onnxruntime's error or does the work."""
    B, S, D = qs.shape
    P = pk.shape[2]
    W = N + 2 * K if packed else N
    H = D // W
    L = max(T, P)
    no = np.empty((0, 0, 0), np.float32)
    no4 = np.empty((0, 0, 0, 0), np.float32)
    if S < 1 or B < 1 or H < 1 or D != W * H or pk.shape[0] != B or pk.shape[1] != K or pk.shape[3] != H \
            or pv.shape != pk.shape or seqlens.shape[0] != B:
        return 1, no, no4, no4
    if not packed and (ks.shape[0] != B or ks.shape[1] != S or ks.shape[2] != K * H or vs.shape != ks.shape):
        return 1, no, no4, no4
    first = S == T
    if S > 1 and not first and B != 1:
        return 1, no, no4, no4
    lo, hi = seqlens[0] + 1, seqlens[0] + 1
    for b in range(1, B):
        lo, hi = min(lo, seqlens[b] + 1), max(hi, seqlens[b] + 1)
    if lo < 1 or hi > L or (not first and (lo < S or hi - S > P)):
        return 1, no, no4, no4
    if rotary:
        half = cos.shape[1]
        if sin.shape != cos.shape or H % 16 or half % 8 or half > (H // 16) * 8 \
                or (0 if first else lo - S) < 0 or (S - 1 if first else hi - 1) >= cos.shape[0]:
            return 1, no, no4, no4
    if 4 * B * K * L * H > max_bytes or 4.0 * S * L * H * B * N >= max_work:
        return 1, no, no4, no4
    tot = np.empty(B, np.int64)
    past = np.zeros(B, np.int64)
    pos = np.empty((B, S), np.int64)
    for b in range(B):
        tot[b] = seqlens[b] + 1
        if not first:
            past[b] = tot[b] - S
        for s in range(S):
            pos[b, s] = past[b] + s
    q = np.empty((B, N, S, H), np.float32)
    kc = np.empty((B, K, L, H), np.float32)
    vc = np.empty((B, K, L, H), np.float32)
    out = np.empty((B, S, N * H), np.float32)
    q4 = qs.reshape(B, S, W, H)
    if packed:
        prepare(q4, q4, q4, 0, N, N + K, pk, pv, past, pos, cos, sin, rotary, interleaved, q, kc, vc, False)
    else:
        prepare(q4, ks.reshape(B, S, K, H), vs.reshape(B, S, K, H), 0, 0, 0, pk, pv, past, pos, cos, sin, rotary,
                interleaved, q, kc, vc, False)
    sc = scale if scale != 0.0 else 1.0 / math.sqrt(H)
    # the past rows are copied by the attention, block by block as it reads them (``_attend``)
    _attend(q, kc, vc, tot, past, causal, window, sc, softcap, np.zeros((1, 1, 1, 0), np.float32),
            np.zeros(N, np.float32), False, out, 0, 1, pk, pv, past)
    return 0, out, kc, vc
