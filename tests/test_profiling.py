"""Per-step profiling (SessionOptions.enable_profiling, ``jitort.profiling``) and ``jitort profile``.

Oracles: onnxruntime's own profile (the file name's layout, the events' keys and arg types, what
end_profiling and get_profiling_start_time_ns return), FLOPs worked out by hand for known nodes and,
for whole models, ``jitort.bench.flops.count_model`` on the ONNX graph as written.
"""
from __future__ import annotations

import datetime
import json
import re
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper

import jitort as ort
from jitort import errors, profiling, zoo
from jitort.bench.flops import count_model
from jitort.bench.workload import prepare
from jitort.cli import main
from jitort.codegen.plan import PROFILE_STEPS
from jitort.cli.profile import by_op_type, format_comparison, measured_runs
from oracle import ORT_MAX_IR

ORT_ARGS = ("op_name", "provider", "node_index", "activation_size", "parameter_size", "output_size",
            "input_type_shape", "output_type_shape")
TIMING = ("_pc(", "_rec", "perf_counter", "jitort.profiling")


def _options(prefix: Path | str, peaks: str = "quick") -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(prefix)
    so.intra_op_num_threads = 1
    so.add_session_config_entry(profiling.PEAKS_CONFIG_KEY, peaks)
    return so


def _ort_profiled(model: onnx.ModelProto, prefix: Path | str) -> onnxruntime.InferenceSession:
    so = onnxruntime.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(prefix)
    so.intra_op_num_threads = 1
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.ir_version = min(m.ir_version, ORT_MAX_IR)
    return onnxruntime.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _trace(path: str) -> list[dict]:
    return json.loads(Path(path).read_text())


def _nodes_by_op(model: onnx.ModelProto, op: str) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == op]


# --- a small CNN ---------------------------------------------------------------------------------

def test_cnn_one_event_per_step_with_nodes_shapes_and_flops(tmp_path: Path) -> None:
    model = zoo.conv_block(channels=8, size=8)
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), _options(tmp_path / "cnn"))
    for _ in range(2):
        sess.run(None, {"x": x})
    events = _trace(sess.end_profiling())
    steps = sess.artifact.consts[PROFILE_STEPS]
    runs = measured_runs(events)
    assert len(runs) == 2
    for run in runs:  # one event per plan step, in plan order
        assert [int(e["args"]["node_index"]) for e in run] == list(range(len(steps)))
    convs, bns, relus = (_nodes_by_op(model, op) for op in ("Conv", "BatchNormalization", "Relu"))
    first = runs[1][0]
    a = first["args"]
    assert first["name"] == convs[0] + "_kernel_time" and a["op_name"] == "FusedConv"  # jitort's, as onnxruntime's
    assert a["nodes"] == [convs[0], bns[0], relus[0]]  # BatchNormalization and Relu folded into the Conv
    assert a["node_ops"] == ["FusedConv", "BatchNormalization", "Relu"]  # the Conv node, as jitort runs it
    assert a["input_type_shape"] == [{"float": [1, 8, 8, 8]}, {"float": [8, 8, 3, 3]}, {"float": [8]}]
    assert a["output_type_shape"] == [{"float": [1, 8, 8, 8]}]
    assert a["kernel"] == "kernels.conv.conv_packed"
    # By hand: the Conv as written has no bias: 2 * (8*8*8 outputs) * (8*3*3) = 73728; BatchNorm 2 per
    # output element, Relu 1: 1024 + 512.
    assert a["flops"] == 73728 + 1024 + 512
    assert a["bytes"] == 4 * (512 + 576 + 8) + 4 * 512
    assert a["parameter_size"] == str(4 * (576 + 8)) and a["activation_size"] == str(4 * 512)
    assert a["gflops_s"] == pytest.approx(a["flops"] / first["dur"] / 1e3, rel=1e-2, abs=1e-3)
    assert a["flops_fraction"] == pytest.approx(a["gflops_s"] / a["peak_gflops_s"], rel=2e-2, abs=1e-3)
    assert a["bytes_fraction"] == pytest.approx(a["gbytes_s"] / a["peak_gbytes_s"], rel=2e-2, abs=1e-3)
    fused = runs[1][-1]["args"]  # the second Conv with its BatchNormalization, the residual Add and the Relu
    assert fused["op_name"] == "FusedConv" and fused["nodes"] == [convs[1], bns[1], _nodes_by_op(model, "Add")[0],
                                                                  relus[1]]
    assert fused["kernel"] == "kernels.conv.conv_packed"
    assert fused["flops"] == 73728 + 1024 + 512 + 512
    # Every ONNX node is covered once per run, and the FLOPs add up to the count of the model as written.
    assert sorted(n for e in runs[1] for n in e["args"]["nodes"]) == sorted(n.name for n in model.graph.node)
    assert sum(e["args"]["flops"] for e in runs[1]) == count_model(model, {"x": [1, 8, 8, 8]}).flops


