"""The ONNX conformance sweep: onnx's node cases and on-disk model suites, each run in isolation.

Cases come from the installed onnx package: the node cases (``collect_testcases()``, generators in
the wheel) are written once to ``<cache root>/conformance/onnx-<version>/node/<case>/`` as
``model.onnx`` + ``test_data_set_*/{input,output}_*.pb`` (onnx's own ``backend/test/data/node``
layout); the model suites ``simple``, ``pytorch-converted`` and ``pytorch-operator`` are read where
the wheel ships them. A pool of worker subprocesses runs the cases (each with a time limit; a crash
or a timeout is a result), compares with the expected outputs as ``onnx.backend.test`` does
(``assert_allclose`` with the case's rtol/atol, default 1e-3/1e-7; strings exact; the random ops
``Bernoulli``/``Random*``/``Multinomial`` by shape and dtype only, their values being unseeded
draws), and classifies each case: ``pass``, ``mismatch``, ``not implemented``
(``jitort.errors.NotImplemented``) or ``error`` (anything else: the exception class and first line).
The ``jitort conformance`` command and its reports are ``jitort/cli/conformance.py``.
"""
from __future__ import annotations

import json
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from jitort.cache import cache_root, ensure_private_dir, file_lock, write_atomic
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.registry import is_random

PASS, MISMATCH, NOT_IMPLEMENTED, ERROR = "pass", "mismatch", "not implemented", "error"
STATUSES = (PASS, MISMATCH, NOT_IMPLEMENTED, ERROR)
MODEL_SUITES = ("simple", "pytorch-converted", "pytorch-operator")
DEFAULT_TIMEOUT = 120.0


@dataclass
class Case:
    name: str
    suite: str          # "node" or a model suite
    path: str           # directory with model.onnx and test_data_set_*
    op: str             # the op a node case tests ("Domain::Op" outside ai.onnx); the suite for models
    rtol: float = 1e-3
    atol: float = 1e-7


@dataclass
class Result:
    name: str
    suite: str
    op: str
    status: str
    reason: str = ""
    seconds: float = 0.0


# --- the cases -----------------------------------------------------------------------------------

def _onnx_data_dir() -> Path:
    import onnx.backend.test
    return Path(onnx.backend.test.__file__).parent / "data"


def node_cases_dir() -> Path:
    import onnx
    return ensure_private_dir(cache_root()) / "conformance" / f"onnx-{onnx.__version__}" / "node"


def _op_label(node: Any) -> str:
    dom = node.domain if node.domain not in ("", "ai.onnx") else ""
    return f"{dom}::{node.op_type}" if dom else node.op_type


def _write_value(path: Path, value: Any, tp: Any, name: str) -> None:
    from onnx import TensorProto, numpy_helper
    if tp.HasField("sequence_type"):
        proto = numpy_helper.from_list(value, name)
    elif tp.HasField("optional_type"):
        proto = numpy_helper.from_optional(value, name)
    elif tp.HasField("map_type"):
        proto = numpy_helper.from_dict(value, name)
    elif isinstance(value, TensorProto):
        proto = value
    else:
        proto = numpy_helper.from_array(value, name)
    path.write_bytes(proto.SerializeToString())


