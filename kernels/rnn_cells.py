"""The recurrence kernels of LSTM, GRU and RNN (``rnn.py`` is the op layer: attributes, weight
packing, the driver): one ``@njit`` kernel per cell type that runs one direction over time for a
range of batch rows, the activations they apply by int code, and the per-step recurrent product.

The recurrent product ``H·Rᵀ`` of a step is jitort's packed GEMM (``jitort.kernels.gemm``, its
small-M register tiles) on Rᵀ packed once by the op layer, called from inside the time loop (no
Python, no BLAS call, no allocation per step); float64 takes BLAS (``np.dot``) on Rᵀ instead. Rows
are independent, so the driver may run disjoint row ranges (and the two directions) on separate
threads with the same kernels.

Activations are int codes (``CODES``), so a kernel compiles once per dtype, not per activation
set; the default activation set without clip takes a branch-free loop that vectorises. float32
math stays float32 (``jitort.kernels.fastmath``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from jitort.kernels.fastmath import (exp_f32, exp_f64, log_f32, log_f64, sigmoid_f32, sigmoid_f64,
                                     tanh_f32, tanh_f64)
from jitort.kernels.gemm import PANEL, gemm_f32_avx2, gemm_f32_avx512


# --- activations ---------------------------------------------------------------------------------

# Codes used by the kernels.  SIGMOID and TANH first: the fast path checks for them.
_SIGMOID, _TANH, _RELU, _AFFINE, _LEAKY, _THRESH, _SCALED_TANH, _HARD_SIGMOID, _ELU, _SOFTSIGN, \
    _SOFTPLUS = range(11)
CODES = {"sigmoid": _SIGMOID, "tanh": _TANH, "relu": _RELU, "affine": _AFFINE, "leakyrelu": _LEAKY,
          "thresholdedrelu": _THRESH, "scaledtanh": _SCALED_TANH, "hardsigmoid": _HARD_SIGMOID,
          "elu": _ELU, "softsign": _SOFTSIGN, "softplus": _SOFTPLUS}


def _k(x, v):  # type: ignore[no-untyped-def]
    """The constant v in x's float type (a bare Python float would promote float32 math to float64)."""
    raise NotImplementedError  # only called from @njit code


@overload(_k)
def _k_ov(x, v):  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x, v: np.float32(v)
    return lambda x, v: np.float64(v)


def _sigm(x):  # type: ignore[no-untyped-def]
    raise NotImplementedError


@overload(_sigm)
def _sigm_ov(x):  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x: sigmoid_f32(x)
    return lambda x: sigmoid_f64(x)


def _tanh(x):  # type: ignore[no-untyped-def]
    raise NotImplementedError


@overload(_tanh)
def _tanh_ov(x):  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x: tanh_f32(x)
    return lambda x: tanh_f64(x)


def _exp(x):  # type: ignore[no-untyped-def]
    raise NotImplementedError


@overload(_exp)
def _exp_ov(x):  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x: exp_f32(x)
    return lambda x: exp_f64(x)


def _log(x):  # type: ignore[no-untyped-def]
    raise NotImplementedError


@overload(_log)
def _log_ov(x):  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x: log_f32(x)
    return lambda x: log_f64(x)


@njit(cache=True, nogil=True, error_model="numpy")
def _act_vec(code, v, a, b):  # type: ignore[no-untyped-def]
    """v = activation ``code`` of v, in place, with alpha a, beta b (formulas as in onnxruntime).

    One loop per activation, so each vectorises; a per-element dispatch would not, and inlining a
    scalar dispatcher at every gate multiplies compile time."""
    zero = _k(a, 0.0)
    one = _k(a, 1.0)
    if code == _SIGMOID:
        for j in range(v.shape[0]):
            v[j] = _sigm(v[j])
    elif code == _TANH:
        for j in range(v.shape[0]):
            v[j] = _tanh(v[j])
    elif code == _RELU:
        for j in range(v.shape[0]):
            v[j] = v[j] if v[j] > zero else zero
    elif code == _AFFINE:
        for j in range(v.shape[0]):
            v[j] = a * v[j] + b
    elif code == _LEAKY:
        for j in range(v.shape[0]):
            v[j] = v[j] if v[j] >= zero else a * v[j]
    elif code == _THRESH:
        for j in range(v.shape[0]):
            v[j] = v[j] if v[j] > a else zero
    elif code == _SCALED_TANH:
        for j in range(v.shape[0]):
            v[j] = a * _tanh(b * v[j])
    elif code == _HARD_SIGMOID:
        for j in range(v.shape[0]):
            x = a * v[j] + b
            x = x if x > zero else zero
            v[j] = x if x < one else one
    elif code == _ELU:
        for j in range(v.shape[0]):
            v[j] = v[j] if v[j] >= zero else a * (_exp(v[j]) - one)
    elif code == _SOFTSIGN:
        for j in range(v.shape[0]):
            v[j] = v[j] / (one + abs(v[j]))
    else:  # Softplus
        for j in range(v.shape[0]):
            v[j] = _log(one + _exp(v[j]))


