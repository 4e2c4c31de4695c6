"""Conv kernels split into native parts (kernels/conv_parts.py, conv.py's ``_make_part``): every path
that splits, at 2 threads against 1 thread (bitwise) and against onnxruntime, with and without a
residual, for each epilogue kind; the Python-parts fallback (JITORT_NATIVE_PARTS=0); and that a
process with a warm cache, or one loading an artifact, compiles nothing whichever path (one part
or split) ran first."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import helper

from jitort.kernels import conv as K
from jitort.kernels import conv_fused as F
from jitort.kernels import conv_parts as CP
from jitort.kernels import conv_setup as S
from jitort.kernels import threads as T
from oracle import assert_close, make_model, rand, run_ort

# every conv kernel is covered on every host (conv_setup.WIDE_TILE_RULES)
pytestmark = pytest.mark.usefixtures("all_conv_paths")

# one case per kernel that splits: (x, w, attrs, the path conv_plan must pick)
PATHS = {
    "direct": ((1, 12, 20, 20), (24, 1, 3, 3), dict(group=12, pads=[1, 1, 1, 1]), S.DIRECT),
    "dwblock": ((2, 40, 7, 7), (40, 1, 3, 3), dict(group=40, pads=[1, 1, 1, 1]), S.DWBLOCK),
    "window": ((1, 1, 600), (40, 1, 32), dict(strides=[8], pads=[4, 4]), S.WINDOW),
    "winograd": ((1, 32, 40, 40), (40, 32, 3, 3), dict(pads=[1, 1, 1, 1]), S.WINOGRAD),
    "winograd_small": ((1, 256, 8, 8), (256, 256, 3, 3), dict(pads=[1, 1, 1, 1]), S.WINOGRAD),  # one block: by channels
    "implicit": ((1, 16, 20, 28), (40, 16, 3, 3), dict(pads=[1, 1, 1, 1]), S.IMPLICIT),  # rows fill 32-column tiles
    "im2col": ((1, 16, 400, 21), (24, 16, 3, 3), dict(strides=[2, 2]), S.IM2COL),
    "im2col_one_block": ((1, 32, 14, 14), (64, 32, 1, 1), dict(strides=[2, 2]), S.IM2COL),  # by channels
    "1x1": ((2, 16, 12, 12), (40, 16, 1, 1), dict(), S.GEMM_1X1),
}


def _kwargs(attrs: dict, act: str) -> dict:
    return dict(auto_pad="NOTSET", group=attrs.get("group", 1), pads=attrs.get("pads"), strides=attrs.get("strides"),
                dilations=attrs.get("dilations"), activation=act)


def _inputs(path: str, residual: bool, dt=np.float32):
    xs, ws, attrs, want = PATHS[path]
    rank = len(xs) - 2
    assert S.conv_plan(xs, ws, attrs.get("group", 1), tuple(attrs.get("strides", [1] * rank)), (1,) * rank,
                       tuple(attrs.get("pads", [0] * 2 * rank)), "NOTSET", want == S.WINOGRAD)[1] == want
    x, w, b = rand(xs, seed=1).astype(dt), rand(ws, seed=2, low=-0.5, high=0.5).astype(dt), rand((ws[0],), seed=3).astype(dt)
    y = F.FusedConv(x, w, b, **_kwargs(attrs, ""))
    z = rand(y.shape, seed=4).astype(dt) if residual else None
    return x, w, b, z, attrs


def _split(monkeypatch, threads: int) -> list[int]:
    """Run conv_packed at ``threads`` threads, split whenever it can; returns the part counts of the
    native jobs it starts."""
    jobs: list[int] = []
    real = K.run_native

    def record(fn, argv, nparts, nthreads=None):  # noqa: ANN001, ANN202
        jobs.append(nparts)
        return real(fn, argv, nparts, nthreads)
    monkeypatch.setattr(K, "run_native", record)
    monkeypatch.setattr(T, "intra_op_threads", lambda: threads)
    monkeypatch.setattr(T, "PART_FLOPS", 1.0)
    return jobs


def _ort(x, w, b, z, attrs, act):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
    feeds, ins, last = {"x": x}, {"x": (np.float32, x.shape)}, "c"
    if z is not None:
        nodes.append(helper.make_node("Add", ["c", "z"], ["s"]))
        feeds["z"], ins["z"], last = z, (np.float32, z.shape), "s"
    if act:
        nodes.append(helper.make_node(act, [last], ["y"]))
        last = "y"
    return run_ort(make_model(nodes, ins, [last], {"w": w, "b": b}, 13), feeds)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("act", ["", "Relu", "Sigmoid"])  # no epilogue, on the tile, after (ep True)
@pytest.mark.parametrize("residual", [False, True])
def test_native_split_is_bitwise_one_thread_and_matches_ort(path, act, residual, monkeypatch):
    x, w, b, z, attrs = _inputs(path, residual)
    kw = _kwargs(attrs, act)
    one_jobs = _split(monkeypatch, 1)
    one = F.FusedConv(x, w, b, z, **kw)
    assert one_jobs == []  # one part: called on this thread, no job
    jobs = _split(monkeypatch, 2)
    two = F.FusedConv(x, w, b, z, **kw)
    assert jobs == [2]
    np.testing.assert_array_equal(two, one)
    ref = _ort(x, w, b, z, attrs, act)
    assert_close([one], ref, rtol=1e-4, atol=1e-6 * max(10.0, float(np.abs(ref[0]).max())))  # K up to 2304


@pytest.mark.parametrize("path", ["direct", "im2col", "winograd"])
def test_float64_split_is_bitwise_one_thread(path, monkeypatch):
    """float64 has part functions of its own (onnxruntime has no float64 Conv: the spec's sum)."""
    from test_conv import conv_ref
    x, w, b, z, attrs = _inputs(path, True, np.float64)
    kw = _kwargs(attrs, "Relu")
    _split(monkeypatch, 1)
    one = F.FusedConv(x, w, b, z, **kw)
    jobs = _split(monkeypatch, 2)
    two = F.FusedConv(x, w, b, z, **kw)
    assert jobs == [2] and two.dtype == np.float64
    np.testing.assert_array_equal(two, one)
    out_sp, begin = S.conv_geometry(x.shape[2:], w.shape[2:], tuple(attrs.get("strides", [1, 1])), (1, 1),
                                    tuple(attrs.get("pads", [0, 0, 0, 0])), "NOTSET")
    ref = conv_ref(x, w, b, list(attrs.get("strides", [1, 1])), [1, 1], list(begin), list(out_sp),
                   attrs.get("group", 1)) + z
    np.testing.assert_allclose(one, np.maximum(ref, 0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path", list(PATHS))
def test_python_parts_fallback(path, monkeypatch):
    """JITORT_NATIVE_PARTS=0 (threads.NATIVE_PARTS False): the same part functions, each part a
    Python call on the pool; bitwise the native split."""
    x, w, b, z, attrs = _inputs(path, True)
    kw = _kwargs(attrs, "Sigmoid")
    jobs = _split(monkeypatch, 2)
    native = F.FusedConv(x, w, b, z, **kw)
    monkeypatch.setattr(T, "NATIVE_PARTS", False)
    python = F.FusedConv(x, w, b, z, **kw)
    assert jobs == [2, 2]
    np.testing.assert_array_equal(python, native)


def test_more_parts_than_threads_each_with_its_own_scratch(monkeypatch):
    """Parts claimed by 2 threads out of 5 (a part's scratch is its own slice, not the thread's)."""
    x, w, b, z, attrs = _inputs("implicit", False)
    kw = _kwargs(attrs, "Relu")
    _split(monkeypatch, 1)
    one = F.FusedConv(x, w, b, z, **kw)
    monkeypatch.setattr(K, "parts_for", lambda units, flops: 5)
    real = T.run_native
    monkeypatch.setattr(K, "run_native", lambda fn, argv, n: real(fn, argv, n, 2))
    np.testing.assert_array_equal(F.FusedConv(x, w, b, z, **kw), one)


def test_part_stride_is_whole_cache_lines():
    for n, item in [(1, 4), (15, 4), (16, 4), (17, 4), (7, 8), (9, 8)]:
        s = CP.part_stride(n, item)
        assert s >= n and (s * item) % CP.SCRATCH_ALIGN == 0 and s * item - n * item < CP.SCRATCH_ALIGN


# --- compiled once, cached, in an artifact ---------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys, numpy as np
    import jitort
    from jitort import cache
    from jitort.kernels import threads as T
    T.PART_FLOPS = 1.0  # split whatever can split
    s = jitort.SessionOptions()
    s.intra_op_num_threads = int(sys.argv[2])
    sess = jitort.InferenceSession(sys.argv[1], s)
    x = np.load(sys.argv[3])
    mark = cache.compile_count()
    y = sess.run(None, {"x": x})[0]
    np.save(sys.argv[4], y)
    print(json.dumps({"compiled": [n for n, _ in cache.compiled_since(mark)]}))
""")


def _two_path_model():
    """A window conv (1-D, learned STFT-like) feeding a depthwise conv on small planes plus a
    residual: two cheap kernels, two part functions (one with a residual)."""
    w1 = rand((16, 1, 32), seed=2, low=-0.3, high=0.3)
    w2 = rand((16, 1, 3), seed=3, low=-0.5, high=0.5)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], strides=[8], pads=[4, 4]),
             helper.make_node("Conv", ["a", "w2"], ["c"], group=16, pads=[1, 1]),
             helper.make_node("Add", ["c", "a"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    return make_model(nodes, {"x": (np.float32, (1, 1, 600))}, ["y"], {"w1": w1, "w2": w2}, 13)


def _child(model: str, threads: int, x, out, cache) -> list[str]:
    env = dict(os.environ, JITORT_CACHE_DIR=str(cache))
    p = subprocess.run([sys.executable, "-c", CHILD, model, str(threads), str(x), str(out)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])["compiled"]


@pytest.mark.slow
def test_split_first_then_one_thread_compiles_nothing(tmp_path):
    """A process that split first (2 threads) leaves what a 1-thread process runs, and the reverse:
    the one-part call and the split run the same part function. Also from a `jitort compile`
    artifact made at 2 threads, loaded by a fresh process at 1 thread."""
    m = _two_path_model()
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    x = rand((1, 1, 600), seed=1)
    np.save(tmp_path / "x.npy", x)
    want = run_ort(m, {"x": x})[0]
    _child(str(path), 2, tmp_path / "x.npy", tmp_path / "y0.npy", tmp_path / "c")  # cold: compiles
    assert _child(str(path), 1, tmp_path / "x.npy", tmp_path / "y1.npy", tmp_path / "c") == []
    assert _child(str(path), 2, tmp_path / "x.npy", tmp_path / "y2.npy", tmp_path / "c") == []
    art = tmp_path / "art"
    p = subprocess.run([sys.executable, "-m", "jitort", "compile", str(path), "-o", str(art)], capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, JITORT_CACHE_DIR=str(tmp_path / "c2")))
    assert p.returncode == 0, p.stderr[-3000:]
    assert _child(str(art), 1, tmp_path / "x.npy", tmp_path / "y3.npy", tmp_path / "c3") == []
    ys = [np.load(tmp_path / f"y{k}.npy") for k in range(4)]
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
    np.testing.assert_allclose(ys[0], want, rtol=1e-4, atol=1e-5)
