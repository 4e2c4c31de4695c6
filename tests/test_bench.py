"""``jitort bench`` (``jitort.bench``): statistics, FLOP/byte counts, generated inputs, and the records
of a tiny end-to-end run (a 3-node model, and one that jitort cannot run, through the CLI)."""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from jitort.bench import stats
from jitort.bench.flops import count_model, node_flops
from jitort.bench.agreement import compare_outputs
from jitort.bench.harness import NOSPIN, BenchConfig, ort_session_options, ort_spin_modes, spin_label
from jitort.bench.report import Progress
from jitort.bench.workload import parse_spec, prepare, with_batch
from jitort.cli import main


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, list[Any]]], outputs: dict[str, tuple[int, Any]],
           inits: dict[str, np.ndarray] | None = None, opset: int = 17,
           extra_opsets: list[onnx.OperatorSetIdProto] | None = None) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
                          [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
                          [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] + (extra_opsets or []))
    m.ir_version = 8
    return m


F = TensorProto.FLOAT


# --- statistics -----------------------------------------------------------------------------------

def test_percentile_interpolates_linearly() -> None:
    xs = [4.0, 1.0, 3.0, 2.0]  # sorted 1 2 3 4; position (n-1)q/100
    assert stats.percentile(xs, 0) == 1.0 and stats.percentile(xs, 100) == 4.0
    assert stats.percentile(xs, 50) == pytest.approx(2.5)
    assert stats.percentile(xs, 90) == pytest.approx(3.7)   # position 2.7
    assert stats.percentile(xs, 99) == pytest.approx(3.97)  # position 2.97
    assert stats.percentile(xs, 25) == pytest.approx(1.75)  # position 0.75
    assert stats.percentile([7.0], 99) == 7.0
    ys = list(np.random.default_rng(0).random(101))
    for q in (1, 50, 90, 99):
        assert stats.percentile(ys, q) == pytest.approx(float(np.percentile(ys, q)))
    with pytest.raises(ValueError):
        stats.percentile([], 50)


def test_summary_geomean_ratio_cv() -> None:
    s = stats.summary([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s == {"min": 1.0, "p50": 3.0, "p90": pytest.approx(7.6), "p99": pytest.approx(9.76), "max": 10.0,
                 "mean": 4.0, "n": 5}
    assert stats.geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert stats.geomean([0.5, 2.0]) == pytest.approx(1.0)  # a 2x win and a 2x loss cancel
    assert stats.geomean([2.0, 4.0, 8.0]) == pytest.approx(4.0)
    assert stats.geomean([]) is None
    with pytest.raises(ValueError):
        stats.geomean([1.0, 0.0])
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(1.0, 0.0) is None and stats.ratio(None, 1.0) is None
    assert stats.cv([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)
    assert stats.cv([1.0]) is None


def test_compare_outputs() -> None:
    ref = np.array([1.0, 2.0, 0.0, np.nan], np.float32)
    ok = compare_outputs(ref + np.float32(5e-5), ref)  # within atol 1e-4 (+ rtol 1e-3 * |ref|)
    assert ok["ok"] and ok["max_abs"] == pytest.approx(5e-5, rel=1e-2)
    assert not compare_outputs(ref + np.float32(5e-4), ref)["ok"]  # 5e-4 > atol at the 0
    bad = compare_outputs(np.array([1.0, 2.5, 0.0, np.nan], np.float32), ref)
    assert not bad["ok"] and bad["max_abs"] == pytest.approx(0.5) and bad["max_rel"] == pytest.approx(0.25)
    assert not compare_outputs(np.array([1.0, 2.0, 0.0, 1.0], np.float32), ref)["ok"]  # NaN moved
    assert not compare_outputs(ref[:3], ref)["ok"]  # shape


# --- FLOPs and bytes ---------------------------------------------------------------------------------

def _count(node: onnx.NodeProto, inputs: dict[str, list[int]], inits: dict[str, np.ndarray], out: str = "y") -> Any:
    m = _model([node], {k: (F, v) for k, v in inputs.items()}, {out: (F, None)}, inits)
    return count_model(m)


def test_conv_flops_and_bytes() -> None:
    w = np.zeros((6, 2, 3, 3), np.float32)  # M=6, C/g = 4/2
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=2, pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    c = _count(node, {"x": [2, 4, 8, 8]}, {"w": w, "b": np.zeros(6, np.float32)})
    # 2*N*M*(C/g)*prod(k)*prod(out) = 2*2*6*2*9*64, + bias N*M*prod(out) = 2*6*64
    assert c.flops == 2 * 2 * 6 * 2 * 9 * 64 + 2 * 6 * 64
    assert c.bytes == 4 * (2 * 4 * 64 + 6 * 2 * 9 + 6 + 2 * 6 * 64)
    assert c.complete
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2])
    c = _count(node, {"x": [1, 3, 10, 10]}, {"w": np.zeros((4, 3, 3, 3), np.float32)})
    assert c.flops == 2 * 1 * 4 * 3 * 9 * (4 * 4)  # out spatial 4x4
    assert node_flops("Conv", {}, [(1, 3, 10, 10), (4, 3, 3, 3)], [None]) is None  # unknown output


def test_matmul_gemm_flops() -> None:
    c = _count(helper.make_node("MatMul", ["a", "b"], ["y"]), {"a": [3, 4, 5]}, {"b": np.zeros((5, 6), np.float32)})
    assert c.flops == 2 * (3 * 4) * 6 * 5  # batch 3 of (4x5)@(5x6)
    assert c.bytes == 4 * (3 * 4 * 5 + 5 * 6 + 3 * 4 * 6)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1)
    c = _count(node, {"a": [5, 4]}, {"b": np.zeros((5, 6), np.float32), "c": np.zeros(6, np.float32)})
    assert c.flops == 2 * 4 * 6 * 5 + 4 * 6  # M=4, N=6, K=5, + bias
    node = helper.make_node("Gemm", ["a", "b"], ["y"], transB=1)
    c = _count(node, {"a": [2, 7]}, {"b": np.zeros((3, 7), np.float32)})
    assert c.flops == 2 * 2 * 3 * 7


