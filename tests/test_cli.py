"""The ``jitort`` command line (in-process through ``jitort.cli.main``) and ``jitort.models``."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from jitort import cli
from jitort.cli import cache as cli_cache
from jitort.cli import common
from jitort.cli import main
from jitort.models import (LIGHT_MODELS, expected_output, light_models, random_feeds, reference_inputs,
                           resolve_model)


def tiny_model(path: Path, graph_name: str = "tiny") -> Path:
    """y = relu(x + (b + c))^2 (``b + c`` folds), z = sigmoid(x); x: float32[N, 4]."""
    nodes = [helper.make_node("Add", ["b", "c"], ["bc"], name="fold_me"),
             helper.make_node("Add", ["x", "bc"], ["t"], name="add"),
             helper.make_node("Relu", ["t"], ["u"], name="relu"),
             helper.make_node("Mul", ["u", "u"], ["y"], name="square"),
             helper.make_node("Sigmoid", ["x"], ["out/z"], name="sig")]
    inits = [onnx.numpy_helper.from_array(np.array([0.5, -1, 2, 0], np.float32), "b"),
             onnx.numpy_helper.from_array(np.array([0.25, 0, -1, 1], np.float32), "c")]
    g = helper.make_graph(nodes, graph_name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("out/z", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    onnx.save(m, str(path))
    return path


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def cli_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def sections(out: str) -> dict[str, str]:
    """``explain``'s output by its ``== header ==`` lines."""
    parts: dict[str, str] = {}
    key = ""
    for line in out.splitlines():
        if line.startswith("== ") and line.endswith(" =="):
            key = line[3:-3]
            parts[key] = ""
        else:
            parts[key] = parts.get(key, "") + line + "\n"
    return parts


# --- run -------------------------------------------------------------------------------------------

def test_run_random_compare_ort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    model = tiny_model(tmp_path / "m.onnx")
    rc, out, err = cli_run(capsys, "run", model, "--random", "--dim", "N=3", "--compare-ort", "--repeat", "2")
    assert rc == 0, out + err
    assert "x: float32 (3, 4)" in out
    assert "y: float32 (3, 4)" in out and "out/z: float32 (3, 4)" in out
    assert "all outputs agree with onnxruntime" in out
    assert out.count("OK") == 2
    assert "compile:" in out and "time onnxruntime:" in out and "time jitort:" in out


