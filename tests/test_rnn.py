"""LSTM, GRU and RNN against onnxruntime (float32, layout 0, opset >= 7) and, where onnxruntime has no
kernel (float64, float16, layout 1, opsets 1 and 3), against onnxruntime on an equivalent model or a
numpy transcription of the spec with onnxruntime's sequence_lens semantics (itself checked against
onnxruntime below).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
import pytest
from onnx import helper

import jitort
from jitort.errors import Fail, InvalidArgument
from oracle import assert_close, make_model, run_jitort, run_ort

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
NOUT = {"LSTM": 3, "GRU": 2, "RNN": 2}
DIRS = ["forward", "reverse", "bidirectional"]
F32_TOL = dict(rtol=1e-4, atol=2e-5)


# --- building models and inputs ------------------------------------------------------------------

def inputs(op: str, S: int, B: int, I: int, H: int, direction: str, seed: int = 0, *, bias: bool = True,
           lens: Sequence[int] | None = None, init: bool = False, peep: bool = False,
           dtype: Any = np.float32, layout: int = 0) -> dict[str, np.ndarray | None]:
    """Every input of the op by its spec name (None: omitted), scaled so states stay in range."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]

    def r(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(dtype)

    state = (B, D, H) if layout else (D, B, H)
    v: dict[str, np.ndarray | None] = {
        "X": r(*((B, S, I) if layout else (S, B, I))),
        "W": r(D, G * H, I, scale=0.6), "R": r(D, G * H, H, scale=0.6),
        "B": r(D, 2 * G * H, scale=0.5) if bias else None,
        "sequence_lens": None if lens is None else np.array(lens, np.int32),
        "initial_h": r(*state) if init else None}
    if op == "LSTM":
        v["initial_c"] = r(*state) if init else None
        v["P"] = r(D, 3 * H, scale=0.5) if peep else None
    return v


def model(op: str, v: dict[str, np.ndarray | None], opset: int = 14, const_weights: bool = True,
          outputs: Sequence[bool] | None = None, **attrs: Any) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One-node model; W, R, B become initializers when const_weights (the lower hook packs them)."""
    names = list(v)
    while v[names[-1]] is None:
        names.pop()
    const = {"W", "R", "B"} if const_weights else set()
    feeds = {n: v[n] for n in names if v[n] is not None and n not in const}
    inits = {n: v[n] for n in names if v[n] is not None and n in const}
    want = list(outputs) if outputs is not None else [True] * NOUT[op]
    outs = [f"y{k}" if w else "" for k, w in enumerate(want)]
    while outs and not outs[-1]:
        outs.pop()
    node = helper.make_node(op, [n if v[n] is not None else "" for n in names], outs, **attrs)
    m = make_model([node], {k: (a.dtype, a.shape) for k, a in feeds.items()}, [o for o in outs if o],
                   inits, opset)  # type: ignore[arg-type]
    return m, feeds  # type: ignore[return-value]


def check_ort(op: str, v: dict[str, Any], opset: int = 14, const_weights: bool = True,
              outputs: Sequence[bool] | None = None, tol: dict[str, float] = F32_TOL, **attrs: Any) -> list[np.ndarray]:
    m, feeds = model(op, v, opset, const_weights, outputs, **attrs)
    got = run_jitort(m, feeds)
    assert_close(got, run_ort(m, feeds), **tol)
    return got


# --- numpy reference (the spec's equations; onnxruntime's sequence_lens and alpha/beta rules) ----

def _sig(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


ACTS = {"relu": lambda x, a, b: np.maximum(x, 0), "tanh": lambda x, a, b: np.tanh(x),
        "sigmoid": lambda x, a, b: _sig(x), "affine": lambda x, a, b: a * x + b,
        "leakyrelu": lambda x, a, b: np.where(x >= 0, x, a * x),
        "thresholdedrelu": lambda x, a, b: np.where(x > a, x, 0),
        "scaledtanh": lambda x, a, b: a * np.tanh(b * x),
        "hardsigmoid": lambda x, a, b: np.clip(a * x + b, 0, 1),
        "elu": lambda x, a, b: np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0)) - 1)),
        "softsign": lambda x, a, b: x / (1 + np.abs(x)), "softplus": lambda x, a, b: np.log1p(np.exp(x))}
TAKES = {"affine": (1, 1), "leakyrelu": (1, 0), "thresholdedrelu": (1, 0), "scaledtanh": (1, 1),
         "hardsigmoid": (1, 1), "elu": (1, 0)}
DEFAULTS = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}
DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def reference(op: str, v: dict[str, Any], direction: str = "forward", activations: Sequence[str] | None = None,
              activation_alpha: Sequence[float] = (), activation_beta: Sequence[float] = (),
              clip: float | None = None, input_forget: int = 0, linear_before_reset: int = 0,
              layout: int = 0, dtype: Any = np.float64, **_: Any) -> list[np.ndarray]:
    c = {k: None if a is None else np.asarray(a, dtype if k != "sequence_lens" else np.int64) for k, a in v.items()}
    X, W, R = c["X"], c["W"], c["R"]
    h0, c0 = c.get("initial_h"), c.get("initial_c")
    if layout:
        X = X.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    S, B, _ = X.shape
    D, H, G = W.shape[0], R.shape[2], GATES[op]
    Bias = c["B"] if c["B"] is not None else np.zeros((D, 2 * G * H), dtype)
    P = c.get("P") if c.get("P") is not None else np.zeros((D, 3 * H), dtype)
    lens = c["sequence_lens"] if c["sequence_lens"] is not None else np.full(B, S)
    h0 = np.zeros((D, B, H), dtype) if h0 is None else h0
    c0 = np.zeros((D, B, H), dtype) if c0 is None else c0
    names = list(activations) if activations else DEFAULT_ACTS[op] * D
    al, be, acts = list(activation_alpha), list(activation_beta), []
    for n in names:
        k = n.lower()
        ta, tb = TAKES.get(k, (0, 0))
        da, db = DEFAULTS.get(k, (0.0, 0.0))
        a = (al.pop(0) if al else da) if ta else 0.0
        b = (be.pop(0) if be else db) if tb else 0.0
        acts.append(lambda x, f=ACTS[k], a=a, b=b: f(x, a, b))
    cl = (lambda x: x) if clip is None else (lambda x: np.clip(x, -clip, clip))
    Y = np.zeros((S, D, B, H), dtype)
    Yh = np.zeros((D, B, H), dtype)
    Yc = np.zeros((D, B, H), dtype)
    n_act = len(DEFAULT_ACTS[op])
    for d in range(D):
        f, g, hh = (acts[d * n_act:(d + 1) * n_act] + [None, None])[:3]
        wb, rb = Bias[d, :G * H], Bias[d, G * H:]
        for b in range(B):
            L = int(lens[b])
            h, cs = h0[d, b].copy(), c0[d, b].copy()
            for s in range(L):
                t = L - 1 - s if (direction == "reverse" or d == 1) else s
                xw, hr = X[t, b] @ W[d].T + wb, h @ R[d].T
                if op == "LSTM":
                    gi, go, gf, gc = np.split(xw + hr + rb, 4)
                    pi, po, pf = np.split(P[d], 3)
                    i = f(cl(gi + pi * cs))
                    fg = 1 - i if input_forget else f(cl(gf + pf * cs))
                    cs = fg * cs + i * g(cl(gc))
                    h = f(cl(go + po * cs)) * hh(cs)
                elif op == "GRU":
                    z = f(cl(xw[:H] + hr[:H] + rb[:H]))
                    r = f(cl(xw[H:2 * H] + hr[H:2 * H] + rb[H:2 * H]))
                    if linear_before_reset:
                        pre = xw[2 * H:] + r * (hr[2 * H:] + rb[2 * H:])
                    else:
                        pre = xw[2 * H:] + (r * h) @ R[d, 2 * H:].T + rb[2 * H:]
                    h = (1 - z) * g(cl(pre)) + z * h
                else:
                    h = f(cl(xw + hr + rb))
                Y[t, d, b] = h
            if L > 0:  # onnxruntime returns zeros, not the initial state, for an empty sequence
                Yh[d, b], Yc[d, b] = h, cs
    if layout:
        Y, Yh, Yc = Y.transpose(2, 0, 1, 3), Yh.transpose(1, 0, 2), Yc.transpose(1, 0, 2)
    return [Y, Yh, Yc][:NOUT[op]]


# --- directions x sequence_lens x initial states, against onnxruntime ---------------------------

OPS = [("LSTM", {}), ("GRU", {"linear_before_reset": 0}), ("GRU", {"linear_before_reset": 1}), ("RNN", {})]
LENS = {"none": None, "varying": [5, 0, 7, 2, 7], "full": [7, 7, 7, 7, 7], "short": [3, 1, 2, 3, 1]}


@pytest.mark.parametrize("op,extra", OPS, ids=["LSTM", "GRU", "GRU-lbr", "RNN"])
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("lens", list(LENS))
@pytest.mark.parametrize("init", [False, True], ids=["zero-state", "init-state"])
def test_directions_lens_states(op: str, extra: dict, direction: str, lens: str, init: bool) -> None:
    v = inputs(op, 7, 5, 3, 6, direction, seed=len(lens) + 7 * init, lens=LENS[lens], init=init,
               peep=init, bias=lens != "short")
    # Weights as initializers (packed at compile time) or as run-time inputs: both paths.
    got = check_ort(op, v, const_weights=init, hidden_size=6, direction=direction, **extra)
    if LENS[lens] is not None:
        for b, n in enumerate(LENS[lens]):
            assert not got[0][n:, :, b].any(), "Y must be zero past a sequence's length"


def test_reference_matches_onnxruntime() -> None:
    # The numpy reference is the oracle where onnxruntime has no kernel: check it where it has one.
    for op, extra in OPS:
        for direction in DIRS:
            v = inputs(op, 6, 4, 3, 5, direction, seed=3, lens=[6, 0, 3, 5], init=True, peep=True)
            m, feeds = model(op, v, hidden_size=5, direction=direction, clip=2.0, **extra)
            assert_close(reference(op, v, direction, clip=2.0, dtype=np.float32, **extra), run_ort(m, feeds),
                         rtol=1e-4, atol=1e-5)


# --- activations, clip, peepholes, input_forget --------------------------------------------------

ACT_CASES = [
    ("LSTM", "forward", dict(activations=["HardSigmoid", "LeakyRelu", "Softplus"])),
    ("LSTM", "reverse", dict(activations=["HardSigmoid", "LeakyRelu", "Softplus"], activation_alpha=[0.3, 0.2],
                             activation_beta=[0.4])),
    ("LSTM", "bidirectional", dict(activations=["Sigmoid", "Elu", "ScaledTanh", "Sigmoid", "Softsign", "Relu"],
                                   activation_alpha=[0.5, 1.5, 0.7], activation_beta=[0.8], clip=1.5)),
    ("LSTM", "forward", dict(activations=["sigmoid", "tanh", "affine"], activation_alpha=[0.7],
                             activation_beta=[0.1])),
    ("LSTM", "bidirectional", dict(input_forget=1, clip=0.9)),
    ("GRU", "forward", dict(activations=["HardSigmoid", "Elu"])),
    ("GRU", "reverse", dict(activations=["Sigmoid", "Affine"], activation_alpha=[0.5], activation_beta=[0.3],
                            linear_before_reset=1)),
    ("GRU", "bidirectional", dict(activations=["Sigmoid", "Softsign", "HardSigmoid", "ScaledTanh"],
                                  activation_alpha=[0.3, 1.2], activation_beta=[0.4, 0.5], clip=1.0)),
    ("GRU", "forward", dict(activations=["Sigmoid", "ThresholdedRelu"], activation_alpha=[0.05])),
    ("RNN", "forward", dict(activations=["LeakyRelu"])),
    ("RNN", "reverse", dict(activations=["Relu"], clip=0.8)),
    ("RNN", "bidirectional", dict(activations=["Affine", "HardSigmoid"], activation_alpha=[0.5, 0.3],
                                  activation_beta=[0.1, 0.6])),
    ("RNN", "bidirectional", dict(activations=["Sigmoid", "Softplus"])),
    ("RNN", "forward", dict(activations=["Elu"], activation_alpha=[0.4], clip=1.2)),
]


@pytest.mark.parametrize("op,direction,attrs", ACT_CASES)
def test_activations(op: str, direction: str, attrs: dict) -> None:
    v = inputs(op, 6, 3, 4, 5, direction, seed=11, lens=[6, 2, 4], init=True, peep=op == "LSTM")
    check_ort(op, v, hidden_size=5, direction=direction, **attrs)


@pytest.mark.parametrize("direction", DIRS)
def test_lstm_peepholes_clip_input_forget(direction: str) -> None:
    for k, attrs in enumerate([dict(clip=0.5), dict(input_forget=1), dict(input_forget=1, clip=1.0), {}]):
        v = inputs("LSTM", 5, 4, 3, 7, direction, seed=k, lens=[5, 3, 0, 4], init=True, peep=True)
        check_ort("LSTM", v, hidden_size=7, direction=direction, **attrs)


# --- sizes, outputs, batch-size changes ----------------------------------------------------------

@pytest.mark.parametrize("op,extra", OPS, ids=["LSTM", "GRU", "GRU-lbr", "RNN"])
@pytest.mark.parametrize("S,B,I,H", [(1, 1, 1, 1), (9, 2, 17, 13), (4, 11, 5, 33), (3, 1, 8, 64)])
def test_odd_sizes(op: str, extra: dict, S: int, B: int, I: int, H: int) -> None:
    direction = "bidirectional" if H % 2 else "reverse"
    v = inputs(op, S, B, I, H, direction, seed=S * B, init=B > 1)
    check_ort(op, v, hidden_size=H, direction=direction, **extra)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("outputs", [(True,), (False, True), (True, False, True), (False, False, True),
                                     (False, True, True)])
def test_optional_outputs(op: str, outputs: tuple[bool, ...]) -> None:
    outputs = outputs[:NOUT[op]]
    if not any(outputs):
        pytest.skip("no output left")
    v = inputs(op, 4, 3, 2, 3, "bidirectional", seed=5, lens=[4, 1, 3], init=True)
    got = check_ort(op, v, outputs=outputs, hidden_size=3, direction="bidirectional")
    assert len(got) == sum(outputs)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_new_batch_size_and_length_do_not_recompile(op: str) -> None:
    from jitort.kernels import rnn
    kernel = {"LSTM": rnn._lstm_dir, "GRU": rnn._gru_dir, "RNN": rnn._rnn_dir}[op]
    v = inputs(op, 5, 2, 3, 4, "bidirectional", seed=1)
    m, _ = model(op, {**v, "X": v["X"]}, hidden_size=4, direction="bidirectional")
    # X with symbolic batch and sequence dims, so one session serves every shape.
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "S"
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "N"
    sess = jitort.InferenceSession(m.SerializeToString())
    n_sigs = None
    for S, B in [(5, 2), (3, 7), (8, 1)]:
        X = np.random.default_rng(S).standard_normal((S, B, 3)).astype(np.float32)
        assert_close(sess.run(None, {"X": X}), run_ort(m, {"X": X}), **F32_TOL)
        n_sigs = n_sigs or len(kernel.signatures)
        assert len(kernel.signatures) == n_sigs


def test_all_lengths_zero() -> None:
    for op in ["LSTM", "GRU", "RNN"]:
        v = inputs(op, 4, 3, 2, 3, "bidirectional", seed=2, lens=[0, 0, 0], init=True)
        got = run_jitort(*model(op, v, hidden_size=3, direction="bidirectional"))
        assert all(not g.any() for g in got)


def test_nan_stays_in_its_batch_row() -> None:
    for op in ["LSTM", "GRU", "RNN"]:
        v = inputs(op, 5, 3, 2, 4, "bidirectional", seed=4)
        v["X"][2, 1, 0] = np.nan
        y, yh = run_jitort(*model(op, v, hidden_size=4, direction="bidirectional"))[:2]
        assert np.isnan(yh[:, 1]).all() and not np.isnan(yh[:, [0, 2]]).any()
        assert not np.isnan(y[:, :, [0, 2]]).any()


# --- layouts, dtypes, opsets (partly beyond onnxruntime's kernels) -------------------------------

@pytest.mark.parametrize("op,extra", OPS, ids=["LSTM", "GRU", "GRU-lbr", "RNN"])
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_layout1(op: str, extra: dict, direction: str) -> None:
    # onnxruntime's CPU kernels refuse layout=1: compare with its layout-0 run on transposed data.
    v = inputs(op, 6, 4, 3, 5, direction, seed=9, lens=[6, 0, 2, 5], init=True, peep=True, layout=1)
    m, feeds = model(op, v, 14, False, hidden_size=5, direction=direction, layout=1, **extra)
    got = run_jitort(m, feeds)
    t = {k: (a.transpose(1, 0, 2) if k in ("X", "initial_h", "initial_c") else a) for k, a in v.items()
         if a is not None}
    m0, feeds0 = model(op, {k: t.get(k) for k in v}, 14, False, hidden_size=5, direction=direction, **extra)
    want = run_ort(m0, feeds0)
    want = [want[0].transpose(2, 0, 1, 3)] + [w.transpose(1, 0, 2) for w in want[1:]]
    assert_close(got, want, **F32_TOL)


@pytest.mark.parametrize("op,extra", OPS, ids=["LSTM", "GRU", "GRU-lbr", "RNN"])
@pytest.mark.parametrize("direction", DIRS)
def test_float64(op: str, extra: dict, direction: str) -> None:
    # onnxruntime's LSTM/GRU throw for double and it has no double RNN: the numpy reference decides.
    attrs = dict(clip=3.0, activations=DEFAULT_ACTS[op][:1] + ["Softsign", "Elu"][:len(DEFAULT_ACTS[op]) - 1])
    attrs["activations"] = attrs["activations"] * (2 if direction == "bidirectional" else 1)
    for k, a in enumerate([{}, attrs]):
        v = inputs(op, 6, 3, 4, 5, direction, seed=k, lens=[6, 3, 0], init=True, peep=True, dtype=np.float64)
        got = run_jitort(*model(op, v, 14, k == 0, hidden_size=5, direction=direction, **a, **extra))
        assert all(g.dtype == np.float64 for g in got)
        assert_close(got, reference(op, v, direction, **a, **extra), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op,extra", OPS, ids=["LSTM", "GRU", "GRU-lbr", "RNN"])
def test_float16(op: str, extra: dict) -> None:
    v = inputs(op, 5, 3, 4, 6, "bidirectional", seed=2, lens=[5, 2, 4], init=True, peep=True, dtype=np.float16)
    got = run_jitort(*model(op, v, hidden_size=6, direction="bidirectional", **extra))
    assert all(g.dtype == np.float16 for g in got)
    assert_close(got, [r.astype(np.float16) for r in reference(op, v, "bidirectional", **extra)],
                 rtol=2e-2, atol=4e-3)


@pytest.mark.parametrize("op,extra", OPS, ids=["LSTM", "GRU", "GRU-lbr", "RNN"])
@pytest.mark.parametrize("opset", [7, 14, 22])
def test_opsets_vs_onnxruntime(op: str, extra: dict, opset: int) -> None:
    v = inputs(op, 4, 3, 2, 5, "reverse", seed=opset, lens=[4, 2, 3], init=True)
    check_ort(op, v, opset, hidden_size=5, direction="reverse", **extra)


@pytest.mark.parametrize("op,opset", [("LSTM", 1), ("GRU", 1), ("GRU", 3), ("RNN", 1)])
def test_old_opsets(op: str, opset: int) -> None:
    # onnxruntime has no kernel before opset 7: the same node at opset 7 (no output_sequence) decides.
    v = inputs(op, 5, 2, 3, 4, "forward", seed=opset, lens=[5, 3], init=True)
    attrs: dict[str, Any] = {"hidden_size": 4}
    old = dict(attrs, output_sequence=0)
    if op == "GRU" and opset == 3:
        old["linear_before_reset"] = attrs["linear_before_reset"] = 1
    # GRU-1's schema default direction is the misspelt "foward": leave it unset there.
    new_dir = {} if (op, opset) == ("GRU", 1) else {"direction": "forward"}
    got = run_jitort(*model(op, v, opset, **old, **new_dir))
    assert_close(got, run_ort(*model(op, v, 7, **attrs, direction="forward")), **F32_TOL)


# --- errors ---------------------------------------------------------------------------------------

def test_invalid_sequence_lens() -> None:
    v = inputs("LSTM", 4, 2, 3, 2, "forward", lens=[5, 1])
    with pytest.raises(InvalidArgument, match="sequence_lens"):
        run_jitort(*model("LSTM", v, hidden_size=2))


def test_wrong_weight_shape() -> None:
    v = inputs("GRU", 4, 2, 3, 2, "forward")
    v["R"] = v["R"][:, :, :1].copy()
    with pytest.raises(InvalidArgument, match="GRU"):
        run_jitort(*model("GRU", v, const_weights=False, hidden_size=2))


def test_bad_attributes() -> None:
    v = inputs("RNN", 3, 2, 2, 2, "forward")
    with pytest.raises(Fail, match="activation"):
        run_jitort(*model("RNN", v, hidden_size=2, activations=["Gelu"]))
    v = inputs("LSTM", 3, 2, 2, 2, "bidirectional")
    with pytest.raises(Fail, match="6 activations"):
        run_jitort(*model("LSTM", v, hidden_size=2, direction="bidirectional", activations=["Tanh"] * 3))
