"""A model's text must never become code: hostile strings in every name position the importer reads
(graph, nodes, values, initializers, subgraphs of If/Loop/Scan, model metadata) leave generated
source inert, and the model still runs and computes the right answer.

Each payload, were it executed, creates a sentinel directory; the tests assert it never appears
(at session creation, on a run, on a second session that loads the cached plan, and when the CUDA
plan is emitted and imported without a GPU)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

import jitort as ort
from jitort.codegen.source import GENERATED_HEADER, comment_safe, string_literal
from oracle import ORT_MAX_IR

F = TP.FLOAT
BAD_UTF8_TOKEN = b"ZZBADUTF8ZZ"             # replaced in the serialized model by same-length invalid UTF-8
BAD_UTF8_BYTES = b"ZZ\xff\xfeUTF8\xc0ZZ"


def _payloads(sentinel: Path) -> dict[str, str]:
    code = f"__import__('os').mkdir({str(sentinel)!r})"
    return {
        "triple_double": f'x""";{code};"""',
        "triple_single": f"x''';{code};'''",
        "newline": f"x\n{code}\n",
        "carriage_return": f"x\r{code}\r",
        "crlf_backslash": f"x\\\r\n{code}\\",
        "backslash": "x\\",
        "nul": f"x\x00{code}",
        "line_separator": f"x\u2028{code}\u2029{code}",
        "placeholders": "{KNAME}{0}{}{name}%s",
        "coding_utf7": f"coding: utf-7 +AAo-{code}",
        "quotes": f"'\"{code}\"'",
        "non_utf8": BAD_UTF8_TOKEN.decode(),
        "one_megabyte": "n" * (1 << 20),
    }


def _vi(name: str, shape: list | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, F, shape)


def _model(p: str) -> onnx.ModelProto:
    """X[2,3] -> MatMul(W) -> Relu -> Neg (a fused chain) -> If(cond: Sigmoid | Abs) -> Loop (2 trips,
    adds the carried value to itself) -> Scan (row-wise Identity) -> Y. Every name carries ``p``."""
    n = {k: f"{p}|{k}" for k in ("x", "w", "c", "mm", "r", "neg", "if_out", "t", "e", "loop_out", "trip",
                                 "cond_in", "cond_out", "v_in", "v_out", "scan_out", "s_in", "s_out", "y",
                                 "two", "true")}
    then = helper.make_graph([helper.make_node("Sigmoid", [n["neg"]], [n["t"]], name=p + "|then_node")],
                             p + "|then_graph", [], [_vi(n["t"], [2, 4])], doc_string=p)
    els = helper.make_graph([helper.make_node("Abs", [n["neg"]], [n["e"]], name=p + "|else_node")],
                            p + "|else_graph", [], [_vi(n["e"], [2, 4])])
    body = helper.make_graph(
        [helper.make_node("Identity", [n["cond_in"]], [n["cond_out"]], name=p + "|loop_cond"),
         helper.make_node("Add", [n["v_in"], n["v_in"]], [n["v_out"]], name=p + "|loop_add")],
        p + "|loop_body",
        [helper.make_tensor_value_info(n["trip"], TP.INT64, []),
         helper.make_tensor_value_info(n["cond_in"], TP.BOOL, []), _vi(n["v_in"], [2, 4])],
        [helper.make_tensor_value_info(n["cond_out"], TP.BOOL, []), _vi(n["v_out"], [2, 4])])
    scan_body = helper.make_graph([helper.make_node("Identity", [n["s_in"]], [n["s_out"]], name=p + "|scan_id")],
                                  p + "|scan_body", [_vi(n["s_in"], [4])], [_vi(n["s_out"], [4])])
    nodes = [
        helper.make_node("MatMul", [n["x"], n["w"]], [n["mm"]], name=p + "|matmul", doc_string=p),
        helper.make_node("Relu", [n["mm"]], [n["r"]], name=p + "|relu"),
        helper.make_node("Neg", [n["r"]], [n["neg"]], name=p + "|neg"),
        helper.make_node("If", [n["c"]], [n["if_out"]], name=p + "|if", then_branch=then, else_branch=els),
        helper.make_node("Loop", [n["two"], n["true"], n["if_out"]], [n["loop_out"]], name=p + "|loop", body=body),
        helper.make_node("Scan", [n["loop_out"]], [n["y"]], name=p + "|scan", body=scan_body, num_scan_inputs=1),
    ]
    inits = [onnx.numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 7 - 0.8, n["w"]),
             onnx.numpy_helper.from_array(np.array(2, np.int64), n["two"]),
             onnx.numpy_helper.from_array(np.array(True), n["true"])]
    g = helper.make_graph(nodes, p + "|graph", [_vi(n["x"], [2, 3]), helper.make_tensor_value_info(n["c"], TP.BOOL, [])],
                          [_vi(n["y"], [2, 4])], inits, doc_string=p, value_info=[_vi(n["mm"], [2, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name=p, doc_string=p)
    helper.set_model_props(m, {p: p})
    m.ir_version = ORT_MAX_IR
    return m


def _expected(x: np.ndarray, c: bool) -> np.ndarray:
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 7 - 0.8
    neg = -np.maximum(x @ w, 0)
    v = 1 / (1 + np.exp(-neg)) if c else np.abs(neg)
    return (v * 4).astype(np.float32)


def _serialized(m: onnx.ModelProto) -> bytes:
    data = m.SerializeToString()
    return data.replace(BAD_UTF8_TOKEN, BAD_UTF8_BYTES)


@pytest.mark.parametrize("kind", list(_payloads(Path("/nonexistent"))))
def test_escaping_helpers_keep_text_inert(kind: str) -> None:
    p = _payloads(Path("/nonexistent/pwned"))[kind]
    for text in (p, p.encode("utf-8", "surrogatepass").replace(BAD_UTF8_TOKEN, BAD_UTF8_BYTES)
                 .decode("utf-8", "surrogateescape")):
        c = comment_safe(text, 300)
        assert c.isascii() and c.isprintable() and len(c) <= 300
        assert "coding:" not in c.lower() and "coding=" not in c.lower()
        tree = ast.parse(f"{GENERATED_HEADER}\n# {c}\n")
        assert tree.body == []
        lit = string_literal(text)
        assert lit.isascii() and lit.isprintable()
        assert ast.literal_eval(lit) == text


@pytest.mark.parametrize("kind", list(_payloads(Path("/nonexistent"))))
def test_hostile_names_never_execute_and_the_model_runs(kind: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = tmp_path / "pwned"
    monkeypatch.setenv("JITORT_CACHE_DIR", str(tmp_path / "cache"))
    data = _serialized(_model(_payloads(sentinel)[kind]))
    x = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]], np.float32)
    for c in (True, False):
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])  # compiles, then loads from the cache
        assert not sentinel.exists()
        inputs = [i.name for i in sess.get_inputs()]
        got = sess.run(None, {inputs[0]: x, inputs[1]: np.array(c)})[0]
        np.testing.assert_allclose(got, _expected(x, c), rtol=1e-5, atol=1e-6)
        assert not sentinel.exists()
    plans = list((tmp_path / "cache").rglob("*.py"))
    assert plans
    for f in plans:
        src = f.read_bytes()
        assert src.isascii(), f
        assert src.decode().startswith(GENERATED_HEADER + "\n"), f


@pytest.mark.parametrize("kind", ["triple_double", "newline", "line_separator", "coding_utf7", "non_utf8"])
def test_hostile_names_in_the_cuda_plan(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba.cuda")
    from jitort import cache
    from jitort.compiler import compile_graph
    from jitort.frontend.importer import import_model
    from jitort.model_file import load_model
    sentinel = tmp_path / "pwned"
    monkeypatch.setenv("JITORT_CACHE_DIR", str(tmp_path / "cache"))
    proto, _ = load_model(_serialized(_model(_payloads(sentinel)[kind])))
    c = compile_graph(import_model(proto), ["CUDAExecutionProvider", "CPUExecutionProvider"], title=proto.graph.name)
    assert c.plan_source.isascii() and c.plan_source.startswith(GENERATED_HEADER + "\n")
    for name, s in c.kernel_sources.items():
        cache.load_source_module("kernels", name, s)
    mod = cache.load_source_module("plans", c.plan_name, c.plan_source)
    assert callable(mod.build)
    assert not sentinel.exists()
