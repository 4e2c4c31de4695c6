"""Batch inference on Ray Data: rows/s and time to first batch, for 1 and 2 actors, of

* ``jitort artifact``: ``jitort.ray.predict`` (compiled once on the driver, shipped to the actors
  through the object store, loaded without compiling);
* ``jitort per worker``: ``jitort.ray.Predictor`` given the ``.onnx`` file, so every actor compiles
  the model itself (an empty jitort cache per run);
* ``onnxruntime``: the same callable-class ``map_batches`` with an onnxruntime session.

    python benchmarks/bench_ray.py [--rows 4096] [--seq 32] [--batch-size 256] [--rounds 3] [--json FILE]

Every run starts its own local Ray instance (``ray.init(num_cpus=2)``) whose workers get a new,
empty JITORT_CACHE_DIR, so every actor is a fresh process with nothing compiled, and arms alternate
within a round. Each actor has ``num_cpus=1`` and one intra-op thread (1 actor: one core busy; 2
actors: two). The model is ``jitort.zoo.bert_encoder`` at BERT-mini width (hidden 256, 4 heads, FFN
1024, one layer); input rows are token ids, segment ids and an attention mask (int64, ``--seq``
long), made before the timer starts and materialized, so the model's actors are the only operator.

Measured, from the start of execution (the first ``iter_batches`` call): **first batch** (seconds
until the first output batch reaches the driver: actor start, imports, session creation or
compilation, one batch) and **rows/s** (all rows over the whole execution: what a job of this size
sees); **steady rows/s** counts only the rows after the first batch, over the time after it (what a
long job converges to). ``setup`` is what ``predict`` does on the driver before execution (the artifact compile on
the first round, from the cache afterwards; loading it once; packing and ``ray.put``). Medians over
rounds are printed as a markdown table. Outputs are checked against onnxruntime on every run.

Where the first batch's time goes: each arm's callable class is a timed subclass (``TimedJitort``:
``jitort.ray.Predictor``, also under ``predict``; ``TimedOrt``) whose actors record when their process
started, when ``__init__`` was entered and left (and the session's own creation time), their first
call, and the CPU seconds their process had used at each point; the tables after the first give
medians for the actor that finished a batch first. CPU seconds before ``__init__`` are Ray's worker
start plus importing the runtime; on a loaded machine they are steadier than the wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import ray

import jitort.ray as jr
from jitort import zoo

HIDDEN, HEADS, FFN, VOCAB, POSITIONS = 256, 4, 1024, 1000, 128
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


class OrtPredictor:
    """The onnxruntime side of the comparison: the usual callable class for map_batches."""

    def __init__(self, model: str, threads: int) -> None:
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self.outputs, {k: np.ascontiguousarray(batch[k]) for k in INPUTS})
        return {**batch, **dict(zip(self.outputs, results))}


class _Timeline:
    """Mixin for an arm's callable class: the actor's timeline (``time.time()`` stamps: process start,
    ``__init__`` entered and done, first call entered and done; the session's own creation seconds)
    written to ``<out_dir>/<pid>.json`` after its first batch. Defined here, so Ray ships it by value."""

    out_dir = ""

    def _start(self) -> None:
        import psutil  # a Ray dependency
        self._p = psutil.Process()
        self._t = {"process": self._p.create_time(), "init": time.time(), "cpu_init": self._cpu()}

    def _cpu(self) -> float:
        """CPU seconds this process has used (less sensitive to a loaded machine than wall time)."""
        c = self._p.cpu_times()
        return c.user + c.system

    def _ready(self, session_s: float) -> None:
        self._t.update(ready=time.time(), session_s=session_s, cpu_ready=self._cpu())

    def _timed_call(self, call: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "call" in self._t:
            return call(batch)
        t0 = time.time()
        out = call(batch)
        self._t.update(call=t0, called=time.time(), cpu_called=self._cpu())
        Path(self.out_dir, f"{os.getpid()}.json").write_text(json.dumps(self._t))
        return out


class TimedJitort(_Timeline, jr.Predictor):
    def __init__(self, model: Any, **kwargs: Any) -> None:
        self._start()
        super().__init__(model, **kwargs)
        self._ready(self.session.session_seconds)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._timed_call(super().__call__, batch)


class TimedOrt(_Timeline, OrtPredictor):
    def __init__(self, model: str, threads: int) -> None:
        self._start()
        t0 = time.perf_counter()
        super().__init__(model, threads)
        self._ready(time.perf_counter() - t0)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._timed_call(super().__call__, batch)


def first_actor(out_dir: Path, t_start: float) -> dict[str, float]:
    """The timeline of the actor whose first batch finished first, in seconds from ``t_start``
    (the driver's first ``iter_batches`` call): where its time to first batch went."""
    lines = [json.loads(f.read_text()) for f in out_dir.glob("*.json")]
    t = min(lines, key=lambda x: x["called"])
    return {"process_start": t["process"] - t_start, "actor_init": t["init"] - t_start,
            "init_s": t["ready"] - t["init"], "session_s": t["session_s"], "wait_s": t["call"] - t["ready"],
            "first_run_s": t["called"] - t["call"], "done": t["called"] - t_start,
            "cpu_before_init": t["cpu_init"], "cpu_init": t["cpu_ready"] - t["cpu_init"],
            "cpu_first_run": t["cpu_called"] - t["cpu_ready"]}


def rows(n: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    types = np.zeros((n, seq), np.int64)
    types[:, seq // 2:] = 1
    mask = np.ones((n, seq), np.int64)
    mask[::4, -(seq // 4):] = 0
    return {"input_ids": rng.integers(0, VOCAB, (n, seq)).astype(np.int64), "token_type_ids": types,
            "attention_mask": mask, "row": np.arange(n)}


def one_run(arm: str, actors: int, model: Path, data: dict[str, np.ndarray], batch_size: int,
            expected: np.ndarray, output: str, work: Path) -> dict:
    """One measurement in a new Ray instance whose workers' jitort cache is new and empty."""
    cache_dir = Path(tempfile.mkdtemp(prefix="workers-cache-", dir=work))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"JITORT_CACHE_DIR": str(cache_dir)}})
    try:
        n = len(data["row"])
        ds = ray.data.from_items([{k: v[i] for k, v in data.items()} for i in range(n)],
                                 override_num_blocks=max(2 * actors, n // batch_size)).materialize()
        pool = ray.data.ActorPoolStrategy(size=actors)
        timeline = Path(tempfile.mkdtemp(prefix="timeline-", dir=work))
        TimedJitort.out_dir = TimedOrt.out_dir = str(timeline)
        t0 = time.perf_counter()
        if arm == "jitort artifact":
            plain, jr.Predictor = jr.Predictor, TimedJitort  # predict() maps jr.Predictor: time it
            try:
                out = jr.predict(ds, str(model), batch_size=batch_size, concurrency=actors, num_cpus=1)
            finally:
                jr.Predictor = plain
        elif arm == "jitort per worker":
            out = ds.map_batches(TimedJitort, fn_constructor_kwargs={"model": str(model), "threads": 1},
                                 batch_size=batch_size, compute=pool, num_cpus=1, batch_format="numpy")
        else:
            out = ds.map_batches(TimedOrt, fn_constructor_kwargs={"model": str(model), "threads": 1},
                                 batch_size=batch_size, compute=pool, num_cpus=1, batch_format="numpy")
        t1, wall1 = time.perf_counter(), time.time()
        first = None
        got = np.empty_like(expected)
        seen = first_rows = 0
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            if first is None:
                first, first_rows = time.perf_counter(), len(batch["row"])
            got[batch["row"]] = batch[output]
            seen += len(batch["row"])
        t2 = time.perf_counter()
        assert seen == n, (arm, seen, n)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4, err_msg=arm)
        return {"arm": arm, "actors": actors, "setup": t1 - t0, "first_batch": first - t1, "total": t2 - t1,
                "rows_per_s": n / (t2 - t1), "steady_rows_per_s": (n - first_rows) / max(t2 - first, 1e-9),
                "timeline": first_actor(timeline, wall1)}
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="write every measurement here")
    args = ap.parse_args(argv)
    arms = ("jitort artifact", "jitort per worker", "onnxruntime")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        os.environ["JITORT_CACHE_DIR"] = str(work / "driver-cache")  # the driver compiles the artifact cold once
        model = work / "bert.onnx"
        onnx.save(zoo.bert_encoder(vocab=VOCAB, positions=POSITIONS, hidden=HIDDEN, heads=HEADS, ffn=FFN, seed=1),
                  str(model))
        output = onnx.load(str(model)).graph.output[0].name
        data = rows(args.rows, args.seq)
        ref = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        expected = ref.run([output], {k: data[k] for k in INPUTS})[0]
        results = []
        for r in range(args.rounds):
            for actors in (1, 2):
                for arm in arms:
                    res = one_run(arm, actors, model, data, args.batch_size, expected, output, work)
                    res["round"] = r
                    results.append(res)
                    print(f"round {r} {arm:18} {actors} actor(s): setup {res['setup']:6.2f} s  first batch "
                          f"{res['first_batch']:6.2f} s  {res['rows_per_s']:7.0f} rows/s", file=sys.stderr)
    cold_setup = results[0]["setup"]  # round 0's artifact arm compiled the artifact on the driver
    print(f"\n{args.rows} rows x {args.seq} tokens, batch {args.batch_size}; BERT-mini width (hidden {HIDDEN}, "
          f"FFN {FFN}, 1 layer); {args.rounds} rounds, medians; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs\n")
    print("| runtime | actors | first batch (s) | rows/s | steady rows/s | driver setup (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for actors in (1, 2):
        for arm in arms:
            rs = [x for x in results if x["arm"] == arm and x["actors"] == actors]
            setups = [x["setup"] for x in rs if x is not results[0]] or [results[0]["setup"]]
            setup = f"{statistics.median(setups):.2f}" if arm == "jitort artifact" else "-"
            print(f"| {arm} | {actors} | {statistics.median(x['first_batch'] for x in rs):.2f} | "
                  f"{statistics.median(x['rows_per_s'] for x in rs):.0f} | "
                  f"{statistics.median(x['steady_rows_per_s'] for x in rs):.0f} | {setup} |")
    print("\nWhere the first batch's time went (the first actor to finish a batch; seconds from the start of "
          "execution, medians):\n")
    print("| runtime | actors | worker process started | actor `__init__` entered | `__init__` | of which session "
          "| waited for a batch | first run | first batch at the driver |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for actors in (1, 2):
        for arm in arms:
            tl = [x["timeline"] for x in results if x["arm"] == arm and x["actors"] == actors]
            med = {k: statistics.median(t[k] for t in tl) for k in tl[0]}
            fb = statistics.median(x["first_batch"] for x in results if x["arm"] == arm and x["actors"] == actors)
            print(f"| {arm} | {actors} | {med['process_start']:.2f} | {med['actor_init']:.2f} | {med['init_s']:.2f} | "
                  f"{med['session_s']:.2f} | {med['wait_s']:.2f} | {med['first_run_s']:.2f} | {fb:.2f} |")
    print("\nCPU seconds of that actor's process (user + system; steadier than wall time on a busy machine):\n")
    print("| runtime | actors | before `__init__` (Ray's worker start, imports) | `__init__` | first run | total |")
    print("|---|---:|---:|---:|---:|---:|")
    for actors in (1, 2):
        for arm in arms:
            tl = [x["timeline"] for x in results if x["arm"] == arm and x["actors"] == actors]
            med = {k: statistics.median(t[k] for t in tl) for k in ("cpu_before_init", "cpu_init", "cpu_first_run")}
            print(f"| {arm} | {actors} | {med['cpu_before_init']:.2f} | {med['cpu_init']:.2f} | "
                  f"{med['cpu_first_run']:.2f} | {sum(med.values()):.2f} |")
    print(f"\njitort artifact: the first predict() compiled the artifact on the driver in {cold_setup:.1f} s "
          "(once per model and machine; later calls take it from the cache)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
