"""One runtime on one model, in a process of its own, driven by the harness (``workers.Worker``).

Run as a script (``python worker.py REPLY_FD``), not as ``-m jitort.bench.worker``: importing the
``jitort`` package imports Numba, and the onnxruntime worker must not carry Numba's memory in its
peak RSS. So this file imports nothing of jitort at module level; the jitort worker imports it when it
creates its first session.

Commands arrive as JSON lines on stdin, replies go out as JSON lines on file descriptor REPLY_FD (so
that whatever a library prints on stdout cannot corrupt them). Every reply carries ``ok`` and
``rss_kb``, the process's peak resident set so far (``peak_rss_kb``: VmHWM on Linux); a failure
carries ``error`` ("Type: message") and ``traceback``.

* ``open``: import the runtime, then ``sessions`` times: release the previous session, create one
  (timed) and run it once on the inputs in ``feeds`` (an .npz; timed: jitort may compile library
  kernels at the first run). Save the last outputs to ``outputs`` (an .npz, keys ``o0``, ``o1``, ...).
  jitort's replies also count the functions Numba compiled for each session (creation + first run).
* ``warmup``: run at least ``min_iters`` times and for at least ``seconds``; reply the median time.
* ``round``: run ``iters`` times, each call timed by itself; reply the list of seconds.
* ``exit``: reply and leave.
"""
from __future__ import annotations

import gc
import json
import os
import re
import resource
import sys
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]  # no sibling modules as top level

CPU = ["CPUExecutionProvider"]


def peak_rss_kb() -> int:
    """This process's peak resident set, KiB. On Linux, ``VmHWM`` of /proc/self/status: the high-water
    mark of this program's own address space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is no good there:
    it starts from the *parent's* peak (Linux carries it over fork + exec), so every worker would report
    at least the harness's own peak. Elsewhere, ``ru_maxrss`` (bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r // 1024) if sys.platform == "darwin" else int(r)


def make_session(runtime: str, model: str, threads: int) -> Any:
    if runtime == "jitort":
        # deferred: the onnxruntime worker must not carry Numba in its peak RSS (see the module docstring)
        import jitort
        so = jitort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return jitort.InferenceSession(model, so, providers=CPU)
    if runtime in ("onnxruntime", "onnxruntime-nospin"):
        import onnxruntime
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if runtime == "onnxruntime-nospin":  # harness.NOSPIN: its intra-op threads do not spin
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return onnxruntime.InferenceSession(model, so, providers=CPU)
        except Exception as e:  # onnxruntime reads IR versions up to its own: lower the field
            m = re.search(r"max supported IR version: (\d+)", str(e))
            if m is None:
                raise
            import onnx
            proto = onnx.load(model)
            proto.ir_version = min(proto.ir_version, int(m.group(1)))
            return onnxruntime.InferenceSession(proto.SerializeToString(), so, providers=CPU)
    raise ValueError(f"unknown runtime {runtime!r}; known: jitort, onnxruntime, onnxruntime-nospin")


def _compile_mark(runtime: str) -> int | None:
    if runtime != "jitort":
        return None
    # deferred: the onnxruntime worker must not carry Numba in its peak RSS (see the module docstring)
    from jitort import cache
    return cache.compile_count()


def _compiled_since(runtime: str, mark: int | None) -> int | None:
    """How many functions Numba compiled (session creation and first run) since ``mark``."""
    if mark is None:
        return None
    # deferred: the onnxruntime worker must not carry Numba in its peak RSS (see the module docstring)
    from jitort import cache
    return len(cache.compiled_since(mark))


class State:
    def __init__(self) -> None:
        self.sess: Any = None
        self.feeds: dict[str, Any] = {}

    def open(self, msg: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        runtime, model, threads = msg["runtime"], msg["model"], int(msg["threads"])
        t0 = time.perf_counter()
        __import__("jitort" if runtime == "jitort" else "onnxruntime")
        import_s = time.perf_counter() - t0
        baseline = peak_rss_kb()
        with np.load(msg["feeds"], allow_pickle=False) as z:
            self.feeds = {k: z[k] for k in z.files}
        reply: dict[str, Any] = {"import_s": import_s, "baseline_rss_kb": baseline, "session_s": [],
                                 "first_run_s": [], "compiled": []}
        outs: Any = None
        for _ in range(int(msg.get("sessions", 1))):
            self.sess = outs = None
            gc.collect()
            mark = _compile_mark(runtime)
            t0 = time.perf_counter()
            self.sess = make_session(runtime, model, threads)
            reply["session_s"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            outs = self.sess.run(None, self.feeds)
            reply["first_run_s"].append(time.perf_counter() - t0)
            reply["compiled"].append(_compiled_since(runtime, mark))
        reply["output_names"] = [o.name for o in self.sess.get_outputs()]
        if msg.get("outputs"):
            np.savez(msg["outputs"], **{f"o{k}": np.asarray(o) for k, o in enumerate(outs)})
        return reply

    def warmup(self, msg: dict[str, Any]) -> dict[str, Any]:
        run, feeds = self.sess.run, self.feeds
        times = []
        end = time.perf_counter() + float(msg["seconds"])
        while len(times) < int(msg["min_iters"]) or time.perf_counter() < end:
            t0 = time.perf_counter()
            run(None, feeds)
            times.append(time.perf_counter() - t0)
        times.sort()
        return {"iters": len(times), "median_s": times[len(times) // 2]}

    def round(self, msg: dict[str, Any]) -> dict[str, Any]:
        run, feeds, clock = self.sess.run, self.feeds, time.perf_counter
        times = [0.0] * int(msg["iters"])
        for k in range(len(times)):
            t0 = clock()
            run(None, feeds)
            times[k] = clock() - t0
        return {"times": times}


def main(argv: list[str]) -> int:
    import faulthandler
    faulthandler.enable()
    reply = os.fdopen(int(argv[1]), "w", buffering=1)
    state = State()
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.get("cmd")
        try:
            if cmd == "exit":
                out: dict[str, Any] = {}
            elif cmd in ("open", "warmup", "round"):
                out = getattr(state, cmd)(msg)
            else:
                raise ValueError(f"unknown command {cmd!r}")
            out["ok"] = True
        except Exception as e:  # noqa: BLE001 - every failure goes back to the harness
            text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(e))  # the class says it already
            out = {"ok": False, "error": f"{type(e).__name__}: {text}", "traceback": traceback.format_exc()}
        out["rss_kb"] = peak_rss_kb()
        reply.write(json.dumps(out) + "\n")
        if cmd == "exit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
