"""Reporting: the terminal table, ``results.json``, ``results.md``, PNG charts, and the progress bar.

Charts need matplotlib (the ``bench`` extra); without it they are skipped with a note.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from jitort.bench.harness import BASELINE, Results

__all__ = ["Progress", "format_table", "write_all", "write_charts", "write_json", "write_markdown"]


class Progress:
    """A one-line progress bar on ``stream`` (stderr), drawn only when it is a terminal."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(1, total)
        self.done = 0
        self.label = ""
        self.t0 = time.monotonic()
        self.width = 0

    def step(self, label: str = "", n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self.label = label or self.label
        self._draw()

    def note(self, msg: str) -> None:
        if self.enabled:
            self._clear()
            print(msg, file=self.stream)
            self._draw()

    def close(self) -> None:
        if self.enabled:
            self._clear()

    def _clear(self) -> None:
        self.stream.write("\r" + " " * self.width + "\r")
        self.stream.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        frac = self.done / self.total
        bar = "#" * int(24 * frac)
        line = f"[{bar:<24}] {100 * frac:3.0f}% {time.monotonic() - self.t0:5.0f}s  {self.label}"
        cols = _columns()
        line = line[:cols - 1]
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return 100


# --- formatting ----------------------------------------------------------------------------------------

def _f(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def _pct(x: float | None) -> str:
    return "" if x is None else f" ({100 * x:.0f}%)" if x >= 0.01 else f" ({100 * x:.1g}%)"


def _count(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


COLUMNS = ("model", "runtime", "thr", "batch", "p50 ms", "p90 ms", "p99 ms", "min ms", "items/s",
           "GFLOP/s (%peak)", "GB/s (%peak)", "cold s", "warm s", "RSS MB", f"vs {BASELINE}", "agree")


def _row(r: dict[str, Any]) -> list[str]:
    head = [r["model"], r["runtime"], str(r["threads"]), str(r["batch"])]
    if r["status"] != "ok":
        err = (r["error"] or "failed").replace("\n", " ")
        return head + [f"FAILED: {err[:200]}"]
    lat = r["latency_ms"] or {}
    agree = "-" if r["agreement"] is None else "ok" if r["agreement"]["ok"] else "NO"
    ratio = "-" if r["ratio_p50"] is None else f"{r['ratio_p50']:.2f}x"
    return head + [_ms(lat.get("p50")), _ms(lat.get("p90")), _ms(lat.get("p99")), _ms(lat.get("min")),
                   _count(r["throughput_items_s"]),
                   _f(r["gflops_s"], ".3g") + _pct(r["frac_sgemm_peak"]),
                   _f(r["gbytes_s"], ".3g") + _pct(r["frac_copy_bw"]),
                   _f(r["session_cold_s"], ".2f"), _f(r["session_warm_s"], ".3f"),
                   _f(r["peak_rss_mb"], ".0f"), ratio, agree]


def _geomean_lines(res: Results) -> list[str]:
    lines = []
    for g in res.summary["geomean"]:
        val = "-" if g["geomean_ratio_p50"] is None else f"{g['geomean_ratio_p50']:.3f}x"
        ex = f"; left out (failed): {', '.join(g['excluded'])}" if g["excluded"] else ""
        lines.append(f"geomean p50 {g['runtime']}/{g['baseline']} at {g['threads']} thread(s), batch {g['batch']}: "
                     f"{val} over {len(g['models'])} model(s){ex}")
    return lines


def format_table(res: Results) -> str:
    """The records as an aligned text table, then the geometric means, failures and disagreements."""
    rows = [_row(r) for r in res.records]
    widths = [len(c) for c in COLUMNS]
    for row in rows:
        if len(row) == len(COLUMNS):
            widths = [max(w, len(c)) for w, c in zip(widths, row)]
    right = {2, 3} | set(range(4, len(COLUMNS)))

    def fmt(row: list[str]) -> str:
        padded = row if len(row) == len(COLUMNS) else row[:-1]  # a failure's message runs on unpadded
        cells = [c.rjust(w) if k in right else c.ljust(w) for k, (c, w) in enumerate(zip(padded, widths))]
        return "  ".join(cells + row[len(padded):]).rstrip()

    lines = [fmt(list(COLUMNS)), "  ".join("-" * w for w in widths)]
    lines += [fmt(row) for row in rows]
    lines.append("")
    lines += _geomean_lines(res)
    peaks = res.machine.get("peaks") or {}
    for t, p in sorted(peaks.items(), key=lambda kv: int(kv[0])):
        lines.append(f"peaks at {t} thread(s): sgemm {p['sgemm_gflops']:.1f} GFLOP/s, "
                     f"copy {p['copy_gbytes_s']:.1f} GB/s" + (" (quick, not a real peak)" if p.get("quick") else ""))
    for d in res.summary["disagreements"]:
        lines.append(f"DISAGREE: {d['model']} {d['runtime']} t{d['threads']} b{d['batch']}: "
                     f"max abs {_f(d['max_abs'])}, max rel {_f(d['max_rel'])} vs {BASELINE}")
    cpu = res.machine.get("cpu", {})
    lines.append(f"machine: {cpu.get('model_name')}, {cpu.get('usable_cpus')} usable CPU(s); "
                 f"{_versions_line(res.versions)}")
    return "\n".join(lines)


def _versions_line(v: dict[str, Any]) -> str:
    return ", ".join(f"{k} {val}" for k, val in v.items() if val and k != "implementation")


# --- files -------------------------------------------------------------------------------------------

def write_json(res: Results, path: Path) -> Path:
    path.write_text(res.to_json(indent=1) + "\n", encoding="utf-8")
    return path


METHOD = """\
Each runtime runs in processes of its own. Cold: a fresh process and an empty jitort cache directory
creates a session (for jitort this includes compiling its kernels) and runs it once; warm: a second
session in that process. Then, per setting (threads x batch), one new process per runtime on the
populated cache: a session, a first run (outputs compared with onnxruntime's, rtol {rtol:g} /
atol {atol:g}), a warm-up of at least {warmup_s:g} s, and {rounds} rounds in which the runtimes take
turns (A, B, A, B, ...), each round about {round_s:g} s of calls timed one by one. Latency percentiles
pool every call of every round; throughput is batch / mean latency; the ratio is the runtime's p50
over onnxruntime's, and the geometric mean is taken over models. RSS is the peak resident set of the
process that ran the setting (VmHWM on Linux: getrusage's ru_maxrss would include the parent's peak);
"cold peak" that of the compiling process. FLOPs and bytes are counted per ONNX node from inferred
shapes (unfused) and divided by the p50. Peaks: float32 GEMM at 1024^3 and 2048^3 (the best of both
sizes and of numpy's and scipy's BLAS) and np.copyto of 256 MiB (bytes read + written), at the
setting's thread count; a model whose data stays in cache can exceed the copy bandwidth."""


def write_markdown(res: Results, path: Path, charts: list[Path] | None = None) -> Path:
    cfg = res.config
    cpu = res.machine.get("cpu", {})
    out = ["# jitort bench results", "",
           f"- created {res.created}, took {res.seconds:.0f} s",
           f"- machine: {cpu.get('model_name')} ({cpu.get('machine')}), {cpu.get('logical_cpus')} logical CPUs, "
           f"{cpu.get('usable_cpus')} usable, {cpu.get('physical_cores') or '?'} physical cores"
           + (f", hypervisor {cpu['hypervisor']}" if cpu.get("hypervisor") else ""),
           f"- versions: {_versions_line(res.versions)}"]
    for t, p in sorted((res.machine.get("peaks") or {}).items(), key=lambda kv: int(kv[0])):
        out.append(f"- peaks at {t} thread(s): sgemm {p['sgemm_gflops']:.1f} GFLOP/s, "
                   f"copy {p['copy_gbytes_s']:.1f} GB/s")
    out += [f"- models: {', '.join(cfg['models'])}; runtimes {', '.join(cfg['runtimes'])}; "
            f"threads {cfg['threads']}; batch {cfg['batch']}; {cfg['rounds']} rounds", "",
            "## Method", "", METHOD.format(**cfg), "", "## Results", "",
            "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in res.records:
        row = _row(r)
        row += [""] * (len(COLUMNS) - len(row))
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    out += [""] + [f"- {line}" for line in _geomean_lines(res)]
    if res.summary["disagreements"]:
        out += ["", "## Outputs that disagree with onnxruntime", ""]
        out += [f"- {d['model']} ({d['runtime']}, {d['threads']} thread(s), batch {d['batch']}): "
                f"max abs {_f(d['max_abs'])}, max rel {_f(d['max_rel'])}" for d in res.summary["disagreements"]]
    if res.summary["failures"]:
        out += ["", "## Failures", ""]
        out += [f"- {f['model']} ({f['runtime']}, {f['threads']} thread(s), batch {f['batch']}): "
                f"{(f['error'] or '').splitlines()[0] if f['error'] else ''}" for f in res.summary["failures"]]
    notes = sorted({f"{r['model']}: {n}" for r in res.records for n in r["notes"]})
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if charts:
        out += ["", "## Charts", ""] + [f"![{p.stem}]({p.name})" for p in charts]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def write_charts(res: Results, out_dir: Path) -> list[Path]:
    """``ratio.png`` (p50 ratio per model and setting, log scale) and ``latency.png`` (latency
    distribution per model: box p25-p75, median, whiskers p1-p99). Empty without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return []
    paths: list[Path] = []
    ok = [r for r in res.records if r["status"] == "ok" and r["latency_ms"] is not None]
    models = list(dict.fromkeys(r["model"] for r in res.records))
    settings = sorted({(r["threads"], r["batch"]) for r in res.records})
    ratios = [r for r in ok if r["ratio_p50"] is not None and r["runtime"] != BASELINE]
    if ratios:
        fig, ax = plt.subplots(figsize=(8, max(2.8, 1.2 + 0.32 * len(models) * len(settings))))
        labels, vals, lo, hi = [], [], [], []
        for m in models:
            for t, b in settings:
                for r in ratios:
                    if (r["model"], r["threads"], r["batch"]) == (m, t, b):
                        rr = [x for x in r["ratio_rounds"] or [] if x]
                        labels.append(f"{m}  t{t} b{b}" + ("" if r["runtime"] == "jitort" else f" {r['runtime']}"))
                        vals.append(r["ratio_p50"])
                        lo.append(r["ratio_p50"] - min(rr, default=r["ratio_p50"]))
                        hi.append(max(rr, default=r["ratio_p50"]) - r["ratio_p50"])
        y = list(range(len(vals)))[::-1]
        # bars grow from 1x: right (red) when slower than the baseline, left (green) when faster
        ax.barh(y, [v - 1 for v in vals], left=1, color=["tab:green" if v <= 1 else "tab:red" for v in vals])
        ax.errorbar(vals, y, xerr=[lo, hi], fmt="none", ecolor="0.3", capsize=2)
        ax.set_yticks(y, labels, fontsize=8)
        ax.axvline(1.0, color="k", lw=0.8)
        for g in res.summary["geomean"]:
            if g["geomean_ratio_p50"] is not None and len(settings) == 1:
                ax.axvline(g["geomean_ratio_p50"], color="tab:blue", ls="--", lw=1,
                           label=f"geomean {g['geomean_ratio_p50']:.2f}x")
        for yy, v, h, l in zip(y, vals, hi, lo):
            right = v >= 1
            ax.annotate(f"{v:.2f}x", (v + h if right else v - l, yy), xytext=(4 if right else -4, -3),
                        textcoords="offset points", fontsize=7, ha="left" if right else "right")
        ax.set_xscale("log")
        lo_x, hi_x = ax.get_xlim()
        ax.set_xlim(min(lo_x, 0.8) * 0.85, max(hi_x, 1.25) * 1.12)  # room for the labels
        fmt = FuncFormatter(lambda v, _: f"{v:g}x")
        ax.xaxis.set_major_formatter(fmt)
        ax.xaxis.set_minor_formatter(fmt)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xlabel(f"p50 latency, jitort / {BASELINE} (< 1: jitort faster); bars: range of per-round ratios")
        ax.set_title("Latency ratio per model")
        fig.tight_layout()
        paths.append(out_dir / "ratio.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    if ok:
        groups = [m for m in models if any(r["model"] == m for r in ok)]
        ncol = min(3, len(groups))
        nrow = (len(groups) + ncol - 1) // ncol
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3 * nrow), squeeze=False)
        for ax, m in zip(axes.flat, groups):
            rs = [r for r in ok if r["model"] == m]
            boxes = []
            for r in rs:
                q = r["quantiles_ms"]
                name = "ort" if r["runtime"] == BASELINE else r["runtime"]
                boxes.append({"label": f"{name}\nt{r['threads']} b{r['batch']}", "med": q[50], "q1": q[25],
                              "q3": q[75], "whislo": q[1], "whishi": q[99], "fliers": []})
            ax.bxp(boxes, showfliers=False)
            ax.set_title(m, fontsize=9)
            if max(b["whishi"] for b in boxes) > 20 * min(b["whislo"] for b in boxes):  # a long tail: log
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
                ax.set_ylabel("ms (log scale)")
            else:
                ax.set_ylabel("ms")
            ax.tick_params(axis="x", labelsize=7)
        for ax in list(axes.flat)[len(groups):]:
            ax.axis("off")
        fig.suptitle("Latency distribution (box p25-p75, line median, whiskers p1-p99)", fontsize=10)
        fig.tight_layout()
        paths.append(out_dir / "latency.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_all(res: Results, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``results.json``, PNG charts (with matplotlib) and ``results.md`` into ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {"json": write_json(res, d / "results.json")}
    charts = write_charts(res, d)
    files["charts"] = charts
    files["markdown"] = write_markdown(res, d / "results.md", charts)
    return files
