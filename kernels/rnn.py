"""Recurrent ops: LSTM, GRU, RNN (all directions, sequence_lens, layouts, the spec's activation list).

Shape of the computation, per op:

* The input projection ``X · Wᵀ + bias`` for every time step and both directions is ONE GEMM up
  front (``[seq*batch, input] x [input, dirs*gates*hidden]``): float32 on jitort's packed GEMM
  (``kernels/gemm.py``; W packed and the bias folded into its epilogue), float64 on BLAS. For
  constant weights the ``lower=`` hook packs W and R once, at compile time (plan constants).
* The recurrence runs one ``@njit`` kernel per (direction, range of batch rows) that loops over
  time: per step the recurrent product ``H·Rᵀ`` (two for GRU with ``linear_before_reset=0``: the
  second needs the reset gate first) on the packed GEMM's small-M tiles, called from inside the
  loop, then one fused gate loop per row in the input dtype's precision (``rnn_cells.py``). No
  Python, BLAS call or allocation per step.
* Directions and batch rows are independent: ``split_work`` hands them to ``kernels.threads``'
  workers (directions first, then even row ranges) when the work is worth a thread. Each element's
  arithmetic does not depend on the split, so results are bitwise equal for any thread count.

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

from jitort.allocator import aligned
from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.registry import FLOAT, Call, compute_dtype_for, default_call, lookup, op
from jitort.kernels import gemm, threads
from jitort.kernels.rnn_cells import CODES, gru_dir, lstm_dir, rnn_dir

_TAKES_ALPHA = {"affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu"}
_TAKES_BETA = {"affine", "scaledtanh", "hardsigmoid"}
# What onnxruntime uses when activation_alpha/beta run out (the spec's defaults; 0 where it has none).
_DEFAULT_ALPHA_BETA = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}
_DEFAULT_ACTS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}  # gates per cell type


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
        if key not in CODES:
            raise Fail(f"{op_type}: unsupported activation '{name}'; expected one of Relu, Tanh, Sigmoid, "
                       "Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus")
        codes[k] = CODES[key]
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
    """W, R and B rearranged for the kernels (built once by the lower hook for constant weights).

    float32 (``packed``): ``w`` and ``r`` are jitort's packed GEMM panels (``gemm.pack_b``) and the
    biases are padded to whole panels (the GEMM reads them so); float64: plain transposes."""

    op: str
    dtype: np.dtype        # compute dtype: float32 or float64
    dirs: int
    hidden: int
    inputs: int
    w: np.ndarray          # Wᵀ [I, dirs*G*H] of every direction side by side (one projection GEMM)
    wbias: np.ndarray      # [dirs*G*H] the projection's bias: Wb+Rb (GRU h gate: Wbh)
    r: np.ndarray          # per direction Rᵀ [H, N1] (GRU lbr=0: its z and r columns only)
    rbias: np.ndarray      # [dirs, N1] the recurrent product's bias: GRU lbr=1 [0, 0, Rbh]; else zeros
    r_h: np.ndarray        # GRU lbr=0: per direction R_hᵀ [H, H]; else empty
    rbias_h: np.ndarray    # GRU lbr=0: [dirs, H] Rbh; else empty
    lbr: bool

    @property
    def packed(self) -> bool:
        return self.dtype == np.float32

    @property
    def has_rbias(self) -> int:
        return int(self.op == "GRU" and self.lbr)


def _pad(v: np.ndarray) -> np.ndarray:
    """[..., n] float32 padded with zeros to whole GEMM panels (the GEMM reads whole panels)."""
    out = np.zeros(v.shape[:-1] + (gemm.panels(v.shape[-1]) * gemm.PANEL,), np.float32)
    out[..., :v.shape[-1]] = v
    return out


def _rt(r: np.ndarray, packed: bool) -> np.ndarray:
    """[dirs, N, H] -> each direction's Rᵀ [H, N]: packed panels [dirs, len] or plain [dirs, H, N]."""
    if packed:
        return aligned(np.stack([gemm.pack_b(np.ascontiguousarray(r[d].T)) for d in range(r.shape[0])]))
    return np.ascontiguousarray(r.transpose(0, 2, 1))


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
    packed = np.dtype(dt) == np.float32
    Wc = W.astype(dt, copy=False)
    Rc = R.astype(dt, copy=False)
    wt = np.ascontiguousarray(Wc.transpose(2, 0, 1).reshape(n_in, dirs * g * hs))
    Bc = np.zeros((dirs, 2 * g * hs), dt) if B is None else B.astype(dt, copy=False)
    wb, rb = Bc[:, :g * hs], Bc[:, g * hs:]
    r_h = np.zeros((dirs, 0) if packed else (dirs, 0, 0), dt)
    rbias_h = np.zeros((dirs, 0), dt)
    if op_type == "GRU":
        wbias = np.concatenate([wb[:, :2 * hs] + rb[:, :2 * hs], wb[:, 2 * hs:]], axis=1)
        if lbr:
            r = _rt(Rc, packed)
            rbias = np.concatenate([np.zeros((dirs, 2 * hs), dt), rb[:, 2 * hs:]], axis=1)
        else:
            r = _rt(Rc[:, :2 * hs], packed)
            rbias = np.zeros((dirs, 2 * hs), dt)
            r_h = _rt(Rc[:, 2 * hs:], packed)
            rbias_h = np.ascontiguousarray(rb[:, 2 * hs:])
    else:
        wbias = wb + rb
        r = _rt(Rc, packed)
        rbias = np.zeros((dirs, g * hs), dt)
    wbias = np.ascontiguousarray(wbias.reshape(-1))
    if packed:
        return Packed(op_type, dt, dirs, hs, n_in, gemm.pack_b(wt), _pad(wbias), r, _pad(rbias), r_h,
                      _pad(rbias_h), bool(lbr))
    return Packed(op_type, dt, dirs, hs, n_in, wt, wbias, r, np.ascontiguousarray(rbias), r_h, rbias_h, bool(lbr))


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


