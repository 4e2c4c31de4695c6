"""Ahead-of-time compilation: ``jitort compile MODEL -o DIR`` writes a self-contained artifact.

The artifact directory is a jitort cache root holding exactly one model: generated source
(``kernels/``, ``plans/``), Numba's compiled objects (beside them, and ``library/`` for the shared
kernels, which a warm-up run with the given input shapes compiles), the folded constants, a copy
of the model, and ``manifest.json``. ``InferenceSession(DIR)`` starts without compiling.

Compilation runs in a child process so the cache root and — for ``--target portable`` — the CPU
Numba targets (``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``, read when Numba starts) are set before
anything is compiled.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

# x86-64-v3: AVX2/FMA/BMI2 machines (Haswell and later, Zen 1 and later).
PORTABLE_ENV = {"NUMBA_CPU_NAME": "x86-64-v3",
                "NUMBA_CPU_FEATURES": "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,"
                                      "+lzcnt,+mmx,+movbe,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,"
                                      "+ssse3,+xsave"}


def compile_artifact(model: str, out: str, input_shapes: dict[str, list[int]] | None = None,
                     target: str = "host", quiet: bool = False) -> dict[str, Any]:
    """Build the artifact in a child process; returns its report (a dict)."""
    out_dir = Path(out).resolve()
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = dict(os.environ, JITORT_CACHE_DIR=str(out_dir))
    show_progress = not quiet and sys.stderr.isatty()
    if show_progress:
        env["JITORT_PROGRESS"] = "1"
    if target == "portable":
        env.update(PORTABLE_ENV)
    elif target != "host":
        raise ValueError(f"--target must be host or portable, not {target!r}")
    job = json.dumps({"model": str(model), "out": str(out_dir), "shapes": input_shapes or {}, "target": target,
                      "quiet": quiet})
    proc = subprocess.run([sys.executable, "-c", "import sys, jitort.aot as a; a._child(sys.argv[1])", job],
                          env=env, stdout=subprocess.PIPE, stderr=None if show_progress else subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"jitort compile failed:\n{(proc.stderr or '')[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _bar(done: int, total: int, name: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\rcompiling [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name[:28]:28s}{end}")
    sys.stderr.flush()


def _child(job_json: str) -> None:
    import jitort
    from jitort import artifact
    from jitort.models import random_feeds
    job = json.loads(job_json)
    out = Path(job["out"])
    shutil.copyfile(job["model"], out / "model.onnx")
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.cache_dir", str(out))
    sess = jitort.InferenceSession(str(out / "model.onnx"), so,
                                   progress=_bar if os.environ.get("JITORT_PROGRESS") == "1" else None)
    dims: dict[str, int] = {}
    for arg in sess.get_inputs():  # --input-shape name=1x3x224x224 binds that input's symbolic dims
        given = job["shapes"].get(arg.name)
        if given is not None:
            if len(given) != len(arg.shape):
                raise ValueError(f"--input-shape {arg.name}: rank {len(given)}, the model says {len(arg.shape)}")
            dims.update({d: int(v) for d, v in zip(arg.shape, given) if isinstance(d, str)})
    feeds = random_feeds(sess, seed=0, dims=dims)
    sess.run(None, feeds)  # compiles the shared library kernels this model calls, into out/library
    c = sess._compiled
    key = artifact.model_key((out / "model.onnx").read_bytes(), [], {"providers": sess.get_providers(), **sess._flags})
    m = artifact.manifest_for(c, key[0], key[1], target=job["target"])
    artifact.save_artifact(out, m, c.consts)
    shutil.rmtree(out / "models", ignore_errors=True)  # the session's own cache entry: the artifact replaces it
    report = {"artifact": str(out), "target": job["target"], "kernels": len(c.kernel_sources),
              "compiled": len(c.compiled), "compile_seconds": round(c.seconds, 3),
              "inputs": {k: list(v.shape) for k, v in feeds.items()}}
    if job["target"] == "portable":
        report["load_env"] = PORTABLE_ENV
    print(json.dumps(report))
