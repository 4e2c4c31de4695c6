"""The recurrence kernels of LSTM, GRU and RNN (``rnn.py`` is the op layer: attributes, weight
packing, the driver): one ``@njit`` kernel per cell type that runs one direction over time, the
activations they apply by int code, and the per-step BLAS product.

Activations are int codes (``_CODES``), so a kernel compiles once per dtype, not per activation
set; the default activation set without clip takes a branch-free loop that vectorises. float32
math stays float32 (``jitort.kernels.fastmath``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from jitort.kernels.fastmath import (exp_f32, exp_f64, log_f32, log_f64, sigmoid_f32, sigmoid_f64,
                                     tanh_f32, tanh_f64)


# --- activations ---------------------------------------------------------------------------------

# Codes used by the kernels.  SIGMOID and TANH first: the fast path checks for them.
_SIGMOID, _TANH, _RELU, _AFFINE, _LEAKY, _THRESH, _SCALED_TANH, _HARD_SIGMOID, _ELU, _SOFTSIGN, \
    _SOFTPLUS = range(11)
_CODES = {"sigmoid": _SIGMOID, "tanh": _TANH, "relu": _RELU, "affine": _AFFINE, "leakyrelu": _LEAKY,
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
# xw [S, B, N] holds X·Wᵀ for all directions; this direction's gates start at column ``off``.
# h, c [B, H] are the state (in: initial, out: after each row's last valid step).  y [S, D, B, H]
# (or an empty [0, 0, 0, 0] when Y is not wanted) receives h at each valid (t, b); the caller zeroed
# the rest.  lens[b] steps run for row b.  r is this direction's R [G*H, H] as given (no transpose).
# The default activations without clip (and, for LSTM, without peepholes or input_forget) take one
# fused loop per row; anything else goes gate by gate through _act_vec.

@njit(cache=True, nogil=True, error_model="numpy")
def _recur(r, hT, prodT, prod):  # type: ignore[no-untyped-def]
    """prod [B, N] = H·Rᵀ, computed by BLAS as R·Hᵀ ([N, H] x [H, B]).

    For a small batch this orientation runs ~2x faster in OpenBLAS than H·Rᵀ with the same data, and
    it needs R as stored; the [N, B] product is transposed back so the gate loops read rows."""
    np.dot(r, hT, prodT)
    n, nb = prodT.shape
    for g in range(n):
        for b in range(nb):
            prod[b, g] = prodT[g, b]


@njit(cache=True, nogil=True, error_model="numpy")
def _lstm_dir(xw, off, r, bias, peep, use_peep, input_forget, lens, reverse, h, c, y, yd,
              codes, alphas, betas, clip, use_clip):  # type: ignore[no-untyped-def]
    nb, hs = h.shape
    maxlen = 0
    for b in range(nb):
        maxlen = max(maxlen, lens[b])
    one = _k(clip, 1.0)
    fast = (codes[0] == _SIGMOID and codes[1] == _TANH and codes[2] == _TANH and not use_clip
            and not use_peep and not input_forget)
    want_y = y.shape[0] > 0
    g = np.empty(4 * hs, h.dtype)
    hc = np.empty(hs, h.dtype)
    hT = np.empty((hs, nb), h.dtype)
    for b in range(nb):
        for j in range(hs):
            hT[j, b] = h[b, j]
    prodT = np.empty((4 * hs, nb), h.dtype)
    prod = np.empty((nb, 4 * hs), h.dtype)
    for s in range(maxlen):
        _recur(r, hT, prodT, prod)
        for b in range(nb):
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
                bi, bo, bf, bc = bias[:hs], bias[hs:2 * hs], bias[2 * hs:3 * hs], bias[3 * hs:]
                for j in range(hs):
                    gi = _sigm(xi[j] + ri[j] + bi[j])
                    go = _sigm(xo[j] + ro[j] + bo[j])
                    gf = _sigm(xf[j] + rf[j] + bf[j])
                    gc = _tanh(xc[j] + rc[j] + bc[j])
                    cn = gf * cb[j] + gi * gc
                    cb[j] = cn
                    hb[j] = go * _tanh(cn)
            else:
                for j in range(4 * hs):
                    g[j] = xr[off + j] + gr[j] + bias[j]
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
            for j in range(hs):
                hT[j, b] = hb[j]
            if want_y:
                for j in range(hs):  # an element loop: slice assignment compiles a 15 s error path
                    y[t, yd, b, j] = hb[j]


@njit(cache=True, nogil=True, error_model="numpy")
def _gru_dir(xw, off, r, r_zr, r_h, bias, bias_rh, lbr, lens, reverse, h, y, yd,
             codes, alphas, betas, clip, use_clip):  # type: ignore[no-untyped-def]
    # lbr: one product with r [3H, H]; else r_zr [2H, H] first, then r_h [H, H] times r (.) H_{t-1}.
    # bias [3H]: Wb+Rb for z and r, Wbh for h; bias_rh [H]: Rbh.
    nb, hs = h.shape
    maxlen = 0
    for b in range(nb):
        maxlen = max(maxlen, lens[b])
    one = _k(clip, 1.0)
    fast = codes[0] == _SIGMOID and codes[1] == _TANH and not use_clip
    want_y = y.shape[0] > 0
    g = np.empty(3 * hs, h.dtype)
    hT = np.empty((hs, nb), h.dtype)
    for b in range(nb):
        for j in range(hs):
            hT[j, b] = h[b, j]
    ng = 3 * hs if lbr else 2 * hs
    prodT = np.empty((ng, nb), h.dtype)
    prod = np.empty((nb, ng), h.dtype)
    rhT = np.zeros((hs, nb), h.dtype)
    hhT = np.empty((hs, nb), h.dtype)
    hh = np.empty((nb, hs), h.dtype)
    for s in range(maxlen):
        if lbr:
            _recur(r, hT, prodT, prod)
        else:
            _recur(r_zr, hT, prodT, prod)
            # r (.) H_{t-1} first: the h gate's recurrent product needs it.
            for b in range(nb):
                n = lens[b]
                if s >= n:
                    continue
                t = n - 1 - s if reverse else s
                xr = xw[t, b]
                for j in range(hs):
                    g[j] = xr[off + hs + j] + prod[b, hs + j] + bias[hs + j]
                if fast:
                    for j in range(hs):
                        g[j] = _sigm(g[j])
                else:
                    if use_clip:
                        _clip_vec(g[:hs], clip)
                    _act_vec(codes[0], g[:hs], alphas[0], betas[0])
                for j in range(hs):
                    rhT[j, b] = g[j] * h[b, j]
            _recur(r_h, rhT, hhT, hh)
        for b in range(nb):
            n = lens[b]
            if s >= n:
                continue
            t = n - 1 - s if reverse else s
            xr = xw[t, b]
            gr = prod[b]
            hb = h[b]
            if fast:
                xz, xrr, xh = xr[off:off + hs], xr[off + hs:off + 2 * hs], xr[off + 2 * hs:off + 3 * hs]
                bz, br, bh = bias[:hs], bias[hs:2 * hs], bias[2 * hs:]
                rz = gr[:hs]
                if lbr:
                    rr, rhh = gr[hs:2 * hs], gr[2 * hs:]
                    for j in range(hs):
                        z = _sigm(xz[j] + rz[j] + bz[j])
                        rg = _sigm(xrr[j] + rr[j] + br[j])
                        ht = _tanh(xh[j] + bh[j] + rg * (rhh[j] + bias_rh[j]))
                        hb[j] = (one - z) * ht + z * hb[j]
                else:
                    hhb = hh[b]
                    for j in range(hs):
                        z = _sigm(xz[j] + rz[j] + bz[j])
                        ht = _tanh(xh[j] + hhb[j] + bias_rh[j] + bh[j])
                        hb[j] = (one - z) * ht + z * hb[j]
            else:
                for j in range(hs):
                    g[j] = xr[off + j] + gr[j] + bias[j]
                if use_clip:
                    _clip_vec(g[:hs], clip)
                _act_vec(codes[0], g[:hs], alphas[0], betas[0])
                if lbr:
                    for j in range(hs):
                        g[hs + j] = xr[off + hs + j] + gr[hs + j] + bias[hs + j]
                    if use_clip:
                        _clip_vec(g[hs:2 * hs], clip)
                    _act_vec(codes[0], g[hs:2 * hs], alphas[0], betas[0])
                    for j in range(hs):
                        g[2 * hs + j] = xr[off + 2 * hs + j] + bias[2 * hs + j] + g[hs + j] * (
                            gr[2 * hs + j] + bias_rh[j])
                else:
                    for j in range(hs):
                        g[2 * hs + j] = xr[off + 2 * hs + j] + hh[b, j] + bias_rh[j] + bias[2 * hs + j]
                if use_clip:
                    _clip_vec(g[2 * hs:3 * hs], clip)
                _act_vec(codes[1], g[2 * hs:3 * hs], alphas[1], betas[1])
                for j in range(hs):
                    hb[j] = (one - g[j]) * g[2 * hs + j] + g[j] * hb[j]
            for j in range(hs):
                hT[j, b] = hb[j]
            if want_y:
                for j in range(hs):
                    y[t, yd, b, j] = hb[j]


@njit(cache=True, nogil=True, error_model="numpy")
def _rnn_dir(xw, off, r, bias, lens, reverse, h, y, yd, codes, alphas, betas, clip,
             use_clip):  # type: ignore[no-untyped-def]
    nb, hs = h.shape
    maxlen = 0
    for b in range(nb):
        maxlen = max(maxlen, lens[b])
    fast = codes[0] == _TANH and not use_clip
    want_y = y.shape[0] > 0
    hT = np.empty((hs, nb), h.dtype)
    for b in range(nb):
        for j in range(hs):
            hT[j, b] = h[b, j]
    prodT = np.empty((hs, nb), h.dtype)
    prod = np.empty((nb, hs), h.dtype)
    for s in range(maxlen):
        _recur(r, hT, prodT, prod)
        for b in range(nb):
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
                    hb[j] = _tanh(xv[j] + gr[j] + bias[j])
            else:
                for j in range(hs):
                    hb[j] = xr[off + j] + gr[j] + bias[j]
                if use_clip:
                    _clip_vec(hb, clip)
                _act_vec(codes[0], hb, alphas[0], betas[0])
            for j in range(hs):
                hT[j, b] = hb[j]
            if want_y:
                for j in range(hs):
                    y[t, yd, b, j] = hb[j]
