"""Start-up cost of a model in fresh processes: jitort cold (empty cache), warm (cache from the cold
run), from a ``jitort compile`` artifact (empty cache), and onnxruntime's session creation, in one
run, interleaved by round. Each child reports import time, session creation and its first run, and
whether onnx or ml_dtypes was imported by then (the artifact path of a float32 model imports neither).

    python benchmarks/bench_startup.py [MODEL] [--rounds 3] [--threads 1]

MODEL is an .onnx path or light_<name> (default light_resnet50). Medians over rounds are printed as
a markdown table; ``--json FILE`` keeps every measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    runtime, model, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if runtime == "onnxruntime":
        import onnxruntime as rt
    else:
        import jitort as rt
    t1 = time.perf_counter()
    so = rt.SessionOptions()
    so.intra_op_num_threads = threads
    s = rt.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    t2 = time.perf_counter()
    heavy = [m for m in ("onnx", "ml_dtypes") if m in sys.modules]
    from jitort.models import random_feeds  # after the timers: it imports onnx (and jitort for onnxruntime)
    feeds = random_feeds(s, seed=0)
    t3 = time.perf_counter()
    s.run(None, feeds)
    t4 = time.perf_counter()
    s.run(None, feeds)
    t5 = time.perf_counter()
    rep = getattr(s, "compile_report", {})
    print(json.dumps({"import": t1 - t0, "session": t2 - t1, "first_run": t4 - t3, "second_run": t5 - t4,
                      "compiled": len(rep.get("compiled", [])), "loaded_from": rep.get("loaded_from", ""),
                      "heavy": heavy}))
""")


def _env(**extra: str) -> dict[str, str]:
    """The children's environment. Bytecode writing is allowed even where PYTHONDONTWRITEBYTECODE is
    set: an installed package has its bytecode (pip writes it), and recompiling jitort's sources in
    every child would add ~0.3 s to each start-up measured here."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **extra}


def child(runtime: str, model: str, threads: int, cache: Path | None) -> dict:
    env = _env()
    if cache is not None:
        env["JITORT_CACHE_DIR"] = str(cache)
    p = subprocess.run([sys.executable, "-c", CHILD, runtime, model, str(threads)], env=env,
                       capture_output=True, text=True, timeout=1800)
    if p.returncode:
        raise SystemExit(f"{runtime} child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="light_resnet50")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    from jitort.models import resolve_model
    model = str(resolve_model(a.model))
    rows: dict[str, list[dict]] = {"jitort cold": [], "jitort warm": [], "jitort artifact": [], "onnxruntime": []}
    with tempfile.TemporaryDirectory(prefix="jitort-startup-") as tmp:
        tmp_path = Path(tmp)
        art = tmp_path / "artifact"
        p = subprocess.run([sys.executable, "-c", "import sys; from jitort.cli import main; sys.exit(main(sys.argv[1:]))",
                            "compile", model, "-o", str(art)],
                           env=_env(JITORT_CACHE_DIR=str(tmp_path / "aot-cache")),
                           capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"jitort compile failed:\n{p.stderr[-3000:]}")
        for r in range(a.rounds):
            cache = tmp_path / f"cache{r}"
            rows["jitort cold"].append(child("jitort", model, a.threads, cache))
            rows["onnxruntime"].append(child("onnxruntime", model, a.threads, None))
            rows["jitort warm"].append(child("jitort", model, a.threads, cache))
            rows["jitort artifact"].append(child("jitort", str(art), a.threads, tmp_path / f"art-cache{r}"))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    print(f"{Path(model).name}, {a.threads} thread(s), fresh processes, medians of {a.rounds} rounds (seconds)\n")
    print("| | import | session creation | first run | second run | functions compiled | onnx / ml_dtypes imported |")
    print("|---|---|---|---|---|---|---|")
    for name, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("import", "session", "first_run", "second_run",
                                                                "compiled")}
        print(f"| {name} | {med['import']:.2f} | {med['session']:.2f} | {med['first_run']:.3f} | "
              f"{med['second_run']:.3f} | {med['compiled']:.0f} | {'yes' if any(r['heavy'] for r in rs) else 'no'} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