@njit(cache=True, nogil=True, error_model="numpy")
def _clip_vec(v, c):  # type: ignore[no-untyped-def]
    for j in range(v.shape[0]):
        x = v[j]
        v[j] = c if x > c else (-c if x < -c else x)


# --- kernels: one direction each; layout 0; state arrays updated in place ------------------------
#
# xw [S, B, N] holds X·Wᵀ + bias for all directions (the bias the projection adds: Wb+Rb, GRU's h
# gate Wbh); this direction's gates start at column ``off``. h, c [B, H] are the state (in: initial,
# out: after each row's last valid step); a call updates rows b0..b1 only.  y [S, D, B, H] (or an
# empty [0, 0, 0, 0] when Y is not wanted) receives h at each valid (t, b); the caller zeroed the
# rest.  lens[b] steps run for row b.  rp/rt: this direction's Rᵀ, packed (float32, rt None) or
# plain [H, G*H] (float64, rp None); rbias (added when has_rbias; float32: padded to whole panels,
# the GEMM reads it either way) is the recurrent product's bias.
# wide: True for the AVX-512 GEMM tiles, None for AVX2's (a type, so a kernel compiles one of them).
# The default activations without clip (and, for LSTM, without peepholes or input_forget) take one
# fused loop per row; anything else goes gate by gate through _act_vec.

def _recur(h, rp, rt, rbias, has_rbias, wide, prod, b0, b1):  # type: ignore[no-untyped-def]
    """prod[b0:b1] = h[b0:b1]·Rᵀ (+ rbias when has_rbias)."""
    raise NotImplementedError  # only called from @njit code


