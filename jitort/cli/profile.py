"""``jitort profile MODEL``: where the time goes, jitort next to onnxruntime, per op type.

Both runtimes load the model with ``enable_profiling`` on and run the same seeded inputs
(``jitort.bench.workload``), interleaved: a jitort run, an onnxruntime run, and so on; the first
``--warmup`` runs of each are left out. Each writes its Chrome trace (jitort's: one event per plan
step, ``jitort.profiling``; onnxruntime's: one per kernel), and the command reads both back:

* per op type, the median over the measured runs of the time that op type's events took in one run,
  jitort vs onnxruntime, the ratio and the gap, the largest gap first;
* jitort's slowest steps, with the ONNX nodes they cover, shapes, kernel, achieved GFLOP/s and GB/s and
  their fractions of the machine's peaks.

The op types are what each runtime executed: a jitort step is named by its op (a fused elementwise
group by its ops, "Add+Relu"); fused kernels of either runtime lose their "Fused" prefix (jitort's
and onnxruntime's "FusedConv": a Conv with its folded BatchNormalization, residual Add and
activation, -> "Conv") and onnxruntime's layout kernels (ReorderInput/ReorderOutput) stay as they
are. Where the runtimes fuse differently, a row has time on one side only: compare totals across
such rows.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jitort
from jitort.cli.common import EXIT_FAILED, EXIT_MISMATCH, EXIT_OK, UsageError, compare, ort_session, parse_dims
from jitort.profiling import PEAKS_CONFIG_KEY

__all__ = ["OpRow", "add_parser", "by_op_type", "cmd_profile", "format_comparison", "measured_runs"]

PREFIX = "Fused"  # onnxruntime's fused kernels: FusedConv, FusedGemm, FusedMatMul ...


def canonical_op(op: str) -> str:
    return op[len(PREFIX):] if op.startswith(PREFIX) and len(op) > len(PREFIX) else op


def measured_runs(events: list[dict[str, Any]], skip: int = 0) -> list[list[dict[str, Any]]]:
    """The node events of each run in a Chrome trace of onnxruntime's layout (a ``model_run`` event
    per run, ``cat: "Node"`` events inside it), in run order, the first ``skip`` runs left out."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    nodes = sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e["ts"])
    out: list[list[dict[str, Any]]] = []
    for r in runs:
        lo, hi = r["ts"], r["ts"] + r["dur"]
        out.append([e for e in nodes if e.get("tid") == r.get("tid") and lo <= e["ts"] <= hi])
    return out[skip:]


@dataclass
class OpRow:
    op: str
    ms: dict[str, float] = field(default_factory=dict)     # runtime -> median ms per run
    nodes: dict[str, int] = field(default_factory=dict)    # runtime -> events per run

    def gap(self, a: str, b: str) -> float:
        return self.ms.get(a, 0.0) - self.ms.get(b, 0.0)


def by_op_type(runs: dict[str, list[list[dict[str, Any]]]]) -> list[OpRow]:
    """Per op type, for each runtime, the median over its runs of that op type's time in a run."""
    rows: dict[str, OpRow] = {}
    for runtime, rs in runs.items():
        if not rs:
            continue
        per_run: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        for k, events in enumerate(rs):
            for e in events:
                op = canonical_op(str(e.get("args", {}).get("op_name", "?")))
                per_run.setdefault(op, [0.0] * len(rs))[k] += e["dur"] / 1000
                if k == 0:
                    counts[op] = counts.get(op, 0) + 1
        for op, ms in per_run.items():
            row = rows.setdefault(op, OpRow(op))
            row.ms[runtime] = statistics.median(ms)
            row.nodes[runtime] = counts.get(op, 0)
    return list(rows.values())


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_comparison(rows: list[OpRow], a: str = "jitort", b: str = "onnxruntime", width: int = 26) -> str:
    """The per-op-type table, the largest gap (``a`` slower than ``b``) first, with totals."""
    rows = sorted(rows, key=lambda r: r.gap(a, b), reverse=True)
    lines = [f"{'op type':{width}} {a + ' ms':>10} {'n':>4} {b + ' ms':>15} {'n':>4} {'ratio':>7} {'gap ms':>8}"]
    for r in rows:
        ta, tb = r.ms.get(a), r.ms.get(b)
        ratio = f"{ta / tb:.2f}x" if ta is not None and tb else "-"
        op = r.op if len(r.op) <= width else r.op[:width - 3] + "..."
        lines.append(f"{op:{width}} {_ms(ta):>10} {r.nodes.get(a, 0):>4} {_ms(tb):>15} {r.nodes.get(b, 0):>4} "
                     f"{ratio:>7} {r.gap(a, b):>+8.3f}")
    ta, tb = sum(r.ms.get(a, 0.0) for r in rows), sum(r.ms.get(b, 0.0) for r in rows)
    lines.append(f"{'total (sum of medians)':{width}} {ta:>10.3f} {'':>4} {tb:>15.3f} {'':>4} "
                 f"{(f'{ta / tb:.2f}x' if tb else '-'):>7} {ta - tb:>+8.3f}")
    return "\n".join(lines)


