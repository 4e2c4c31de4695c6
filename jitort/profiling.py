"""Per-step profiling (``SessionOptions.enable_profiling``): a Chrome trace in onnxruntime's format,
one event per plan step.

A session with profiling on runs the profiled variant of its plan (``jitort.codegen.plan``,
``emit_plan(..., profile=True)``): each step is timed and reported to the run's recorder with the
values it read and wrote. A session without profiling runs the plain plan, which has no timing code.

* :func:`step_info` (called by the emitter) describes a step as data — the ONNX nodes it covers,
  their op types, the kernel or library function it calls, the constants' shapes, how to count its
  FLOPs — kept in the plan's constants, never in its source;
* :class:`Profiler` (one per session) collects each run's records (step, start, end, shapes and
  dtypes; no references to the arrays) and writes the trace. Events follow onnxruntime's
  (``cat: "Node"``, ``name: "<node>_kernel_time"``, ``args.op_name``, ``provider``,
  ``input_type_shape``, ``output_type_shape``, ``activation_size``, ``parameter_size``,
  ``output_size``), plus jitort's own args: ``nodes`` and ``node_ops`` (every ONNX node the step
  covers: a fused elementwise group, a Conv with its folded BatchNormalization and activation),
  ``kernel``, ``flops``, ``bytes``, ``gflops_s``, ``gbytes_s`` and, with the machine's peaks,
  ``peak_gflops_s``, ``peak_gbytes_s``, ``flops_fraction``, ``bytes_fraction``;
* :func:`machine_peaks`: the sgemm and copy peaks ``jitort.bench.machine`` measures, measured once
  per machine, thread count and library versions and cached in ``<cache root>/profile-peaks.json``.

FLOPs are nominal, per ONNX node as written (``jitort.bench.flops.node_flops``) on the shapes the
run saw: a step covering a Conv, its BatchNormalization and Relu counts all three, as onnxruntime's
or any runtime's profile of the same model would. Bytes are what the step itself read and wrote:
the sizes of its inputs (weights included) and outputs.
"""
from __future__ import annotations

import array
import contextlib
import datetime
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from jitort import run_state
from jitort.cache import write_atomic
from jitort.dtypes import ELEM_TYPE_NAMES, onnx_elem_type
from jitort.errors import InvalidArgument

__all__ = ["PEAKS_CONFIG_KEY", "Profiler", "machine_peaks", "recorder", "recording", "step_flops", "step_info"]

PEAKS_CONFIG_KEY = "session.jitort.profile_peaks"  # measure (default) | quick | off
PEAK_MODES = ("measure", "quick", "off")
PEAKS_FILE = "profile-peaks.json"

Meta = tuple[tuple[int, ...], np.dtype] | None

# --- recording (the profiled plan's side) --------------------------------------------------------

_local = threading.local()


def _ignore(*args: Any) -> None:
    return None


def recorder() -> Callable[..., None]:
    """The recorder of the run this thread executes (a profiled plan takes it once per run); one that
    ignores everything when no profiled run is in progress (the warm-up run at session creation)."""
    return getattr(_local, "record", None) or _ignore


def recording(record: Callable[..., None]) -> contextlib.AbstractContextManager[None]:
    """Make ``record`` this thread's recorder while a profiled run executes."""
    return run_state.bound(_local, "record", record)


_ndarray = np.ndarray


def _other_meta(x: Any) -> Meta:
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    return (tuple(shape), dtype) if shape is not None and dtype is not None else None


def _meta(values: Sequence[Any]) -> tuple[Meta, ...]:
    """(shape, dtype) of each value (None: no value, or not a tensor): what a record keeps, never the
    arrays themselves."""
    return tuple([(x.shape, x.dtype) if type(x) is _ndarray else _other_meta(x) for x in values])


# --- what a step is (the emitter's side) ----------------------------------------------------------

def _flop_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes FLOP formulas read (numbers and lists of integers)."""
    return {k: v for k, v in attrs.items() if not k.startswith("_") and (
        isinstance(v, (int, float)) or (isinstance(v, (list, tuple)) and all(isinstance(x, int) for x in v)))}


def _shape(g: Any, name: str) -> list[int | str] | None:
    """A value's shape as the graph knows it: dims are ints or symbol names; None when unknown."""
    shape = g.type_of(name).shape if name else None
    if shape is None or not all(isinstance(d, (int, str)) for d in shape):
        return None
    return [d if isinstance(d, str) else int(d) for d in shape]


