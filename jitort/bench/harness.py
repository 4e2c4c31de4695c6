"""The benchmark method: worker processes, warm-ups, interleaved rounds, one record per measurement.

For each model, and each runtime:

1. **Cold** (unless ``cold=False``): a fresh process whose jitort cache directory is new and empty
   creates a session (timed: for jitort this includes compiling every kernel) and runs it once
   (timed: jitort may compile library kernels at the first run); then it releases that session and
   creates a second one in the same process (**warm**: the cache and Numba's loaded code are there)
   and runs it once. Its peak RSS is the peak of compiling. The setting workers below share that
   cache directory; with ``cold=False`` they use ``$JITORT_CACHE_DIR`` as it is.
2. **Per setting** (threads x batch): one new process per runtime, alive side by side: import,
   create a session (``session_new_process_s``: a new process on a populated cache; where the model
   differs from the cold one's, e.g. a fixed-batch CNN rewritten for another batch, jitort compiles
   it here, and ``compiled_new_process`` counts the functions Numba compiled), first run,
   outputs saved and compared with onnxruntime's; then a warm-up of each runtime (at least
   ``warmup_s`` seconds and ``min_iters`` calls); the calls per round are set per runtime so that a
   round lasts about ``round_s``; then ``rounds`` rounds, the runtimes taking turns (A, B, A, B, ...),
   so slow drift and noisy neighbours hit both alike. Every call is timed on its own; the statistics
   pool all calls of all rounds, and a paired ratio per round (medians of the same round) shows how
   stable the comparison is. The peak RSS of a setting is its process's peak resident set at the end
   (``worker.peak_rss_kb``: VmHWM on Linux, where ``ru_maxrss`` would start from the harness's own
   peak): the interpreter, the runtime's libraries, one session and its runs at that batch.

A failure (an op jitort does not implement, a crash, a hang past ``timeout_s``) is recorded in the
records of that runtime and model and the benchmark goes on; a failure at the cold session skips the
model's settings for that runtime (they would fail the same way).

Threads: jitort ``SessionOptions.intra_op_num_threads`` (it limits BLAS and Numba pools);
onnxruntime ``intra_op_num_threads`` with ``inter_op_num_threads = 1`` and its default spinning. The
runtime ``onnxruntime-nospin`` (``--runtimes jitort,onnxruntime,onnxruntime-nospin``) is onnxruntime with
``session.intra_op.allow_spinning=0``: jitort's records then also carry ``ratio_p50_nospin`` and the
summary a geomean against it (why both: ``ort_spin_modes``).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from jitort.bench import machine, stats
from jitort.bench.agreement import agreement, load_npz
from jitort.bench.flops import ModelCount, count_model
from jitort.bench.workers import Worker, WorkerError
from jitort.bench.workload import Workload, load_model, prepare

__all__ = ["BASELINE", "BenchConfig", "NOSPIN", "ORT_SPIN_CHOICES", "Results", "RUNTIMES", "ort_session_options",
           "ort_spin_modes", "run_benchmark", "spin_label"]

NOSPIN = "onnxruntime-nospin"  # onnxruntime with session.intra_op.allow_spinning=0 (see ort_spin_modes)
RUNTIMES = ("jitort", "onnxruntime", NOSPIN)
ALIASES = {"ort": "onnxruntime", "onnx_runtime": "onnxruntime", "ort-nospin": NOSPIN}
BASELINE = "onnxruntime"
SCHEMA = "jitort.bench/1"

# --- onnxruntime's spinning threads --------------------------------------------------------------------
# onnxruntime's intra-op worker threads spin for a while after each parallel section (its default,
# ``session.intra_op.allow_spinning=1``). In a benchmark that interleaves jitort and onnxruntime in one
# process (or on one 2-core machine), those spinning threads take the CPU that jitort's next run needs:
# light_resnet50 at 2 threads measured 1.93x with onnxruntime spinning, 1.43x with it off. Neither number
# alone is the honest one (spinning is what onnxruntime users get; a machine with other work on it is
# what the spinning costs), so the scripts that print 2-thread tables report both.
ORT_SPIN_CHOICES = ("both", "on", "off")


def ort_spin_modes(threads: int, choice: str = "both") -> list[bool]:
    """The onnxruntime spinning settings (True: its default) to measure at ``threads`` intra-op threads
    for ``--ort-spin choice``. One thread has no intra-op pool to spin: [True] only."""
    if choice not in ORT_SPIN_CHOICES:
        raise ValueError(f"--ort-spin must be one of {', '.join(ORT_SPIN_CHOICES)}, got {choice!r}")
    if threads <= 1:
        return [True]
    return {"both": [True, False], "on": [True], "off": [False]}[choice]


def ort_session_options(threads: int, spinning: bool = True) -> Any:
    """onnxruntime SessionOptions as the benchmarks use them: ``threads`` intra-op threads, one inter-op
    thread, warnings off, and ``session.intra_op.allow_spinning=0`` when not ``spinning``."""
    import onnxruntime  # deferred: jitort.bench is imported by the CLI, onnxruntime only when measuring
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def spin_label(threads: int, spinning: bool) -> str:
    """A table column's name: ``1T``, ``2T`` (onnxruntime spinning), ``2T nospin``."""
    return f"{threads}T" if spinning or threads <= 1 else f"{threads}T nospin"



