"""Fused scaled-dot-product attention (``FusedAttention``, domain ``jitort``), the node
``jitort.passes.attention_fusion`` writes for the MatMul / scale / mask / Softmax / MatMul chains torch's
exporters emit.

Semantics, per (batch b, head n, query s, key t), exactly the chain it replaces:
``x = (q . k) * scale``; then the mask steps in graph order: ``x = x + add_mask`` (broadcast to
[B, N, S, T]) and ``x = keep ? x : fill`` (a boolean mask, ``keep`` = mask or its negation; with
``causal`` the boolean mask is a slice from the origin of a lower-triangular buffer, so keep is
``t <= s``, computed, and key blocks wholly after a query block are skipped when the fill is -inf);
then softmax over t and ``sum_t p * v``. A row whose scores are all -inf is NaN, as Softmax makes it.

Speed notes (measured on the AMD EPYC Zen 4 host, 1 thread): the row max goes through integer keys
(vectorises: 0.09 ns per float32, a float max reduction 0.55); exp runs as one flat call per tile
(kernels/softmax.py's reason); the score tiles are per-thread buffers reused across calls; every
thread runs its GEMMs on one OpenBLAS thread (see attention_gemm.set_blas_threads_here).

Run as one task per (b, n, block of query rows): scores for a block of keys come from one strided GEMM
(attention_gemm), the block goes through an online softmax (running max and sum, earlier partial
output rescaled), and its probabilities times V accumulate into the output rows in place; no
[S, T] score tensor exists beyond one [SB, TB] tile. Q, K, V and the output are read and written
through strides (``q_perm`` etc. map the stored tensor to [B, N, S, H]), so the Transposes of split
heads and of the merged output cost no copy. K/V with fewer heads than Q (GQA/MQA) serve
``N / NK`` query heads each. float16 computes in float32.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import overload

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.attention_gemm import cblas_address, gemm, run_tasks
from jitort.kernels.reduce_math import fexp, fmaximum, is_half, radd
from jitort.kernels.softmax import exp_block as _exp
from jitort.kernels.registry import op
from jitort.kernels.threads import get_num_threads, usable_cpus

_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
SB = 128    # query rows per task
TB = 256   # keys per online-softmax block


def _int_view(x: np.ndarray) -> np.ndarray:
    """x's bits as the signed integers of its width (float32 -> int32, float64 -> int64)."""
    return x.view(np.int32 if x.dtype == np.float32 else np.int64)


@overload(_int_view)
def _int_view_ov(x):  # type: ignore[no-untyped-def]
    ib = np.int32 if x.dtype == types.float32 else np.int64
    return lambda x: x.view(ib)


@njit(**_JIT)
def max_shift(sc, sci, ns, nt, m, shift, first):  # type: ignore[no-untyped-def]
    """Per row of the [ns, nt] tile: the running max m (new max -> m, rescale factor of the earlier
    partial sums -> shift), and the row minus it. The row max goes through order-preserving integer
    keys: that reduction vectorises, a float max stays a scalar chain (0.09 vs 0.55 ns per float32
    here). NaN gets some key; it makes its row NaN through exp(x - max) anyway, as in Softmax."""
    ib = sci.dtype.type
    bits = 8 * sci.itemsize - 1
    lo = ib((1 << bits) - 1)
    sh = ib(bits)
    key = np.empty(1, sci.dtype)
    ninf = sc.dtype.type(-np.inf)
    zero = sc.dtype.type(0)
    one = sc.dtype.type(1)
    for i in range(ns):
        base = i * nt
        km = ib(-lo - 1)
        for j in range(nt):
            v = sci[base + j]
            km = max(km, v ^ ((v >> sh) & lo))
        key[0] = km ^ ((km >> sh) & lo)
        mx = fmaximum(m[i], key.view(sc.dtype)[0])
        if mx == ninf:  # nothing visible yet: this block adds nothing (exp(-inf - -inf) is NaN)
            mx = zero
            alpha = one
        else:
            alpha = zero if first else fexp(m[i] - mx)
            m[i] = mx
        for j in range(nt):
            sc[base + j] = sc[base + j] - mx
        shift[i] = alpha


@njit(**_JIT)
def row_sums(pr, ns, nt, lsum, shift):  # type: ignore[no-untyped-def]
    zero = pr.dtype.type(0)
    for i in range(ns):
        base = i * nt
        t = zero
        for j in range(nt):
            t = radd(t, pr[base + j])
        lsum[i] = lsum[i] * shift[i] + t