def test_trace_layout_is_onnxruntimes(tmp_path: Path) -> None:
    model = zoo.conv_block(channels=8, size=8)
    x = np.ones((1, 8, 8, 8), np.float32)
    ours = ort.InferenceSession(model.SerializeToString(), _options(tmp_path / "ours"))
    theirs = _ort_profiled(model, tmp_path / "theirs")
    ours.run(None, {"x": x})
    theirs.run(None, {"x": x})
    ev_ours, ev_theirs = _trace(ours.end_profiling()), _trace(theirs.end_profiling())
    for evs in (ev_ours, ev_theirs):
        assert [e["name"] for e in evs if e["cat"] == "Session"][-1] == "model_run"
        assert "session_initialization" in [e["name"] for e in evs if e["cat"] == "Session"]
    node_ours = [e for e in ev_ours if e["cat"] == "Node"]
    node_theirs = [e for e in ev_theirs if e["cat"] == "Node"]
    assert node_ours and node_theirs
    for e, ref in zip(node_ours, node_theirs):
        assert set(ref) <= set(e)  # cat, pid, tid, dur, ts, ph, name, args
        assert {k: type(v) for k, v in e.items() if k not in ("ts", "dur")} == \
            {k: type(v) for k, v in ref.items() if k not in ("ts", "dur")}
        assert e["name"].endswith("_kernel_time") and ref["name"].endswith("_kernel_time")
        for k in ORT_ARGS:
            assert type(e["args"][k]) is type(ref["args"][k]), k
        assert e["args"]["provider"] == ref["args"]["provider"] == "CPUExecutionProvider"
        for shapes in (e["args"]["input_type_shape"], ref["args"]["input_type_shape"]):
            assert all(len(t) == 1 and isinstance(next(iter(t.values())), list) for t in shapes)
    assert node_ours[0]["args"]["input_type_shape"][0] == node_theirs[0]["args"]["input_type_shape"][0] == \
        {"float": [1, 8, 8, 8]}


# --- a transformer block ---------------------------------------------------------------------------

def test_transformer_block_events(tmp_path: Path) -> None:
    wl = prepare("bert", 1, seq=16)  # jitort.zoo.bert_layer: hidden 64, 4 heads, FFN 256
    sess = ort.InferenceSession(wl.proto.SerializeToString(), _options(tmp_path / "bert"))
    got = sess.run(None, wl.feeds)
    events = _trace(sess.end_profiling())
    (run,) = measured_runs(events)
    by_node = {n: e for e in run for n in e["args"]["nodes"]}
    counted = count_model(wl.proto, wl.input_shapes)
    # every node that computes on the run's values is in one step's event (shape arithmetic folded
    # into constants is not: neither runtime runs it)
    assert {n.name for n in counted.nodes} <= set(by_node)
    matmuls = [e for e in run if e["args"]["op_name"] == "MatMul"]
    # the attention fusion (passes/attention_fusion.py) runs Q K^T and P V inside its one step
    fused = [e for e in run if e["args"]["op_name"] == "FusedAttention"]
    assert len(matmuls) + 2 * len(fused) == len(_nodes_by_op(wl.proto, "MatMul")) == 8
    for e in matmuls:  # by hand: 2 * M * N * K from the event's own shapes, + M * N per Add folded into it
        (x,), (w,) = e["args"]["input_type_shape"][0].values(), e["args"]["input_type_shape"][1].values()
        (y,) = e["args"]["output_type_shape"][0].values()
        assert y[-1] == w[-1] and x[-1] == w[-2]
        # the bias and residual Adds and the FFN's written-out GELU (passes/gemm_epilogue.py), one flop
        # per output element each
        assert set(e["args"]["node_ops"][1:]) <= {"Add", "Div", "Erf", "Mul"}
        adds = len(e["args"]["node_ops"]) - 1
        assert e["args"]["flops"] == 2 * int(np.prod(y)) * x[-1] + adds * int(np.prod(y))
    q = by_node[_nodes_by_op(wl.proto, "MatMul")[0]]["args"]
    assert q["input_type_shape"][:2] == [{"float": [1, 16, 64]}, {"float": [64, 64]}]
    assert q["node_ops"] == ["MatMul", "Add"] and q["flops"] == 2 * 16 * 64 * 64 + 16 * 64
    soft = by_node[_nodes_by_op(wl.proto, "Softmax")[0]]["args"]
    if soft["op_name"] == "FusedAttention":  # 2 MatMuls [1,4,16,16] x 16, Div and Add of the mask, Softmax
        assert soft["flops"] == 2 * (2 * 4 * 16 * 16 * 16) + 2 * 4 * 16 * 16 + 4 * 4 * 16 * 16
    else:
        assert soft["output_type_shape"] == [{"float": [1, 4, 16, 16]}] and soft["flops"] == 4 * 4 * 16 * 16
    ln = by_node[_nodes_by_op(wl.proto, "LayerNormalization")[0]]["args"]
    residual = 16 * 64 if ln["op_name"] == "FusedNorm" else 0  # the norm fusion takes the residual Add
    assert ln["flops"] == 8 * 16 * 64 + residual
    assert sum(e["args"]["flops"] for e in run) == counted.flops
    ref = _ort_profiled(wl.proto, tmp_path / "ort").run(None, wl.feeds)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-3, atol=1e-4)


