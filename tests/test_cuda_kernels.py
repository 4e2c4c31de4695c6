"""jitort's CUDA library kernels without a GPU.

* every variant of every library kernel compiles to sm_90 PTX with NVVM alone, float32 variants
  without a float64 instruction, and — where nvJitLink is installed — links to a cubin within sane
  resources (no spills, registers and shared memory a 256-thread block can have);
* every kernel the partitioner would launch for the zoo's transformer blocks, conv block and
  elementwise chain compiles to sm_90 PTX;
* in the CUDA simulator (its own process: numba chooses the simulator when numba.cuda is first
  imported, from NUMBA_ENABLE_CUDASIM), one-node models run through the CUDA partition, the
  generated CUDA plan and the launchers, and match onnxruntime: MatMul/Gemm (transposes, batch
  broadcasting, bias broadcasting, tile edges), Softmax/LogSoftmax, LayerNormalization, the
  reductions, Conv (stride, padding, dilation, groups, 1-D, fused activations), the pools,
  BatchNormalization and the data movement ops (Transpose, Concat, Split, Slice, Expand, Gather).
  This file is also the simulator's script: ``python test_cuda_kernels.py GROUP``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

HERE = Path(__file__).parent
CUDA = "CUDAExecutionProvider"


# --- simulator cases (run in a child process) ------------------------------------------------------

def _rand(shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _node(op: str, feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray] | None = None, n_out: int = 1,
          opset: int = 17, input_names: list[str] | None = None, **attrs: Any) -> Any:
    sys.path.insert(0, str(HERE))
    from oracle import node_model
    return node_model(op, feeds, n_out, opset, inits, input_names, **attrs)


def _matmul_cases() -> list[tuple[str, Any, dict, dict]]:
    c = []
    for name, a, b in [("2d", (3, 4), (4, 5)), ("fold", (2, 3, 4), (4, 5)), ("batch", (2, 2, 3, 4), (2, 2, 4, 3)),
                       ("bcast-loop", (2, 1, 3, 4), (1, 3, 4, 5)), ("vec-a", (4,), (2, 4, 5)),
                       ("vec-b", (2, 3, 4), (4,)), ("edges", (17, 20), (20, 18))]:
        feeds = {"a": _rand(a, seed=1), "b": _rand(b, seed=2)}
        c.append((f"MatMul-{name}", _node("MatMul", feeds), feeds, {}))
    feeds = {"a": _rand((3, 17), np.float64)}
    c.append(("MatMul-f64-init", _node("MatMul", feeds, {"b": _rand((17, 18), np.float64, 3)}), feeds, {}))
    for name, ta, tb, cshape, alpha, beta in [("tt-vecC", 1, 1, (5,), 0.5, 2.0), ("colC", 0, 0, (3, 1), 1.0, 1.0),
                                             ("scalarC", 0, 1, (), 1.0, -1.0), ("noC", 1, 0, None, 2.0, 1.0)]:
        a = _rand((4, 3) if ta else (3, 4), seed=4)
        b = _rand((5, 4) if tb else (4, 5), seed=5)
        feeds = {"a": a, "b": b}
        names = ["a", "b"]
        inits = {}
        if cshape is not None:
            inits["c"] = _rand(cshape, seed=6)
            names.append("c")
        model = _node("Gemm", feeds, inits, input_names=names, transA=ta, transB=tb, alpha=alpha, beta=beta)
        c.append((f"Gemm-{name}", model, feeds, {}))
    feeds = {"a": _rand((20, 33), seed=7), "b": _rand((33, 18), seed=8), "c": _rand((20, 18), seed=9)}
    c.append(("Gemm-edges", _node("Gemm", feeds), feeds, {}))
    return c


def _rows_cases() -> list[tuple[str, Any, dict, dict]]:
    c = []
    x = _rand((2, 3, 37))
    x[0, 0, 5] = np.nan
    x[1, 2, :] = -np.inf
    for op in ("Softmax", "LogSoftmax"):
        c.append((f"{op}-13", _node(op, {"x": x}, opset=13, axis=-1), {"x": x}, {}))
    y = _rand((2, 3, 4))
    c.append(("Softmax-11-coerce", _node("Softmax", {"x": y}, opset=11, axis=1), {"x": y}, {}))
    x = _rand((2, 5, 40))
    ln = {"s": _rand((40,), seed=1), "b": _rand((40,), seed=2)}
    c.append(("LayerNorm", _node("LayerNormalization", {"x": x}, ln, axis=-1), {"x": x}, {}))
    x3 = _rand((2, 3, 4))
    c.append(("LayerNorm-axis-2-stats", _node("LayerNormalization", {"x": x3}, {"s": _rand((3, 4), seed=3)}, n_out=3,
                                              axis=-2), {"x": x3}, {}))
    r = _rand((2, 3, 50))
    rn = r.copy()
    rn[1, 1, 7] = np.nan  # Max/Min propagate NaN, like numpy and jitort's CPU kernels (onnxruntime: sometimes)
    for op, ref in (("ReduceMax", np.max), ("ReduceMin", np.min)):
        c.append((f"{op}-nan", _node(op, {"x": rn}, axes=[-1], keepdims=0), {"x": rn},
                  {"numpy": lambda f, ref=ref: [ref(f["x"], axis=-1)]}))
    for op in ("ReduceSum", "ReduceMax", "ReduceMin"):
        c.append((f"{op}-keep", _node(op, {"x": r}, opset=13 if op == "ReduceSum" else 17, axes=[-1], keepdims=1)
                  if op != "ReduceSum" else _node(op, {"x": r}, {"axes": np.array([-1], np.int64)}, opset=13),
                  {"x": r}, {}))
    c.append(("ReduceMean-2axes", _node("ReduceMean", {"x": r}, axes=[1, 2], keepdims=0), {"x": r}, {}))
    axes = {"axes": np.array([2], np.int64)}
    c.append(("ReduceMean-18", _node("ReduceMean", {"x": r}, axes, opset=18), {"x": r}, {}))
    ri = (np.arange(60, dtype=np.int32).reshape(3, 20) * 7919) % 101 - 50
    c.append(("ReduceMax-int32", _node("ReduceMax", {"x": ri}, axes=[1]), {"x": ri}, {}))
    g = _rand((2, 3, 5, 5))
    c.append(("GlobalAveragePool", _node("GlobalAveragePool", {"x": g}), {"x": g}, {}))
    c.append(("GlobalMaxPool", _node("GlobalMaxPool", {"x": g}), {"x": g}, {}))
    return c


def _conv_cases() -> list[tuple[str, Any, dict, dict]]:
    c = []
    x = _rand((1, 3, 7, 7))
    c.append(("Conv-s2-p1-bias", _node("Conv", {"x": x}, {"w": _rand((4, 3, 3, 3), seed=1), "b": _rand((4,), seed=2)},
                                       kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]), {"x": x}, {}))
    x = _rand((1, 4, 6, 6))
    c.append(("Conv-group2-dil2", _node("Conv", {"x": x}, {"w": _rand((6, 2, 3, 3), seed=3)}, group=2,
                                        dilations=[2, 2], pads=[2, 1, 2, 1]), {"x": x}, {}))
    c.append(("Conv-depthwise-same", _node("Conv", {"x": x}, {"w": _rand((4, 1, 3, 3), seed=4)}, group=4,
                                           auto_pad="SAME_UPPER", strides=[2, 2]), {"x": x}, {}))
    x1 = _rand((2, 2, 9))
    c.append(("Conv-1d", _node("Conv", {"x": x1}, {"w": _rand((3, 2, 3), seed=5), "b": _rand((3,), seed=6)},
                               strides=[2], pads=[1, 0]), {"x": x1}, {}))
    x = _rand((1, 3, 5, 5))
    for act, extra in [("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("HardSigmoid", {}), ("Sigmoid", {})]:
        sys.path.insert(0, str(HERE))
        from oracle import make_model
        from onnx import helper
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node(act, ["c"], ["y"], **extra)]
        m = make_model(nodes, {"x": (np.float32, [1, 3, 5, 5])}, ["y"], {"w": _rand((2, 3, 3, 3), seed=7)})
        c.append((f"Conv+{act}", m, {"x": x}, {"epilogue": True}))
    p = _rand((1, 2, 7, 7))
    c.append(("MaxPool-s2-p1", _node("MaxPool", {"x": p}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
              {"x": p}, {}))
    c.append(("MaxPool-ceil-dil", _node("MaxPool", {"x": p}, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
                                        dilations=[2, 2]), {"x": p}, {}))
    for cip in (0, 1):
        c.append((f"AveragePool-cip{cip}", _node("AveragePool", {"x": p}, kernel_shape=[3, 3], strides=[2, 2],
                                                 pads=[1, 1, 1, 1], count_include_pad=cip), {"x": p}, {}))
    p1 = _rand((1, 2, 9))
    c.append(("AveragePool-1d-same", _node("AveragePool", {"x": p1}, kernel_shape=[3], strides=[2],
                                           auto_pad="SAME_LOWER"), {"x": p1}, {}))
    b = _rand((2, 3, 4, 4))
    stats = {"s": _rand((3,), seed=1), "bb": _rand((3,), seed=2), "m": _rand((3,), seed=3),
             "v": np.abs(_rand((3,), seed=4)) + 0.5}
    c.append(("BatchNormalization", _node("BatchNormalization", {"x": b}, stats, epsilon=1e-3), {"x": b}, {}))
    return c


def _movement_cases() -> list[tuple[str, Any, dict, dict]]:
    from onnx import helper
    sys.path.insert(0, str(HERE))
    from oracle import make_model
    c = []
    x = _rand((2, 3, 4, 5))
    c.append(("Transpose-perm", _node("Transpose", {"x": x}, perm=[0, 2, 3, 1]), {"x": x}, {}))
    c.append(("Transpose-default", _node("Transpose", {"x": x}), {"x": x}, {}))
    h = _rand((3, 4)).astype(np.float16)
    c.append(("Transpose-f16", _node("Transpose", {"x": h}), {"x": h}, {}))
    a, b = _rand((2, 3, 4)), _rand((2, 5, 4), seed=1)
    c.append(("Concat-axis1", _node("Concat", {"a": a, "b": b}, axis=1), {"a": a, "b": b}, {}))
    ia, ib = np.arange(6, dtype=np.int64).reshape(2, 3), np.arange(4, dtype=np.int64).reshape(2, 2)
    c.append(("Concat-int64-last", _node("Concat", {"a": ia, "b": ib}, axis=-1), {"a": ia, "b": ib}, {}))
    s = _rand((2, 3, 10))
    c.append(("Split-18-num", _node("Split", {"x": s}, n_out=3, opset=18, axis=2, num_outputs=3), {"x": s}, {}))
    s2 = _rand((10, 3))
    c.append(("Split-13-sizes", _node("Split", {"x": s2}, {"sp": np.array([3, 7], np.int64)}, n_out=2, opset=13),
              {"x": s2}, {}))
    sl = _rand((5, 6, 7))
    inits = {"st": np.array([4, -1, 1], np.int64), "en": np.array([0, -100, 6], np.int64),
             "ax": np.array([0, 1, 2], np.int64), "sp": np.array([-2, -1, 2], np.int64)}
    c.append(("Slice-negative-steps", _node("Slice", {"x": sl}, inits, opset=13), {"x": sl}, {}))
    feeds = {"x": sl, "st": np.array([1], np.int64), "en": np.array([3], np.int64)}
    c.append(("Slice-runtime-starts", _node("Slice", feeds, {"ax": np.array([2], np.int64)}, opset=13), feeds, {}))
    e = _rand((3, 1))
    c.append(("Expand", _node("Expand", {"x": e}, {"shape": np.array([2, 3, 4], np.int64)}, opset=13), {"x": e}, {}))
    d = _rand((3, 5, 4))
    for idt in (np.int64, np.int32):
        c.append((f"Gather-{np.dtype(idt).name}", _node("Gather", {"x": d}, {"i": np.array([[0, -1], [2, 1]], idt)},
                                                         axis=1), {"x": d}, {}))
    bl = np.array([[True, False, True], [False, False, True]])
    gi = {"i": np.array([1, 0, 1], np.int64)}
    c.append(("Gather-bool", _node("Gather", {"x": bl}, gi, axis=0), {"x": bl}, {}))
    gf = {"x": d, "i": np.array([0, 5], np.int64)}
    c.append(("Gather-out-of-range", _node("Gather", gf, axis=1), gf, {"raises": "out of data bounds"}))
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Unsqueeze", ["r", "a"], ["u"]),
             helper.make_node("Transpose", ["u"], ["t"], perm=[2, 1, 0]), helper.make_node("Flatten", ["t"], ["y"])]
    m = make_model(nodes, {"x": (np.float32, [2, 3, 4])}, ["y"], {"s": np.array([0, -1], np.int64),
                                                                  "a": np.array([1], np.int64)}, opset=13)
    c.append(("Reshape-Unsqueeze-Transpose-Flatten", m, {"x": _rand((2, 3, 4))}, {}))
    return c


GROUPS: dict[str, Callable[[], list[tuple[str, Any, dict, dict]]]] = {
    "matmul": _matmul_cases, "rows": _rows_cases, "conv": _conv_cases, "movement": _movement_cases}


def _run_group(group: str) -> dict[str, str | None]:
    """In the simulator: every case through the CUDA partition and plan, compared with onnxruntime."""
    from numba import cuda
    assert cuda.is_available(), "expected the CUDA simulator"
    sys.path.insert(0, str(HERE))
    from oracle import run_ort

    from jitort.compiler import compile_graph
    from jitort.errors import InvalidArgument
    from jitort.frontend.importer import import_model
    from jitort.passes.conv_epilogue import fuse_conv_epilogue
    results: dict[str, str | None] = {}
    for name, model, feeds, opts in GROUPS[group]():
        try:
            g = import_model(model)
            if opts.get("epilogue"):
                g = fuse_conv_epilogue(g)
            c = compile_graph(g, [CUDA, "CPUExecutionProvider"])
            assert c.graph is not None
            ops = [n.op_type for n in c.graph.nodes if n.provider != CUDA]
            if ops:
                raise AssertionError(f"ran on the CPU: {ops} ({[x for x in c.graph.notes if CUDA in x]})")
            if opts.get("epilogue") and [n.op_type for n in c.graph.nodes
                                         if n.domain == "" or n.op_type == "FusedConv"] != ["FusedConv"]:
                raise AssertionError(f"the activation was not fused into the Conv: {c.graph}")
            run, run_feed = c.bind(lambda f: 1 / 0)
            if "raises" in opts:
                try:
                    run_feed(feeds)
                except InvalidArgument as e:
                    assert opts["raises"] in str(e), str(e)
                    results[name] = None
                    continue
                raise AssertionError("no error raised")
            got = run_feed(feeds)
            want = opts["numpy"](feeds) if "numpy" in opts else run_ort(model, feeds)
            for k, (a, b) in enumerate(zip(got, want)):
                assert a.dtype == b.dtype and a.shape == b.shape, \
                    f"output {k}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
                tol = 1e-3 if a.dtype == np.float16 else 1e-5
                np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"output {k}")
            results[name] = None
        except Exception as e:  # noqa: BLE001 - reported per case
            results[name] = f"{type(e).__name__}: {str(e)[:1500]}"
    return results


# --- tests -------------------------------------------------------------------------------------------

pytest.importorskip("numba.cuda")


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_simulator_matches_onnxruntime(group: str) -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    p = subprocess.run([sys.executable, __file__, group], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    results = json.loads(p.stdout.strip().splitlines()[-1])
    failed = {k: v for k, v in results.items() if v}
    assert not failed, json.dumps(failed, indent=1)
    assert len(results) == len(GROUPS[group]())


def _library_variants() -> list[tuple[str, str]]:
    from jitort.kernels.cuda import convpool, gemm, movement, rows
    from jitort.kernels.cuda.runtime import spec_of
    return [(f"{m.__name__.rsplit('.', 1)[1]}.{fn.__name__}", key)
            for m in (rows, gemm, convpool, movement) for fn in m.KERNELS for key in spec_of(fn).keys]


def _kernel(qual: str) -> Any:
    import importlib
    mod, fn = qual.split(".")
    return getattr(importlib.import_module(f"jitort.kernels.cuda.{mod}"), fn)


@pytest.mark.parametrize("qual,key", _library_variants())
def test_library_kernel_compiles_to_sm90(qual: str, key: str) -> None:
    from jitort.kernels.cuda import runtime as rt
    fn = _kernel(qual)
    ptx = rt.ptx(fn, key, (9, 0))
    assert ".target sm_90" in ptx and ".entry" in ptx
    if "float32" in key:
        body = ptx[ptx.index(".entry"):]
        assert ".f64" not in body, "float32 kernel computes in float64 (an untyped literal?)"
    if rt.nvjitlink_available():
        cubin, info = rt.link_cubin(ptx, (9, 0), qual)
        assert cubin[:4] == b"\x7fELF"
        assert info["spill_stores"] == 0 and info["stack_bytes"] == 0, info
        assert info["registers"] <= 255 and info["registers"] * 256 <= 65536, info
        assert info["shared_bytes"] <= 48 * 1024, info


def _partitioned(build: Callable[[], Any]) -> Any:
    from jitort.compiler import optimize
    from jitort.frontend.importer import import_model
    return optimize(import_model(build()), [CUDA, "CPUExecutionProvider"], check=True)


@pytest.mark.parametrize("name", ["bert", "gpt", "conv", "chain"])
def test_every_launched_kernel_compiles_to_sm90(name: str) -> None:
    from jitort import zoo
    from jitort.codegen.cuda_plan import kernel_ptx
    build = {"bert": zoo.bert_layer, "gpt": zoo.gpt_block, "conv": lambda: zoo.conv_block(channels=8, size=8),
             "chain": zoo.elementwise_chain}[name]
    g = _partitioned(build)
    entries = kernel_ptx(g, (9, 0))
    launched = {n.name for e in entries for n in g.nodes if n.name in e["nodes"]}
    on_cuda = {n.name for n in g.nodes if n.provider == CUDA and n.domain != "jitort" or
               (n.provider == CUDA and n.op_type in ("FusedElementwise", "FusedConv"))}
    views = {n.name for n in g.nodes if n.op_type in ("Reshape", "Unsqueeze", "Shape", "Squeeze", "Flatten")}
    assert on_cuda - views <= launched, on_cuda - views - launched
    for e in entries:
        assert ".target sm_90" in e["ptx"], e["kernel"]
    heavy = {"bert": {"MatMul", "Softmax", "LayerNormalization", "ReduceMean", "Transpose"},
             "gpt": {"MatMul", "Softmax", "LayerNormalization", "Split", "Transpose", "Slice"},
             "conv": {"FusedConv"}, "chain": set()}[name]  # Conv + BN + Relu (passes/conv_epilogue.py)
    assert heavy <= {n.op_type for n in g.nodes if n.provider == CUDA}


if __name__ == "__main__":
    print(json.dumps(_run_group(sys.argv[1])))