def materialize_node_cases(root: Path | None = None) -> Path:
    """Write onnx's node cases to disk once (a manifest marks completion); returns the directory."""
    import warnings
    root = root or node_cases_dir()
    manifest = root / "manifest.json"
    if manifest.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):
        if manifest.exists():
            return root
        import numpy as np
        from onnx.backend.test.case.node import collect_testcases
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            cases = collect_testcases()
        ops = {}
        for c in cases:
            nodes = c.model.graph.node
            ops[c.name] = _op_label(nodes[0]) if len(nodes) == 1 else None
        entries = []
        for c in cases:
            op = ops[c.name]
            if op is None:
                base = re.sub(r"_expanded.*$", "", c.name)
                op = ops.get(base) or "+".join(sorted({_op_label(n) for n in c.model.graph.node}))
            d = root / c.name
            d.mkdir(exist_ok=True)
            (d / "model.onnx").write_bytes(c.model.SerializeToString())
            g = c.model.graph
            for k, (inputs, outputs) in enumerate(c.data_sets):
                ds = d / f"test_data_set_{k}"
                ds.mkdir(exist_ok=True)
                for j, v in enumerate(inputs):
                    _write_value(ds / f"input_{j}.pb", v, g.input[j].type, g.input[j].name)
                for j, v in enumerate(outputs):
                    _write_value(ds / f"output_{j}.pb", v, g.output[j].type, g.output[j].name)
            entries.append({"name": c.name, "op": op, "rtol": c.rtol, "atol": c.atol})
        write_atomic(manifest, json.dumps(entries, indent=0).encode())
    return root


def node_cases() -> list[Case]:
    root = materialize_node_cases()
    entries = json.loads((root / "manifest.json").read_text())
    return [Case(e["name"], "node", str(root / e["name"]), e["op"], e["rtol"], e["atol"]) for e in entries]


def model_suite_cases(suites: Sequence[str] = MODEL_SUITES) -> list[Case]:
    out = []
    for suite in suites:
        d = _onnx_data_dir() / suite
        for case_dir in sorted(p for p in d.iterdir() if (p / "model.onnx").exists()):
            rtol, atol = 1e-3, 1e-7
            meta = case_dir / "data.json"
            if meta.exists():
                data = json.loads(meta.read_text())
                rtol, atol = data.get("rtol", rtol), data.get("atol", atol)
            out.append(Case(case_dir.name, suite, str(case_dir), suite, rtol, atol))
    return out


def all_cases(pattern: str | None = None) -> list[Case]:
    cases = node_cases() + model_suite_cases()
    if pattern:
        rx = re.compile(pattern)
        cases = [c for c in cases if rx.search(c.name) or rx.search(c.op)]
    return cases


# --- running one case (in a worker) --------------------------------------------------------------

def _load_value(path: Path, tp: Any) -> Any:
    import onnx
    from onnx import numpy_helper
    data = path.read_bytes()
    if tp.HasField("sequence_type"):
        s = onnx.SequenceProto()
        s.ParseFromString(data)
        return numpy_helper.to_list(s)
    if tp.HasField("optional_type"):
        o = onnx.OptionalProto()
        o.ParseFromString(data)
        return numpy_helper.to_optional(o)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def _graph_ops(g: Any) -> set[tuple[str, str]]:
    """(domain, op_type) of every node, subgraphs included."""
    ops = set()
    for n in g.node:
        ops.add((n.domain, n.op_type))
        for a in n.attribute:
            if a.g is not None and a.HasField("g"):
                ops |= _graph_ops(a.g)
            for sub in a.graphs:
                ops |= _graph_ops(sub)
    return ops


def has_random_ops(g: Any) -> bool:
    """Whether the graph runs an op the op table marks random (compared by shape and dtype only)."""
    return any(is_random(op, dom) for dom, op in _graph_ops(g))


def passing_ops(markdown_text: str) -> set[str]:
    """The ops with at least one passing node case in a report written by ``markdown`` (its "Per op"
    table; ``Domain::Op`` outside ai.onnx, ``A+B`` for cases of several ops)."""
    out: set[str] = set()
    in_table = False
    for line in markdown_text.splitlines():
        if line.startswith("## "):
            in_table = line.strip() == "## Per op"
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not in_table or len(cells) != 5 or cells[0] in ("op", "") or set(cells[0]) <= {"-"}:
            continue
        if cells[1].isdigit() and int(cells[1]) > 0:
            out.add(cells[0])
    return out