def step_info(step: Any, g: Any, kernel: str) -> dict[str, Any]:
    """A plan step (``jitort.codegen.plan.Step``) described for the profile: plain data.

    ``flops`` lists ``[op_type, attrs, shape, n_inputs]`` per covered ONNX node: ``shape`` "io" counts
    the node on the step's own input and output shapes (its first ``n_inputs`` inputs, 0: all); a list
    is the node's output shape (ints, and symbols bound by the step's ``in_shapes``/``out_shapes``
    at run time); None is the step's first output shape (an elementwise node fused into the step),
    with ``n_inputs`` inputs of that shape."""
    n = step.node
    if step.kernel is not None:
        covered = list(n.attrs["body"])
        op = "+".join(dict.fromkeys(b.op_type for b in covered))
        flops = [[b.op_type, _flop_attrs(b.attrs), _shape(g, b.outputs[0]), sum(1 for i in b.inputs if i)]
                 for b in covered]
    else:
        absorbed = list(n.attrs.get("_absorbed", []))  # a Conv's folded BatchNormalization and activation
        covered = [n, *absorbed]
        op = n.op_type
        flops = [[n.op_type, _flop_attrs(n.attrs), "io", int(n.attrs.get("_written_inputs", 0))]]
        flops += [[a.op_type, _flop_attrs(a.attrs), _own_shapes(g, a), 1] for a in absorbed]
    static: list[list[Any] | None] = []
    for i in n.inputs:
        c = g.const(i) if i else None
        static.append([list(c.shape), c.dtype.str] if isinstance(c, np.ndarray) else None)
    return {"name": n.name, "op": op, "domain": n.domain, "provider": n.provider or "CPUExecutionProvider",
            "nodes": [c.name for c in covered], "node_ops": [c.op_type for c in covered], "kernel": kernel,
            "inputs": list(n.inputs), "outputs": list(n.outputs), "static": static, "flops": flops,
            "in_shapes": [_shape(g, i) for i in n.inputs], "out_shapes": [_shape(g, o) for o in n.outputs]}


def _own_shapes(g: Any, a: Any) -> dict[str, Any] | None:
    """An absorbed node's own input and output shapes ({"in", "out"}), when the graph still types all
    of them (attention/norm fusions keep them: a MatMul inside a step is not counted on the step's
    output shape); else None (counted on the step's first output shape: an epilogue)."""
    names = [i for i in a.inputs if i] + [a.outputs[0]]
    if any(n not in g.values or g.values[n].type.shape is None for n in names):
        return None
    return {"in": [_shape(g, i) for i in a.inputs if i], "out": _shape(g, a.outputs[0])}


def _bind(info: dict[str, Any], ins: Sequence[tuple[int, ...] | None],
          outs: Sequence[tuple[int, ...] | None]) -> dict[str, int]:
    """The step's symbolic dims, bound by the shapes one run gave its inputs and outputs."""
    dims: dict[str, int] = {}
    for specs, shapes in ((info["in_shapes"], ins), (info["out_shapes"], outs)):
        for spec, shape in zip(specs, shapes):
            if spec is not None and shape is not None and len(spec) == len(shape):
                dims.update((d, int(v)) for d, v in zip(spec, shape) if isinstance(d, str))
    return dims


def step_flops(info: dict[str, Any], ins: Sequence[tuple[int, ...] | None],
               outs: Sequence[tuple[int, ...] | None]) -> int | None:
    """FLOPs of a step (``step_info``) on the shapes of one run; None when a shape needed is unknown."""
    # deferred: bench machinery, imported only when a profile report is built
    from jitort.bench.flops import node_flops
    total = 0
    dims: dict[str, int] | None = None
    for op, attrs, shape, n_in in info["flops"]:
        if shape == "io":  # n_in: the node's inputs as written (a Conv given a bias by a folded BatchNorm)
            f = node_flops(op, attrs, list(ins)[:n_in] if n_in else list(ins), list(outs))
        elif isinstance(shape, dict):  # an absorbed node on its own shapes, symbols bound by this run
            dims = _bind(info, ins, outs) if dims is None else dims
            own = [*shape["in"], shape["out"]]
            if any(sh is None or not all(isinstance(d, int) or d in dims for d in sh) for sh in own):
                return None
            res = [tuple(d if isinstance(d, int) else dims[d] for d in sh) for sh in own]
            f = node_flops(op, attrs, res[:-1], res[-1:])
        else:
            y = outs[0] if outs else None
            if shape is not None:
                dims = _bind(info, ins, outs) if dims is None else dims
                if all(isinstance(d, int) or d in dims for d in shape):
                    y = tuple(d if isinstance(d, int) else dims[d] for d in shape)
            f = node_flops(op, attrs, [y] * max(int(n_in), 1), [y])
        if f is None:
            return None
        total += f
    return total