# Flops a part of the recurrence must be worth (~0.3-1 ms): the steps are a chain, so a worker thread
# that starts late or is preempted (a busy machine) delays the whole op by its delay, not by a share
# of it. A bidirectional GRU of 64 steps, batch 1, hidden 128 (12.6 Mflop) ran 5x slower on two
# threads than on one on the loaded 2-vCPU dev VM; splits of >= 200 Mflop ran 1.3-3x faster.
PART_FLOPS = 8 * threads.PART_FLOPS


def split_work(dirs: int, nb: int, work: float) -> list[list[tuple[int, int, int]]]:
    """The recurrence as parts for ``run_parts``: each a list of (direction, first row, end row) jobs.
    Directions and batch rows are independent: directions go to separate threads first, then each
    direction's rows are split evenly; ``work`` (flops) decides how many threads are worth it."""
    nparts = 1 if dirs * nb == 1 or work < 2 * PART_FLOPS else threads.parts_for(dirs * nb, work, PART_FLOPS)
    if nparts == 1:
        return [[(d, 0, nb) for d in range(dirs)]]
    per_dir = max(1, nparts // dirs)
    jobs = [(d, nb * k // per_dir, nb * (k + 1) // per_dir) for d in range(dirs) for k in range(per_dir)]
    n = min(nparts, len(jobs))
    return [jobs[p::n] for p in range(n)]


def _project(x2: np.ndarray, pk: Packed, n: int, isa: str) -> np.ndarray:
    """X·Wᵀ + bias for every step and direction: [S*B, n]."""
    if not pk.packed:
        xw = np.dot(x2, pk.w)
        xw += pk.wbias
        return xw
    m, k = x2.shape
    if 2.0 * m * n * k >= 2 * threads.PART_FLOPS:
        return gemm.gemm(x2, pk.w, n, pk.wbias, True, isa=isa)
    # one thread's work: the kernel itself, without gemm()'s per-call set-up (~3 us of a ~20 us LSTM)
    xw = np.empty((m, n), np.float32)
    z = np.float32(0.0)
    if m:
        gemm.KERNELS[isa](x2, pk.w, xw, pk.wbias, 1, xw, 0, 0, z, z, 0, 0, m, 0, gemm.panels(n))
    return xw


def _run(op_type: str, X: np.ndarray, W: Any, R: np.ndarray | None, B: np.ndarray | None,
         sequence_lens: np.ndarray | None, initial_h: np.ndarray | None, initial_c: np.ndarray | None,
         P: np.ndarray | None, a: _Attrs, hidden_size: int | None, lbr: bool, input_forget: bool,
         want: Sequence[bool], dt: np.dtype) -> Any:
    """``dt``: the compute dtype (the registration's FLOAT policy, applied by the op decorator)."""
    out_dt = np.dtype(X.dtype)
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
    g = _GATES[op_type]

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

    # One GEMM projects every time step of every direction, bias included.
    isa = gemm.default_isa()
    n = dirs * g * hs
    xw = _project(np.ascontiguousarray(X, dt).reshape(S * nb, n_in), pk, n, isa).reshape(S, nb, n)
    if not want[0]:
        y = np.zeros((0, 0, 0, 0), dt)
    elif lmin < S:
        y = np.zeros((S, dirs, nb, hs), dt)  # steps past a row's length stay zero
    else:
        y = np.empty((S, dirs, nb, hs), dt)
    clip = dt.type(a.clip if a.clip is not None else 0.0)
    use_clip = a.clip is not None
    wide = True if pk.packed and isa == "avx512" else None  # None: AVX2 tiles (or BLAS); see rnn_cells
    hasb = pk.has_rbias

    def job(d: int, b0: int, b1: int) -> None:
        rev = bool(a.reverse_only or d == 1)
        off = d * g * hs
        codes, al, be = a.codes[d], a.alphas[dt.char][d], a.betas[dt.char][d]
        rp, rt = (pk.r[d], None) if pk.packed else (None, pk.r[d])
        if op_type == "LSTM":
            assert c is not None
            lstm_dir(xw, off, rp, rt, pk.rbias[d], hasb, peep[d], P is not None, bool(input_forget), lens, rev,
                     h[d], c[d], y, d, b0, b1, codes, al, be, clip, use_clip, wide)
        elif op_type == "GRU":
            rph, rth = (pk.r_h[d], None) if pk.packed else (None, pk.r_h[d])
            gru_dir(xw, off, rp, rt, pk.rbias[d], hasb, rph, rth, pk.rbias_h[d], pk.lbr, lens, rev, h[d], y, d,
                    b0, b1, codes, al, be, clip, use_clip, wide)
        else:
            rnn_dir(xw, off, rp, rt, pk.rbias[d], hasb, lens, rev, h[d], y, d, b0, b1, codes, al, be, clip,
                    use_clip, wide)

    parts = split_work(dirs, nb, 2.0 * dirs * S * nb * hs * g * hs)
    threads.run_parts(lambda p: [job(*j) for j in parts[p]], len(parts))

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
                   bool(kw.get("linear_before_reset", 0)), compute_dtype_for(node, xt))
    except (InvalidArgument, OrtNotImplemented):
        return call  # let the run raise the error the user would see from onnxruntime
    args = list(call.args) + [None] * (_WEIGHT_INPUTS - len(call.args))
    args[1], args[2], args[3] = pk, None, None
    return Call(call.fn, args, kw)


# --- the ops -------------------------------------------------------------------------------------

@op("LSTM", since=1, lower=_lower, compute=FLOAT)
@op("LSTM", since=7, lower=_lower, compute=FLOAT)
@op("LSTM", since=14, lower=_lower, compute=FLOAT)
def LSTM(X: np.ndarray, W: Any, R: np.ndarray | None, B: np.ndarray | None = None,
         sequence_lens: np.ndarray | None = None, initial_h: np.ndarray | None = None,
         initial_c: np.ndarray | None = None, P: np.ndarray | None = None, *,
         activation_alpha: Sequence[float] | None = None, activation_beta: Sequence[float] | None = None,
         activations: Sequence[str] | None = None, clip: float | None = None, direction: str = "forward",
         hidden_size: int | None = None, input_forget: int = 0, layout: int = 0, _nout: int = 3,
         _want: Sequence[bool] | None = None, _attrs: _Attrs | None = None, _compute: Any = None) -> Any:
    a = _attrs or _parse_attrs("LSTM", direction, activations, activation_alpha, activation_beta, clip, layout,
                                hidden_size)
    return _run("LSTM", X, W, R, B, sequence_lens, initial_h, initial_c, P, a, hidden_size, False,
                bool(input_forget), _wanted(_nout, _want), _compute)


@op("GRU", since=1, lower=_lower, compute=FLOAT)
@op("GRU", since=3, lower=_lower, compute=FLOAT)
@op("GRU", since=7, lower=_lower, compute=FLOAT)
@op("GRU", since=14, lower=_lower, compute=FLOAT)
def GRU(X: np.ndarray, W: Any, R: np.ndarray | None, B: np.ndarray | None = None,
        sequence_lens: np.ndarray | None = None, initial_h: np.ndarray | None = None, *,
        activation_alpha: Sequence[float] | None = None, activation_beta: Sequence[float] | None = None,
        activations: Sequence[str] | None = None, clip: float | None = None, direction: str = "forward",
        hidden_size: int | None = None, linear_before_reset: int = 0, layout: int = 0, _nout: int = 2,
        _want: Sequence[bool] | None = None, _attrs: _Attrs | None = None, _compute: Any = None) -> Any:
    a = _attrs or _parse_attrs("GRU", direction, activations, activation_alpha, activation_beta, clip, layout,
                                hidden_size)
    if isinstance(W, Packed) and W.lbr != bool(linear_before_reset):
        raise Fail("GRU: packed weights disagree with linear_before_reset")
    return _run("GRU", X, W, R, B, sequence_lens, initial_h, None, None, a, hidden_size,
                bool(linear_before_reset), False, _wanted(_nout, _want)[:2], _compute)


@op("RNN", since=1, lower=_lower, compute=FLOAT)
@op("RNN", since=7, lower=_lower, compute=FLOAT)
@op("RNN", since=14, lower=_lower, compute=FLOAT)
def RNN(X: np.ndarray, W: Any, R: np.ndarray | None, B: np.ndarray | None = None,
        sequence_lens: np.ndarray | None = None, initial_h: np.ndarray | None = None, *,
        activation_alpha: Sequence[float] | None = None, activation_beta: Sequence[float] | None = None,
        activations: Sequence[str] | None = None, clip: float | None = None, direction: str = "forward",
        hidden_size: int | None = None, layout: int = 0, _nout: int = 2,
        _want: Sequence[bool] | None = None, _attrs: _Attrs | None = None, _compute: Any = None) -> Any:
    a = _attrs or _parse_attrs("RNN", direction, activations, activation_alpha, activation_beta, clip, layout,
                                hidden_size)
    return _run("RNN", X, W, R, B, sequence_lens, initial_h, None, None, a, hidden_size, False, False,
                _wanted(_nout, _want)[:2], _compute)


# The float32 path runs jitort's packed GEMM on its own threads (and float64's per-step BLAS products
# are too small to share): the session keeps BLAS single-threaded (jitort.compiled.Artifact.own_threads).
for _f in (LSTM, GRU, RNN):
    _f.own_threads = True  # type: ignore[attr-defined]

__all__ = ["LSTM", "GRU", "RNN", "Packed", "split_work"]