def compare(expected: Any, actual: Any, rtol: float, atol: float, shape_only: bool = False, where: str = "") -> None:
    """onnx.backend.test's comparison, extended to optionals; raises AssertionError."""
    import numpy as np
    if expected is None or actual is None:
        if (expected is None) != (actual is None):
            raise AssertionError(f"{where}: expected {'an empty optional' if expected is None else 'a value'}, "
                                 f"got {'None' if actual is None else type(actual).__name__}")
        return
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            raise AssertionError(f"{where}: expected a sequence, got {type(actual).__name__}")
        if len(actual) != len(expected):
            raise AssertionError(f"{where}: sequence of {len(actual)} elements, expected {len(expected)}")
        for k, (e, a) in enumerate(zip(expected, actual)):
            compare(e, a, rtol, atol, shape_only, f"{where}[{k}]")
        return
    if not isinstance(actual, np.ndarray):
        raise AssertionError(f"{where}: expected an array, got {type(actual).__name__}")
    if actual.shape != expected.shape:
        raise AssertionError(f"{where}: shape {actual.shape}, expected {expected.shape}")
    if expected.dtype == object or actual.dtype == object:
        if shape_only:
            return
        np.testing.assert_array_equal(actual, expected, err_msg=where)
        return
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{where}: dtype {actual.dtype}, expected {expected.dtype}")
    if shape_only:
        return
    r = rtol
    if actual.dtype.name == "bfloat16":
        r = max(rtol, 2 ** -6)  # two bfloat16 ULPs, as onnx.backend.test
    elif actual.dtype == np.float16:
        r = max(rtol, 2 ** -9)  # two float16 ULPs: expected values computed in float16 arithmetic are
        # themselves off by an ULP where jitort rounds float32 results once
    if actual.dtype.kind not in "biufc":  # float8/float4/int4 from ml_dtypes
        actual, expected = actual.astype(np.float32), expected.astype(np.float32)
    if expected.dtype.kind in "biu" and actual.dtype.kind in "biu":
        bad = actual != expected
    else:
        a64, e64 = actual.astype(np.float64), expected.astype(np.float64)
        with np.errstate(all="ignore"):
            bad = ~np.isclose(a64, e64, rtol=r, atol=atol, equal_nan=True)
            bad |= np.isinf(e64) & (a64 != e64)  # inf only matches the same inf
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        a, e = actual[idx], expected[idx]
        raise AssertionError(f"{where}: {int(bad.sum())} of {bad.size} elements differ beyond rtol={r:g} "
                             f"atol={atol:g}; first at {list(idx)}: got {a!r}, expected {e!r}")


def run_case(path: str, rtol: float, atol: float) -> tuple[str, str]:
    """Run one case directory with jitort's backend -> (status, reason)."""
    import glob

    import numpy as np
    import onnx

    # deferred: onnx.backend, needed only in the conformance worker process
    from jitort import backend
    try:
        model = onnx.load(os.path.join(path, "model.onnx"))
        shape_only = has_random_ops(model.graph)
        init = {t.name for t in model.graph.initializer}
        ins = [vi for vi in model.graph.input if vi.name not in init]
        rep = backend.prepare(model, "CPU")
        for ds in sorted(glob.glob(os.path.join(path, "test_data_set_*"))):
            n_in = len(glob.glob(os.path.join(ds, "input_*.pb")))
            n_out = len(glob.glob(os.path.join(ds, "output_*.pb")))
            inputs = [_load_value(Path(ds, f"input_{j}.pb"), ins[j].type) for j in range(n_in)]
            expected = [_load_value(Path(ds, f"output_{j}.pb"), model.graph.output[j].type) for j in range(n_out)]
            with np.errstate(all="ignore"):
                got = rep.run(inputs)
            if len(got) != len(expected):
                return MISMATCH, f"{len(got)} outputs, expected {len(expected)}"
            try:
                for j, (e, a) in enumerate(zip(expected, got)):
                    compare(e, a, rtol, atol, shape_only, f"output {j} ({model.graph.output[j].name})")
            except AssertionError as err:
                lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
                return MISMATCH, f"{os.path.basename(ds)}: " + " | ".join(lines[:4])
        return PASS, ""
    except OrtNotImplemented as e:
        return NOT_IMPLEMENTED, _first_line(e.args[0] if e.args else str(e))
    except Exception as e:  # noqa: BLE001 — every other failure is a result, classified by its class
        tb = traceback.extract_tb(e.__traceback__)
        where = f" [{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}]" if tb else ""
        return ERROR, f"{type(e).__name__}: {_first_line(str(e))}{where}"