@njit(**_JIT)
def _add(row, madd, base, step):  # type: ignore[no-untyped-def]
    nt = row.shape[0]
    if step == 1:
        mr = madd[base:base + nt]
        for j in range(nt):
            row[j] += mr[j]
    elif step == 0:
        a = madd[base]
        for j in range(nt):
            row[j] += a
    else:
        for j in range(nt):
            row[j] += madd[base + j * step]


@njit(**_JIT)
def _keep(row, mkeep, base, step, keep_is, fill):  # type: ignore[no-untyped-def]
    """row[j] = fill where mask[j] != keep_is (selects, not branches, on the contiguous path)."""
    nt = row.shape[0]
    if step == 1:
        mr = mkeep[base:base + nt]
        for j in range(nt):
            row[j] = row[j] if mr[j] == keep_is else fill
    elif step == 0:
        if mkeep[base] != keep_is:
            for j in range(nt):
                row[j] = fill
    else:
        for j in range(nt):
            if mkeep[base + j * step] != keep_is:
                row[j] = fill


@njit(**_JIT)
def _attend(fn, q, k, v, o, st, madd, mkeep, dims, flags, scale, fill, sc, pr, part, nparts):  # type: ignore[no-untyped-def]
    """st: int64 [6, 4] element strides (b, n, s|t, h) of q, k, v, o, madd, mkeep; dims: B, N, NK, S,
    T, H, HV; flags: has_add, has_keep, keep_is (1: keep where mask true), where_first, causal,
    k_rows (1: K's h stride is 1, rows are keys; 0: K^T rows are contiguous), causal_offset (query s
    sees keys t <= s + offset), empty_zero (1: a row with no visible key is 0, not NaN). sc, pr: this
    thread's scratch of at least min(S, SB) * min(T, TB) elements."""
    B, N, NK, S, T, H, HV = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6]
    has_add, has_keep, keep_is, where_first, causal, k_rows = (flags[0], flags[1], flags[2], flags[3],
                                                              flags[4], flags[5])
    coff, empty_zero = flags[6], flags[7]
    dt = o.dtype
    ninf = dt.type(-np.inf)
    zero = dt.type(0)
    one = dt.type(1)
    sci = _int_view(sc)
    m = np.empty(SB, dt)
    shift = np.empty(SB, dt)
    lsum = np.empty(SB, dt)
    rep = N // NK
    nsb = (S + SB - 1) // SB
    ntask = B * N * nsb
    for task in range(part, ntask, nparts):
        sb = task % nsb
        bn = task // nsb
        n = bn % N
        b = bn // N
        nk = n // rep
        s0 = sb * SB
        ns = min(SB, S - s0)
        qo = b * st[0, 0] + n * st[0, 1] + s0 * st[0, 2]
        ko = b * st[1, 0] + nk * st[1, 1]
        vo = b * st[2, 0] + nk * st[2, 1]
        oo = b * st[3, 0] + n * st[3, 1] + s0 * st[3, 2]
        tend = T
        if causal and fill == ninf:  # keys after the block's last row contribute exactly 0
            tend = max(0, min(T, s0 + ns + coff))
        for i in range(ns):
            m[i] = ninf
            lsum[i] = zero
        for t0 in range(0, tend, TB):
            nt = min(TB, tend - t0)
            if k_rows:
                gemm(fn, 0, 1, ns, nt, H, scale, q[qo:], st[0, 2], k[ko + t0 * st[1, 2]:], st[1, 2], zero, sc, nt)
            else:
                gemm(fn, 0, 0, ns, nt, H, scale, q[qo:], st[0, 2], k[ko + t0 * st[1, 2]:], st[1, 3], zero, sc, nt)
            for i in range(ns if has_add or has_keep or causal else 0):
                s = s0 + i
                row = sc[i * nt:i * nt + nt]
                for phase in range(2):
                    if (phase == 0) == (where_first != 0):  # the Where step (boolean mask or causal)
                        if has_keep:
                            _keep(row, mkeep, b * st[5, 0] + n * st[5, 1] + s * st[5, 2] + t0 * st[5, 3], st[5, 3],
                                  keep_is != 0, fill)
                        if causal:
                            for j in range(max(0, s + 1 + coff - t0), nt):
                                row[j] = fill
                    elif has_add:
                        _add(row, madd, b * st[4, 0] + n * st[4, 1] + s * st[4, 2] + t0 * st[4, 3], st[4, 3])
            max_shift(sc, sci, ns, nt, m, shift, t0 == 0)
            _exp(sc[:ns * nt], pr[:ns * nt])  # one flat call: see kernels/softmax.py
            row_sums(pr, ns, nt, lsum, shift)
            for i in range(ns):
                if t0 > 0 and shift[i] != one:
                    orow = o[oo + i * st[3, 2]:oo + i * st[3, 2] + HV]
                    a = shift[i]
                    for h in range(HV):
                        orow[h] *= a
            gemm(fn, 0, 0, ns, HV, nt, one, pr, nt, v[vo + t0 * st[2, 2]:], st[2, 2], zero if t0 == 0 else one,
                 o[oo:], st[3, 2])
        for i in range(ns):
            # 0 visible keys: 0 * inf = NaN, Softmax's answer for an all -inf row (0 where empty_zero)
            inv = zero if empty_zero and lsum[i] == zero else one / lsum[i]
            orow = o[oo + i * st[3, 2]:oo + i * st[3, 2] + HV]
            for h in range(HV):
                orow[h] *= inv