def test_elementwise_and_other_flops() -> None:
    nodes = [helper.make_node("Add", ["x", "b"], ["t"]), helper.make_node("Relu", ["t"], ["u"]),
             helper.make_node("Sum", ["u", "u", "x"], ["v"]), helper.make_node("Reshape", ["v", "s"], ["y"])]
    m = _model(nodes, {"x": (F, [2, 3])}, {"y": (F, None)},
               {"b": np.zeros(3, np.float32), "s": np.array([3, 2], np.int64)})
    c = count_model(m)
    by = c.by_op_type()
    assert by["Add"] == {"nodes": 1, "flops": 6, "bytes": 4 * (6 + 3 + 6)}  # one flop per output element
    assert by["Relu"]["flops"] == 6 and by["Sum"]["flops"] == 12  # variadic: inputs - 1 per element
    assert by["Reshape"] == {"nodes": 1, "flops": 0, "bytes": 4 * 6 + 8 * 2 + 4 * 6}
    assert c.flops == 24
    pool = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    assert _count(pool, {"x": [1, 2, 4, 4]}, {}).flops == 2 * 2 * 2 * 4
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    one = np.ones(2, np.float32)
    assert _count(bn, {"x": [1, 2, 3, 3]}, {"s": one, "b": one, "m": one, "v": one}).flops == 2 * 18