# --- the machine's peaks --------------------------------------------------------------------------

_peaks_memo: dict[str, dict[str, Any]] = {}


def _peaks_key(threads: int, mode: str) -> str:
    # deferred: bench machinery, imported only when a profile report is built
    from jitort.bench.machine import cpu_info, versions
    v = versions()
    return (f"{cpu_info()['model_name']}|threads={threads}|numpy={v.get('numpy')}|scipy={v.get('scipy')}"
            f"{'|quick' if mode == 'quick' else ''}")


def machine_peaks(threads: int, mode: str = "measure", root: Path | None = None) -> dict[str, Any] | None:
    """``{"sgemm_gflops", "copy_gbytes_s", "threads", "measured", "quick"}`` at ``threads`` threads
    (``jitort.bench.machine.measure_peaks``), measured once and kept in ``root/profile-peaks.json``
    (and in this process); None with ``mode`` "off". "quick" measures small sizes: fast, not a peak."""
    if mode not in PEAK_MODES:
        raise InvalidArgument(f"{PEAKS_CONFIG_KEY} must be one of {', '.join(PEAK_MODES)}, got {mode!r}")
    if mode == "off":
        return None
    key = _peaks_key(threads, mode)
    if key in _peaks_memo:
        return _peaks_memo[key]
    path = root / PEAKS_FILE if root is not None else None
    stored: dict[str, Any] = {}
    if path is not None:
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(path.read_text())
    peaks = stored.get(key) if isinstance(stored, dict) else None
    if not (isinstance(peaks, dict) and peaks.get("sgemm_gflops") and peaks.get("copy_gbytes_s")):
        # deferred: bench machinery, imported only when peaks are measured
        from jitort.bench.machine import measure_peaks
        m = measure_peaks([threads], quick=mode == "quick")[str(threads)]
        peaks = {"sgemm_gflops": m["sgemm_gflops"], "copy_gbytes_s": m["copy_gbytes_s"], "threads": threads,
                 "quick": mode == "quick", "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        if path is not None:
            with contextlib.suppress(OSError):  # a read-only cache: measured again next time
                write_atomic(path, json.dumps({**(stored if isinstance(stored, dict) else {}), key: peaks},
                                              indent=1).encode())
    _peaks_memo[key] = peaks
    return peaks


# --- the session's profiler -----------------------------------------------------------------------

def _type_name(dtype: Any) -> str:
    try:
        return ELEM_TYPE_NAMES[onnx_elem_type(np.dtype(dtype))]
    except Exception:  # noqa: BLE001 - a dtype ONNX has no name for
        return str(dtype)


def _nbytes(m: Meta) -> int:
    return 0 if m is None else math.prod(m[0]) * np.dtype(m[1]).itemsize


def _rates(args: dict[str, Any], seconds: float, peaks: dict[str, Any] | None) -> dict[str, Any]:
    """A step's args with its achieved GFLOP/s and GB/s (and their fractions of the peaks)."""
    seconds = max(seconds, 1e-9)
    flops, nbytes = args["flops"], args["bytes"]
    gflops = None if flops is None else flops / seconds / 1e9
    out = {**args, "gflops_s": None if gflops is None else round(gflops, 4),
           "gbytes_s": round(nbytes / seconds / 1e9, 4)}
    if peaks is not None:
        out["peak_gflops_s"] = round(peaks["sgemm_gflops"], 2)
        out["peak_gbytes_s"] = round(peaks["copy_gbytes_s"], 2)
        out["flops_fraction"] = None if gflops is None else round(gflops / peaks["sgemm_gflops"], 4)
        out["bytes_fraction"] = round(nbytes / seconds / 1e9 / peaks["copy_gbytes_s"], 4)
    return out


class Profiler:
    """The profile of one session: session creation, then each profiled run's steps."""

    def __init__(self, steps: list[dict[str, Any]] | None, start_ns: int, start: float) -> None:
        self.steps = steps  # None: the plan has no profiled variant (a CUDA plan): one event per run
        self.start_ns = start_ns  # wall clock (the file name, get_profiling_start_time_ns)
        self.start = start  # perf_counter at the same moment (event times)
        self.session_seconds = 0.0
        # per run: (start, end, thread, step indices, step times (start, end, ...), shapes); the
        # indices and times are arrays and the shapes are shared by runs that saw the same ones, so a
        # long profile stays small and out of the garbage collector's way
        self.runs: list[tuple[float, float, int, array.array, array.array, tuple]] = []
        self._shapes: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        """Record the run this thread executes inside the block."""
        steps, times, shapes = array.array("l"), array.array("d"), []
        add_step, add_time, add_shapes = steps.append, times.extend, shapes.append

        def record(k: int, t0: float, t1: float, ins: tuple, outs: tuple) -> None:
            add_step(k)
            add_time((t0, t1))
            add_shapes((_meta(ins), _meta(outs)))

        t0 = time.perf_counter()
        with recording(record):
            yield
        t1 = time.perf_counter()
        with self._lock:
            key = tuple(shapes)
            self.runs.append((t0, t1, threading.get_native_id(), steps, times, self._shapes.setdefault(key, key)))

    def file_name(self, prefix: str) -> str:
        """onnxruntime's name: ``<prefix>_<YYYY-MM-DD_HH-MM-SS_mmm>.json`` at the profiler's start."""
        t = datetime.datetime.fromtimestamp(self.start_ns / 1e9)
        return f"{prefix}_{t.strftime('%Y-%m-%d_%H-%M-%S')}_{t.microsecond // 1000:03d}.json"

    def _us(self, t: float) -> float:
        return round((t - self.start) * 1e6, 3)

    def events(self, peaks: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The Chrome-trace events (onnxruntime's layout; see the module's docstring)."""
        pid = os.getpid()
        out: list[dict[str, Any]] = [{"cat": "Session", "pid": pid, "tid": pid,
                                      "dur": round(self.session_seconds * 1e6, 3), "ts": 0, "ph": "X",
                                      "name": "session_initialization", "args": {}}]
        described: dict[tuple[int, int, int], dict[str, Any]] = {}  # (step, id(shapes), j) -> its args
        names = [f"{info['name']}_kernel_time" for info in self.steps or []]
        for t0, t1, tid, steps, times, shapes in sorted(self.runs, key=lambda r: r[0]):
            for j, (k, (ins, outs)) in enumerate(zip(steps, shapes)):
                args = described.get((k, id(shapes), j))
                if args is None:
                    args = described[(k, id(shapes), j)] = self._step_args(k, ins, outs)
                s0, s1 = times[2 * j], times[2 * j + 1]
                out.append({"cat": "Node", "pid": pid, "tid": tid, "dur": round((s1 - s0) * 1e6, 3),
                            "ts": self._us(s0), "ph": "X", "name": names[k], "args": _rates(args, s1 - s0, peaks)})
            out.append({"cat": "Session", "pid": pid, "tid": tid, "dur": round((t1 - t0) * 1e6, 3),
                        "ts": self._us(t0), "ph": "X", "name": "model_run", "args": {}})
        return out

    def _step_args(self, k: int, ins: tuple[Meta, ...], outs: tuple[Meta, ...]) -> dict[str, Any]:
        """What does not depend on the step's time: onnxruntime's args, nodes, kernel, FLOPs, bytes."""
        info = self.steps[k]  # type: ignore[index]
        ins = tuple(m if m is not None or s is None else (tuple(s[0]), np.dtype(s[1]))
                    for m, s in zip(ins, info["static"]))
        params = sum(_nbytes(m) for m, s in zip(ins, info["static"]) if s is not None)
        acts = sum(_nbytes(m) for m, s in zip(ins, info["static"]) if s is None)
        out_bytes = sum(_nbytes(m) for m in outs)
        return {"op_name": info["op"], "provider": info["provider"], "node_index": str(k),
                "activation_size": str(acts), "parameter_size": str(params), "output_size": str(out_bytes),
                "input_type_shape": [{_type_name(m[1]): list(m[0])} for m in ins if m is not None],
                "output_type_shape": [{_type_name(m[1]): list(m[0])} for m in outs if m is not None],
                "nodes": list(info["nodes"]), "node_ops": list(info["node_ops"]), "kernel": info["kernel"],
                "flops": step_flops(info, [m[0] if m else None for m in ins], [m[0] if m else None for m in outs]),
                "bytes": params + acts + out_bytes}

    def write(self, path: str, peaks: dict[str, Any] | None = None) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write("[\n")
            f.write(",\n".join(json.dumps(e) for e in self.events(peaks)))
            f.write("\n]\n")
