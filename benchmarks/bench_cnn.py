"""CNNs and single conv layers: jitort vs onnxruntime, interleaved, at 1 and 2 threads.

    python benchmarks/bench_cnn.py [--threads 1,2] [--rounds N] [--only models|layers] [--filter REGEX]
                                   [--ort-spin both|on|off]

Workloads: the nine light CNNs the onnx wheel ships (``jitort.models.light_models()``) on seeded
random inputs, and single Conv layers built here with random constant weights: ResNet-50 layers
(7x7 s2 stem, 1x1 and 3x3 bottleneck convs, strided 1x1), MobileNetV2 layers (expand 1x1, depthwise
3x3 s1/s2, project 1x1), and audio front ends (a learned STFT: 1-D Conv, 1 input channel, kernel 256,
stride 128, 258 output channels, on a 576-sample chunk as voice-activity models feed it, and on one
second of 16 kHz audio).

Each (workload, threads) cell creates one session per runtime in this process, checks jitort's output
against onnxruntime's, then times the two in alternating rounds (A, B, A, B, ...: machine noise hits
both alike) and reports, per runtime, the median and the minimum of the rounds and the ratios
jitort / onnxruntime of each (below 1: jitort is faster), then the geometric means per group. The
header names the CPU and the load average. On a machine with more runnable threads than CPUs the
medians measure the scheduler as much as the code (a round that lost the CPU for a while); the
ratio of minimums, each runtime's best round, is the steadier number there.

At more than one thread each cell is measured twice (``--ort-spin both``): against onnxruntime with its
default spinning intra-op threads (column ``2T``) and with ``session.intra_op.allow_spinning=0``
(``2T nospin``). Its spinning threads take the CPU that jitort's next run needs on a small machine, so
the first column is what an onnxruntime user sees and the second what jitort's threads do on their own.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import time
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jitort.bench.harness import ORT_SPIN_CHOICES, ort_session_options, ort_spin_modes, spin_label
from jitort.bench.machine import cpu_label


def conv_model(x_shape: tuple[int, ...], m: int, kernel: tuple[int, ...], strides: tuple[int, ...] | None = None,
               pads: tuple[int, ...] | None = None, group: int = 1, relu: bool = True, seed: int = 0) -> bytes:
    """One Conv (+ Relu) with random constant weights and bias."""
    rng = np.random.default_rng(seed)
    c = x_shape[1]
    w = (rng.standard_normal((m, c // group) + kernel) / math.sqrt(c // group * math.prod(kernel))).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) * 0.1
    r = len(kernel)
    attrs: dict[str, Any] = {"kernel_shape": list(kernel), "group": group,
                             "strides": list(strides or (1,) * r), "pads": list(pads or (0,) * 2 * r)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y" if not relu else "c"], **attrs)]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    mp = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    mp.ir_version = 8
    return mp.SerializeToString()


# name -> (input shape, M, kernel, strides, pads, group, relu)
LAYERS: dict[str, tuple[tuple[int, ...], int, tuple[int, ...], tuple[int, ...], tuple[int, ...], int, bool]] = {
    "r50 conv1 7x7s2 3->64 224": ((1, 3, 224, 224), 64, (7, 7), (2, 2), (3, 3, 3, 3), 1, True),
    "r50 1x1 64->256 56": ((1, 64, 56, 56), 256, (1, 1), (1, 1), (0, 0, 0, 0), 1, False),
    "r50 3x3 64->64 56": ((1, 64, 56, 56), 64, (3, 3), (1, 1), (1, 1, 1, 1), 1, True),
    "r50 1x1 128->512 28": ((1, 128, 28, 28), 512, (1, 1), (1, 1), (0, 0, 0, 0), 1, False),
    "r50 3x3 256->256 14": ((1, 256, 14, 14), 256, (3, 3), (1, 1), (1, 1, 1, 1), 1, True),
    "r50 3x3 256->256 28": ((1, 256, 28, 28), 256, (3, 3), (1, 1), (1, 1, 1, 1), 1, True),
    "r50 1x1s2 512->1024 28": ((1, 512, 28, 28), 1024, (1, 1), (2, 2), (0, 0, 0, 0), 1, False),
    "r50 3x3 512->512 7": ((1, 512, 7, 7), 512, (3, 3), (1, 1), (1, 1, 1, 1), 1, True),
    "mv2 conv1 3x3s2 3->32 224": ((1, 3, 224, 224), 32, (3, 3), (2, 2), (1, 1, 1, 1), 1, True),
    "mv2 expand 1x1 24->144 56": ((1, 24, 56, 56), 144, (1, 1), (1, 1), (0, 0, 0, 0), 1, True),
    "mv2 dw 3x3 144 56": ((1, 144, 56, 56), 144, (3, 3), (1, 1), (1, 1, 1, 1), 144, True),
    "mv2 dw 3x3s2 144 56": ((1, 144, 56, 56), 144, (3, 3), (2, 2), (0, 1, 0, 1), 144, True),
    "mv2 project 1x1 144->24 56": ((1, 144, 56, 56), 24, (1, 1), (1, 1), (0, 0, 0, 0), 1, False),
    "mv2 dw 3x3 960 7": ((1, 960, 7, 7), 960, (3, 3), (1, 1), (1, 1, 1, 1), 960, True),
    "audio stft 1->258 k256 s128 576": ((1, 1, 576), 258, (256,), (128,), (0, 0), 1, False),
    "audio stft 1->258 k256 s128 16000": ((1, 1, 16000), 258, (256,), (128,), (0, 0), 1, False),
}


def _cell(make_jit: Callable[[], Any], make_ort: Callable[[], Any], feeds: dict[str, np.ndarray], rounds: int,
          budget_s: float) -> tuple[list[float], list[float], float]:
    """(jitort's round times s, onnxruntime's, max abs error) over interleaved rounds."""
    sj, so = make_jit(), make_ort()
    yj = sj.run(None, feeds)[0]
    yo = so.run(None, feeds)[0]
    err = float(np.max(np.abs(yj.astype(np.float64) - yo))) if yo.size else 0.0
    scale = float(np.max(np.abs(yo))) if yo.size else 1.0
    if not np.allclose(yj, yo, rtol=1e-3, atol=1e-4 * max(1.0, scale)):
        print(f"    MISMATCH: max abs error {err:.3g} (output scale {scale:.3g})")
    for _ in range(3):
        sj.run(None, feeds)
        so.run(None, feeds)
    # repeats per sample so that a sample lasts >= ~2 ms (timer and scheduling noise)
    t0 = time.perf_counter()
    sj.run(None, feeds)
    one = time.perf_counter() - t0
    rep = max(1, int(0.002 / max(one, 1e-7)))
    tj: list[float] = []
    to: list[float] = []
    end = time.perf_counter() + budget_s
    for k in range(rounds):
        for sess, ts in ((sj, tj), (so, to)) if k % 2 == 0 else ((so, to), (sj, tj)):
            t0 = time.perf_counter()
            for _ in range(rep):
                sess.run(None, feeds)
            ts.append((time.perf_counter() - t0) / rep)
        if k >= 4 and time.perf_counter() > end:
            break
    return tj, to, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--budget", type=float, default=8.0, help="seconds of timing per cell at most")
    ap.add_argument("--only", choices=("models", "layers"), default=None)
    ap.add_argument("--filter", default="")
    ap.add_argument("--ort-spin", choices=ORT_SPIN_CHOICES, default="both",
                    help="onnxruntime's intra-op spinning in multi-thread cells: both (two cells), on (its "
                         "default), off (session.intra_op.allow_spinning=0)")
    args = ap.parse_args()

    import onnxruntime as ort

    import jitort
    from jitort.models import light_models, random_feeds, resolve_model

    threads = [int(t) for t in args.threads.split(",")]
    work: list[tuple[str, str, bytes, dict[str, np.ndarray]]] = []
    pat = re.compile(args.filter) if args.filter else None
    if args.only in (None, "models"):
        for name in light_models():
            if pat and not pat.search(name):
                continue
            mp = onnx.load(str(resolve_model(name)))
            mp.ir_version = min(mp.ir_version, 13)
            data = mp.SerializeToString()
            work.append(("models", name, data, random_feeds(mp, seed=0)))
    if args.only in (None, "layers"):
        for name, (xs, m, k, s, p, grp, relu) in LAYERS.items():
            if pat and not pat.search(name):
                continue
            x = np.random.default_rng(1).standard_normal(xs).astype(np.float32)
            work.append(("layers", name, conv_model(xs, m, k, s, p, grp, relu), {"x": x}))

    print(f"CPU: {cpu_label()}; jitort {jitort.__version__}, "
          f"onnxruntime {ort.__version__}")
    print(f"load average at start: {os.getloadavg()}")
    # one column per (threads, onnxruntime spinning): 2-thread cells are measured once against
    # onnxruntime with its default spinning and once with it off (harness.ort_spin_modes), each
    # its own interleaved cell, so one runtime's spinning threads never run between the other's calls
    cols = [(t, spin) for t in threads for spin in ort_spin_modes(t, args.ort_spin)]
    ratios: dict[tuple[str, str], list[float]] = {}
    rows = []
    for t, spin in cols:
        col = spin_label(t, spin)
        for group, name, data, feeds in work:
            def mk_j(data: bytes = data, t: int = t) -> Any:
                so = jitort.SessionOptions()
                so.intra_op_num_threads = t
                return jitort.InferenceSession(data, so, providers=["CPUExecutionProvider"])

            def mk_o(data: bytes = data, t: int = t, spin: bool = spin) -> Any:
                return ort.InferenceSession(data, ort_session_options(t, spin), providers=["CPUExecutionProvider"])
            sj, so_, err = _cell(mk_j, mk_o, feeds, args.rounds, args.budget)
            tj, to = statistics.median(sj), statistics.median(so_)
            r, rmin = tj / to, min(sj) / min(so_)
            ratios.setdefault((group, col), []).append(r)
            ratios.setdefault((group + " min", col), []).append(rmin)
            rows.append((group, name, col, tj, to, r, min(sj), min(so_), rmin))
            print(f"  [{col:9s}] {name:38s} median jitort {tj * 1e3:9.3f} ms  onnxruntime {to * 1e3:9.3f} ms  "
                  f"ratio {r:5.2f}x | min {min(sj) * 1e3:9.3f} / {min(so_) * 1e3:9.3f} ms  ratio {rmin:5.2f}x  "
                  f"(max err {err:.2g})", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print()
    print("ratios jitort / onnxruntime: of the minimums (of the medians); times: minimums, jitort / onnxruntime; "
          "'nospin': onnxruntime with session.intra_op.allow_spinning=0")
    print()
    labels = [spin_label(t, spin) for t, spin in cols]
    print("| workload | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    names = list(dict.fromkeys((g, n) for g, n, *_ in rows))
    for g, n in names:
        cells = []
        for col in labels:
            r = [row for row in rows if row[0] == g and row[1] == n and row[2] == col]
            cells.append(f"{r[0][8]:.2f}x ({r[0][5]:.2f}x) {r[0][6] * 1e3:.2f} / {r[0][7] * 1e3:.2f} ms" if r else "-")
        print(f"| {n} | " + " | ".join(cells) + " |")

    def gm(rs: list[float]) -> float:
        return math.exp(statistics.fmean(math.log(x) for x in rs))
    for g in ("models", "layers"):
        cells = []
        for col in labels:
            rs, rm = ratios.get((g, col)), ratios.get((g + " min", col))
            cells.append(f"**{gm(rm):.2f}x** ({gm(rs):.2f}x)" if rs and rm else "-")
        if any(c != "-" for c in cells):
            print(f"| geomean ({g}) | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