def test_constant_subgraphs_are_not_counted() -> None:
    """The light CNNs make their weights with ConstantOfShape: folded by every runtime, not counted."""
    nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["w"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    m = _model(nodes, {"x": (F, ["N", 4])}, {"y": (F, None)}, {"wshape": np.array([4, 3], np.int64)})
    c = count_model(m, {"x": (5, 4)})
    assert [n.op_type for n in c.nodes] == ["MatMul"]
    assert c.flops == 2 * 5 * 3 * 4 and c.bytes == 4 * (5 * 4 + 4 * 3 + 5 * 3)


def test_run_time_shape_computations_are_folded_for_counting() -> None:
    """Exporters compute Reshape targets at run time (Shape -> Gather -> Unsqueeze -> Concat); with
    concrete inputs the counts still know every shape."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "rest"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["y"])]
    m = _model(nodes, {"x": (F, ["N", 2, 3])}, {"y": (F, None)},
               {"ax": np.array([0], np.int64), "rest": np.array([6], np.int64), "w": np.zeros((6, 5), np.float32)})
    c = count_model(m, {"x": (4, 2, 3)})
    assert c.complete, c.unknown
    assert c.flops == 2 * 4 * 5 * 6
    assert [n.op_type for n in c.nodes] == ["Reshape", "MatMul"]  # the shape arithmetic is not counted


# --- inputs --------------------------------------------------------------------------------------------

def test_inputs_for_symbolic_dims(tmp_path: Path) -> None:
    nodes = [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Identity", ["attention_mask"], ["b"]),
             helper.make_node("Identity", ["z"], ["c"])]
    m = _model(nodes, {"x": (F, ["batch", "sequence", 8]), "attention_mask": (TensorProto.INT64, ["batch", "sequence"]),
                       "z": (F, [None, "sequence"])}, {"a": (F, None), "b": (TensorProto.INT64, None), "c": (F, None)})
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    w = prepare(str(path), batch=3, seq=5, seed=1)
    assert w.input_shapes == {"x": [3, 5, 8], "attention_mask": [3, 5], "z": [3, 5]}  # unnamed first dim: batch
    assert w.feeds["x"].dtype == np.float32 and (w.feeds["attention_mask"] == 1).all()
    w2 = prepare(str(path), batch=2, dims={"sequence": 7}, seq=5, seed=1)
    assert w2.input_shapes["x"] == [2, 7, 8]
    assert prepare(str(path), batch=2, seed=0).input_shapes["x"] == [2, 128, 8]  # default seq
    again = prepare(str(path), batch=3, seq=5, seed=1)
    assert np.array_equal(again.feeds["x"], w.feeds["x"])  # seeded
    assert not np.array_equal(prepare(str(path), batch=3, seq=5, seed=2).feeds["x"], w.feeds["x"])


def test_fixed_batch_model_is_rewritten() -> None:
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["y"]),
             helper.make_node("Reshape", ["w", "s"], ["wr"]), helper.make_node("Add", ["y", "wr"], ["out"])]
    m = _model(nodes, {"x": (F, [1, 4])}, {"out": (F, [1, 2, 2])},
               {"s": np.array([1, 2, 2], np.int64), "w": np.ones(4, np.float32)})
    m3, notes = with_batch(m, 3)
    assert [d.dim_value for d in m3.graph.input[0].type.tensor_type.shape.dim] == [3, 4]
    assert m3.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 3
    inits = {t.name: numpy_helper.to_array(t) for t in m3.graph.initializer}
    assert inits[m3.graph.node[0].input[1]].tolist() == [3, 2, 2]  # fed by the activations
    assert inits[m3.graph.node[2].input[1]].tolist() == [1, 2, 2]  # a weight's reshape keeps its shape
    assert notes and with_batch(m, 1) == (m, [])
    ort = pytest.importorskip("onnxruntime")
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    y = ort.InferenceSession(m3.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, np.maximum(x.reshape(3, 2, 2), 0) + 1)


def test_model_specs() -> None:
    assert parse_spec("bert:hidden=32,heads=2") == ("bert", {"hidden": 32, "heads": 2})
    assert parse_spec("chain:shape=Nx3x4x4,n_ops=5") == ("chain", {"shape": ("N", 3, 4, 4), "n_ops": 5})
    assert parse_spec("mlp") == ("mlp", {})
    w = prepare("mlp:sizes=8x4", batch=2)
    assert w.input_shapes == {"x": [2, 8]} and w.source.startswith("jitort.zoo.mlp(")
    assert prepare("conv_block:channels=4,size=6", batch=1).input_shapes == {"x": [1, 4, 6, 6]}
    with pytest.raises(FileNotFoundError):
        prepare("no_such_model", batch=1)
    with pytest.raises(ValueError):
        BenchConfig(models=["mlp"], runtimes=["tensorrt"])


def test_onnxruntime_spinning_settings() -> None:
    """Multi-thread cells are measured against onnxruntime spinning (its default) and not spinning."""
    assert ort_spin_modes(1) == [True] and ort_spin_modes(2) == [True, False] and ort_spin_modes(2, "off") == [False]
    assert spin_label(2, False) == "2T nospin" and spin_label(1, True) == "1T"
    so = ort_session_options(2, spinning=False)
    assert so.intra_op_num_threads == 2 and so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert BenchConfig(models=["mlp"], runtimes=["jitort", "ort-nospin"]).runtimes == ["jitort", NOSPIN]


def test_progress_is_quiet_without_a_terminal() -> None:
    s = io.StringIO()
    p = Progress(10, stream=s)
    p.step("a")
    p.note("hello")
    p.close()
    assert s.getvalue() == ""
    s = io.StringIO()
    p = Progress(4, stream=s, enabled=True)
    p.step("model x", 2)
    assert "50%" in s.getvalue() and "model x" in s.getvalue()


# --- end to end: records and files ------------------------------------------------------------------

RECORD_TYPES: dict[str, Any] = {
    "model": str, "source": str, "runtime": str, "threads": int, "batch": int, "status": str,
    "error": (str, type(None)), "input_shapes": dict, "notes": list, "latency_ms": dict, "quantiles_ms": list,
    "round_p50_ms": list, "round_cv": (float, type(None)), "iters_per_round": int, "rounds": int,
    "throughput_items_s": float, "session_cold_s": float, "first_run_cold_s": float, "session_warm_s": float,
    "first_run_warm_s": float, "session_new_process_s": float, "first_run_s": float, "import_s": float,
    "compiled_cold": (int, type(None)), "compiled_new_process": (int, type(None)), "peak_rss_mb": float,
    "baseline_rss_mb": float, "cold_peak_rss_mb": float,
    "flops": int, "bytes": int, "counts_complete": bool, "gflops_s": float, "gbytes_s": float,
    "frac_sgemm_peak": float, "frac_copy_bw": float, "agreement": (dict, type(None)), "ratio_p50": float,
    "ratio_rounds": list, "ratio_p50_nospin": type(None),  # a float when onnxruntime-nospin ran too
}


def test_end_to_end(tmp_path: Path) -> None:
    """One run through the CLI checks the records, a failure, and the files (one test, so that
    pytest-xdist runs it once)."""
    pytest.importorskip("onnxruntime")
    e2e = _e2e_run(tmp_path)
    check_records_schema(e2e)
    check_failure_is_recorded_and_the_run_goes_on(e2e)
    check_files_and_table(e2e)


def _e2e_run(d: Path) -> tuple[int, Path, dict[str, Any], str]:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["u"]),
             helper.make_node("Relu", ["u"], ["y"])]
    rng = np.random.default_rng(0)
    tiny = _model(nodes, {"x": (F, ["N", 8])}, {"y": (F, ["N", 4])},
                  {"w": rng.standard_normal((8, 4)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)})
    onnx.save(tiny, str(d / "tiny.onnx"))
    # an onnxruntime contrib op onnxruntime runs and jitort does not implement (yet)
    contrib = _model([helper.make_node("CDist", ["x", "c"], ["y"], domain="com.microsoft", metric="euclidean")],
                     {"x": (F, ["N", 4])}, {"y": (F, ["N", 3])}, {"c": rng.standard_normal((3, 4)).astype(np.float32)},
                     extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    onnx.save(contrib, str(d / "contrib.onnx"))
    out = d / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([
            "bench", str(d / "tiny.onnx"), str(d / "contrib.onnx"), "--runtimes", "jitort,onnxruntime",
            "--threads", "1", "--batch", "1,3", "--rounds", "2", "--round-time", "0.01", "--warmup", "0",
            "--min-iters", "2", "--quick-peaks", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    return rc, out, res, buf.getvalue()


def check_records_schema(e2e: tuple[int, Path, dict[str, Any], str]) -> None:
    rc, out, res, text = e2e
    assert set(res) >= {"schema", "config", "machine", "versions", "records", "summary", "created", "seconds"}
    for k in ("python", "numpy", "numba", "onnx", "onnxruntime", "jitort"):
        assert isinstance(res["versions"][k], str), k
    cpu = res["machine"]["cpu"]
    assert isinstance(cpu["logical_cpus"], int) and "model_name" in cpu
    peak = res["machine"]["peaks"]["1"]
    assert peak["sgemm_gflops"] > 0 and peak["copy_gbytes_s"] > 0
    tiny = [r for r in res["records"] if r["model"].endswith("tiny.onnx")]
    assert sorted((r["runtime"], r["batch"]) for r in tiny) == [("jitort", 1), ("jitort", 3),
                                                                ("onnxruntime", 1), ("onnxruntime", 3)]
    for r in tiny:
        assert set(r) == set(RECORD_TYPES), set(r) ^ set(RECORD_TYPES)
        for k, t in RECORD_TYPES.items():
            assert isinstance(r[k], t), (k, r[k])
        assert r["status"] == "ok" and r["error"] is None
        lat = r["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["n"] == r["rounds"] * r["iters_per_round"] and r["rounds"] == 2
        assert len(r["quantiles_ms"]) == 101 and len(r["round_p50_ms"]) == 2
        assert r["input_shapes"] == {"x": [r["batch"], 8]}
        assert r["flops"] == r["batch"] * (2 * 4 * 8 + 4 + 4)  # MatMul + Add + Relu
        assert r["throughput_items_s"] == pytest.approx(r["batch"] * 1e3 / lat["mean"])
    j = next(r for r in tiny if r["runtime"] == "jitort" and r["batch"] == 3)
    o = next(r for r in tiny if r["runtime"] == "onnxruntime" and r["batch"] == 3)
    assert j["agreement"]["ok"] and j["agreement"]["reference"] == "onnxruntime"
    assert j["agreement"]["max_abs"] < 1e-4 and j["agreement"]["outputs"][0]["shape"] == [3, 4]
    assert o["agreement"] is None and o["ratio_p50"] == 1.0
    assert j["ratio_p50"] == pytest.approx(j["latency_ms"]["p50"] / o["latency_ms"]["p50"])
    assert j["compiled_cold"] >= 1  # a fresh cache: the cold session compiled
    assert o["compiled_cold"] is None and o["compiled_new_process"] is None  # onnxruntime: not counted
    geo = [g for g in res["summary"]["geomean"] if g["batch"] == 1][0]
    assert geo["runtime"] == "jitort" and geo["geomean_ratio_p50"] == pytest.approx(
        next(r for r in tiny if r["runtime"] == "jitort" and r["batch"] == 1)["ratio_p50"])


def check_failure_is_recorded_and_the_run_goes_on(e2e: tuple[int, Path, dict[str, Any], str]) -> None:
    rc, out, res, text = e2e
    assert rc == 3  # a runtime failed on a model; the results say which
    contrib = [r for r in res["records"] if r["model"].endswith("contrib.onnx")]
    j = [r for r in contrib if r["runtime"] == "jitort"]
    o = [r for r in contrib if r["runtime"] == "onnxruntime"]
    assert len(j) == 2 and all(r["status"] == "failed" and "NotImplemented" in r["error"] for r in j)
    assert all(r["status"] == "ok" and r["latency_ms"]["p50"] > 0 for r in o)
    assert all(r["ratio_p50"] is None for r in j)
    geo = res["summary"]["geomean"][0]
    assert geo["excluded"] == [str(contrib[0]["model"])]
    assert len(res["summary"]["failures"]) == 2


def check_files_and_table(e2e: tuple[int, Path, dict[str, Any], str]) -> None:
    rc, out, res, text = e2e
    md = (out / "results.md").read_text()
    assert "| model | runtime |" in md and "## Failures" in md and "geomean p50 jitort/onnxruntime" in md
    assert "p50 ms" in text and "FAILED: session creation (cold): NotImplemented" in text
    assert f"wrote {out / 'results.json'}" in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not list(out.glob("*.png"))
    else:
        assert (out / "ratio.png").is_file() and (out / "latency.png").is_file()


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--threads", "0"], ["--batch", "x"], ["--runtimes", "tensorrt"], ["--dim", "N"]):
        assert main(["bench", "mlp", *argv]) == 2, argv
        assert "jitort bench: error:" in capsys.readouterr().err
