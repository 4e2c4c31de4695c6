"""Recurrent ops: LSTM, GRU, RNN (all directions, sequence_lens, layouts, the spec's activation list).

Shape of the computation, per op:

* The input projection ``X · Wᵀ`` for every time step and both directions is ONE BLAS GEMM up front
  (``[seq*batch, input] x [input, dirs*gates*hidden]``); weights are pre-transposed and concatenated,
  at compile time by the ``lower=`` hook when W/R/B are constants.
* Each direction then runs one ``@njit`` kernel that loops over time: per step one BLAS GEMM for
  ``H·Rᵀ``, issued as ``R·Hᵀ`` (``[gates*hidden, hidden] x [hidden, batch]``: OpenBLAS runs this
  orientation ~2x faster for small batches, and R needs no transpose), two for GRU with
  ``linear_before_reset=0`` (the second product needs the reset gate first), and a fused gate loop
  in the input dtype's precision.
  Activations are int codes, so a kernel compiles once per dtype, not per activation set; the
  default activation set without clip takes a branch-free loop that vectorises.

Semantics follow onnxruntime's CPU kernels, which the tests check:

* ``sequence_lens``: batch entry ``b`` runs ``lens[b]`` steps (reverse: from ``t = lens[b]-1`` down to
  0); ``Y`` is zero at ``t >= lens[b]``; ``Y_h``/``Y_c`` hold the state after the last valid step, and
  zeros when ``lens[b] == 0`` (onnxruntime zeroes them; it does not return ``initial_h``).
* ``activation_alpha``/``activation_beta`` are consumed in order by the activations that take them;
  an exhausted list gives LeakyRelu 0.01, HardSigmoid 0.2/0.5, Elu 1.0 and 0 otherwise.
* ``clip`` bounds every gate pre-activation (after bias and peepholes) but not the cell state before
  ``h()``; LSTM peepholes are ``P[iof]``; ``input_forget`` sets ``f = 1 - i``.
* ``layout=1`` (opset 14; onnxruntime's CPU kernels refuse it) transposes to layout 0 and back.

float16/bfloat16 compute in float32; float32 math stays float32 (``jitort.kernels.fastmath``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numba import njit, types
from numba.extending import overload

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.fastmath import (exp_f32, exp_f64, log_f32, log_f64, sigmoid_f32, sigmoid_f64,
                                     tanh_f32, tanh_f64)
from jitort.kernels.registry import BFLOAT16, Call, default_call, lookup, op


# --- activations ---------------------------------------------------------------------------------

# Codes used by the kernels.  SIGMOID and TANH first: the fast path checks for them.
_SIGMOID, _TANH, _RELU, _AFFINE, _LEAKY, _THRESH, _SCALED_TANH, _HARD_SIGMOID, _ELU, _SOFTSIGN, \
    _SOFTPLUS = range(11)
_CODES = {"sigmoid": _SIGMOID, "tanh": _TANH, "relu": _RELU, "affine": _AFFINE, "leakyrelu": _LEAKY,
          "thresholdedrelu": _THRESH, "scaledtanh": _SCALED_TANH, "hardsigmoid": _HARD_SIGMOID,
          "elu": _ELU, "softsign": _SOFTSIGN, "softplus": _SOFTPLUS}
_TAKES_ALPHA = {"affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu"}
_TAKES_BETA = {"affine", "scaledtanh", "hardsigmoid"}
# What onnxruntime uses when activation_alpha/beta run out (the spec's defaults; 0 where it has none).
_DEFAULT_ALPHA_BETA = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}
_DEFAULT_ACTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


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


# --- attributes ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Attrs:
    op: str
    dirs: int
    reverse_only: bool
    codes: np.ndarray    # int64 [dirs, n_act]
    alphas: dict[str, np.ndarray]  # dtype char ('f', 'd') -> [dirs, n_act]
    betas: dict[str, np.ndarray]
    clip: float | None
    layout: int


def _parse_attrs(op_type: str, direction: str, activations: Sequence[str] | None,
                 activation_alpha: Sequence[float] | None, activation_beta: Sequence[float] | None,
                 clip: float | None, layout: int, hidden_size: int | None) -> _Attrs:
    # GRU-1's schema default is the misspelt "foward".
    if direction in ("forward", "foward"):
        dirs, rev = 1, False
    elif direction == "reverse":
        dirs, rev = 1, True
    elif direction == "bidirectional":
        dirs, rev = 2, False
    else:
        raise Fail(f"{op_type}: direction must be forward, reverse or bidirectional, got '{direction}'")
    n_act = len(_DEFAULT_ACTS[op_type])
    names = list(activations) if activations else list(_DEFAULT_ACTS[op_type]) * dirs
    if op_type == "RNN" and dirs == 1 and len(names) == 2:
        names = names[:1]  # the RNN schema's default is ["Tanh", "Tanh"] whatever the direction
    if len(names) != n_act * dirs:
        raise Fail(f"{op_type}: expected {n_act * dirs} activations for direction '{direction}', "
                   f"got {len(names)}: {names}")
    alphas = list(activation_alpha or [])
    betas = list(activation_beta or [])
    codes = np.empty(len(names), np.int64)
    al = np.zeros(len(names))
    be = np.zeros(len(names))
    for k, name in enumerate(names):
        key = str(name).lower()
        if key not in _CODES:
            raise Fail(f"{op_type}: unsupported activation '{name}'; expected one of Relu, Tanh, Sigmoid, "
                       "Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus")
        codes[k] = _CODES[key]
        da, db = _DEFAULT_ALPHA_BETA.get(key, (0.0, 0.0))
        if key in _TAKES_ALPHA:
            al[k] = alphas.pop(0) if alphas else da
        if key in _TAKES_BETA:
            be[k] = betas.pop(0) if betas else db
    if clip is not None and op_type != "RNN" and not clip > 0:
        raise Fail(f"{op_type}: clip must be > 0, got {clip}")
    if clip is not None and not clip >= 0:
        clip = None  # onnxruntime's RNN treats a negative clip as no clip
    if layout not in (0, 1):
        raise Fail(f"{op_type}: layout must be 0 or 1, got {layout}")
    if hidden_size is not None and hidden_size <= 0:
        raise Fail(f"{op_type}: hidden_size must be > 0, got {hidden_size}")
    # Per compute dtype up front: the run-time path should do no attribute work.
    als = {t: al.reshape(dirs, n_act).astype(t) for t in "fd"}
    bes = {t: be.reshape(dirs, n_act).astype(t) for t in "fd"}
    return _Attrs(op_type, dirs, rev, codes.reshape(dirs, n_act), als, bes,
                  None if clip is None else float(clip), int(layout))


# --- weights -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Packed:
    """W, R and B rearranged for the kernels (built once by the lower hook for constant weights)."""

    op: str
    dtype: np.dtype        # compute dtype: float32 or float64
    dirs: int
    hidden: int
    inputs: int
    wt: np.ndarray         # [I, dirs*G*H]: Wᵀ of every direction side by side (one projection GEMM)
    r: np.ndarray          # [dirs, G*H, H]: R as given (the kernels multiply R·Hᵀ); GRU lbr=0: empty
    r_zr: np.ndarray       # GRU, linear_before_reset=0: R's z and r rows [dirs, 2H, H]; else [dirs, 0, 0]
    r_h: np.ndarray        # GRU, linear_before_reset=0: R's h rows [dirs, H, H]; else [dirs, 0, 0]
    bias: np.ndarray       # [dirs, G*H]: Wb+Rb (GRU h gate: Wbh only)
    bias_rh: np.ndarray    # GRU: [dirs, H] Rbh; else [dirs, 0]
    lbr: bool


def _compute_dtype(op_type: str, dt: np.dtype) -> np.dtype:
    dt = np.dtype(dt)
    if dt in (np.float32, np.float64):
        return dt
    if dt == np.float16 or dt == BFLOAT16:
        return np.dtype(np.float32)
    raise OrtNotImplemented(f"{op_type}: jitort supports float16, bfloat16, float32 and float64 inputs, got {dt}")


def _pack(op_type: str, W: np.ndarray, R: np.ndarray, B: np.ndarray | None, hidden_size: int | None,
          dirs: int, lbr: bool, dt: np.dtype) -> Packed:
    g = _GATES[op_type]
    if W.ndim != 3 or R.ndim != 3:
        raise InvalidArgument(f"{op_type}: W and R must be 3-D, got shapes {W.shape} and {R.shape}")
    hs = int(R.shape[2]) if hidden_size is None else int(hidden_size)
    n_in = int(W.shape[2])
    if W.shape != (dirs, g * hs, n_in):
        raise InvalidArgument(f"{op_type}: input W must have shape {(dirs, g * hs, n_in)}, got {W.shape}")
    if R.shape != (dirs, g * hs, hs):
        raise InvalidArgument(f"{op_type}: input R must have shape {(dirs, g * hs, hs)}, got {R.shape}")
    if B is not None and B.shape != (dirs, 2 * g * hs):
        raise InvalidArgument(f"{op_type}: input B must have shape {(dirs, 2 * g * hs)}, got {B.shape}")
    Wc = W.astype(dt, copy=False)
    Rc = R.astype(dt, copy=False)
    wt = np.ascontiguousarray(Wc.transpose(2, 0, 1).reshape(n_in, dirs * g * hs))
    if op_type == "GRU" and not lbr:
        r = np.zeros((dirs, 0, 0), dt)
        r_zr = np.ascontiguousarray(Rc[:, :2 * hs])
        r_h = np.ascontiguousarray(Rc[:, 2 * hs:])
    else:
        r = np.ascontiguousarray(Rc)
        r_zr = r_h = np.zeros((dirs, 0, 0), dt)
    Bc = np.zeros((dirs, 2 * g * hs), dt) if B is None else B.astype(dt, copy=False)
    wb, rb = Bc[:, :g * hs], Bc[:, g * hs:]
    if op_type == "GRU":
        bias = np.ascontiguousarray(np.concatenate([wb[:, :2 * hs] + rb[:, :2 * hs], wb[:, 2 * hs:]], axis=1))
        bias_rh = np.ascontiguousarray(rb[:, 2 * hs:])
    else:
        bias = np.ascontiguousarray(wb + rb)
        bias_rh = np.zeros((dirs, 0), dt)
    return Packed(op_type, dt, dirs, hs, n_in, wt, r, r_zr, r_h, bias, bias_rh, bool(lbr))


# --- the shared driver ---------------------------------------------------------------------------

def _state(op_type: str, name: str, v: np.ndarray | None, dirs: int, nb: int, hs: int, layout: int,
           dt: np.dtype) -> np.ndarray:
    """initial_h / initial_c as a fresh [dirs, B, H] array of dtype dt (the kernels update it in place)."""
    if v is None:
        return np.zeros((dirs, nb, hs), dt)
    want = (nb, dirs, hs) if layout else (dirs, nb, hs)
    if v.shape != want:
        raise InvalidArgument(f"{op_type}: input {name} must have shape {want}, got {v.shape}")
    v = v.transpose(1, 0, 2) if layout else v
    return np.array(v, dtype=dt, order="C")


def _run(op_type: str, X: np.ndarray, W: Any, R: np.ndarray | None, B: np.ndarray | None,
         sequence_lens: np.ndarray | None, initial_h: np.ndarray | None, initial_c: np.ndarray | None,
         P: np.ndarray | None, a: _Attrs, hidden_size: int | None, lbr: bool, input_forget: bool,
         want: Sequence[bool]) -> Any:
    out_dt = np.dtype(X.dtype)
    dt = _compute_dtype(op_type, out_dt)
    if X.ndim != 3:
        raise InvalidArgument(f"{op_type}: input X must be 3-D, got shape {X.shape}")
    if a.layout:
        X = X.transpose(1, 0, 2)
    S, nb, n_in = (int(d) for d in X.shape)
    pk = W if isinstance(W, Packed) else _pack(op_type, W, R, B, hidden_size, a.dirs, lbr, dt)
    if pk.inputs != n_in:
        raise InvalidArgument(f"{op_type}: input W must have shape "
                              f"{(a.dirs, _GATES[op_type] * pk.hidden, n_in)} for X of shape {X.shape}")
    hs, dirs = pk.hidden, a.dirs

    if sequence_lens is None:
        lens = np.full(nb, S, np.int32)
        lmin = S
    else:
        if sequence_lens.shape != (nb,):
            raise InvalidArgument(f"{op_type}: input sequence_lens must have shape ({nb},), "
                                  f"got {sequence_lens.shape}")
        lens = np.ascontiguousarray(sequence_lens, np.int32)
        lmin = int(lens.min()) if nb else S
        if lmin < 0 or (nb and int(lens.max()) > S):
            raise InvalidArgument(f"{op_type}: invalid value in sequence_lens {lens.tolist()}: "
                                  f"all values must be in [0, {S}] (seq_length)")
    h = _state(op_type, "initial_h", initial_h, dirs, nb, hs, a.layout, dt)
    c = _state(op_type, "initial_c", initial_c, dirs, nb, hs, a.layout, dt) if op_type == "LSTM" else None
    peep = np.zeros((dirs, 0), dt)
    if P is not None:
        if P.shape != (dirs, 3 * hs):
            raise InvalidArgument(f"{op_type}: input P must have shape {(dirs, 3 * hs)}, got {P.shape}")
        peep = np.ascontiguousarray(P, dt)

    # One GEMM projects every time step of every direction.
    xw = np.dot(np.ascontiguousarray(X, dt).reshape(S * nb, n_in), pk.wt).reshape(S, nb, pk.wt.shape[1])
    if not want[0]:
        y = np.zeros((0, 0, 0, 0), dt)
    elif lmin < S:
        y = np.zeros((S, dirs, nb, hs), dt)  # steps past a row's length stay zero
    else:
        y = np.empty((S, dirs, nb, hs), dt)
    clip = dt.type(a.clip if a.clip is not None else 0.0)
    use_clip = a.clip is not None
    g = _GATES[op_type]
    for d in range(dirs):
        rev = bool(a.reverse_only or d == 1)
        off = d * g * hs
        codes, al, be = a.codes[d], a.alphas[dt.char][d], a.betas[dt.char][d]
        if op_type == "LSTM":
            assert c is not None
            _lstm_dir(xw, off, pk.r[d], pk.bias[d], peep[d], P is not None, bool(input_forget), lens, rev,
                      h[d], c[d], y, d, codes, al, be, clip, use_clip)
        elif op_type == "GRU":
            _gru_dir(xw, off, pk.r[d], pk.r_zr[d], pk.r_h[d], pk.bias[d], pk.bias_rh[d], pk.lbr, lens, rev,
                     h[d], y, d, codes, al, be, clip, use_clip)
        else:
            _rnn_dir(xw, off, pk.r[d], pk.bias[d], lens, rev, h[d], y, d, codes, al, be, clip, use_clip)

    if lmin == 0:  # onnxruntime returns zeros, not the initial state, for empty sequences
        empty = lens == 0
        h[:, empty] = 0
        if c is not None:
            c[:, empty] = 0
    outs: list[np.ndarray | None] = []
    for k, v in enumerate([y, h, c][:len(want)]):
        if not want[k] or v is None:
            outs.append(None)
            continue
        if a.layout:
            v = v.transpose(2, 0, 1, 3) if k == 0 else v.transpose(1, 0, 2)
        outs.append(np.ascontiguousarray(v, out_dt) if (a.layout or out_dt != dt) else v)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _wanted(nout: int, want: Sequence[bool] | None) -> tuple[bool, ...]:
    return tuple(want) if want is not None else (True,) * nout


# --- lowering: pack constant weights at compile time --------------------------------------------

_WEIGHT_INPUTS = 4  # X, W, R, B: W/R/B go into the Packed object


def _lower(node: Node, g: Graph) -> Call:
    d = lookup(node.op_type, node.domain, node.version, node.name)
    call = default_call(d, node, g)
    kw = call.kwargs
    a = _parse_attrs(node.op_type, kw.get("direction", "forward"), kw.get("activations"),
                     kw.get("activation_alpha"), kw.get("activation_beta"), kw.get("clip"),
                     int(kw.get("layout", 0)), kw.get("hidden_size"))  # attribute errors at compile time
    kw["_want"] = tuple(bool(o) for o in node.outputs)
    kw["_attrs"] = a
    ins = list(node.inputs) + [""] * (_WEIGHT_INPUTS - len(node.inputs))
    W, R = g.const(ins[1]), g.const(ins[2])
    B = g.const(ins[3]) if ins[3] else None
    xt = g.type_of(ins[0]).dtype
    if W is None or R is None or (ins[3] and B is None) or xt is None:
        return call
    try:
        pk = _pack(node.op_type, W, R, B, kw.get("hidden_size"), a.dirs,
                   bool(kw.get("linear_before_reset", 0)), _compute_dtype(node.op_type, np.dtype(xt)))
    except (InvalidArgument, OrtNotImplemented):
        return call  # let the run raise the error the user would see from onnxruntime
    args = list(call.args) + [None] * (_WEIGHT_INPUTS - len(call.args))
    args[1], args[2], args[3] = pk, None, None
    return Call(call.fn, args, kw)


# --- the ops -------------------------------------------------------------------------------------

@op("LSTM", since=1, lower=_lower)
@op("LSTM", since=7, lower=_lower)
@op("LSTM", since=14, lower=_lower)
def LSTM(X: np.ndarray, W: Any, R: np.ndarray | None, B: np.ndarray | None = None,
         sequence_lens: np.ndarray | None = None, initial_h: np.ndarray | None = None,
         initial_c: np.ndarray | None = None, P: np.ndarray | None = None, *,
         activation_alpha: Sequence[float] | None = None, activation_beta: Sequence[float] | None = None,
         activations: Sequence[str] | None = None, clip: float | None = None, direction: str = "forward",
         hidden_size: int | None = None, input_forget: int = 0, layout: int = 0, _nout: int = 3,
         _want: Sequence[bool] | None = None, _attrs: _Attrs | None = None) -> Any:
    a = _attrs or _parse_attrs("LSTM", direction, activations, activation_alpha, activation_beta, clip, layout,
                                hidden_size)
    return _run("LSTM", X, W, R, B, sequence_lens, initial_h, initial_c, P, a, hidden_size, False,
                bool(input_forget), _wanted(_nout, _want))


@op("GRU", since=1, lower=_lower)
@op("GRU", since=3, lower=_lower)
@op("GRU", since=7, lower=_lower)
@op("GRU", since=14, lower=_lower)
def GRU(X: np.ndarray, W: Any, R: np.ndarray | None, B: np.ndarray | None = None,
        sequence_lens: np.ndarray | None = None, initial_h: np.ndarray | None = None, *,
        activation_alpha: Sequence[float] | None = None, activation_beta: Sequence[float] | None = None,
        activations: Sequence[str] | None = None, clip: float | None = None, direction: str = "forward",
        hidden_size: int | None = None, linear_before_reset: int = 0, layout: int = 0, _nout: int = 2,
        _want: Sequence[bool] | None = None, _attrs: _Attrs | None = None) -> Any:
    a = _attrs or _parse_attrs("GRU", direction, activations, activation_alpha, activation_beta, clip, layout,
                                hidden_size)
    if isinstance(W, Packed) and W.lbr != bool(linear_before_reset):
        raise Fail("GRU: packed weights disagree with linear_before_reset")
    return _run("GRU", X, W, R, B, sequence_lens, initial_h, None, None, a, hidden_size,
                bool(linear_before_reset), False, _wanted(_nout, _want)[:2])


@op("RNN", since=1, lower=_lower)
@op("RNN", since=7, lower=_lower)
@op("RNN", since=14, lower=_lower)
def RNN(X: np.ndarray, W: Any, R: np.ndarray | None, B: np.ndarray | None = None,
        sequence_lens: np.ndarray | None = None, initial_h: np.ndarray | None = None, *,
        activation_alpha: Sequence[float] | None = None, activation_beta: Sequence[float] | None = None,
        activations: Sequence[str] | None = None, clip: float | None = None, direction: str = "forward",
        hidden_size: int | None = None, layout: int = 0, _nout: int = 2,
        _want: Sequence[bool] | None = None, _attrs: _Attrs | None = None) -> Any:
    a = _attrs or _parse_attrs("RNN", direction, activations, activation_alpha, activation_beta, clip, layout,
                                hidden_size)
    return _run("RNN", X, W, R, B, sequence_lens, initial_h, None, None, a, hidden_size, False, False,
                _wanted(_nout, _want)[:2])


__all__ = ["LSTM", "GRU", "RNN", "Packed"]