# --- the file, end_profiling, start time -------------------------------------------------------------

def _digits_blank(name: str) -> str:
    return re.sub(r"\d", "0", Path(name).name)


def test_file_name_and_end_profiling_as_onnxruntime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = zoo.conv_block(channels=8, size=8)
    x = np.ones((1, 8, 8, 8), np.float32)
    monkeypatch.chdir(tmp_path)
    for prefix in ("run_profile", "", str(tmp_path / "abs")):
        t0 = time.time_ns()
        ours = ort.InferenceSession(model.SerializeToString(), _options(prefix))
        t1 = time.time_ns()
        theirs = _ort_profiled(model, prefix)
        start = ours.get_profiling_start_time_ns()
        assert t0 <= start <= t1 and theirs.get_profiling_start_time_ns() > 0
        ours.run(None, {"x": x})
        path, ref = ours.end_profiling(), theirs.end_profiling()
        assert _digits_blank(path) == _digits_blank(ref)  # <prefix>_YYYY-MM-DD_HH-MM-SS_mmm.json
        assert path.startswith(prefix + "_") and Path(path).is_file()
        stamp = datetime.datetime.strptime(path[len(prefix) + 1:-len(".json")], "%Y-%m-%d_%H-%M-%S_%f")
        assert abs(stamp.timestamp() * 1e9 - start) < 1e6  # the session's creation, to the millisecond
        assert ours.end_profiling() == theirs.end_profiling() == ""  # profiling ends with end_profiling
        assert ours.get_profiling_start_time_ns() == start  # and keeps its start, as onnxruntime's
    plain = ort.InferenceSession(model.SerializeToString())
    ref_plain = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert plain.end_profiling() == ref_plain.end_profiling() == ""
    assert plain.get_profiling_start_time_ns() == ref_plain.get_profiling_start_time_ns() == 0


def test_runs_after_end_profiling_are_not_recorded(tmp_path: Path) -> None:
    model = zoo.conv_block(channels=8, size=8)
    x = np.ones((1, 8, 8, 8), np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), _options(tmp_path / "p"))
    first = sess.run(None, {"x": x})[0]
    path = sess.end_profiling()
    before = Path(path).read_text()
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], first)
    assert Path(path).read_text() == before and sess.end_profiling() == ""


def test_unwritable_profile_path_warns_and_returns_the_name(tmp_path: Path) -> None:
    model = zoo.conv_block(channels=8, size=8)
    prefix = tmp_path / "missing_dir" / "p"
    sess = ort.InferenceSession(model.SerializeToString(), _options(prefix))
    ref = _ort_profiled(model, prefix)
    with pytest.warns(RuntimeWarning, match="cannot write the profile"):
        path = sess.end_profiling()
    assert _digits_blank(path) == _digits_blank(ref.end_profiling()) and not Path(path).exists()


# --- plain plans, cache entries, peaks -------------------------------------------------------------