def _shape_text(ts: list[dict[str, list[int]]]) -> str:
    return ",".join("x".join(str(d) for d in next(iter(t.values()))) or "scalar" for t in ts)


def format_top_steps(runs: list[list[dict[str, Any]]], top: int) -> str:
    """jitort's ``top`` slowest steps by their median time over ``runs``, with shapes, kernel and the
    rates achieved at that median."""
    by_index: dict[str, list[dict[str, Any]]] = {}
    for events in runs:
        for e in events:
            by_index.setdefault(e["args"]["node_index"], []).append(e)
    medians = sorted(((statistics.median(e["dur"] for e in es), es[0]) for es in by_index.values()),
                     key=lambda m: m[0], reverse=True)[:top]
    lines = [f"{'ms':>7} {'GFLOP/s':>8} {'%peak':>6} {'GB/s':>7} {'%peak':>6}  {'op':14} "
             "step (nodes) / inputs -> outputs / kernel"]
    for us, e in medians:
        a = e["args"]
        gf = None if a.get("flops") is None else a["flops"] / us / 1e3
        gb = a["bytes"] / us / 1e3
        fr = "-" if gf is None or "peak_gflops_s" not in a else f"{100 * gf / a['peak_gflops_s']:.1f}"
        br = "-" if "peak_gbytes_s" not in a else f"{100 * gb / a['peak_gbytes_s']:.1f}"
        name = ascii(e["name"].removesuffix("_kernel_time"))[1:-1]
        covered = "" if len(a["nodes"]) <= 1 else f" (+{len(a['nodes']) - 1}: {'+'.join(a['node_ops'][1:])})"
        lines.append(f"{us / 1000:>7.3f} {('-' if gf is None else f'{gf:.2f}'):>8} {fr:>6} {gb:>7.2f} {br:>6}  "
                     f"{a['op_name'][:14]:14} {name[:60]}{covered}")
        lines.append(f"{'':>40}  {_shape_text(a['input_type_shape'])} -> {_shape_text(a['output_type_shape'])}"
                     f"  [{a['kernel']}]")
    return "\n".join(lines)


def _wall_ms(events: list[dict[str, Any]], skip: int) -> float:
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[skip:]
    return statistics.median(e["dur"] for e in runs) / 1000 if runs else float("nan")