@njit(nogil=True, error_model="numpy")
def _recur_avx512(h, rp, rbias, has_rbias, prod, b0, b1):  # type: ignore[no-untyped-def]
    # int64 arguments throughout: the signature the Python callers of the GEMM compile
    z = np.float32(0.0)
    zi = np.int64(0)
    npan = np.int64((prod.shape[1] + PANEL - 1) // PANEL)
    gemm_f32_avx512(h, rp, prod, rbias, np.int64(has_rbias), prod, zi, zi, z, z, zi, np.int64(b0), np.int64(b1),
                    zi, npan)


@njit(nogil=True, error_model="numpy")
def _recur_avx2(h, rp, rbias, has_rbias, prod, b0, b1):  # type: ignore[no-untyped-def]
    z = np.float32(0.0)
    zi = np.int64(0)
    npan = np.int64((prod.shape[1] + PANEL - 1) // PANEL)
    gemm_f32_avx2(h, rp, prod, rbias, np.int64(has_rbias), prod, zi, zi, z, z, zi, np.int64(b0), np.int64(b1),
                  zi, npan)


@njit(nogil=True, error_model="numpy")
def _recur_blas(h, rt, rbias, has_rbias, prod, b0, b1):  # type: ignore[no-untyped-def]
    np.dot(h[b0:b1], rt, prod[b0:b1])
    if has_rbias:
        for b in range(b0, b1):
            for j in range(prod.shape[1]):
                prod[b, j] += rbias[j]


@overload(_recur)
def _recur_ov(h, rp, rt, rbias, has_rbias, wide, prod, b0, b1):  # type: ignore[no-untyped-def]
    """Chosen by type, so each kernel compiles only its own product: BLAS on rt (float64, rp None),
    else the packed GEMM, its AVX-512 tiles when wide is True and AVX2's when wide is None."""
    if rt != types.none:
        return lambda h, rp, rt, rbias, has_rbias, wide, prod, b0, b1: _recur_blas(
            h, rt, rbias, has_rbias, prod, b0, b1)
    if wide == types.none:
        return lambda h, rp, rt, rbias, has_rbias, wide, prod, b0, b1: _recur_avx2(
            h, rp, rbias, has_rbias, prod, b0, b1)
    return lambda h, rp, rt, rbias, has_rbias, wide, prod, b0, b1: _recur_avx512(
        h, rp, rbias, has_rbias, prod, b0, b1)


@njit(cache=True, nogil=True, error_model="numpy")
def _max_len(lens, b0, b1):  # type: ignore[no-untyped-def]
    m = 0
    for b in range(b0, b1):
        m = max(m, lens[b])
    return m


@njit(cache=True, nogil=True, error_model="numpy")
def lstm_dir(xw, off, rp, rt, rbias, has_rbias, peep, use_peep, input_forget, lens, reverse, h, c, y, yd, b0, b1,
             codes, alphas, betas, clip, use_clip, wide):  # type: ignore[no-untyped-def]
    nb, hs = h.shape
    one = _k(clip, 1.0)
    fast = (codes[0] == _SIGMOID and codes[1] == _TANH and codes[2] == _TANH and not use_clip
            and not use_peep and not input_forget)
    want_y = y.shape[0] > 0
    g = np.empty(4 * hs, h.dtype)
    hc = np.empty(hs, h.dtype)
    prod = np.empty((nb, 4 * hs), h.dtype)
    noy = np.empty(hs, h.dtype)  # where the fused loop writes Y's row when Y is not wanted
    for s in range(_max_len(lens, b0, b1)):
        _recur(h, rp, rt, rbias, has_rbias, wide, prod, b0, b1)
        for b in range(b0, b1):
            n = lens[b]
            if s >= n:
                continue
            t = n - 1 - s if reverse else s
            xr = xw[t, b]
            gr = prod[b]
            hb = h[b]
            cb = c[b]
            if fast:
                # Per-gate views indexed from 0: LLVM vectorises these loops, not ``xr[off + j]``.
                xi, xo, xf, xc = xr[off:off + hs], xr[off + hs:off + 2 * hs], \
                    xr[off + 2 * hs:off + 3 * hs], xr[off + 3 * hs:off + 4 * hs]
                ri, ro, rf, rc = gr[:hs], gr[hs:2 * hs], gr[2 * hs:3 * hs], gr[3 * hs:]
                yb = y[t, yd, b] if want_y else noy
                for j in range(hs):
                    gi = _sigm(xi[j] + ri[j])
                    go = _sigm(xo[j] + ro[j])
                    gf = _sigm(xf[j] + rf[j])
                    gc = _tanh(xc[j] + rc[j])
                    cn = gf * cb[j] + gi * gc
                    cb[j] = cn
                    hv = go * _tanh(cn)
                    hb[j] = hv
                    yb[j] = hv  # Y's row in the same pass
            else:
                for j in range(4 * hs):
                    g[j] = xr[off + j] + gr[j]
                if use_peep:
                    for j in range(hs):
                        g[j] += peep[j] * cb[j]
                        g[2 * hs + j] += peep[2 * hs + j] * cb[j]
                if use_clip:
                    _clip_vec(g[:hs], clip)
                    _clip_vec(g[2 * hs:4 * hs], clip)
                _act_vec(codes[0], g[:hs], alphas[0], betas[0])
                if input_forget:
                    for j in range(hs):
                        g[2 * hs + j] = one - g[j]
                else:
                    _act_vec(codes[0], g[2 * hs:3 * hs], alphas[0], betas[0])
                _act_vec(codes[1], g[3 * hs:4 * hs], alphas[1], betas[1])
                for j in range(hs):
                    cb[j] = g[2 * hs + j] * cb[j] + g[j] * g[3 * hs + j]
                    hc[j] = cb[j]
                if use_peep:
                    for j in range(hs):
                        g[hs + j] += peep[hs + j] * cb[j]
                if use_clip:
                    _clip_vec(g[hs:2 * hs], clip)
                _act_vec(codes[0], g[hs:2 * hs], alphas[0], betas[0])
                _act_vec(codes[2], hc, alphas[2], betas[2])
                for j in range(hs):
                    hb[j] = g[hs + j] * hc[j]
                if want_y:
                    for j in range(hs):  # an element loop: slice assignment compiles a 15 s error path
                        y[t, yd, b, j] = hb[j]


@njit(cache=True, nogil=True, error_model="numpy")
def gru_dir(xw, off, rp, rt, rbias, has_rbias, rp_h, rt_h, rbias_h, lbr, lens, reverse, h, y, yd, b0, b1,
            codes, alphas, betas, clip, use_clip, wide):  # type: ignore[no-untyped-def]
    # lbr: one product, h·Rᵀ + [0, 0, Rbh] (rbias); else h·R_zrᵀ (z and r rows, no bias) first, then
    # (r (.) h)·R_hᵀ + Rbh (rp_h/rt_h, rbias_h).
    nb, hs = h.shape
    one = _k(clip, 1.0)
    fast = codes[0] == _SIGMOID and codes[1] == _TANH and not use_clip
    want_y = y.shape[0] > 0
    g = np.empty(3 * hs, h.dtype)
    prod = np.empty((nb, 3 * hs if lbr else 2 * hs), h.dtype)
    rh = np.zeros((nb, hs), h.dtype)
    hh = np.empty((nb, hs), h.dtype)
    for s in range(_max_len(lens, b0, b1)):
        _recur(h, rp, rt, rbias, has_rbias, wide, prod, b0, b1)
        if not lbr:
            # r (.) H_{t-1} first: the h gate's recurrent product needs it.
            for b in range(b0, b1):
                n = lens[b]
                if s >= n:
                    continue
                t = n - 1 - s if reverse else s
                xr = xw[t, b]
                for j in range(hs):
                    g[j] = xr[off + hs + j] + prod[b, hs + j]
                if fast:
                    for j in range(hs):
                        g[j] = _sigm(g[j])
                else:
                    if use_clip:
                        _clip_vec(g[:hs], clip)
                    _act_vec(codes[0], g[:hs], alphas[0], betas[0])
                for j in range(hs):
                    rh[b, j] = g[j] * h[b, j]
            _recur(rh, rp_h, rt_h, rbias_h, np.int64(1), wide, hh, b0, b1)
        for b in range(b0, b1):
            n = lens[b]
            if s >= n:
                continue
            t = n - 1 - s if reverse else s
            xr = xw[t, b]
            gr = prod[b]
            hb = h[b]
            if fast:
                xz, xrr, xh = xr[off:off + hs], xr[off + hs:off + 2 * hs], xr[off + 2 * hs:off + 3 * hs]
                rz = gr[:hs]
                if lbr:
                    rr, rhh = gr[hs:2 * hs], gr[2 * hs:]
                    for j in range(hs):
                        z = _sigm(xz[j] + rz[j])
                        rg = _sigm(xrr[j] + rr[j])
                        ht = _tanh(xh[j] + rg * rhh[j])
                        hb[j] = (one - z) * ht + z * hb[j]
                else:
                    hhb = hh[b]
                    for j in range(hs):
                        z = _sigm(xz[j] + rz[j])
                        ht = _tanh(xh[j] + hhb[j])
                        hb[j] = (one - z) * ht + z * hb[j]
            else:
                for j in range(hs):
                    g[j] = xr[off + j] + gr[j]
                if use_clip:
                    _clip_vec(g[:hs], clip)
                _act_vec(codes[0], g[:hs], alphas[0], betas[0])
                if lbr:
                    for j in range(hs):
                        g[hs + j] = xr[off + hs + j] + gr[hs + j]
                    if use_clip:
                        _clip_vec(g[hs:2 * hs], clip)
                    _act_vec(codes[0], g[hs:2 * hs], alphas[0], betas[0])
                    for j in range(hs):
                        g[2 * hs + j] = xr[off + 2 * hs + j] + g[hs + j] * gr[2 * hs + j]
                else:
                    for j in range(hs):
                        g[2 * hs + j] = xr[off + 2 * hs + j] + hh[b, j]
                if use_clip:
                    _clip_vec(g[2 * hs:3 * hs], clip)
                _act_vec(codes[1], g[2 * hs:3 * hs], alphas[1], betas[1])
                for j in range(hs):
                    hb[j] = (one - g[j]) * g[2 * hs + j] + g[j] * hb[j]
            if want_y:
                for j in range(hs):
                    y[t, yd, b, j] = hb[j]


@njit(cache=True, nogil=True, error_model="numpy")
def rnn_dir(xw, off, rp, rt, rbias, has_rbias, lens, reverse, h, y, yd, b0, b1, codes, alphas, betas, clip,
            use_clip, wide):  # type: ignore[no-untyped-def]
    nb, hs = h.shape
    fast = codes[0] == _TANH and not use_clip
    want_y = y.shape[0] > 0
    prod = np.empty((nb, hs), h.dtype)
    for s in range(_max_len(lens, b0, b1)):
        _recur(h, rp, rt, rbias, has_rbias, wide, prod, b0, b1)
        for b in range(b0, b1):
            n = lens[b]
            if s >= n:
                continue
            t = n - 1 - s if reverse else s
            xr = xw[t, b]
            gr = prod[b]
            hb = h[b]
            if fast:
                xv = xr[off:off + hs]
                for j in range(hs):
                    hb[j] = _tanh(xv[j] + gr[j])
            else:
                for j in range(hs):
                    hb[j] = xr[off + j] + gr[j]
                if use_clip:
                    _clip_vec(hb, clip)
                _act_vec(codes[0], hb, alphas[0], betas[0])
            if want_y:
                for j in range(hs):
                    y[t, yd, b, j] = hb[j]