@dataclass
class BenchConfig:
    """Everything a benchmark run depends on (``jitort bench``'s options)."""

    models: list[str]
    runtimes: list[str] = field(default_factory=lambda: list(RUNTIMES))
    threads: list[int] = field(default_factory=lambda: [1])
    batch: list[int] = field(default_factory=lambda: [1])
    rounds: int = 10
    warmup_s: float = 0.5
    round_s: float = 0.25
    min_iters: int = 3
    max_iters: int = 100_000
    dims: dict[str, int] = field(default_factory=dict)
    seq: int | None = None
    seed: int = 0
    cold: bool = True
    peaks: bool = True
    quick_peaks: bool = False
    timeout_s: float = 900.0
    rtol: float = 1e-3
    atol: float = 1e-4

    def __post_init__(self) -> None:
        self.runtimes = [ALIASES.get(r, r) for r in self.runtimes]
        bad = [r for r in self.runtimes if r not in RUNTIMES]
        if bad:
            raise ValueError(f"unknown runtime(s) {bad}; known: {', '.join(RUNTIMES)}")
        if len(set(self.runtimes)) != len(self.runtimes) or not self.runtimes:
            raise ValueError(f"runtimes must be distinct and not empty, got {self.runtimes}")
        if not self.models:
            raise ValueError("no models to benchmark")
        for name, vals in (("threads", self.threads), ("batch", self.batch)):
            if not vals or any(int(v) < 1 for v in vals):
                raise ValueError(f"{name} must be positive integers, got {vals}")
        if self.rounds < 1 or self.min_iters < 1 or self.max_iters < self.min_iters:
            raise ValueError("rounds and min_iters must be >= 1 and max_iters >= min_iters")


@dataclass
class Results:
    """A benchmark's outcome: ``records`` (one per model x runtime x setting) and their context."""

    config: dict[str, Any]
    machine: dict[str, Any]
    versions: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    created: str
    seconds: float
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] != "ok"]

    @property
    def disagreements(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["agreement"] is not None and not r["agreement"]["ok"]]

    def exit_status(self) -> int:
        """0: everything ran and agrees; 1: some outputs disagree; 3: some runtime failed on a model."""
        return 3 if self.failures else 1 if self.disagreements else 0


# --- records -----------------------------------------------------------------------------------------

def _empty_record(model: str, source: str, runtime: str, threads: int, batch: int) -> dict[str, Any]:
    return {"model": model, "source": source, "runtime": runtime, "threads": threads, "batch": batch,
            "status": "ok", "error": None, "input_shapes": None, "notes": [],
            "latency_ms": None, "quantiles_ms": None, "round_p50_ms": None, "round_cv": None,
            "iters_per_round": None, "rounds": None, "throughput_items_s": None,
            "session_cold_s": None, "first_run_cold_s": None, "session_warm_s": None,
            "first_run_warm_s": None, "session_new_process_s": None, "first_run_s": None,
            "import_s": None, "compiled_cold": None, "compiled_new_process": None,
            "peak_rss_mb": None, "baseline_rss_mb": None, "cold_peak_rss_mb": None,
            "flops": None, "bytes": None, "counts_complete": None,
            "gflops_s": None, "gbytes_s": None, "frac_sgemm_peak": None, "frac_copy_bw": None,
            "agreement": None, "ratio_p50": None, "ratio_rounds": None, "ratio_p50_nospin": None}


