"""Compile cost stays bounded on big elementwise graphs (issue 20, item 3).

A long elementwise chain used to become one Numba function whose compile time grew superlinearly
(100 / 200 / 400 ops: 5 / 12 / 42 s); ``Sum`` of 300 inputs failed with ``SyntaxError: too many
nested parentheses``. onnxruntime is the oracle for every result.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from oracle import assert_close, make_model, rand, run_ort

import jitort
from jitort.ir import Node
from jitort.passes.fusion import FUSED, MAX_GROUP_OPS, scalar_ops

# Cheap ops only: kernels with inlined fast-math helpers (Tanh, Sigmoid) cost ~0.1-0.2 s per call
# site, which would make the 1,000-op case take minutes; the growth being tested is the same.
_CHAIN_OPS = ("Add", "Mul", "Sub", "Relu", "Abs", "Neg")


def chain_model(n_ops: int, seed: int) -> onnx.ModelProto:
    """A chain of ``n_ops`` elementwise ops in random order, so no two fused groups share a kernel."""
    rng = random.Random(seed)
    nodes, prev = [], "x"
    for k in range(n_ops):
        op = rng.choice(_CHAIN_OPS)
        out = "y" if k == n_ops - 1 else f"v{k}"
        nodes.append(helper.make_node(op, [prev, "c"] if op in ("Add", "Mul", "Sub") else [prev], [out]))
        prev = out
    return make_model(nodes, {"x": (np.float32, [4, 8])}, ["y"], {"c": np.array(0.5, np.float32)})


def _session(model: onnx.ModelProto, cache: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[jitort.InferenceSession, float]:
    """A session compiled from an empty cache, in this process (no compile workers): its seconds."""
    monkeypatch.setenv("JITORT_CACHE_DIR", str(cache))
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.compile_workers", "0")
    t0 = time.perf_counter()
    sess = jitort.InferenceSession(model.SerializeToString(), so)
    return sess, time.perf_counter() - t0


def _fused_bodies(sess: jitort.InferenceSession) -> list[list[Node]]:
    g = sess.artifact.ir()
    return [n.attrs["body"] for n in g.nodes if n.op_type == FUSED and n.domain == "jitort"]


@pytest.mark.slow
def test_chain_compile_time_grows_at_most_linearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _session(chain_model(8, seed=0), tmp_path / "warm", monkeypatch)  # Numba's own first-compile set-up
    per_op = {}
    for n_ops in (100, 1000):
        model = chain_model(n_ops, seed=n_ops)
        sess, seconds = _session(model, tmp_path / f"n{n_ops}", monkeypatch)
        per_op[n_ops] = seconds / n_ops
        x = rand([4, 8], seed=1)
        assert_close(sess.run(None, {"x": x}), run_ort(model, {"x": x}))
        bodies = _fused_bodies(sess)
        assert sum(len(b) for b in bodies) == n_ops
        assert max(sum(scalar_ops(n) for n in b) for b in bodies) <= MAX_GROUP_OPS
    # Linear growth keeps the per-op time flat; one 1,000-op kernel was ~10x the per-op time of 100.
    # 2.5x leaves room for a loaded 2-core machine.
    assert per_op[1000] <= 2.5 * per_op[100], f"per-op compile seconds: {per_op}"


def test_short_chain_is_still_one_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = chain_model(MAX_GROUP_OPS, seed=3)
    sess, _ = _session(model, tmp_path, monkeypatch)
    assert [len(b) for b in _fused_bodies(sess)] == [MAX_GROUP_OPS]
    x = rand([4, 8], seed=2)
    assert_close(sess.run(None, {"x": x}), run_ort(model, {"x": x}))


def test_split_is_noted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sess, _ = _session(chain_model(MAX_GROUP_OPS + 1, seed=4), tmp_path, monkeypatch)
    assert [len(b) for b in _fused_bodies(sess)] == [MAX_GROUP_OPS, 1]
    assert any("scalar operations" in note and "split" in note for note in sess.artifact.ir().notes)


def _variadic_feeds(n_inputs: int, dtype: type, seed: int) -> dict[str, np.ndarray]:
    """Inputs of shapes [3,5], [5] and [1,5] in turn (multidirectional broadcast), NaN in two."""
    shapes = ([3, 5], [5], [1, 5])
    feeds = {f"x{k}": rand(shapes[k % 3], dtype, seed=seed + k) for k in range(n_inputs)}
    if np.dtype(dtype).kind == "f":
        feeds["x0"][1, 2] = np.nan
        feeds[f"x{n_inputs - 2}"].reshape(-1)[3] = np.nan
    return feeds


def _variadic_model(op: str, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    node = helper.make_node(op, list(feeds), ["y"])
    return make_model([node], {k: (v.dtype, v.shape) for k, v in feeds.items()}, ["y"])


@pytest.mark.parametrize("op", ["Sum", "Max", "Min", "Mean"])
def test_variadic_of_300_inputs_matches_onnxruntime(op: str) -> None:
    feeds = _variadic_feeds(300, np.float32, seed=10)
    model = _variadic_model(op, feeds)
    got = jitort.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert_close(got, run_ort(model, feeds))


def test_sum_of_300_is_the_left_fold_numpy_computes() -> None:
    feeds = _variadic_feeds(300, np.float32, seed=20)
    feeds["x0"][1, 2] = 1.0  # no NaN: compare every element bitwise
    feeds["x298"].reshape(-1)[3] = 1.0
    want = feeds["x0"]
    for k in range(1, 300):
        want = want + feeds[f"x{k}"]
    got = jitort.InferenceSession(_variadic_model("Sum", feeds).SerializeToString()).run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_int32_variadic_of_300_inputs_matches_onnxruntime(op: str) -> None:
    feeds = _variadic_feeds(300, np.int32, seed=30)
    model = _variadic_model(op, feeds)
    got = jitort.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert_close(got, run_ort(model, feeds))


def test_int32_sum_of_300_inputs_wraps_as_numpy() -> None:
    """onnxruntime has no int32 Sum kernel; numpy's int32 addition wraps as ONNX's does."""
    feeds = _variadic_feeds(300, np.int32, seed=31)
    feeds["x1"][:] = np.iinfo(np.int32).max  # the sum wraps
    want = np.sum(np.stack(np.broadcast_arrays(*feeds.values())), axis=0, dtype=np.int32)
    got = jitort.InferenceSession(_variadic_model("Sum", feeds).SerializeToString()).run(None, feeds)[0]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_fused_variadic_of_20_inputs_matches_onnxruntime(op: str) -> None:
    """Wide enough that a nested expression would blow up (Max repeats its accumulator: 3^19),
    narrow enough to stay in a fused kernel, with an elementwise op on each side."""
    feeds = _variadic_feeds(20, np.float32, seed=40)
    names = list(feeds)
    nodes = [helper.make_node("Abs", [names[0]], ["a0"]),
             helper.make_node(op, ["a0", *names[1:]], ["m"]),
             helper.make_node("Neg", ["m"], ["y"])]
    model = make_model(nodes, {k: (v.dtype, v.shape) for k, v in feeds.items()}, ["y"])
    sess = jitort.InferenceSession(model.SerializeToString())
    assert [len(b) for b in _fused_bodies(sess)] == [3]
    assert_close(sess.run(None, feeds), run_ort(model, feeds))


def test_wide_sum_inside_a_chain_matches_onnxruntime() -> None:
    """A wide Sum between fused groups: it runs as a library call, its neighbours stay kernels."""
    feeds = _variadic_feeds(100, np.float32, seed=50)
    names = list(feeds)
    nodes = [helper.make_node("Relu", [names[0]], ["r"]),
             helper.make_node("Sum", ["r", *names[1:]], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["y"])]
    model = make_model(nodes, {k: (v.dtype, v.shape) for k, v in feeds.items()}, ["y"])
    sess = jitort.InferenceSession(model.SerializeToString())
    assert sorted(len(b) for b in _fused_bodies(sess)) == [1, 1]
    assert_close(sess.run(None, feeds), run_ort(model, feeds))