def test_run_inputs_from_file_and_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    x = np.linspace(-3, 3, 20, dtype=np.float32).reshape(5, 4)
    np.save(tmp_path / "x.npy", x)
    rc, out, err = cli_run(capsys, "run", model, "--input", f"x={tmp_path / 'x.npy'}",
                           "--output-dir", tmp_path / "out", "--repeat", "1")
    assert rc == 0, out + err
    ref = ort_run(model, {"x": x})
    y, z = np.load(tmp_path / "out" / "y.npy"), np.load(tmp_path / "out" / "out_z.npy")
    assert y.dtype == np.float32 and y.shape == (5, 4)
    np.testing.assert_allclose(y, ref[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(z, ref[1], rtol=1e-6, atol=1e-6)


def test_run_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    assert cli_run(capsys, "run", model)[0] == 2                      # no inputs given
    np.save(tmp_path / "x64.npy", np.zeros((1, 4)))
    rc, _, err = cli_run(capsys, "run", model, "--input", f"x={tmp_path / 'x64.npy'}")
    assert rc == 2 and "float64" in err
    rc, _, err = cli_run(capsys, "run", model, "--input", f"nope={tmp_path / 'x64.npy'}")
    assert rc == 2 and "no input 'nope'" in err
    rc, _, err = cli_run(capsys, "run", tmp_path / "missing.onnx", "--random")
    assert rc == 2 and "missing.onnx" in err
    rc, _, err = cli_run(capsys, "run", "light_nosuchnet", "--random")
    assert rc == 2 and "light_squeezenet" in err
    assert cli_run(capsys, "frobnicate")[0] == 2
    assert cli_run(capsys, "--help")[0] == 0


def test_run_compare_ort_without_onnxruntime(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    rc, out, err = cli_run(capsys, "run", model, "--random", "--compare-ort", "--repeat", "0")
    assert rc == 2 and "onnxruntime" in err


def test_run_mismatch_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    model = tiny_model(tmp_path / "m.onnx")
    monkeypatch.setattr(cli.run, "compare", lambda a, b: (False, "forced"))
    rc, out, _ = cli_run(capsys, "run", model, "--random", "--compare-ort", "--repeat", "0")
    assert rc == 1 and "MISMATCH" in out and "2 output(s) disagree" in out


def test_compare() -> None:
    a = np.array([1.0, 2.0, np.nan, np.inf], np.float32)
    assert common.compare(a, a.copy())[0]
    assert common.compare(a, a + np.float32(1e-5))[0]
    ok, line = common.compare(a, a * np.float32(1.01))
    assert not ok and "max rel err 0.0099" in line
    b = a.copy()
    b[2] = 0
    ok, line = common.compare(a, b)
    assert not ok and "NaN" in line
    assert not common.compare(a, a[:2])[0]
    assert common.compare(np.array([True, False]), np.array([True, False]))[0]
    assert not common.compare(np.array([3], np.int64), np.array([4], np.int64))[0]


# --- explain ---------------------------------------------------------------------------------------

def test_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model(tmp_path / "m.onnx", "explained")
    rc, out, err = cli_run(capsys, "explain", model, "--dim", "N=2")
    assert rc == 0, out + err
    sec = sections(out)
    ir = sec["IR after passes"]
    assert "graph explained(x: float32[2,4])" in ir and "FusedElementwise" in ir
    assert "add+relu+square" in ir
    groups = sec["fused groups (2)"]
    assert "add: Add(x, " in groups and "relu: Relu(t) -> u" in groups and "square: Mul(u, u) -> y" in groups
    assert "folded: fold_me" in sec["pass notes (1)"]
    kernels = sec["kernels (2)"].strip().splitlines()
    paths = [Path(ln.strip()) for ln in kernels if ln.startswith("    ")]
    assert len(paths) == 2
    for p in paths:
        assert p.is_file() and p.suffix == ".py" and p.stem.startswith("k_") and p.parent.name == p.stem[-20:-18]
    assert any(s in kernels[0] for s in ("compiled now", "loaded from the cache"))
    plan = Path(sec["plan"].split()[1])
    assert plan.is_file() and "explained" in plan.read_text()


def test_explain_a_cached_model_and_an_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A session loaded from the cache or from a jitort compile artifact keeps no IR: explain rebuilds
    it (it used to crash with AttributeError on any model already in the cache)."""
    model = tiny_model(tmp_path / "m.onnx", "explained")
    first = cli_run(capsys, "explain", model, "--dim", "N=2")
    again = cli_run(capsys, "explain", model, "--dim", "N=2")  # from the cache now
    assert first[0] == again[0] == 0, again[1] + again[2]
    assert "loaded from the cache" in sections(again[1])["kernels (2)"]
    for title in ("IR after passes", "fused groups (2)", "pass notes (1)"):
        assert sections(again[1])[title] == sections(first[1])[title], title
    art = tmp_path / "art"
    assert cli_run(capsys, "compile", model, "-o", art)[0] == 0
    rc, out, err = cli_run(capsys, "explain", art)
    assert rc == 0, out + err
    assert "graph explained(x: float32[N,4])" in sections(out)["IR after passes"]


def test_cached_source_path(tmp_path: Path) -> None:
    assert cli_cache.cached_source_path("k_0123456789abcdef0123", "kernels", tmp_path) == \
        tmp_path / "kernels" / "01" / "k_0123456789abcdef0123.py"


# --- cache -----------------------------------------------------------------------------------------

def _fake_entry(root: Path, kind: str, name: str, age_days: float = 0) -> list[Path]:
    shard = root / kind / name[-20:-18]
    files = [shard / f"{name}.py", shard / f"{name}.lock", shard / "__pycache__" / f"{name}.{name}-10.py311.nbi",
             shard / "__pycache__" / f"{name}.{name}-10.py311.1.nbc"]
    t = time.time() - age_days * 86400
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x" * 100)
        os.utime(f, (t, t))
    return files


def test_cache_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    monkeypatch.setenv("JITORT_CACHE_DIR", str(root))
    rc, out, _ = cli_run(capsys, "cache", "path")
    assert rc == 0 and out.strip() == str(root)
    rc, out, _ = cli_run(capsys, "cache", "list")
    assert rc == 0 and "empty" in out

    # A real session writes its plan (named by the model, so new) into the new root.
    model = tiny_model(tmp_path / "m.onnx", f"cache_test_{os.getpid()}_{time.time_ns()}")
    assert cli_run(capsys, "run", model, "--random", "--repeat", "0")[0] == 0
    old = _fake_entry(root, "kernels", "k_aa00000000000000000b", age_days=30)
    new = _fake_entry(root, "kernels", "k_bb00000000000000000c", age_days=1)
    (root / "unrelated.txt").write_text("not jitort's")

    rc, out, _ = cli_run(capsys, "cache", "list")
    assert rc == 0
    rows = [ln.split() for ln in out.splitlines()]
    assert ["kernels", "k_aa00000000000000000b", "400", "B"] == rows[[r[1] if len(r) > 1 else "" for r in rows]
                                                                        .index("k_aa00000000000000000b")][:4]
    assert any(r[0] == "plans" and r[1].startswith("plan_") for r in rows if len(r) > 1)

    rc, out, _ = cli_run(capsys, "cache", "prune", "--older-than", "7")
    assert rc == 0 and "removed kernels/k_aa00000000000000000b" in out and "k_bb" not in out
    assert not any(f.exists() for f in old) and all(f.exists() for f in new)
    assert cli_run(capsys, "cache", "prune")[0] == 2  # --older-than is required

    rc, out, _ = cli_run(capsys, "cache", "clear")
    assert rc == 0 and "removed kernels/k_bb00000000000000000c" in out and "removed plans/plan_" in out
    assert not (root / "kernels").exists() and not (root / "plans").exists()
    assert (root / "unrelated.txt").read_text() == "not jitort's"
    rc, out, _ = cli_run(capsys, "cache", "list")
    assert "empty" in out


# --- models ----------------------------------------------------------------------------------------

def test_light_models_resolve() -> None:
    assert len(LIGHT_MODELS) == 9
    assert light_models() == [f"light_{n}" for n in LIGHT_MODELS]
    p = resolve_model("light_squeezenet")
    assert p.is_file() and p.name == "light_squeezenet.onnx"
    assert resolve_model(str(p)) == p
    with pytest.raises(FileNotFoundError):
        resolve_model("light_nosuchnet")
    with pytest.raises(FileNotFoundError):
        resolve_model("no/such/model.onnx")
    assert expected_output("squeezenet").shape == (1, 1000, 1, 1)
    assert expected_output("light_resnet50").dtype == np.float32


def test_reference_inputs_reproduce_expected_output() -> None:
    feeds = reference_inputs("light_squeezenet")
    assert list(feeds) == ["data_0"] and feeds["data_0"].shape == (1, 3, 224, 224)
    got = ort_run(resolve_model("light_squeezenet"), feeds)[0]
    np.testing.assert_allclose(got, expected_output("squeezenet"), rtol=1e-3, atol=1e-6)


def test_random_feeds(tmp_path: Path) -> None:
    import jitort
    nodes = [helper.make_node("Identity", [n], [n + "_out"]) for n in ("f", "i", "b", "h")]
    ins = [helper.make_tensor_value_info("f", TensorProto.FLOAT, ["batch", 3]),
           helper.make_tensor_value_info("i", TensorProto.INT64, [2, None]),
           helper.make_tensor_value_info("b", TensorProto.BOOL, []),
           helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["batch", "seq"])]
    outs = [helper.make_tensor_value_info(n + "_out", t.type.tensor_type.elem_type, None) for n, t in
            zip("fibh", ins)]
    m = helper.make_model(helper.make_graph(nodes, "g", ins, outs), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    a = random_feeds(m, seed=1, dims={"batch": 5})
    assert {k: (v.dtype.name, v.shape) for k, v in a.items()} == {
        "f": ("float32", (5, 3)), "i": ("int64", (2, 1)), "b": ("bool", ()), "h": ("float16", (5, 1))}
    assert a["i"].min() >= 0 and a["i"].max() < 10
    b = random_feeds(m, seed=1, dims={"batch": 5})
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(random_feeds(m, seed=2, dims={"batch": 5})["f"], a["f"])
    onnx.save(m, str(tmp_path / "m.onnx"))
    assert random_feeds(str(tmp_path / "m.onnx"))["f"].shape == (1, 3)
    sess = jitort.InferenceSession(str(tmp_path / "m.onnx"))
    c = random_feeds(sess, seed=1, dims={"batch": 5})
    assert all(np.array_equal(a[k], c[k]) for k in a)


# --- the README's main job --------------------------------------------------------------------------

@pytest.mark.slow
def test_main_job_light_resnet50(capsys: pytest.CaptureFixture[str]) -> None:
    """README's first command: a shipped CNN, checked against the shipped output and onnxruntime."""
    pytest.importorskip("onnxruntime")
    rc, out, err = cli_run(capsys, "run", "light_resnet50", "--compare-ort", "--repeat", "1")
    assert rc == 0, out + err
    assert "vs expected output shipped with onnx" in out and "all outputs agree with onnxruntime" in out