def _mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024.0


class _NullProgress:
    def step(self, label: str = "", n: int = 1) -> None:
        pass

    def note(self, msg: str) -> None:
        pass

    def close(self) -> None:
        pass


# --- the run -----------------------------------------------------------------------------------------

class _Bench:
    def __init__(self, cfg: BenchConfig, tmp: Path, peaks: dict[str, Any], progress: Any) -> None:
        self.cfg = cfg
        self.tmp = tmp
        self.peaks = peaks
        self.progress = progress
        self.nworkers = 0

    def worker(self, runtime: str, cache_dir: Path | None, tag: str) -> Worker:
        env = dict(os.environ)
        if cache_dir is not None:
            env["JITORT_CACHE_DIR"] = str(cache_dir)
        self.nworkers += 1
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)[-60:]
        return Worker(runtime, env, self.tmp / f"worker-{self.nworkers:03d}-{runtime}-{tag}.log")

    def model(self, index: int, spec: str) -> list[dict[str, Any]]:
        cfg = self.cfg
        settings = [(t, b) for t in cfg.threads for b in cfg.batch]
        mdir = self.tmp / f"model-{index:02d}"
        mdir.mkdir()
        cache_dir = mdir / "cache" if cfg.cold else None
        recs = {(rt, t, b): _empty_record(spec, spec, rt, t, b) for t, b in settings for rt in cfg.runtimes}
        per_setting = len(cfg.runtimes) * (2 + cfg.rounds)
        try:
            loaded = load_model(spec)
        except Exception as e:  # noqa: BLE001 - a model that cannot load fails its records, not the run
            self._fail_all(recs.values(), f"cannot load the model: {type(e).__name__}: {e}")
            self.progress.step(spec, len(settings) * per_setting + (len(cfg.runtimes) if cfg.cold else 0))
            return list(recs.values())
        for r in recs.values():
            r["source"] = loaded[1]
        workloads: dict[int, tuple[Workload, Path, Path, ModelCount | None]] = {}

        def workload(b: int) -> tuple[Workload, Path, Path, ModelCount | None]:
            if b not in workloads:
                w = prepare(spec, b, cfg.dims, cfg.seq, cfg.seed, loaded=loaded)
                path, feeds = mdir / f"model-b{b}.onnx", mdir / f"feeds-b{b}.npz"
                onnx.save(w.proto, str(path))
                np.savez(feeds, **w.feeds)
                try:
                    count: ModelCount | None = count_model(w.proto, {k: v.shape for k, v in w.feeds.items()})
                except Exception:  # noqa: BLE001 - counts are optional
                    count = None
                workloads[b] = (w, path, feeds, count)
            return workloads[b]

        failed: dict[str, str] = {}
        cold: dict[str, dict[str, Any]] = {}
        if cfg.cold:
            t0, b0 = settings[0]
            try:
                _, path0, feeds0, _ = workload(b0)
            except Exception as e:  # noqa: BLE001
                self._fail_all(recs.values(), f"cannot prepare inputs: {type(e).__name__}: {e}")
                self.progress.step(spec, len(settings) * per_setting + len(cfg.runtimes))
                return list(recs.values())
            for rt in cfg.runtimes:
                self.progress.step(f"{spec} {rt} cold", 0)
                w = self.worker(rt, cache_dir, f"{spec}-cold")
                try:
                    rep = w.call({"cmd": "open", "runtime": rt, "model": str(path0), "threads": t0,
                                  "sessions": 2, "feeds": str(feeds0), "outputs": None}, cfg.timeout_s)
                    cold[rt] = {"session_cold_s": rep["session_s"][0], "first_run_cold_s": rep["first_run_s"][0],
                                "session_warm_s": rep["session_s"][1], "first_run_warm_s": rep["first_run_s"][1],
                                "compiled_cold": rep["compiled"][0], "cold_peak_rss_mb": _mb(rep["rss_kb"])}
                except WorkerError as e:
                    failed[rt] = f"session creation (cold): {e}"
                    self.progress.note(f"{spec}: {rt} failed: {e}")
                finally:
                    w.close()
                self.progress.step(f"{spec} {rt} cold")

        for t, b in settings:
            label = f"{spec} t{t} b{b}"
            try:
                wl, path, feeds, count = workload(b)
            except Exception as e:  # noqa: BLE001
                for rt in cfg.runtimes:
                    self._fail(recs[(rt, t, b)], f"cannot prepare inputs: {type(e).__name__}: {e}")
                self.progress.step(label, per_setting)
                continue
            for rt in cfg.runtimes:
                r = recs[(rt, t, b)]
                r["input_shapes"] = wl.input_shapes
                r["notes"] = list(wl.notes)
                r.update(cold.get(rt, {}))
                if count is not None:
                    r.update(flops=count.flops, bytes=count.bytes, counts_complete=count.complete)
                    if not count.complete:
                        r["notes"].append(f"FLOP/byte counts are lower bounds: {len(count.unknown)} node(s) "
                                          f"with unknown shapes")
                if rt in failed:
                    self._fail(r, failed[rt])
            self._setting(spec, t, b, wl, path, feeds, cache_dir, recs, failed, label)
        self._ratios([recs[(rt, t, b)] for t, b in settings for rt in self.cfg.runtimes])
        return list(recs.values())

    def _setting(self, spec: str, t: int, b: int, wl: Workload, path: Path, feeds: Path, cache_dir: Path | None,
                 recs: dict[tuple[str, int, int], dict[str, Any]], failed: dict[str, str], label: str) -> None:
        cfg = self.cfg
        workers: dict[str, Worker] = {}
        outputs: dict[str, tuple[list[np.ndarray], list[str]]] = {}
        times: dict[str, list[list[float]]] = {}
        iters: dict[str, int] = {}
        try:
            for rt in cfg.runtimes:
                if rt in failed:
                    self.progress.step(label, 2 + cfg.rounds)
                    continue
                w = workers[rt] = self.worker(rt, cache_dir, f"{spec}-t{t}-b{b}")
                out_path = self.tmp / f"out-{w.log_path.stem}.npz"
                try:
                    rep = w.call({"cmd": "open", "runtime": rt, "model": str(path), "threads": t, "sessions": 1,
                                  "feeds": str(feeds), "outputs": str(out_path)}, cfg.timeout_s)
                    recs[(rt, t, b)].update(session_new_process_s=rep["session_s"][0],
                                            first_run_s=rep["first_run_s"][0], import_s=rep["import_s"],
                                            compiled_new_process=rep["compiled"][0],
                                            baseline_rss_mb=_mb(rep["baseline_rss_kb"]))
                    outputs[rt] = (load_npz(out_path), rep["output_names"])
                    if rep["compiled"][0] and cfg.cold and (t, b) == (cfg.threads[0], cfg.batch[0]):
                        recs[(rt, t, b)]["notes"].append(
                            f"{rt} compiled {rep['compiled'][0]} function(s) in a new process although the cold "
                            f"process had compiled this model into the same cache (did its source change?)")
                except WorkerError as e:
                    self._drop(rt, workers, recs[(rt, t, b)], f"session creation: {e}", label)
                    self.progress.step(label, 2 + cfg.rounds)
                    continue
                self.progress.step(f"{label} {rt} open")
            if BASELINE in outputs:
                ref, names = outputs[BASELINE]
                for rt, (got, _) in outputs.items():
                    if rt != BASELINE:
                        agr = agreement(got, ref, names, cfg.rtol, cfg.atol, BASELINE)
                        recs[(rt, t, b)]["agreement"] = agr
                        if not agr["ok"]:
                            self.progress.note(f"{label}: {rt} outputs DISAGREE with {BASELINE} "
                                               f"(max abs {agr['max_abs']}, max rel {agr['max_rel']})")
            for rt in list(workers):
                try:
                    rep = workers[rt].call({"cmd": "warmup", "seconds": cfg.warmup_s, "min_iters": cfg.min_iters},
                                           cfg.timeout_s)
                    n = cfg.round_s / max(rep["median_s"], 1e-9)
                    iters[rt] = int(min(cfg.max_iters, max(cfg.min_iters, round(n))))
                    times[rt] = []
                except WorkerError as e:
                    self._drop(rt, workers, recs[(rt, t, b)], f"warm-up: {e}", label)
                    self.progress.step(label, cfg.rounds)
                self.progress.step(f"{label} {rt} warm-up")
            for k in range(cfg.rounds):
                for rt in list(workers):
                    try:
                        rep = workers[rt].call({"cmd": "round", "iters": iters[rt]}, cfg.timeout_s)
                        times[rt].append(rep["times"])
                    except WorkerError as e:
                        self._drop(rt, workers, recs[(rt, t, b)], f"round {k + 1}: {e}", label)
                        self.progress.step(label, cfg.rounds - k - 1)
                    self.progress.step(f"{label} round {k + 1}/{cfg.rounds} {rt}")
        finally:
            for rt, w in workers.items():
                w.close()
                recs[(rt, t, b)]["peak_rss_mb"] = _mb(w.peak_rss_kb)
        for rt, rounds in times.items():
            if rt in workers:
                self._fill(recs[(rt, t, b)], rounds, iters[rt], t, b)

    def _fill(self, r: dict[str, Any], rounds: list[list[float]], iters: int, t: int, b: int) -> None:
        ms = [x * 1e3 for rnd in rounds for x in rnd]
        lat = stats.summary(ms)
        r["latency_ms"] = lat
        r["quantiles_ms"] = stats.percentiles(ms, range(101))
        r["round_p50_ms"] = [stats.percentile([x * 1e3 for x in rnd], 50) for rnd in rounds]
        r["round_cv"] = stats.cv(r["round_p50_ms"])
        r["iters_per_round"] = iters
        r["rounds"] = len(rounds)
        r["throughput_items_s"] = b * 1e3 / lat["mean"] if lat["mean"] > 0 else None
        p50_s = lat["p50"] / 1e3
        if r["flops"] is not None and p50_s > 0:
            r["gflops_s"] = r["flops"] / p50_s / 1e9
            r["gbytes_s"] = r["bytes"] / p50_s / 1e9
        self.fill_peaks(r)

    def fill_peaks(self, r: dict[str, Any]) -> None:
        peak = self.peaks.get(str(r["threads"]), {})
        if r["gflops_s"] is not None and peak.get("sgemm_gflops"):
            r["frac_sgemm_peak"] = r["gflops_s"] / peak["sgemm_gflops"]
        if r["gbytes_s"] is not None and peak.get("copy_gbytes_s"):
            r["frac_copy_bw"] = r["gbytes_s"] / peak["copy_gbytes_s"]

    def _drop(self, rt: str, workers: dict[str, Worker], r: dict[str, Any], error: str, label: str) -> None:
        w = workers.pop(rt, None)
        if w is not None:
            w.close()
            r["peak_rss_mb"] = _mb(w.peak_rss_kb)
        self._fail(r, error)
        self.progress.note(f"{label}: {rt} failed: {error}")

    @staticmethod
    def _fail(r: dict[str, Any], error: str) -> None:
        r["status"] = "failed"
        r["error"] = error

    def _fail_all(self, recs: Any, error: str) -> None:
        for r in recs:
            self._fail(r, error)
        self.progress.note(error)

    def _ratios(self, recs: list[dict[str, Any]]) -> None:
        """Each runtime's p50 over the baseline's, per setting, and the same per round (paired)."""
        by = {(r["runtime"], r["threads"], r["batch"]): r for r in recs}
        for r in recs:
            base = by.get((BASELINE, r["threads"], r["batch"]))
            if base is None or r is base or r["latency_ms"] is None or base["latency_ms"] is None:
                continue
            r["ratio_p50"] = stats.ratio(r["latency_ms"]["p50"], base["latency_ms"]["p50"])
            r["ratio_rounds"] = [stats.ratio(a, c) for a, c in zip(r["round_p50_ms"], base["round_p50_ms"])]
            base["ratio_p50"], base["ratio_rounds"] = 1.0, [1.0] * len(base["round_p50_ms"])
        for r in recs:
            ns = by.get((NOSPIN, r["threads"], r["batch"]))
            if r["runtime"] == "jitort" and ns is not None and r["latency_ms"] and ns["latency_ms"]:
                r["ratio_p50_nospin"] = stats.ratio(r["latency_ms"]["p50"], ns["latency_ms"]["p50"])


