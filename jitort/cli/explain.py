"""``jitort explain``: what the compiler did to a model (IR after passes, fused groups, the passes'
notes, generated kernels and plan)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any


import jitort
from jitort.cli.cache import cached_source_path
from jitort.cli.common import EXIT_FAILED, EXIT_OK, parse_dims, resolve, session_options
from jitort.codegen.cpu import fused_kernel
from jitort.errors import ALL_ERRORS
from jitort.models import resolve_model
from jitort.passes.fusion import FUSED


# --- explain -------------------------------------------------------------------------------------

def format_graph(g: Any) -> str:
    """The IR as ``Graph.__str__`` prints it, with each fused group's body shown by node names."""
    nodes = [replace(n, attrs={**n.attrs, "body": "+".join(b.name or b.op_type for b in n.attrs["body"])})
             if n.op_type == FUSED and "body" in n.attrs else n for n in g.nodes]
    return str(replace(g, nodes=nodes))


def _module_path(name: str, kind: str) -> Path:
    # The file a generated module was imported from: a process that changed JITORT_CACHE_DIR
    # after importing it keeps using the first copy.
    f = getattr(sys.modules.get(name), "__file__", None)
    return Path(f) if f else cached_source_path(name, kind)


def cmd_explain(args: argparse.Namespace) -> int:
    path = resolve(args.model, resolve_model)
    try:
        sess = jitort.InferenceSession(str(path), session_options(None, parse_dims(args.dim)),
                                       providers=["CPUExecutionProvider"])
    except ALL_ERRORS as e:
        print(f"jitort failed on {path}: {type(e).__name__}: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_FAILED
    c = sess.artifact
    g = c.ir()  # a session loaded from the cache or an artifact rebuilds it (passes only)
    print(f"model: {path}")
    print("\n== IR after passes ==")
    print(format_graph(g))

    groups = [n for n in g.nodes if n.op_type == FUSED and n.domain == "jitort"]
    print(f"\n== fused groups ({len(groups)}) ==")
    for n in groups:
        body = n.attrs["body"]
        fk = fused_kernel(n, g)
        print(f"{fk.name} ({fk.mode}): {len(body)} node(s) -> {', '.join(n.outputs)}")
        for b in body:
            print(f"    {b.name or '?'}: {b.op_type}({', '.join(i or '_' for i in b.inputs)}) -> "
                  f"{', '.join(o for o in b.outputs if o)}")
    if not groups:
        print("(none)")

    print(f"\n== pass notes ({len(g.notes)}) ==")
    for note in g.notes:
        print(note)
    if not g.notes:
        print("(none)")

    compiled = {fn.split(".")[0]: 0.0 for fn, _ in c.compiled}
    for fn, s in c.compiled:
        compiled[fn.split(".")[0]] += s
    kernels = list({k.name: k for k in (fused_kernel(n, g) for n in groups)}.values())
    print(f"\n== kernels ({len(kernels)}) ==")
    for k in kernels:
        how = f"compiled now ({compiled[k.name]:.2f} s)" if k.name in compiled else "loaded from the cache"
        print(f"{k.name} ({k.mode}) {how}")
        print(f"    {_module_path(k.name, 'kernels')}")
        if args.source:
            print(k.source)
    print("\n== plan ==")
    print(f"{c.plan_name}  {_module_path(c.plan_name, 'plans')}")
    if args.source:
        print(c.plan_source)
    print(f"\ncompile: {c.seconds:.2f} s, session {sess.session_seconds:.2f} s")
    return EXIT_OK


def add_parser(sub: Any) -> None:
    e = sub.add_parser("explain", help="show the IR after passes, fusion decisions, kernels and plan")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("--dim", action="append", metavar="NAME=N", help="fix a symbolic dim before compiling")
    e.add_argument("--source", action="store_true", help="also print the generated source")
    e.set_defaults(fn=cmd_explain)
