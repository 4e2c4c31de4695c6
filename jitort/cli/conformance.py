"""``jitort conformance``: run the ONNX conformance sweep (``jitort.conformance``), print the per-op
table and write the markdown report (docs/conformance.md for the full sweep)."""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import jitort
from jitort.conformance import (DEFAULT_TIMEOUT, DISPUTED, ERROR, MISMATCH, NOT_IMPLEMENTED, PASS, STATUSES, Result,
                                all_cases, run_cases)


def summarize(results: Sequence[Result]) -> dict[str, dict[str, int]]:
    """{"node": {status: count, "total": n}, "models": {...}}."""
    out: dict[str, dict[str, int]] = {}
    for group, rs in (("node", [r for r in results if r.suite == "node"]),
                      ("models", [r for r in results if r.suite != "node"])):
        c = collections.Counter(r.status for r in rs)
        out[group] = {s: c.get(s, 0) for s in STATUSES} | {"total": len(rs)}
    return out


def per_op(results: Sequence[Result]) -> list[tuple[str, dict[str, int]]]:
    table: dict[str, collections.Counter] = {}
    for r in results:
        table.setdefault(r.op, collections.Counter())[r.status] += 1
    return sorted(((op, dict(c)) for op, c in table.items()), key=lambda x: x[0].lower())


def table_text(results: Sequence[Result]) -> str:
    rows = per_op(results)
    w = max([len(op) for op, _ in rows] + [2])
    lines = [f"{'op':<{w}}  {'pass':>5} {'mism':>5} {'n/i':>5} {'err':>5}"]
    for op, c in rows:
        lines.append(f"{op:<{w}}  {c.get(PASS, 0):>5} {c.get(MISMATCH, 0):>5} "
                     f"{c.get(NOT_IMPLEMENTED, 0):>5} {c.get(ERROR, 0):>5}")
    return "\n".join(lines)


def markdown(results: Sequence[Result], seconds: float, jobs: int, pattern: str | None) -> str:
    import onnx

    s = summarize(results)
    out = ["# ONNX conformance", "",
           f"jitort {jitort.__version__} against onnx {onnx.__version__}'s backend test cases "
           f"(`jitort conformance{' --filter ' + repr(pattern) if pattern else ''}`: {len(results)} cases, "
           f"{seconds:.0f} s on {jobs} workers). Generated; do not edit.", "",
           "Node cases come from `onnx.backend.test.case.node.collect_testcases()`; model cases from the "
           "wheel's `simple`, `pytorch-converted` and `pytorch-operator` suites, each run in a worker "
           "subprocess. Outputs are compared as `onnx.backend.test` does (`assert_allclose` with the case's "
           "rtol/atol, 1e-3/1e-7 by default; bfloat16 with rtol 2^-6), except that float16 outputs allow two "
           "float16 ULPs (rtol 2^-9: expected values computed in float16 arithmetic are themselves an ULP off "
           "where jitort rounds a float32 result once) and random ops (Bernoulli, Random*, Multinomial) are "
           "compared by shape and dtype only.", "",
           "| cases | pass | mismatch | not implemented | error | total |", "|---|---|---|---|---|---|"]
    for group, c in s.items():
        out.append(f"| {group} | {c[PASS]} | {c[MISMATCH]} | {c[NOT_IMPLEMENTED]} | {c[ERROR]} | {c['total']} |")
    out += ["", "## Per op", "", "| op | pass | mismatch | not implemented | error |", "|---|---|---|---|---|"]
    for op, c in per_op(results):
        out.append(f"| {op} | {c.get(PASS, 0)} | {c.get(MISMATCH, 0)} | {c.get(NOT_IMPLEMENTED, 0)} | "
                   f"{c.get(ERROR, 0)} |")
    for status in (MISMATCH, ERROR, NOT_IMPLEMENTED):
        bad = [r for r in results if r.status == status]
        if not bad:
            continue
        out += ["", f"## {status.capitalize()} ({len(bad)})", "", "| case | op | reason |", "|---|---|---|"]
        for r in sorted(bad, key=lambda r: (r.op.lower(), r.name)):
            reason = r.reason.replace("|", "\\|").replace("\n", " ")
            if r.name in DISPUTED:
                reason = f"**deliberate, onnxruntime's behaviour:** {DISPUTED[r.name]} Observed: {reason}"
            out.append(f"| {r.name} | {r.op} | {reason} |")
    return "\n".join(out) + "\n"


def main(args: argparse.Namespace) -> int:
    """``jitort conformance``: run the sweep, print the per-op table, write the markdown report."""
    t0 = time.perf_counter()
    cases = all_cases(args.filter)
    if not cases:
        print("jitort conformance: no case matches", file=sys.stderr)
        return 2
    print(f"{len(cases)} cases, {args.jobs} workers, timeout {args.timeout:g} s", flush=True)

    def progress(r: Result, k: int, n: int) -> None:
        if r.status != PASS or args.verbose:
            print(f"[{k}/{n}] {r.status:<15} {r.name}  {r.reason[:160]}", flush=True)

    results = run_cases(cases, args.jobs, args.timeout, progress)
    seconds = time.perf_counter() - t0
    print(table_text(results))
    for group, c in summarize(results).items():
        print(f"{group}: " + ", ".join(f"{c[s]} {s}" for s in STATUSES) + f" of {c['total']}")
    print(f"{seconds:.0f} s")
    out = args.out if args.out is not None else (None if args.filter else "docs/conformance.md")
    if out:  # a filtered run never overwrites the full report unless asked to
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(markdown(results, seconds, args.jobs, args.filter))
        print(f"wrote {out}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=0))
    return 1 if any(r.status == MISMATCH for r in results) else 0


def add_parser(sub: Any) -> None:
    """The ``conformance`` subcommand of ``jitort``'s CLI."""
    p = sub.add_parser("conformance", help="run onnx's backend conformance cases and report per op",
                       description="Run the ONNX backend node cases and the simple/pytorch-converted/"
                                   "pytorch-operator model suites, each in a worker subprocess; print a "
                                   "per-op table and write a markdown report. Exit 1 on any mismatch.")
    p.add_argument("--filter", metavar="REGEX", help="only cases whose name or op matches REGEX")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="markdown report (default: docs/conformance.md for the full sweep, none with --filter; "
                        "'' for none)")
    p.add_argument("--json", metavar="FILE", help="also write every result as JSON")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds per case (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, metavar="N", help="worker processes")
    p.add_argument("-v", "--verbose", action="store_true", help="print every case, passes included")
    p.set_defaults(fn=main)
