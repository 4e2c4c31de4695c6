"""Ahead-of-time compilation: ``jitort compile MODEL -o DIR`` writes a self-contained artifact.

The artifact directory is a jitort cache root holding exactly one model: generated source
(``kernels/``, ``plans/``), Numba's compiled objects (beside them, and ``library/`` for the shared
kernels, which a warm-up run compiles), the folded constants, a copy of the model, and
``manifest.json``. ``InferenceSession(DIR)`` starts without compiling.

The warm-up run only has to reach the library kernels the plan calls, which specialise on dtype,
rank and layout: its values never matter, so inputs are valid by construction
(:func:`jitort.models.warmup_feeds`: zeros for integer inputs such as token ids, ones for masks)
unless ``--input NAME=FILE.npy`` gives a sample; ``--input-shape`` and samples bind symbolic dims
(default 1). A warm-up run that fails anyway is a warning in the report (``warmup_error``): the
artifact is complete and what the run did not reach compiles on first use. The artifact is built
in a hidden directory beside the target and renamed into place at the end: a compile that fails
or is interrupted leaves no directory behind.

Compilation runs in a child process so the cache root and — for ``--target portable`` — the CPU
Numba targets (``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``, read when Numba starts) are set before
anything is compiled.

``--provider cuda --cc 9.0`` partitions the model for CUDAExecutionProvider (no GPU needed: the
partition, the CUDA plan and NVVM's PTX do not touch a device), writes the artifact (manifest
target ``cuda-sm_90``; a session loads it only with the CUDA provider active), and compiles every
kernel the plan launches to ``cuda/<kernel>[.<key>].sm_90.ptx``; where nvJitLink is installed it
links each to a ``.cubin`` and records the registers, shared memory, stack and spills per kernel in
``cuda/kernels.json``. On the GPU the session still compiles its kernels with ``cuda.jit`` when it
is built (numba-cuda has no API to load our PTX into its dispatchers); the PTX and the resource
report are the ahead-of-time check.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import jitort
from jitort import artifact, cache
from jitort.codegen.cuda_plan import kernel_ptx
from jitort.compile_service import cache_key
from jitort.compiler import compile_graph
from jitort.errors import Fail
from jitort.frontend.importer import import_model
from jitort.model_file import load_model
from jitort.models import input_specs, warmup_feeds


# x86-64-v3: AVX2/FMA/BMI2 machines (Haswell and later, Zen 1 and later).
PORTABLE_ENV = {"NUMBA_CPU_NAME": "x86-64-v3",
                "NUMBA_CPU_FEATURES": "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,"
                                      "+lzcnt,+mmx,+movbe,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,"
                                      "+ssse3,+xsave"}


def compile_artifact(model: str, out: str, input_shapes: dict[str, list[int]] | None = None,
                     target: str = "host", quiet: bool = False, provider: str = "cpu",
                     cc: tuple[int, int] = (9, 0), inputs: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Build the artifact in a child process; returns its report (a dict).

    ``input_shapes`` and ``inputs`` (sample arrays) set the warm-up run's shapes; samples are also
    its values (the other inputs get :func:`jitort.models.warmup_feeds`). The artifact is built in
    a hidden directory beside ``out`` and renamed into place when complete (replacing an artifact
    already there), so a failed or interrupted compile leaves no directory behind. Raises
    ValueError for bad arguments and :class:`jitort.errors.Fail` (one-line message) when no
    artifact can be built; a failed warm-up run only sets ``report["warmup_error"]``."""
    if target not in ("host", "portable"):
        raise ValueError(f"--target must be host or portable, not {target!r}")
    if provider not in ("cpu", "cuda"):
        raise ValueError(f"--provider must be cpu or cuda, not {provider!r}")
    out_dir = Path(out).resolve()
    _check_output(out_dir)
    samples = dict(inputs or {})
    dims = _warmup_dims(model_specs(model), input_shapes or {}, samples) if input_shapes or samples else {}
    out_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_stale(out_dir)
    staging = _sibling(out_dir, "partial")
    try:
        env = dict(os.environ, JITORT_CACHE_DIR=str(staging))
        show_progress = not quiet and sys.stderr.isatty()
        if show_progress:
            env["JITORT_PROGRESS"] = "1"
        if target == "portable":
            env.update(PORTABLE_ENV)
        with tempfile.TemporaryDirectory(prefix="jitort-compile-") as tmp:
            sample_file = ""
            if samples:
                sample_file = str(Path(tmp) / "samples.npz")
                np.savez(sample_file, *samples.values())  # positional: input names need not be valid keys
            job = {"model": str(model), "out": str(staging), "dims": dims, "samples": sample_file,
                   "sample_names": list(samples), "target": target, "quiet": quiet, "cc": list(cc)}
            report = _run_child("_child" if provider == "cpu" else "_child_cuda", job, env, show_progress)
        _install(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report["artifact"] = str(out_dir)
    return report


def model_specs(model: str) -> list[tuple[str, np.dtype, Any]]:
    """The model's graph inputs ``(name, dtype, shape)``; Fail when the file is not a readable model."""
    try:
        return input_specs(model)
    except Exception as e:  # noqa: BLE001 - whatever onnx raises for a damaged file
        raise Fail(f"cannot read the model {model}: {_one_line(e)}") from None


def _warmup_dims(specs: list[tuple[str, np.dtype, Any]], shapes: dict[str, list[int]],
                 samples: dict[str, np.ndarray]) -> dict[str, int]:
    """The symbolic dims the given shapes and samples bind (``--input-shape`` name=1x3x224x224
    binds that input's symbolic dims; a sample binds its own); ValueError for an unknown input, a
    wrong rank or dtype, or a dim bound to two values."""
    declared = {name: (dt, shape) for name, dt, shape in specs}
    dims: dict[str, int] = {}
    for what, name, given in ([("--input-shape", n, list(v)) for n, v in shapes.items()]
                              + [("--input", n, list(a.shape)) for n, a in samples.items()]):
        if name not in declared:
            raise ValueError(f"{what} {name}: the model has no input {name!r}; its inputs are {list(declared)}")
        dt, shape = declared[name]
        if name in samples and samples[name].dtype != dt:
            raise ValueError(f"--input {name}: the sample is {samples[name].dtype}, the model expects {dt}")
        if shape is None:
            continue
        if len(given) != len(shape):
            raise ValueError(f"{what} {name}: rank {len(given)}, the model says {len(shape)}")
        for d, v in zip(shape, given):
            if isinstance(d, int) and d >= 0 and int(v) != d:
                raise ValueError(f"{what} {name}: dim {v} where the model says {d}")
            if isinstance(d, str):
                if dims.setdefault(d, int(v)) != int(v):
                    raise ValueError(f"{what} {name}: dim {d!r} is {v} here but {dims[d]} elsewhere")
    return dims


def _check_output(out: Path) -> None:
    """``out`` must be absent, an empty directory, or an artifact (which is replaced)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / artifact.MANIFEST).is_file():
        raise ValueError(f"{out} is a non-empty directory but not a jitort artifact; not replacing it")


def _sibling(out: Path, what: str) -> Path:
    """A new private directory beside ``out`` (hidden, named for this process: see ``_remove_stale``)."""
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{what}-{os.getpid()}-"))


def _remove_stale(out: Path) -> None:
    """Remove what a compile of ``out`` killed outright (no chance to clean up) left beside it."""
    for p in out.parent.glob(f".{glob.escape(out.name)}.*-*-*"):
        what, _, rest = p.name[len(out.name) + 2:].partition("-")
        pid = rest.split("-")[0]
        if what in ("partial", "replaced") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _install(staging: Path, out: Path) -> None:
    """Rename the finished artifact to ``out``, replacing what is there (an artifact or an empty directory)."""
    old = None
    if out.exists():
        old = _sibling(out, "replaced")
        os.replace(out, old / "artifact")
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old / "artifact", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _run_child(entry: str, job: dict[str, Any], env: dict[str, str], show_progress: bool) -> dict[str, Any]:
    """Run ``jitort.aot.<entry>(job)`` in a new process group, return the report it prints last.
    Interrupted (KeyboardInterrupt, SystemExit), it kills the group (the child and its compile
    workers) before re-raising; a failed child is a Fail with its one-line reason."""
    proc = subprocess.Popen([sys.executable, "-c", f"import sys, jitort.aot as a; a.{entry}(sys.argv[1])",
                             json.dumps(job)], env=env, stdout=subprocess.PIPE,
                            stderr=None if show_progress else subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        _kill_group(proc)
        raise
    lines = (stdout or "").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:  # it died before reporting
        report = None
    if proc.returncode == 0 and isinstance(report, dict) and "error" not in report:
        return report
    if isinstance(report, dict) and "error" in report:
        raise Fail(str(report["error"]))
    tail = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()][-1:]
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    raise Fail(f"the compiler process ended with {how}" + (f": {' '.join(tail[0].split())}" if tail else ""))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _one_line(e: BaseException) -> str:
    """``Type: message`` on one line (jitort's errors: their plain message, without onnxruntime's prefix)."""
    msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    return f"{type(e).__name__}: {' '.join(msg.split())}"


def _bar(done: int, total: int, name: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\rcompiling [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name[:28]:28s}{end}")
    sys.stderr.flush()


def _reporting(build: Callable[[dict[str, Any]], dict[str, Any]], job_json: str) -> None:
    """The child's frame: print ``build``'s report as the last line of stdout, or ``{"error": one
    line}`` and exit 3 (the CLI's EXIT_FAILED) when it raises."""
    job = json.loads(job_json)
    try:
        report = build(job)
    except Exception as e:  # noqa: BLE001 - any failure means no artifact; the parent says why in one line
        staged = str(Path(job["out"]) / "model.onnx")  # name the user's file, not the staged copy
        print(json.dumps({"error": _one_line(e).replace(staged, job["model"])}))
        sys.exit(3)
    print(json.dumps(report))


def _child(job_json: str) -> None:
    _reporting(_build_cpu, job_json)


def _child_cuda(job_json: str) -> None:
    _reporting(_build_cuda, job_json)


def _load_samples(job: dict[str, Any]) -> dict[str, np.ndarray]:
    if not job["samples"]:
        return {}
    with np.load(job["samples"], allow_pickle=False) as f:
        return {name: f[f"arr_{k}"] for k, name in enumerate(job["sample_names"])}


def _warm_up(sess: Any, job: dict[str, Any]) -> tuple[dict[str, list[int]], str | None]:
    """One run that compiles the shared library kernels the plan calls into the artifact's
    ``library/``: the samples, and :func:`jitort.models.warmup_feeds` (values valid by
    construction) for the other inputs. Returns the shapes run and, if it failed, why (the
    kernels it did not reach then compile on first use)."""
    feeds: dict[str, np.ndarray] = {}
    try:
        feeds = warmup_feeds(sess, job["dims"], _load_samples(job))
        sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - the artifact does not need the run; the report says what failed
        return {k: list(v.shape) for k, v in feeds.items()}, _one_line(e)
    return {k: list(v.shape) for k, v in feeds.items()}, None


def _build_cpu(job: dict[str, Any]) -> dict[str, Any]:
    out = Path(job["out"])
    shutil.copyfile(job["model"], out / "model.onnx")
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.cache_dir", str(out))
    so.add_session_config_entry("session.jitort.warmup", "0")  # _warm_up below, with the job's shapes
    sess = jitort.InferenceSession(str(out / "model.onnx"), so,
                                   progress=_bar if os.environ.get("JITORT_PROGRESS") == "1" else None)
    mark, t0 = cache.compile_count(), time.perf_counter()
    shapes, warmup_error = _warm_up(sess, job)
    c = sess.artifact
    c.compiled += cache.compiled_since(mark)  # the warm-up's library kernels count as this compile's
    c.seconds += time.perf_counter() - t0
    m = artifact.manifest_for(c, target=job["target"])
    artifact.save_artifact(out, m, c.consts)
    artifact.wait_pending()  # the session's own cache entry, written on a thread: the artifact replaces it
    shutil.rmtree(out / "models", ignore_errors=True)
    report = {"artifact": str(out), "target": job["target"], "kernels": len(c.kernel_sources),
              "compiled": len(c.compiled), "compile_seconds": round(c.seconds, 3),
              "inputs": shapes, "warmup_error": warmup_error}
    if job["target"] == "portable":
        report["load_env"] = PORTABLE_ENV
    return report


def _build_cuda(job: dict[str, Any]) -> dict[str, Any]:
    """Partition for CUDA, write the artifact, compile every kernel to PTX (and cubin where nvJitLink is)."""
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import runtime as rt
    out = Path(job["out"])
    cc = (int(job["cc"][0]), int(job["cc"][1]))
    sm = f"sm_{cc[0]}{cc[1]}"
    shutil.copyfile(job["model"], out / "model.onnx")
    proto, raw = load_model(str(out / "model.onnx"))
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    c = compile_graph(import_model(proto), providers, title=proto.graph.name or "model")
    for name, src in c.kernel_sources.items():  # sources into the artifact root (CPU kernels compile here)
        cache.load_source_module("kernels", name, src, out)
    cache.load_source_module("plans", c.plan_name, c.plan_source, out)
    c.key, c.model_hash = cache_key(raw if raw is not None else proto.SerializeToString(), providers, True, True)
    target = f"cuda-{sm}"
    artifact.save_artifact(out, artifact.manifest_for(c, target=target), c.consts)
    shutil.rmtree(out / "models", ignore_errors=True)
    assert c.graph is not None
    kdir = out / "cuda"
    kdir.mkdir(mode=0o700, exist_ok=True)
    link = rt.nvjitlink_available()
    rows = []
    for e in kernel_ptx(c.graph, cc, out):
        stem = e["kernel"] if e["key"] == "fused" else f"{e['kernel']}.{e['key'].replace(',', '_')}"
        (kdir / f"{stem}.{sm}.ptx").write_text(e["ptx"])
        row = {"kernel": e["kernel"], "key": e["key"], "nodes": e["nodes"], "ptx": f"cuda/{stem}.{sm}.ptx"}
        if link:
            cubin, info = rt.link_cubin(e["ptx"], cc, stem)
            (kdir / f"{stem}.{sm}.cubin").write_bytes(cubin)
            row.update(info, cubin=f"cuda/{stem}.{sm}.cubin")
        rows.append(row)
    (kdir / "kernels.json").write_text(json.dumps(rows, indent=1))
    on_cuda = sorted({n.op_type for n in c.graph.nodes if n.provider == "CUDAExecutionProvider"})
    on_cpu = sorted({n.op_type for n in c.graph.nodes if n.provider != "CUDAExecutionProvider"})
    return {"artifact": str(out), "target": target, "kernels": len(rows), "linked": link,
            "cuda_ops": on_cuda, "cpu_ops": on_cpu,
            "resources": [{k: r.get(k) for k in ("kernel", "key", "registers", "shared_bytes", "stack_bytes",
                                                 "spill_stores")} for r in rows]}
