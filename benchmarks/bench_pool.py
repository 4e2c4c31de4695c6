"""Pooling layers of the light CNNs: jitort vs onnxruntime, one node per model, interleaved.

    python benchmarks/bench_pool.py [--threads 1,2] [--rounds N] [--filter REGEX]

Each cell builds a one-node model (MaxPool / AveragePool / GlobalAveragePool with the attributes and
input shape of a layer of squeezenet, resnet50, vgg19, inception v1/v2, densenet121, shufflenet),
checks jitort's output against onnxruntime's, then times them in alternating rounds (each round the
median of a few back-to-back runs of each) and prints the medians over rounds, in microseconds:

- ``jit sess``: a jitort session run (first in each round: its input was evicted by onnxruntime's
  runs before it);
- ``jit op``: right after, jitort's op function as the session's plan calls it, its input warm;
- ``ort NCHWc``: onnxruntime's pool kernel time (from its profiler) in a model where an identity
  1x1 Conv comes first: the blocked-layout pool it runs inside a CNN, reading the Conv's output warm
  from cache (what ``jitort profile`` compares against);
- ``ratio``: ``jit op`` / ``ort NCHWc`` (below 1: jitort is faster);
- ``ort NCHW``: onnxruntime's lone pool node (its plain NCHW kernel), a session run.

The header names the CPU and the load average: on a shared machine the 1-thread numbers are the
steady ones.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from jitort.bench.harness import ort_session_options
from jitort.bench.machine import cpu_label

# name -> (op, input shape, attributes)
LAYERS: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {
    "sq mp3s2 64x111": ("MaxPool", (1, 64, 111, 111), dict(kernel_shape=[3, 3], strides=[2, 2])),
    "sq mp3s2 128x55": ("MaxPool", (1, 128, 55, 55), dict(kernel_shape=[3, 3], strides=[2, 2])),
    "sq mp3s2 256x27": ("MaxPool", (1, 256, 27, 27), dict(kernel_shape=[3, 3], strides=[2, 2])),
    "r50 mp3s2p1 64x112": ("MaxPool", (1, 64, 112, 112), dict(kernel_shape=[3, 3], strides=[2, 2],
                                                               pads=[1, 1, 1, 1])),
    "inc2 mp3s2p01 64x112": ("MaxPool", (1, 64, 112, 112), dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                 pads=[0, 0, 1, 1])),
    "alex mp3s2 96x54": ("MaxPool", (1, 96, 54, 54), dict(kernel_shape=[3, 3], strides=[2, 2])),
    "vgg mp2s2 64x224": ("MaxPool", (1, 64, 224, 224), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "vgg mp2s2 512x28": ("MaxPool", (1, 512, 28, 28), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "inc1 mp3s1p1 192x27": ("MaxPool", (1, 192, 27, 27), dict(kernel_shape=[3, 3], strides=[1, 1],
                                                              pads=[1, 1, 1, 1])),
    "inc1 mp3s1p1 512x13": ("MaxPool", (1, 512, 13, 13), dict(kernel_shape=[3, 3], strides=[1, 1],
                                                              pads=[1, 1, 1, 1])),
    "inc1 mp3s2 832x13 ceil": ("MaxPool", (1, 832, 13, 13), dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                 ceil_mode=1)),
    "inc2 ap3s1p1 192x28": ("AveragePool", (1, 192, 28, 28), dict(kernel_shape=[3, 3], strides=[1, 1],
                                                                  pads=[1, 1, 1, 1])),
    "inc2 ap3s1p1 576x14": ("AveragePool", (1, 576, 14, 14), dict(kernel_shape=[3, 3], strides=[1, 1],
                                                                  pads=[1, 1, 1, 1])),
    "dn ap2s2 128x56": ("AveragePool", (1, 128, 56, 56), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "dn ap2s2 512x14": ("AveragePool", (1, 512, 14, 14), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "shuf ap3s2p1 24x56 cip": ("AveragePool", (1, 24, 56, 56), dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                    pads=[1, 1, 1, 1], count_include_pad=1)),
    "r50 ap7 2048x7": ("AveragePool", (1, 2048, 7, 7), dict(kernel_shape=[7, 7])),
    "sq gap 1000x13": ("GlobalAveragePool", (1, 1000, 13, 13), {}),
    "dn gap 1024x7": ("GlobalAveragePool", (1, 1024, 7, 7), {}),
}


def pool_model(op: str, shape: tuple[int, ...], attrs: dict[str, Any]) -> bytes:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    g = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    mp = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    mp.ir_version = 9
    return mp.SerializeToString()


def conv_pool_model(op: str, shape: tuple[int, ...], attrs: dict[str, Any]) -> bytes:
    """An identity 1x1 Conv, then the pool: inside a CNN onnxruntime runs pools in its blocked NCHWc
    layout (the Conv's output stays NCHWc), which a lone pool node does not get."""
    c = shape[1]
    w = np.eye(c, dtype=np.float32).reshape(c, c, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node(op, ["c"], ["y"], name="pool", **attrs)]
    g = helper.make_graph(nodes, "convpool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    mp = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    mp.ir_version = 9
    return mp.SerializeToString()


def ort_node_times(sess: Any, op: str) -> list[float]:
    """The pool node's kernel times (seconds) from a profiling onnxruntime session's trace."""
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    out = [e["dur"] * 1e-6 for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
           and e.get("args", {}).get("op_name") == op]
    return out


def op_call(op: str, x: np.ndarray, attrs: dict[str, Any]) -> Any:
    """jitort's op as a session's plan calls it (attributes as tuples: the per-shape preparation is
    cached), without the session's per-run overhead: the counterpart of onnxruntime's kernel time."""
    from jitort.kernels import global_pool, pool
    if op == "GlobalAveragePool":
        return lambda: global_pool.GlobalAveragePool(x)
    a = {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()}
    return lambda: getattr(pool, op)(x, auto_pad="NOTSET", **a)


def _median_run(run: Any, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    import onnxruntime as ort

    import jitort
    print(f"# {cpu_label()}  load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    print(f"{'layer (us)':28s} {'T':>2s} {'jit op':>10s} {'jit sess':>10s} {'ort NCHWc':>10s} {'ratio':>6s} "
          f"{'ort NCHW':>10s}")
    ratios: dict[int, list[float]] = {}
    for t in (int(v) for v in args.threads.split(",")):
        for name, (op, shape, attrs) in LAYERS.items():
            if args.filter and not re.search(args.filter, name):
                continue
            mb = pool_model(op, shape, attrs)
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            so = jitort.SessionOptions()
            so.intra_op_num_threads = t
            js = jitort.InferenceSession(mb, so)
            os_ = ort.InferenceSession(mb, ort_session_options(t), providers=["CPUExecutionProvider"])
            feeds = {"x": x}
            np.testing.assert_allclose(js.run(None, feeds)[0], os_.run(None, feeds)[0], rtol=1e-5, atol=1e-5)
            po = ort_session_options(t)
            po.enable_profiling = True
            po.profile_file_prefix = f"/tmp/bench_pool_{os.getpid()}"
            oc = ort.InferenceSession(conv_pool_model(op, shape, attrs), po, providers=["CPUExecutionProvider"])
            call = op_call(op, x, attrs)
            np.testing.assert_array_equal(call(), js.run(None, feeds)[0])
            tk, tj, to = [], [], []
            for _ in range(args.rounds):
                tj.append(_median_run(lambda: js.run(None, feeds), args.reps))
                tk.append(_median_run(call, args.reps))  # after the session's runs: its input is warm
                to.append(_median_run(lambda: os_.run(None, feeds), args.reps))
                for _ in range(args.reps):
                    oc.run(None, feeds)
            tc = ort_node_times(oc, op)[args.reps:]
            mk, mj, mo, mc = (statistics.median(v) for v in (tk, tj, to, tc))
            ratios.setdefault(t, []).append(mk / mc)
            print(f"{name:28s} {t:2d} {mk * 1e6:10.1f} {mj * 1e6:10.1f} {mc * 1e6:10.1f} {mk / mc:6.2f} "
                  f"{mo * 1e6:10.1f}", flush=True)
    for t, r in ratios.items():
        print(f"# geomean ratio at {t} thread(s): {float(np.exp(np.mean(np.log(r)))):.2f}  "
              f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