def _first_line(s: str) -> str:
    s = str(s).strip()
    line = s.splitlines()[0] if s else ""
    return line[:300]


def worker_main() -> None:
    """A worker: one JSON request per line on stdin, one JSON reply per line on the original stdout."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a case prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    import warnings
    warnings.simplefilter("ignore")
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.perf_counter()
        status, reason = run_case(req["path"], req["rtol"], req["atol"])
        out.write(json.dumps({"status": status, "reason": reason, "seconds": time.perf_counter() - t0}) + "\n")


# --- the pool ------------------------------------------------------------------------------------

class _Worker:
    def __init__(self) -> None:
        import tempfile
        self.err = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", "from jitort.conformance import worker_main; "
                                      "worker_main()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, env=env, text=True, bufsize=1)

    def ask(self, case: Case, timeout: float) -> tuple[str, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps({"path": case.path, "rtol": case.rtol, "atol": case.atol}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return ERROR, self._crash_reason()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.kill()
            return ERROR, f"Timeout: no result within {timeout:g} s"
        line = self.proc.stdout.readline()
        if not line:
            return ERROR, self._crash_reason()
        r = json.loads(line)
        return r["status"], r["reason"]

    def _crash_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self.err.seek(0)
        tail = [ln for ln in self.err.read().decode(errors="replace").splitlines() if ln.strip()][-1:]
        return f"Crash: worker exited with {code}" + (f" ({tail[0].strip()[:200]})" if tail else "")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.err.close()


def run_cases(cases: Iterable[Case], jobs: int = 2, timeout: float = DEFAULT_TIMEOUT,
              progress: Callable[[Result, int, int], None] | None = None) -> list[Result]:
    """Run every case in a pool of ``jobs`` worker subprocesses; results in the cases' order."""
    cases = list(cases)
    todo: queue.Queue[tuple[int, Case]] = queue.Queue()
    for k, c in enumerate(cases):
        todo.put((k, c))
    results: list[Result | None] = [None] * len(cases)
    done = [0]
    lock = threading.Lock()

    def drive() -> None:
        w: _Worker | None = None
        try:
            while True:
                try:
                    k, c = todo.get_nowait()
                except queue.Empty:
                    return
                if w is None or not w.alive():
                    if w is not None:
                        w.close()
                    w = _Worker()
                t0 = time.perf_counter()
                status, reason = w.ask(c, timeout)
                r = Result(c.name, c.suite, c.op, status, reason, time.perf_counter() - t0)
                with lock:
                    results[k] = r
                    done[0] += 1
                    if progress:
                        progress(r, done[0], len(cases))
        finally:
            if w is not None:
                w.close()

    threads = [threading.Thread(target=drive, daemon=True) for _ in range(max(1, min(jobs, len(cases))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


# Cases whose expected data jitort deliberately does not reproduce: it follows onnxruntime (the API it
# is a drop-in for) and the op's spec text where the case's data, made by onnx.reference, disagrees.
DISPUTED = {
    "test_maxunpool_export_with_output_shape":
        "with output_shape, MaxUnpool's indices address the output_shape tensor (they come from a MaxPool "
        "over an input of that shape, as the spec describes; onnxruntime since microsoft/onnxruntime#2193 and "
        "PyTorch agree, and MaxPool -> MaxUnpool then round-trips odd sizes), whereas onnx.reference, which "
        "made this case's data, scatters into the default shape and zero-pads the end; onnx/onnx#8413 "
        "discusses the inconsistency. onnxruntime fails this case the same way.",
}