def test_plain_plan_has_no_timing_code(tmp_path: Path) -> None:
    model = zoo.conv_block(channels=8, size=8).SerializeToString()
    plain = ort.InferenceSession(model)
    profiled = ort.InferenceSession(model, _options(tmp_path / "p"))
    again = ort.InferenceSession(model)  # the plain plan, from the cache: not the profiled entry
    for s in (plain, again):
        assert not any(t in s.artifact.plan_source for t in TIMING)
        assert PROFILE_STEPS not in s.artifact.consts
    assert all(t in profiled.artifact.plan_source for t in TIMING)
    assert profiled.artifact.plan_name != plain.artifact.plan_name == again.artifact.plan_name
    x = np.random.default_rng(2).standard_normal((1, 8, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(plain.run(None, {"x": x})[0], profiled.run(None, {"x": x})[0])
    cached = ort.InferenceSession(model, _options(tmp_path / "q"))  # the profiled plan from the cache
    assert cached.artifact.loaded_from and cached.artifact.plan_name == profiled.artifact.plan_name
    cached.run(None, {"x": x})
    assert len(measured_runs(_trace(cached.end_profiling()))[0]) == len(cached.artifact.consts[PROFILE_STEPS])


def test_artifact_with_profiling_runs_the_profiled_plan(tmp_path: Path) -> None:
    path, art = tmp_path / "m.onnx", tmp_path / "art"
    onnx.save(zoo.conv_block(channels=8, size=8, batch=1), str(path))
    assert main(["compile", str(path), "-o", str(art)]) == 0
    plain = ort.InferenceSession(str(art))
    assert plain.artifact.loaded_from and not any(t in plain.artifact.plan_source for t in TIMING)
    profiled = ort.InferenceSession(str(art), _options(tmp_path / "p"))  # the artifact's plan is the plain one
    x = np.random.default_rng(3).standard_normal((1, 8, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(profiled.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])
    (run,) = measured_runs(_trace(profiled.end_profiling()))
    assert [e["args"]["op_name"] for e in run] == ["FusedConv", "FusedConv"]


def test_concurrent_profiled_runs_are_recorded_apart(tmp_path: Path) -> None:
    import threading
    sess = ort.InferenceSession(zoo.conv_block(channels=8, size=8).SerializeToString(), _options(tmp_path / "p"))
    x = np.ones((1, 8, 8, 8), np.float32)
    threads = [threading.Thread(target=lambda: [sess.run(None, {"x": x}) for _ in range(5)]) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = _trace(sess.end_profiling())
    runs = [e for e in events if e["name"] == "model_run"]
    assert len(runs) == 15 and len({e["tid"] for e in runs}) == 3
    steps = len(sess.artifact.consts[PROFILE_STEPS])
    for tid in {e["tid"] for e in runs}:
        mine = [e for e in events if e["cat"] == "Node" and e["tid"] == tid]
        assert [int(e["args"]["node_index"]) for e in mine] == list(range(steps)) * 5


def test_peaks_are_measured_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jitort.bench.machine as machine
    calls = []
    real = machine.measure_peaks

    def counting(threads: list[int], quick: bool = False) -> dict:
        calls.append((tuple(threads), quick))
        return real(threads, quick=True)

    monkeypatch.setattr(machine, "measure_peaks", counting)
    monkeypatch.setattr(profiling, "_peaks_memo", {})
    first = profiling.machine_peaks(1, "quick", tmp_path)
    assert calls == [((1,), True)] and first["sgemm_gflops"] > 0 and first["copy_gbytes_s"] > 0
    monkeypatch.setattr(profiling, "_peaks_memo", {})  # a new process: read back from the file
    assert profiling.machine_peaks(1, "quick", tmp_path) == first and len(calls) == 1
    stored = json.loads((tmp_path / profiling.PEAKS_FILE).read_text())
    assert list(stored.values()) == [first]
    assert profiling.machine_peaks(1, "off", tmp_path) is None
    with pytest.raises(errors.InvalidArgument, match="profile_peaks"):
        profiling.machine_peaks(1, "fast", tmp_path)


# --- errors and terminate in the profiled plan -----------------------------------------------------

def test_node_errors_name_the_node_in_the_profiled_plan(tmp_path: Path) -> None:
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="the_reshape")
    model = helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3]),
                      helper.make_tensor_value_info("s", onnx.TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ORT_MAX_IR
    feeds = {"x": np.ones(3, np.float32), "s": np.array([2], np.int64)}
    messages = []
    for so in (None, _options(tmp_path / "p")):
        sess = ort.InferenceSession(model.SerializeToString(), so)
        with pytest.raises(errors.ALL_ERRORS, match="running Reshape node. Name:'the_reshape'") as e:
            sess.run(None, feeds)
        messages.append((type(e.value), str(e.value)))
    assert messages[0] == messages[1]


def test_terminate_stops_the_profiled_plan_between_steps(tmp_path: Path) -> None:
    from test_terminate import LATENCY, _chain, _stops_within
    model, _ = _chain(400, 256)
    sess = ort.InferenceSession(model.SerializeToString(), _options(tmp_path / "p", peaks="off"))
    x = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)
    full = sess.run(None, {"x": x})[0]
    assert _stops_within(sess, {"x": x}) < LATENCY
    np.testing.assert_array_equal(sess.run(None, {"x": x}, ort.RunOptions())[0], full)
    events = _trace(sess.end_profiling())
    assert len([e for e in events if e["name"] == "model_run"]) == 2  # the terminated runs are not in it


@pytest.mark.parametrize("kind", ["triple_double", "newline", "nul", "quotes", "coding_utf7"])
def test_hostile_node_names_reach_the_trace_as_data(kind: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from test_hostile_names import _expected, _model, _payloads
    sentinel = tmp_path / "pwned"
    monkeypatch.setenv("JITORT_CACHE_DIR", str(tmp_path / "cache"))
    p = _payloads(sentinel)[kind]
    sess = ort.InferenceSession(_model(p).SerializeToString(), _options(tmp_path / "p", peaks="off"))
    x = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]], np.float32)
    inputs = [i.name for i in sess.get_inputs()]
    np.testing.assert_allclose(sess.run(None, {inputs[0]: x, inputs[1]: np.array(True)})[0], _expected(x, True),
                               rtol=1e-5, atol=1e-6)
    assert not sentinel.exists() and sess.artifact.plan_source.isascii()
    events = [e for e in _trace(sess.end_profiling()) if e["cat"] == "Node"]
    covered = [n for e in events for n in e["args"]["nodes"]]
    assert p + "|matmul" in covered and p + "|if" in covered  # the names exactly, not escaped
    assert not sentinel.exists()