def summarize(records: list[dict[str, Any]], runtimes: Sequence[str]) -> dict[str, Any]:
    """Per runtime and setting: the geometric mean over models of ``ratio_p50``, and which models
    were left out (failed on either side)."""
    geo = []
    settings = sorted({(r["threads"], r["batch"]) for r in records})
    if BASELINE in runtimes:
        for rt in runtimes:
            if rt == BASELINE:
                continue
            for t, b in settings:
                rs = [r for r in records if r["runtime"] == rt and (r["threads"], r["batch"]) == (t, b)]
                have = [r for r in rs if r["ratio_p50"] is not None]
                geo.append({"runtime": rt, "baseline": BASELINE, "threads": t, "batch": b,
                            "geomean_ratio_p50": stats.geomean(r["ratio_p50"] for r in have),
                            "models": [r["model"] for r in have],
                            "excluded": [r["model"] for r in rs if r["ratio_p50"] is None]})
    if NOSPIN in runtimes and "jitort" in runtimes:
        for t, b in settings:
            rs = [r for r in records if r["runtime"] == "jitort" and (r["threads"], r["batch"]) == (t, b)]
            have = [r for r in rs if r.get("ratio_p50_nospin") is not None]
            geo.append({"runtime": "jitort", "baseline": NOSPIN, "threads": t, "batch": b,
                        "geomean_ratio_p50": stats.geomean(r["ratio_p50_nospin"] for r in have),
                        "models": [r["model"] for r in have],
                        "excluded": [r["model"] for r in rs if r.get("ratio_p50_nospin") is None]})
    return {"baseline": BASELINE if BASELINE in runtimes else None, "geomean": geo,
            "failures": [{k: r[k] for k in ("model", "runtime", "threads", "batch", "error")}
                         for r in records if r["status"] != "ok"],
            "disagreements": [{"model": r["model"], "runtime": r["runtime"], "threads": r["threads"],
                               "batch": r["batch"], "max_abs": r["agreement"]["max_abs"],
                               "max_rel": r["agreement"]["max_rel"]}
                              for r in records if r["agreement"] is not None and not r["agreement"]["ok"]]}


