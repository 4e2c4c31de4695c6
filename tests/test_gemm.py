"""jitort's packed float32 GEMM (kernels/gemm.py) and the MatMul/Gemm epilogue fusion.

Engine level: against numpy in float64 on a grid of shapes, every epilogue, both ISA paths; bitwise equal
across the ISA paths, thread counts and any split of the output into chunks. Graph level: MatMul/Gemm
chains against onnxruntime, the fusion pass's result, and the packed weights through the cache and a
``jitort compile`` artifact.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import scipy.special
from onnx import helper

import jitort
from jitort.compiler import optimize
from jitort.errors import InvalidArgument
from jitort.kernels import gemm
from jitort.frontend.importer import import_model
from oracle import make_model, run_ort

ISAS = ["avx2"] + (["avx512"] if gemm.host_isa() == "avx512" else [])

# (M, K, N): tails in every dimension, K beyond one K block, N beyond one column tile, 1000+
SHAPES = [(1, 1, 1), (1, 768, 100), (2, 33, 17), (3, 5, 16), (4, 300, 97), (5, 64, 48), (6, 7, 15),
          (7, 513, 130), (13, 1, 33), (64, 257, 64), (130, 70, 1030), (1001, 40, 9), (3, 1100, 1025),
          (40, 100, 32), (50, 300, 80), (25, 600, 48)]  # the last rows: AVX-512's narrow 12 x 2 tile


def _rand(shape, seed, lo=-1.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def _ref_act(x: np.ndarray, act: str, lo: float, hi: float) -> np.ndarray:
    if act == "Relu":
        return np.maximum(x, 0)
    if act == "Clip":
        return np.clip(x, lo, hi)
    if act == "LeakyRelu":
        return np.where(x >= 0, x, lo * x)
    if act == "HardSwish":
        return x * np.clip(x / 6 + 0.5, 0, 1)
    if act == "HardSigmoid":
        return np.clip(lo * x + hi, 0, 1)
    if act == "Sigmoid":
        return 1 / (1 + np.exp(-x))
    if act == "SiLU":
        return x / (1 + np.exp(-x))
    if act == "Gelu":
        return 0.5 * x * (1 + scipy.special.erf(x / math.sqrt(2)))
    if act == "GeluTanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return x


def _run(a, b, bias=None, res=None, act="", lo=0.0, hi=0.0, isa=None, nthreads=1):
    n = b.shape[1]
    return gemm.gemm(a, gemm.pack_b(b), n, gemm.pad_bias(bias, n), bias is not None, res,
                     gemm.ACTIVATIONS[act], lo, hi, isa=isa, nthreads=nthreads)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("mkn", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_engine_matches_numpy(isa, mkn):
    M, K, N = mkn
    a, b, bias = _rand((M, K), 1), _rand((K, N), 2), _rand(N, 3)
    got = _run(a, b, bias, isa=isa)
    want = a.astype(np.float64) @ b.astype(np.float64) + bias
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * math.sqrt(K) + 1e-6)
    got0 = _run(a, b, isa=isa)  # no bias
    np.testing.assert_allclose(got0, want - bias, rtol=1e-5, atol=2e-6 * math.sqrt(K) + 1e-6)


@pytest.mark.parametrize("mkn", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bitwise_across_isas_threads_and_chunks(mkn):
    """One fma chain per element in k order: the ISA path, the thread count and the way the output is
    cut into chunks (rows, column panels) do not change a bit."""
    M, K, N = mkn
    a, b, bias = _rand((M, K), 4), _rand((K, N), 5), _rand(N, 6)
    base = _run(a, b, bias, isa="avx2")
    for isa in ISAS:
        assert np.array_equal(_run(a, b, bias, isa=isa, nthreads=2), base)
        bp, pb = gemm.pack_b(b), gemm.pad_bias(bias, N)
        npan = gemm.panels(N)
        rows = sorted({0, M // 3, M // 2, M})
        cols = sorted({0, npan // 2, npan})
        for key in [isa] + (["avx512n"] if isa == "avx512" else []):  # the narrow kernel on any chunk
            kern = gemm.KERNELS[key]
            out = np.full((M, N), np.nan, np.float32)
            for m0, m1 in zip(rows, rows[1:]):
                for p0, p1 in zip(cols, cols[1:]):
                    kern(a, bp, out, pb, 1, gemm._Z2, 0, 0, np.float32(0), np.float32(0), 0, m0, m1, p0, p1)
            assert np.array_equal(out, base), key


def test_two_threads_split_the_work_and_agree():
    M, K, N = 96, 256, 1000  # 49 MFLOP: split into several chunks
    assert len(gemm.split(M, N, K, "avx2", 2)) > 1 and len(gemm.split(1, 256, 256, "avx2", 2)) == 1
    a, b = _rand((M, K), 7), _rand((K, N), 8)
    assert np.array_equal(_run(a, b, nthreads=2), _run(a, b, nthreads=1))


@pytest.mark.parametrize("M", [1, 3])
def test_small_m_products_split_by_columns_and_agree(M, monkeypatch):
    """A GEMV-shaped product with enough weights is split over threads by whole column tiles, and every
    element comes out bitwise as on one thread."""
    K, N = 768, 2304
    assert gemm.parts(1, 4096, 4096, 2) == 2  # 64 MiB of weights: split
    assert gemm.parts(1, 2304, 768, 2) == 2 and gemm.parts(M, N, K, 1) == 1  # gpt2's 7 MiB: split (native parts)
    assert gemm.parts(1, 768, 768, 2) == 1  # 2.25 MiB: not worth a hand-over
    monkeypatch.setattr(gemm, "_BYTES_PER_PART", 1 << 20)  # the mechanism at a test-sized shape
    for isa in ISAS:
        chunks = gemm.split(M, N, K, isa, 2)
        assert len(chunks) > 1 and all((m0, m1) == (0, M) for m0, m1, _, _ in chunks)
        assert sorted(chunks)[0][2] == 0 and sorted(chunks)[-1][3] == gemm.panels(N)
    a, b, bias = _rand((M, K), 17), _rand((K, N), 18), _rand(N, 19)
    for isa in ISAS:
        assert np.array_equal(_run(a, b, bias, act="Gelu", isa=isa, nthreads=2),
                              _run(a, b, bias, act="Gelu", isa=isa, nthreads=1))


@pytest.mark.parametrize("M", [1, 4, 50])
def test_split_runs_as_native_parts_with_every_argument(M, monkeypatch):
    """A split product is one native job (threads.run_native: GEMM part functions called by address
    with an argument vector); bias, residual, Clip's float bounds and a stored-strip activation all
    reach the parts: bitwise equal to one thread on each ISA path."""
    K, N = 130, 700
    monkeypatch.setattr(gemm, "_BYTES_PER_PART", 1 << 12)
    monkeypatch.setattr(gemm, "_FLOPS_PER_PART", 1e3)
    jobs: list[int] = []
    real = gemm.run_native
    monkeypatch.setattr(gemm, "run_native", lambda fn, argv, n, t: (jobs.append(n), real(fn, argv, n, t)))
    a, b, bias, res = _rand((M, K), 20), _rand((K, N), 21), _rand(N, 22), _rand((M, N), 23)
    for isa in ISAS:
        for act, lo, hi in (("Clip", -0.3, 0.4), ("Gelu", 0, 0)):
            one = _run(a, b, bias, res, act, lo, hi, isa=isa, nthreads=1)
            n0 = len(jobs)
            assert np.array_equal(_run(a, b, bias, res, act, lo, hi, isa=isa, nthreads=2), one), (isa, act)
            assert len(jobs) == n0 + 1 and jobs[-1] > 1


def test_identical_weight_columns_give_identical_outputs():
    """Columns at different positions in a register tile and in different tiles round alike."""
    K = 300
    w = _rand((K, 1), 9)
    b = np.repeat(w, 70, axis=1)
    a = _rand((11, K), 10, -5, 5)
    for isa in ISAS:
        y = _run(a, b, isa=isa)
        assert (y == y[:, :1]).all()


ACTS = [("Relu", 0, 0), ("Clip", -0.3, 0.4), ("LeakyRelu", 0.1, 0), ("HardSwish", 0, 0), ("HardSigmoid", 0.3, 0.4),
        ("Sigmoid", 0, 0), ("SiLU", 0, 0), ("Gelu", 0, 0), ("GeluTanh", 0, 0)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act,lo,hi", ACTS)
def test_every_epilogue(isa, act, lo, hi):
    M, K, N = 29, 70, 30  # row and column tails; 2 panels: AVX-512's narrow 12-row tile
    a, b, bias, res = _rand((M, K), 11), _rand((K, N), 12), _rand(N, 13), _rand((M, N), 14)
    s = a.astype(np.float64) @ b
    got = _run(a, b, bias, res, act, lo, hi, isa=isa)
    np.testing.assert_allclose(got, _ref_act(s + bias + res, act, lo, hi), rtol=2e-5, atol=2e-5)
    got = _run(a, b, None, None, act, lo, hi, isa=isa)
    np.testing.assert_allclose(got, _ref_act(s, act, lo, hi), rtol=2e-5, atol=2e-5)
    assert np.array_equal(got, _run(a, b, None, None, act, lo, hi, isa="avx2"))


def test_nan_and_inf_propagate():
    a = _rand((7, 20), 15)
    a[2, 3], a[5, 0] = np.nan, np.inf
    b = _rand((20, 18), 16)
    got = _run(a, b, act="Relu")
    want = np.maximum(a.astype(np.float64) @ b, 0)  # NaN stays NaN through Relu, as in the elementwise op
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_isa_override(monkeypatch):
    monkeypatch.setenv("JITORT_ISA", "avx2")
    assert gemm.default_isa() == "avx2"
    monkeypatch.setenv("JITORT_ISA", "avx512")
    assert gemm.default_isa() == gemm.host_isa()  # never wider than the host
    monkeypatch.delenv("JITORT_ISA")
    assert gemm.default_isa() == gemm.host_isa()


# --- graph level ------------------------------------------------------------------------------------

def _chain_model(M, K, N, act="", residual=False, a_shape=None, gemm_attrs=None, c_shape=None, seed=0,
                 bias=True):
    """MatMul(x, W) [+ b] [+ r] [act], or Gemm(x, W[, C]) [+ r] [act] when gemm_attrs is given."""
    inits = {}
    nodes = []
    inputs = {"x": (np.float32, list(a_shape or (M, K)))}
    if gemm_attrs is not None:
        ta, tb = gemm_attrs.get("transA", 0), gemm_attrs.get("transB", 0)
        inits["W"] = _rand((N, K) if tb else (K, N), seed + 1)
        ins = ["x", "W"]
        if c_shape is not None:
            inits["C"] = _rand(c_shape, seed + 2)
            ins.append("C")
        nodes.append(helper.make_node("Gemm", ins, ["y0"], **gemm_attrs))
        inputs["x"] = (np.float32, [K, M] if ta else [M, K])
        y = "y0"
    else:
        inits["W"] = _rand((K, N), seed + 1)
        nodes.append(helper.make_node("MatMul", ["x", "W"], ["y0"]))
        y = "y0"
        if bias:
            inits["b"] = _rand(N, seed + 2)
            nodes.append(helper.make_node("Add", [y, "b"], ["y1"]))
            y = "y1"
    out_shape = list(a_shape[:-1]) + [N] if a_shape else [M, N]
    if residual:
        inputs["r"] = (np.float32, out_shape)
        nodes.append(helper.make_node("Add", ["r", y], ["y2"]))
        y = "y2"
    if act == "SiLU":
        nodes += [helper.make_node("Sigmoid", [y], ["sg"]), helper.make_node("Mul", [y, "sg"], ["y3"])]
    elif act == "Clip":
        inits["lo"], inits["hi"] = np.float32(-0.5), np.float32(0.5)
        nodes.append(helper.make_node("Clip", [y, "lo", "hi"], ["y3"]))
    elif act in ("Gelu", "GeluTanh"):
        nodes.append(helper.make_node("Gelu", [y], ["y3"], approximate="tanh" if act == "GeluTanh" else "none"))
    elif act:
        nodes.append(helper.make_node(act, [y], ["y3"]))
    last = nodes[-1].output[0]
    return make_model(nodes, inputs, [last], inits, opset=20)


def _feeds(model, seed=20):
    return {i.name: _rand([d.dim_value for d in i.type.tensor_type.shape.dim], seed + k)
            for k, i in enumerate(model.graph.input)}


def _fused(model) -> list:
    g = optimize(import_model(model), ["CPUExecutionProvider"])
    return [n for n in g.nodes if n.domain == "jitort" and n.op_type in ("MatMul", "Gemm")]


def _session(model, threads=1):
    so = jitort.SessionOptions()
    so.intra_op_num_threads = threads
    return jitort.InferenceSession(model.SerializeToString(), so)


@pytest.mark.parametrize("act", ["", "Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "SiLU",
                                 "Gelu", "GeluTanh"])
def test_matmul_bias_activation_vs_onnxruntime(act):
    m = _chain_model(10, 50, 40, act=act, residual=act in ("", "Relu"))
    fused = _fused(m)
    assert len(fused) == 1 and fused[0].attrs.get("_activation", "") == ("" if act == "" else act)
    feeds = _feeds(m)
    got = _session(m).run(None, feeds)[0]
    np.testing.assert_allclose(got, run_ort(m, feeds)[0], rtol=1e-5, atol=1e-5)


def _gelu_written_out(form):  # type: ignore[no-untyped-def]
    """y = MatMul(x, W) + b, then GELU written out in one of the exporters' orders (form), read by y only."""
    c = {"sq": np.float32(np.sqrt(2)), "isq": np.float32(1 / np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}
    first = (helper.make_node("Mul", ["y1", "isq"], ["d"]) if form == "mul" else
             helper.make_node("Div", ["y1", "sq"], ["d"]))
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y0"]), helper.make_node("Add", ["y0", "b"], ["y1"]), first,
             helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["one", "e"], ["e1"])]
    if form in ("div", "mul"):  # Mul(Mul(y, e1), 0.5): torch's legacy exporter
        nodes += [helper.make_node("Mul", ["y1", "e1"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    elif form == "half_first":  # Mul(Mul(y, 0.5), e1)
        nodes += [helper.make_node("Mul", ["half", "y1"], ["m"]), helper.make_node("Mul", ["e1", "m"], ["y"])]
    else:  # Mul(y, Mul(e1, 0.5))
        nodes += [helper.make_node("Mul", ["e1", "half"], ["m"]), helper.make_node("Mul", ["y1", "m"], ["y"])]
    inits = dict(c, W=_rand((48, 40), 1), b=_rand(40, 2))
    return make_model(nodes, {"x": (np.float32, [10, 48])}, ["y"], inits, opset=17)


@pytest.mark.parametrize("form", ["div", "mul", "half_first", "half_last"])
def test_gelu_written_out_folds_into_the_epilogue(form):
    m = _gelu_written_out(form)
    fused = _fused(m)
    assert len(fused) == 1 and fused[0].attrs.get("_activation") == "Gelu"
    g = optimize(import_model(m), ["CPUExecutionProvider"])
    assert [n.op_type for n in g.nodes] == ["MatMul"], [n.op_type for n in g.nodes]
    feeds = _feeds(m)
    np.testing.assert_allclose(_session(m).run(None, feeds)[0], run_ort(m, feeds)[0], rtol=1e-5, atol=1e-5)


def _gelu_tanh_written_out(order):  # type: ignore[no-untyped-def]
    """y = MatMul(x, W) + b, then GPT-2's tanh GELU written out, the last two multiplies in ``order``."""
    c = {"three": np.float32(3), "k": np.float32(0.044715), "s": np.float32(np.sqrt(2 / np.pi)),
         "one": np.float32(1), "half": np.float32(0.5)}
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y0"]), helper.make_node("Add", ["y0", "b"], ["y1"]),
             helper.make_node("Pow", ["y1", "three"], ["p"]), helper.make_node("Mul", ["k", "p"], ["q"]),
             helper.make_node("Add", ["y1", "q"], ["a"]), helper.make_node("Mul", ["a", "s"], ["m"]),
             helper.make_node("Tanh", ["m"], ["t"]), helper.make_node("Add", ["t", "one"], ["t1"])]
    if order == "half_first":  # GPT-2's: Mul(Mul(y, 0.5), 1 + tanh)
        nodes += [helper.make_node("Mul", ["y1", "half"], ["h"]), helper.make_node("Mul", ["h", "t1"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["y1", "t1"], ["h"]), helper.make_node("Mul", ["h", "half"], ["y"])]
    inits = dict(c, W=_rand((48, 40), 1), b=_rand(40, 2))
    return make_model(nodes, {"x": (np.float32, [10, 48])}, ["y"], inits, opset=17)


@pytest.mark.parametrize("order", ["half_first", "half_last"])
def test_gelu_tanh_written_out_folds_into_the_epilogue(order):
    m = _gelu_tanh_written_out(order)
    fused = _fused(m)
    assert len(fused) == 1 and fused[0].attrs.get("_activation") == "GeluTanh"
    g = optimize(import_model(m), ["CPUExecutionProvider"])
    assert [n.op_type for n in g.nodes] == ["MatMul"], [n.op_type for n in g.nodes]
    feeds = _feeds(m)
    np.testing.assert_allclose(_session(m).run(None, feeds)[0], run_ort(m, feeds)[0], rtol=1e-5, atol=1e-5)
    m.graph.output.append(helper.make_value_info("t", onnx.TypeProto()))  # an intermediate read elsewhere
    assert not any(n.attrs.get("_activation") for n in _fused(m))


def test_gelu_written_out_not_folded_when_a_part_differs():
    """Another constant (not sqrt 2), or a second reader of an intermediate: the chain stays as it is."""
    m = _gelu_written_out("div")
    for init in m.graph.initializer:
        if init.name == "sq":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(1.5, np.float32), "sq"))
    assert not any(n.attrs.get("_activation") for n in _fused(m))
    feeds = _feeds(m)
    np.testing.assert_allclose(_session(m).run(None, feeds)[0], run_ort(m, feeds)[0], rtol=1e-5, atol=1e-5)
    m = _gelu_written_out("half_last")
    m.graph.output.append(helper.make_value_info("e1", onnx.TypeProto()))
    assert not any(n.attrs.get("_activation") for n in _fused(m))


@pytest.mark.parametrize("attrs,c_shape", [
    (dict(transB=1), (33,)), (dict(transB=1), (1, 33)), (dict(), ()), (dict(transA=1), (12, 33)),
    (dict(transA=1, transB=1, beta=0.5), (33,)), (dict(beta=2.0), (12, 1)), (dict(), None),
    (dict(alpha=0.5, transB=1), (33,)),  # alpha != 1 keeps the BLAS path
])
def test_gemm_vs_onnxruntime(attrs, c_shape):
    m = _chain_model(12, 45, 33, act="Relu", gemm_attrs=attrs, c_shape=c_shape)
    feeds = _feeds(m)
    np.testing.assert_allclose(_session(m).run(None, feeds)[0], run_ort(m, feeds)[0], rtol=1e-5, atol=1e-5)


def test_batched_input_residual_and_small_m():
    for a_shape in ((2, 5, 64), (1, 64), (64,)):
        m = _chain_model(0, 64, 300, act="Gelu", residual=len(a_shape) > 1, a_shape=a_shape)
        feeds = _feeds(m)
        np.testing.assert_allclose(_session(m).run(None, feeds)[0], run_ort(m, feeds)[0], rtol=1e-5, atol=1e-5)


def test_graph_bitwise_across_threads_and_isas(monkeypatch):
    m = _chain_model(200, 256, 300, act="Gelu", residual=True)
    feeds = _feeds(m)
    one = _session(m, 1).run(None, feeds)[0]
    assert np.array_equal(_session(m, 2).run(None, feeds)[0], one)
    monkeypatch.setenv("JITORT_ISA", "avx2")
    assert np.array_equal(_session(m, 2).run(None, feeds)[0], one)


def test_not_fused_when_intermediate_is_an_output():
    m = _chain_model(4, 8, 8, act="Relu")
    m.graph.output.append(helper.make_value_info("y1", onnx.TypeProto()))
    assert not any(n.attrs.get("_activation") for n in _fused(m))
    feeds = _feeds(m)
    got, want = _session(m).run(None, feeds), run_ort(m, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_shape_mismatch_is_invalid_argument():
    m = make_model([helper.make_node("MatMul", ["x", "W"], ["y"])], {"x": (np.float32, ["m", "k"])}, ["y"],
                   {"W": _rand((8, 5), 1)})
    with pytest.raises(InvalidArgument, match="inner dimensions"):
        _session(m).run(None, {"x": _rand((3, 7), 2)})


# --- packed weights through the cache and an artifact ------------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys, numpy as np, jitort
    s = jitort.InferenceSession(sys.argv[1])
    x = np.load(sys.argv[2])
    y = s.run(None, {"x": x})[0]
    np.save(sys.argv[3], y)
    packed = [c for c in s._compiled.consts.values()
              if isinstance(c, np.ndarray) and c.ndim == 1 and c.size == int(sys.argv[4])]
    print(json.dumps({"loaded_from": s.compile_report["loaded_from"],
                      "packed_offsets": [c.ctypes.data % 64 for c in packed]}))
""")


def _child(model: str, x: Path, out: Path, cache: Path) -> dict:
    env = dict(os.environ, JITORT_CACHE_DIR=str(cache))
    size = gemm.panels(70) * 40 * gemm.PANEL  # _chain_model(9, 40, 70)'s packed weights
    p = subprocess.run([sys.executable, "-c", CHILD, model, str(x), str(out), str(size)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_packed_weights_survive_cache_and_artifact(tmp_path):
    m = _chain_model(9, 40, 70, act="Gelu")
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    x = _rand((9, 40), 30)
    np.save(tmp_path / "x.npy", x)
    want = _session(m).run(None, {"x": x})[0]
    first = _child(str(path), tmp_path / "x.npy", tmp_path / "y1.npy", tmp_path / "cache")
    second = _child(str(path), tmp_path / "x.npy", tmp_path / "y2.npy", tmp_path / "cache")
    assert first["loaded_from"] == "" and second["loaded_from"] != ""
    art = tmp_path / "art"
    p = subprocess.run([sys.executable, "-m", "jitort", "compile", str(path), "-o", str(art)], capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, JITORT_CACHE_DIR=str(tmp_path / "c2")))
    assert p.returncode == 0, p.stderr[-3000:]
    third = _child(str(art), tmp_path / "x.npy", tmp_path / "y3.npy", tmp_path / "c3")
    # fresh, from the cache, from the artifact: the panels start on a 64-byte boundary (jitort.allocator)
    assert [r["packed_offsets"] for r in (first, second, third)] == [[0], [0], [0]]
    for k in (1, 2, 3):
        assert np.array_equal(np.load(tmp_path / f"y{k}.npy"), want), k
    consts = list((art / "consts").glob("*.npy"))
    assert any(np.load(c).size == gemm.panels(70) * 40 * gemm.PANEL for c in consts)  # the packed panels


def test_concurrent_split_products_from_several_threads(monkeypatch):
    """Sessions in several Python threads share the one pool (a call finding it busy runs its chunks on
    its own thread): every result stays bitwise what one thread computes."""
    import threading
    monkeypatch.setattr(gemm, "_BYTES_PER_PART", 256 << 10)
    M, K, N = 1, 512, 1024  # 2 MB of weights: split at 2 threads
    a, b = _rand((M, K), 21), _rand((K, N), 22)
    want = _run(a, b, nthreads=1)
    bad: list[int] = []

    def worker(k: int) -> None:
        for _ in range(20):
            if not np.array_equal(_run(a, b, nthreads=2), want):
                bad.append(k)
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not bad and not any(t.is_alive() for t in ts)


def test_split_and_one_thread_paths_both_compiled(monkeypatch):
    """Whichever GEMM path a process takes first also readies the other (the one-thread kernel and the
    split's part function are separate compiled code): a warm-up that split its products must still
    leave the one-thread kernel in an artifact for 1-thread workers (jitort.ray's driver/workers)."""
    isa = gemm.default_isa()
    monkeypatch.setattr(gemm, "_BOTH_READY", set())
    monkeypatch.setattr(gemm, "_BYTES_PER_PART", 1 << 12)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((1, 64)).astype(np.float32)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    bp = gemm.pack_b(w)
    bias = gemm.pad_bias(None, 256)
    seen = []
    real = gemm.KERNELS[isa]
    monkeypatch.setitem(gemm.KERNELS, isa, lambda *args: (seen.append(args[11:13]), real(*args))[1])
    y = gemm.gemm(a, bp, 256, bias, False, nthreads=2)  # splits: readies the one-thread kernel on no rows
    np.testing.assert_allclose(y, a @ w, rtol=1e-5, atol=1e-5)
    assert seen == [(0, 0)] and isa in gemm._BOTH_READY
    monkeypatch.setattr(gemm, "_BOTH_READY", set())
    monkeypatch.setattr(gemm, "_BYTES_PER_PART", 1 << 40)
    addresses = []
    monkeypatch.setattr(gemm, "part_address", lambda i: addresses.append(i) or 0)
    gemm.gemm(a, bp, 256, bias, False, nthreads=2)  # does not split: readies the part function
    assert addresses == [isa]


# --- the lean path of small products (gemm.gemm_small) -----------------------------------------------

def _packed_call(a, w, act="", bias=None, lo=0.0, hi=0.0):
    from jitort.kernels import gemm_ops
    k, n = w.shape
    code, lo, hi = gemm_ops.act_params(act, lo, hi)
    return gemm_ops.matmul_packed(a, gemm.pack_b(w), gemm.pad_bias(bias, n), None, k=k, n=n,
                                  hasb=int(bias is not None), transA=0, act=code, lo=lo, hi=hi)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", ISAS)
def test_lean_matmul_path_is_bitwise_the_general_one(isa, threads, monkeypatch):
    """matmul_packed's lean path (one compiled call of the split path's part function) gives what
    gemm.gemm gives, for every rank of A, the activations (on the tile, on the stored strip), with and
    without bias; only a product worth splitting takes gemm (the lean path already runs the code a
    split runs, so no first call needs to ready it)."""
    monkeypatch.setenv("JITORT_ISA", isa)
    monkeypatch.setattr(gemm, "intra_op_threads", lambda: threads)
    monkeypatch.setattr(gemm, "_BOTH_READY", set())
    real, general = gemm.gemm, []
    w, bias = _rand((64, 40), 1), _rand(40, 2)
    for shape in [(64,), (1, 64), (1, 1, 64), (3, 2, 64), (0, 64), (2, 0, 64), (7, 64)]:
        a = _rand(shape, 3)
        for act, lo, hi in [("", 0, 0), ("Clip", -0.5, 0.5), ("SiLU", 0, 0)]:
            for b in (None, bias):
                want = _run(a.reshape(-1, 64), w, b, act=act, lo=lo, hi=hi, isa=isa).reshape(shape[:-1] + (40,))
                monkeypatch.setattr(gemm, "gemm", lambda *x, **k: (general.append(x[0].shape), real(*x, **k))[1])
                got = _packed_call(a, w, act, b, lo, hi)
                monkeypatch.setattr(gemm, "gemm", real)
                assert got.shape == want.shape and got.dtype == np.float32
                assert np.array_equal(got, want), (shape, act)
                ref = _ref_act(a.astype(np.float64) @ w + (0 if b is None else b), act, lo, hi)
                np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert general == []
    big, wb = _rand((1, 2048), 4), _rand((2048, 1024), 5)  # 8 MiB of weights: split at 2 threads
    want = _run(big, wb, isa=isa)
    monkeypatch.setattr(gemm, "gemm", lambda *x, **k: (general.append(x[0].shape), real(*x, **k))[1])
    assert np.array_equal(_packed_call(big, wb), want)
    assert general[-1:] == ([(1, 2048)] if threads > 1 else [])


def test_lean_matmul_path_leaves_strided_and_unaligned_a_to_gemm(monkeypatch):
    real, general = gemm.gemm, []
    w = _rand((16, 24), 1)
    base = _rand((4, 32), 2)
    raw = np.zeros(4 * 16 * 4 + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, np.float32, 4 * 16, offset=1).reshape(4, 16)
    unaligned[...] = base[:, :16]
    assert not unaligned.flags.aligned
    # gemm gets an aligned copy here (an unaligned A would compile another kernel signature)
    monkeypatch.setattr(gemm, "gemm", lambda a, *x, **k: (general.append(a.flags.c_contiguous), real(np.array(a), *x, **k))[1])
    for a in (base[:, ::2], unaligned):
        np.testing.assert_allclose(_packed_call(a, w), np.asarray(a, np.float64) @ w, rtol=1e-5, atol=1e-5)
    assert len(general) == 2


def test_lean_matmul_path_keeps_the_errors():
    w = _rand((16, 24), 1)
    with pytest.raises(InvalidArgument, match="element type float64"):
        _packed_call(_rand((2, 16), 2).astype(np.float64), w)
    for shape in [(2, 15), (16, 2), ()]:
        with pytest.raises(InvalidArgument, match="inner dimensions"):
            _packed_call(_rand(shape, 2), w)


def test_decode_shaped_matmul_wrong_shape_names_the_node():
    """A [batch, seq, hidden] MatMul as a decoder's projection: right shapes match onnxruntime, a wrong
    hidden size raises InvalidArgument naming the node (the lean path leaves it to the checks)."""
    m = make_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="layers.0.q_proj")],
                   {"x": (np.float32, ["b", "s", "h"])}, ["y"], {"W": _rand((64, 48), 1)})
    s = _session(m)
    for shape in [(1, 1, 64), (2, 5, 64)]:
        feeds = {"x": _rand(shape, 2)}
        np.testing.assert_allclose(s.run(None, feeds)[0], run_ort(m, feeds)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidArgument, match="layers.0.q_proj") as e:
        s.run(None, {"x": _rand((1, 1, 63), 2)})
    assert "inner dimensions" in str(e.value)
