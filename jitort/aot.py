"""Ahead-of-time compilation: ``jitort compile MODEL -o DIR`` writes a self-contained artifact.

The artifact directory is a jitort cache root holding exactly one model: generated source
(``kernels/``, ``plans/``), Numba's compiled objects (beside them, and ``library/`` for the shared
kernels, which a warm-up run with the given input shapes compiles), the folded constants, a copy
of the model, and ``manifest.json``. ``InferenceSession(DIR)`` starts without compiling.

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

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


# x86-64-v3: AVX2/FMA/BMI2 machines (Haswell and later, Zen 1 and later).
PORTABLE_ENV = {"NUMBA_CPU_NAME": "x86-64-v3",
                "NUMBA_CPU_FEATURES": "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,"
                                      "+lzcnt,+mmx,+movbe,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,"
                                      "+ssse3,+xsave"}


def compile_artifact(model: str, out: str, input_shapes: dict[str, list[int]] | None = None,
                     target: str = "host", quiet: bool = False, provider: str = "cpu",
                     cc: tuple[int, int] = (9, 0)) -> dict[str, Any]:
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
    if provider not in ("cpu", "cuda"):
        raise ValueError(f"--provider must be cpu or cuda, not {provider!r}")
    job = json.dumps({"model": str(model), "out": str(out_dir), "shapes": input_shapes or {}, "target": target,
                      "quiet": quiet, "cc": list(cc)})
    child = "_child" if provider == "cpu" else "_child_cuda"
    proc = subprocess.run([sys.executable, "-c", f"import sys, jitort.aot as a; a.{child}(sys.argv[1])", job],
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


def _child_cuda(job_json: str) -> None:
    """Partition for CUDA, write the artifact, compile every kernel to PTX (and cubin where nvJitLink is)."""
    from jitort import artifact, cache
    from jitort.codegen.cuda_plan import kernel_ptx
    from jitort.compiler import compile_graph
    from jitort.kernels.cuda import library_hash as cuda_library_hash
    from jitort.kernels.cuda import runtime as rt
    from jitort.onnx_import import import_model, load_model
    job = json.loads(job_json)
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
    key, model_hash = artifact.model_key(raw if raw is not None else proto.SerializeToString(), [],
                                         {"providers": providers, "fold": True, "fuse": True,
                                          "cuda_library": cuda_library_hash()})
    target = f"cuda-{sm}"
    artifact.save_artifact(out, artifact.manifest_for(c, key, model_hash, target=target), c.consts)
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
    print(json.dumps({"artifact": str(out), "target": target, "kernels": len(rows), "linked": link,
                      "cuda_ops": on_cuda, "cpu_ops": on_cpu,
                      "resources": [{k: r.get(k) for k in ("kernel", "key", "registers", "shared_bytes", "stack_bytes",
                                                           "spill_stores")} for r in rows]}))


# --- the `jitort compile` command ----------------------------------------------------------------

def add_parser(sub: Any) -> None:
    """The ``compile`` subcommand of jitort's CLI."""
    p = sub.add_parser("compile", help="compile a model ahead of time into an artifact directory",
                       description="Compile MODEL into DIR: generated source, Numba's objects, folded constants "
                                   "and a manifest; InferenceSession(DIR) then starts without compiling. With "
                                   "--provider cuda: the CUDA partition, and every CUDA kernel as PTX (and cubin "
                                   "with registers/shared memory where nvJitLink is installed); no GPU needed.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="artifact directory")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224",
                   help="shape of an input for the warm-up run (binds its symbolic dims); repeatable")
    p.add_argument("--target", default="host", choices=["host", "portable"], help="CPU target (default host)")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"], help="execution provider (default cpu)")
    p.add_argument("--cc", default="9.0", metavar="MAJOR.MINOR", help="CUDA compute capability (default 9.0)")
    p.set_defaults(fn=cmd_compile)


def cmd_compile(args: Any) -> int:
    """``jitort compile``: exit 0 when the artifact is written, 2 on bad arguments, 3 when compiling fails."""
    from jitort.cli import EXIT_FAILED, EXIT_OK, UsageError
    if not os.path.isfile(args.model):
        raise UsageError(f"no such model file: {args.model}")
    try:
        major, minor = (int(v) for v in args.cc.split("."))
    except ValueError:
        raise UsageError(f"--cc expects MAJOR.MINOR (e.g. 9.0), got {args.cc!r}") from None
    shapes: dict[str, list[int]] = {}
    for item in args.input_shape or []:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep:
                raise ValueError
            shapes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise UsageError(f"--input-shape expects NAME=1x3x224x224, got {item!r}") from None
    try:
        rep = compile_artifact(args.model, args.output, shapes, args.target, provider=args.provider,
                               cc=(major, minor))
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        return EXIT_FAILED
    print(f"artifact: {rep['artifact']} (target {rep['target']}, {rep['kernels']} kernels)")
    for r in rep.get("resources", []):
        res = "" if r.get("registers") is None else (
            f"  {r['registers']:3d} registers, {r['shared_bytes']:6d} B shared, {r['stack_bytes']} B stack, "
            f"{r['spill_stores']} B spilled")
        print(f"  {r['kernel']:<28} {r['key']:<14}{res}")
    if "cuda_ops" in rep:
        print(f"  on CUDA: {', '.join(rep['cuda_ops'])}")
        print(f"  on CPU:  {', '.join(rep['cpu_ops']) or '-'}")
    return EXIT_OK