def _operand(x: np.ndarray, perm: tuple[int, ...], cd: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(x contiguous in cd as 1-D, its view transposed by perm) — the kernel addresses the view by strides."""
    if x.ndim != len(perm):
        raise InvalidArgument(f"attention: an input of shape {list(x.shape)} is not of rank {len(perm)}")
    c = x if x.dtype == cd and x.flags.c_contiguous else np.ascontiguousarray(x, cd)
    return c.reshape(-1), c.transpose(perm)


def _strides(x: np.ndarray) -> list[int]:
    """Element strides (a transposed contiguous array's: positive, natural even for size-1 dims)."""
    n = x.itemsize
    return [s // n for s in x.strides]


def _mask(m: np.ndarray, full: tuple[int, int, int, int], dt: Any, op_name: str) -> tuple[np.ndarray, list[int]]:
    """(the mask contiguous in dt as 1-D, its element strides broadcast to ``full``, 0 on broadcast dims)."""
    c = m if m.dtype == dt and m.flags.c_contiguous else np.ascontiguousarray(m, dt)
    if c.ndim > 4:
        raise InvalidArgument(f"{op_name}: a mask of shape {list(m.shape)} does not broadcast to the scores "
                              f"{list(full)}")
    lead = 4 - c.ndim
    st = [0] * 4
    for d in range(c.ndim):
        size = c.shape[d]
        if size == full[lead + d]:
            st[lead + d] = c.strides[d] // c.itemsize if size > 1 else 0
        elif size != 1:
            raise InvalidArgument(f"{op_name}: a mask of shape {list(m.shape)} does not broadcast to the "
                                  f"scores {list(full)}")
    return c.reshape(-1), st


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_NO_ADD = {_F32: np.zeros(1, _F32), _F64: np.zeros(1, _F64)}
_NO_KEEP = np.zeros(1, np.bool_)
_FLOPS_PER_PART = 8e6  # below ~100 us of work per part, handing it to a pool thread costs more than it saves


@op("FusedAttention", since=1, domain="jitort")
def FusedAttention(q: np.ndarray, k: np.ndarray, v: np.ndarray, add_mask: np.ndarray | None = None,
                   keep_mask: np.ndarray | None = None, *, q_perm: tuple[int, ...], k_perm: tuple[int, ...],
                   v_perm: tuple[int, ...], out_bsnh: int, scale: float, keep_is: int = 1, fill: str = "-inf",
                   where_first: int = 0, causal: int = 0) -> np.ndarray:
    """softmax(q k^T * scale, masks) v with q/k/v ``x.transpose(perm)`` = [B, N, S|T, H]; the output is
    [B, S, N, Hv] when ``out_bsnh`` else [B, N, S, Hv]; ``fill`` is the Where constant as text (it
    may be -inf). With ``causal`` the boolean mask is a slice of a lower-triangular buffer from its
    origin: where it is [.., S, T], keep = t <= s is computed instead of read. See the module docstring."""
    if causal and keep_mask is not None:
        S, T = q.shape[q_perm[2]], k.shape[k_perm[2]]
        if keep_mask.shape[-2:] == (S, T):
            keep_mask = None  # a slice of tril from the origin: keep = t <= s, computed
        else:
            causal = 0  # not [.., S, T]: apply it as the boolean mask it is
    return attend(q, k, v, add_mask, keep_mask, q_perm=q_perm, k_perm=k_perm, v_perm=v_perm, out_bsnh=out_bsnh,
                  scale=scale, keep_is=keep_is, fill=float(fill), where_first=where_first, causal=causal)


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, add_mask: np.ndarray | None, keep_mask: np.ndarray | None,
           *, q_perm: tuple[int, ...], k_perm: tuple[int, ...], v_perm: tuple[int, ...], out_bsnh: int,
           scale: float, keep_is: int = 1, fill: float = -np.inf, where_first: int = 0, causal: int = 0,
           causal_offset: int = 0, empty_zero: int = 0, op_name: str = "FusedAttention") -> np.ndarray:
    """The attention kernel's entry: q/k/v ``x.transpose(perm)`` = [B, N, S|T, H]; ``add_mask``
    (added) and ``keep_mask`` (``fill`` where it is not ``keep_is``) broadcast to [B, N, S, T], applied
    in that order unless ``where_first``; ``causal``: query s sees keys t <= s + ``causal_offset``
    (computed, applied with the keep mask); ``empty_zero``: a row that sees no key is 0 (else NaN)."""
    dt = q.dtype
    cd = dt if dt == _F32 or dt == _F64 else (_F32 if is_half(dt) else None)
    if cd is None:
        raise OrtNotImplemented(f"jitort has no implementation for op '{op_name}' for element type {dt}")
    (qf, q4), (kf, k4), (vf, v4) = _operand(q, q_perm, cd), _operand(k, k_perm, cd), _operand(v, v_perm, cd)
    B, N, S, H = q4.shape
    Bk, NK, T, Hk = k4.shape
    if Hk != H or v4.shape[:3] != k4.shape[:3] or Bk not in (1, B) or NK == 0 or N % NK:
        raise InvalidArgument(f"{op_name}: key {list(k4.shape)} and value {list(v4.shape)} (as [B, N, T, H]) do "
                              f"not match the query {list(q4.shape)}")
    HV = v4.shape[3]
    out = np.empty((B, S, N, HV) if out_bsnh else (B, N, S, HV), cd)
    if out.size == 0 or T == 0:  # softmax over no keys: NaN (or 0)
        out.fill(0 if empty_zero else np.nan)
        return out if cd == dt else out.astype(dt)
    qs, ks, vs = _strides(q4), _strides(k4), _strides(v4)
    if qs[3] != 1 and H > 1:
        qf, q4 = _operand(np.ascontiguousarray(q4), (0, 1, 2, 3), cd)
        qs = _strides(q4)
    k_rows = 1 if ks[3] == 1 or H == 1 else 0
    if not k_rows and ks[2] != 1:
        kf, k4 = _operand(np.ascontiguousarray(k4), (0, 1, 2, 3), cd)
        ks, k_rows = _strides(k4), 1
    if vs[3] != 1 and HV > 1:
        vf, v4 = _operand(np.ascontiguousarray(v4), (0, 1, 2, 3), cd)
        vs = _strides(v4)
    # a size-1 dim's stride is arbitrary in numpy, but BLAS checks leading dims even for one row
    if S == 1:
        qs[2] = H
    if T == 1:
        vs[2] = HV
        if k_rows:
            ks[2] = H
    if Bk == 1:
        ks[0] = vs[0] = 0
    os_ = [N * HV * S, HV, N * HV, 1] if out_bsnh else [N * S * HV, S * HV, HV, 1]
    full = (B, N, S, T)
    maf, mas = _NO_ADD[cd], [0, 0, 0, 0]
    if add_mask is not None:
        maf, mas = _mask(add_mask, full, cd, op_name)
    mkf, mks = _NO_KEEP, [0, 0, 0, 0]
    if keep_mask is not None:
        mkf, mks = _mask(keep_mask, full, np.bool_, op_name)
    st = np.array([qs, ks, vs, os_, mas, mks], np.int64)
    params = np.array([B, N, NK, S, T, H, HV, add_mask is not None, keep_mask is not None, keep_is,
                       where_first, causal, k_rows, causal_offset, empty_zero], np.int64)
    tasks = B * N * ((S + SB - 1) // SB)
    nparts = min(get_num_threads() or usable_cpus(), tasks, max(1, int(4.0 * B * N * S * T * max(H, HV)
                                                                       // _FLOPS_PER_PART)))
    run_tasks(_attend, (cblas_address(cd), qf, kf, vf, out.reshape(-1), st, maf, mkf, params[:7], params[7:],
                        cd.type(scale), cd.type(fill)), SB * TB, cd, nparts)
    return out if cd == dt else out.astype(dt)


def reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """softmax(q k^T * scale) v on [B, N, S, H] arrays in float64 (for tests)."""
    s = np.matmul(q.astype(np.float64), np.swapaxes(k.astype(np.float64), -1, -2)) * scale
    s = np.exp(s - s.max(-1, keepdims=True))
    return np.matmul(s / s.sum(-1, keepdims=True), v.astype(np.float64))