def cmd_profile(args: argparse.Namespace) -> int:
    import numpy as np

    # deferred: the CLI answers --help without importing the bench machinery
    from jitort.bench.machine import cpu_info
    from jitort.bench.workload import prepare
    if args.runs < 1 or args.warmup < 0:
        raise UsageError("--runs must be at least 1 and --warmup at least 0")
    try:
        wl = prepare(args.model, args.batch, parse_dims(args.dim), args.seq, args.seed)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="jitort-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    model_bytes = wl.proto.SerializeToString()
    so = jitort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(out / "jitort")
    so.add_session_config_entry(PEAKS_CONFIG_KEY, args.peaks)
    try:
        jsess = jitort.InferenceSession(model_bytes, so)
    except Exception as e:  # noqa: BLE001 - reported in one line
        print(f"jitort profile: jitort failed to load {args.model}: {type(e).__name__}: {e}")
        return EXIT_FAILED
    try:
        osess = ort_session(wl.proto, args.threads, profile_prefix=str(out / "onnxruntime"))
    except ImportError:
        raise UsageError("onnxruntime is not installed (pip install onnxruntime)") from None
    except Exception as e:  # noqa: BLE001
        print(f"jitort profile: onnxruntime failed to load {args.model}: {type(e).__name__}: {e}")
        return EXIT_FAILED
    try:
        for _ in range(args.warmup + args.runs):
            got = jsess.run(None, wl.feeds)
            want = osess.run(None, wl.feeds)
    except Exception as e:  # noqa: BLE001
        print(f"jitort profile: a run failed: {type(e).__name__}: {e}")
        return EXIT_FAILED
    agree = [compare(np.asarray(g), np.asarray(w)) for g, w in zip(got, want)]
    traces = {"jitort": jsess.end_profiling(), "onnxruntime": osess.end_profiling()}
    events = {k: json.loads(Path(p).read_text()) for k, p in traces.items()}
    runs = {k: measured_runs(ev, args.warmup) for k, ev in events.items()}
    cpu = cpu_info()
    peak = next((e["args"] for e in events["jitort"] if "peak_gflops_s" in e.get("args", {})), None)
    print(f"model {args.model} ({wl.source}), inputs {wl.input_shapes}")
    print(f"CPU {cpu['model_name']}, {cpu['usable_cpus']} usable CPUs; {args.threads} thread(s); "
          f"{args.runs} measured runs after {args.warmup} warm-up, interleaved")
    if peak is not None:
        print(f"peaks at {args.threads} thread(s): sgemm {peak['peak_gflops_s']:.1f} GFLOP/s, "
              f"copy {peak['peak_gbytes_s']:.1f} GB/s")
    wj, wo = _wall_ms(events["jitort"], args.warmup), _wall_ms(events["onnxruntime"], args.warmup)
    print(f"run (median): jitort {wj:.3f} ms, onnxruntime {wo:.3f} ms, ratio {wj / wo:.2f}x")
    print()
    print(format_comparison(by_op_type(runs)))
    if args.top:
        print()
        print(f"jitort's {args.top} slowest steps (median run):")
        print(format_top_steps(runs["jitort"], args.top))
    print()
    for k, p in traces.items():
        print(f"{k} trace: {os.path.abspath(p)}")
    ok = all(a for a, _ in agree)
    print("outputs agree with onnxruntime" if ok else
          "outputs DIFFER from onnxruntime: " + "; ".join(note for a, note in agree if not a))
    return EXIT_OK if ok else EXIT_MISMATCH


def add_parser(sub: Any) -> None:
    p = sub.add_parser("profile", help="per-op time of jitort next to onnxruntime's per-node profile",
                       description="Run MODEL on jitort and on onnxruntime with profiling on, on the same seeded "
                                   "inputs, interleaved; print per op type the median time per run of each, "
                                   "their ratio and gap (largest first), and jitort's slowest steps with "
                                   "achieved GFLOP/s and GB/s against the machine's peaks. MODEL is an .onnx "
                                   "path, light_<name>, or a zoo model (e.g. bert:hidden=256,heads=8). Exit "
                                   "code 0 ok, 1 outputs disagree, 2 usage error, 3 a runtime failed.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="intra-op threads of both (default 1)")
    p.add_argument("--runs", type=int, default=10, metavar="N", help="measured runs (default 10)")
    p.add_argument("--warmup", type=int, default=2, metavar="N", help="runs left out first (default 2)")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="jitort's slowest steps to list (default 10; 0: none)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="the inputs' first dim (default 1)")
    p.add_argument("--dim", action="append", metavar="NAME=N", help="value of a symbolic input dim; repeatable")
    p.add_argument("--seq", type=int, metavar="N", help="other symbolic dims than the batch (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")
    p.add_argument("--peaks", choices=("measure", "quick", "off"), default="measure",
                   help="the machine's sgemm/copy peaks: measured once and cached (default), quick (small, "
                        "not a real peak), off")
    p.add_argument("--out", metavar="DIR", help="write the two traces to DIR (default: a new temporary directory)")
    p.set_defaults(fn=cmd_profile)