# --- jitort profile --------------------------------------------------------------------------------

def test_op_type_table_canonical_names_and_gap_order() -> None:
    def run(*events: tuple[str, float]) -> list[dict]:
        return [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 1e6, "tid": 1}] + [
            {"cat": "Node", "name": f"n{k}_kernel_time", "ts": k + 1, "dur": d, "tid": 1, "args": {"op_name": op}}
            for k, (op, d) in enumerate(events)]
    rows = by_op_type({"jitort": measured_runs(run(("Conv", 500.0), ("Conv", 300.0), ("Add+Relu", 50.0))),
                       "onnxruntime": measured_runs(run(("FusedConv", 400.0), ("Conv", 100.0), ("Relu", 20.0)))})
    table = format_comparison(rows).splitlines()
    assert [line.split()[0] for line in table[1:-1]] == ["Conv", "Add+Relu", "Relu"]  # largest gap first
    assert table[1].split() == ["Conv", "0.800", "2", "0.500", "2", "1.60x", "+0.300"]
    assert table[-1].split()[-2:] == ["1.63x", "+0.330"]  # 0.85 ms vs 0.52 ms


def test_cli_profile_prints_the_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["profile", "conv_block:channels=8,size=8", "--runs", "2", "--warmup", "1", "--peaks", "quick",
                 "--top", "3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    header = next(k for k, line in enumerate(lines) if line.startswith("op type"))
    assert lines[header].split()[:3] == ["op", "type", "jitort"] and "onnxruntime" in lines[header]
    conv = next(line for line in lines[header:] if line.startswith("Conv "))
    assert conv.split()[2] == "2" and conv.split()[4] != "0"  # two Conv steps; onnxruntime has Conv kernels too
    assert any(line.startswith("total") for line in lines) and "outputs agree with onnxruntime" in out
    assert re.search(r"^CPU .+; 1 thread\(s\)", out, re.M) and "slowest steps" in out
    traces = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(traces) == 2 and traces[0].startswith("jitort_") and traces[1].startswith("onnxruntime_")


def test_cli_profile_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "no_such_model_xyz"]) == 2
    assert main(["profile", "mlp", "--runs", "0"]) == 2
    assert "error" in capsys.readouterr().err