def run_benchmark(cfg: BenchConfig, progress: Any = None, log: Callable[[str], None] | None = None,
                  keep_tmp: bool = False) -> Results:
    """Run the benchmark ``cfg`` describes; ``progress`` has ``step(label, n)``, ``note(msg)``, ``close()``."""
    progress = progress or _NullProgress()
    t_start = time.perf_counter()
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    tmp = Path(tempfile.mkdtemp(prefix="jitort-bench-"))
    records: list[dict[str, Any]] = []
    try:
        progress.step("machine peaks", 0)
        peaks = machine.measure_peaks(sorted(set(cfg.threads)), quick=cfg.quick_peaks) if cfg.peaks else {}
        progress.step("machine peaks")
        bench = _Bench(cfg, tmp, peaks, progress)
        for k, spec in enumerate(cfg.models):
            records += bench.model(k, spec)
        if cfg.peaks:  # again at the end, keeping the better: a busy moment must not lower the ceiling
            progress.step("machine peaks (again)", 0)
            again = machine.measure_peaks(sorted(set(cfg.threads)), quick=cfg.quick_peaks)
            progress.step("machine peaks (again)")
            for t, p in again.items():
                for key in ("sgemm_gflops", "copy_gbytes_s"):
                    peaks[t][key] = max(peaks[t][key], p[key])
                peaks[t]["measured"] = "best of the start and the end of the run"
            for r in records:
                bench.fill_peaks(r)
    finally:
        progress.close()
        if keep_tmp:
            (log or print)(f"jitort bench: kept the work directory {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return Results(config=asdict(cfg), machine={"cpu": machine.cpu_info(), "peaks": peaks},
                   versions=machine.versions(), records=records, summary=summarize(records, cfg.runtimes),
                   created=created, seconds=time.perf_counter() - t_start)


def total_steps(cfg: BenchConfig) -> int:
    """Progress steps of a run (machine peaks, cold sessions, per setting: open + warm-up + rounds)."""
    n_set = len(cfg.threads) * len(cfg.batch)
    per_model = (len(cfg.runtimes) if cfg.cold else 0) + n_set * len(cfg.runtimes) * (2 + cfg.rounds)
    return 2 + len(cfg.models) * per_model
