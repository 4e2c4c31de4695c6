"""IR -> Python source for Numba's CPU target: fused elementwise kernels.

A fused kernel is one ``@njit`` function with one explicit signature, written to its own file. In
"flat" mode (broadcast known at compile time) dimensions are collapsed where every operand agrees;
outer loops run over all collapsed dims but the last and an inner loop over the last, which is
contiguous in every operand that varies along it. Operands constant along the inner loop (scalars,
per-row values) are loaded outside it, inner-loop indices are uint64 (no wraparound selects), and a
chain with several fast-math functions runs as stages over L1-sized blocks (``stages.py``), so each
stage loop vectorises and overlaps its iterations. A kernel whose output can be large also gets a
Python wrapper that splits it across the session's threads (``kernels/parallel.py``). "Strided"
mode (broadcast known only at run time) loops over the output's full rank, reading operands through
views broadcast to it (one-element constants are read once instead).

Kernel source is canonical (no value or node names) so identical chains in one model, or in
different models, share one file and one compile; the plan names the ONNX nodes each call came from.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from jitort.codegen.stages import HALF_CONVERSIONS, Statement, crossing, scalar_program, split_stages, value_dtype
from jitort.codegen.source import GENERATED_HEADER, IndentedBuffer, comment_safe, content_hash, library_hash
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, Shape
from jitort.kernels.registry import np_name
from jitort.passes.fusion import broadcast_pattern

_NB_TYPES = {"float32": "float32", "float64": "float64", "int8": "int8", "int16": "int16",
             "int32": "int32", "int64": "int64", "uint8": "uint8", "uint16": "uint16",
             "uint32": "uint32", "uint64": "uint64", "bool": "boolean"}


def storage_name(dt: np.dtype) -> str:
    """The Numba element type a kernel sees: 16-bit floats travel as their uint16 bits."""
    n = np.dtype(dt).name
    if n in HALF_CONVERSIONS:
        return "uint16"
    if n not in _NB_TYPES:
        raise OrtNotImplemented(f"jitort's CPU kernels do not support dtype {n}")
    return _NB_TYPES[n]


@dataclass
class FusedKernel:
    name: str
    source: str
    mode: str                  # "flat": broadcast resolved statically; "strided": at run time
    inputs: list[str]
    outputs: list[str]
    patterns: list[tuple[str, ...]] | None
    loop_shape: Shape
    # Strided mode, per input: True where the plan passes a view broadcast to the output's shape
    # (``jitort.codegen.broadcast.expand_to``), False for a one-element constant passed as it is
    # (read once, before the loops). None in flat mode.
    views: list[bool] | None = None



def fused_kernel(node: Node, g: Graph) -> FusedKernel:
    body: list[Node] = node.attrs["body"]
    loop_shape = g.type_of(node.outputs[0]).shape
    if loop_shape is None:
        raise OrtNotImplemented(f"{node.describe()}: rank of '{node.outputs[0]}' unknown at compile time")
    pats = [broadcast_pattern(g.type_of(i).shape, loop_shape) for i in node.inputs]
    mode = "flat" if all(p is not None for p in pats) else "strided"
    buf = IndentedBuffer()
    imports: set[str] = set()
    in_args = [f"a{k}" for k in range(len(node.inputs))]
    out_args = [f"o{k}" for k in range(len(node.outputs))]
    dts = {n: value_dtype(g, n) for n in [*node.inputs, *node.outputs]}
    prog, local = scalar_program(node, g, "cpu", imports)

    def load(k: int, index: str, array: str | None = None) -> str:
        dt = dts[node.inputs[k]]
        raw = f"{array or in_args[k]}{index}"
        if dt.name in HALF_CONVERSIONS:
            imports.add(f"from jitort.kernels.fp16 import {HALF_CONVERSIONS[dt.name][0]}")
            return f"{HALF_CONVERSIONS[dt.name][0]}({raw})"
        return raw

    def store(k: int, index: str, val: str) -> str:
        dt = dts[node.outputs[k]]
        if dt.name in HALF_CONVERSIONS:
            imports.add(f"from jitort.kernels.fp16 import {HALF_CONVERSIONS[dt.name][1]}")
            val = f"{HALF_CONVERSIONS[dt.name][1]}({val})"
        return f"{out_args[k]}{index} = {val}"

    split = None
    views: list[bool] | None = None
    if mode == "flat":
        dims, in_pats = collapse_dims(loop_shape, pats)  # type: ignore[arg-type]
        split = _split_threshold(loop_shape, prog, in_pats)
        kname = "_kernel" if split else "{KNAME}"
        _emit_flat(buf, kname, node, prog, local, loop_shape, dims, in_pats, load, store, split is not None)
        in_layouts = ["C"] * len(in_args)
    else:
        R = len(loop_shape)
        views = [not _one_element_constant(g, i) for i in node.inputs]
        buf.writeline("def {KNAME}(" + ", ".join(in_args + out_args) + "):")
        with buf.indent(), contextlib.ExitStack() as nest:
            for k, i in enumerate(node.inputs):  # one-element constants: read once, before the loops
                if not views[k]:
                    r = len(g.type_of(i).shape or ())
                    buf.writeline(f"x{k} = {load(k, '[' + ', '.join(['0'] * r) + ']' if r else '[()]')}")
            for d in range(R):
                buf.writeline(f"for i{d} in range(o0.shape[{d}]):")
                nest.enter_context(buf.indent())
            ix = "[" + ", ".join(f"i{d}" for d in range(R)) + "]" if R else "[()]"
            for k in range(len(in_args)):
                if views[k]:
                    buf.writeline(f"x{k} = {load(k, ix)}")
            _emit_statements(buf, prog)
            for k, o in enumerate(node.outputs):
                buf.writeline(store(k, ix, local[o]))
        in_layouts = ["A"] * len(in_args)
    src = buf.getvalue()
    sig_parts = []
    for k, i in enumerate(node.inputs):
        r = len(loop_shape) if mode == "strided" and views[k] else len(g.type_of(i).shape or ())
        # strided mode may receive np.broadcast_to views, which are read-only
        ro = ", readonly=True" if mode == "strided" else ""
        sig_parts.append(f"Array({storage_name(dts[i])}, {r}, \"{in_layouts[k]}\"{ro})")
    for o in node.outputs:
        sig_parts.append(f"Array({storage_name(dts[o])}, {len(loop_shape)}, \"C\")")
    used_types = sorted({storage_name(dts[v]) for v in dts})
    if split:
        sig_parts += ["int64", "int64"]
        used_types = sorted({*used_types, "int64"})
        imports.add("from jitort.kernels.parallel import run_split")
    chain = " -> ".join(n.op_type for n in body)
    header = [
        GENERATED_HEADER,
        f"# jitort fused elementwise kernel ({mode}): {comment_safe(chain, 400)}",
        "# generated by jitort.codegen.cpu; canonical, so identical chains share this file.",
        f"# jitort library {library_hash()}",
        "import math",
        "",
        "import numpy as np",
        f"from numba import njit, void, {', '.join(used_types)}",
        "from numba.types import Array",
        *sorted(imports),
        "",
        "",
        f"@njit(void({', '.join(sig_parts)}), cache=True, nogil=True, error_model=\"numpy\")",
    ]
    text = "\n".join(header) + "\n" + src
    if split:
        args = ", ".join(in_args + out_args)
        text += (f"\n\n# Outputs of {split} elements or more (~{SPLIT_NS // 1000} us of work on one thread)"
                 " are split across the session's threads.\n"
                 f"def {{KNAME}}({args}):\n"
                 f"    if o0.size < {split}:\n"
                 f"        _kernel({args}, 0, 1)\n"
                 f"    else:\n"
                 f"        run_split(_kernel, ({args},), o0.size // {split})\n")
    name = "k_" + content_hash(text)[:20]
    text = text.replace("{KNAME}", name)
    return FusedKernel(name, text, mode, list(node.inputs), list(node.outputs),
                       pats if mode == "flat" else None,
                       tuple(loop_shape), views)


def _one_element_constant(g: Graph, name: str) -> bool:
    """A constant of one element (a scalar, [1], [1, 1], ...). Only constants: their shapes are
    exact, where a computed value's static shape may come from a wrong declaration in the model."""
    c = g.const(name)
    return c is not None and np.ndim(c) == len(g.type_of(name).shape or ()) and np.size(c) == 1


def emit_scalar_body(buf: IndentedBuffer, node: Node, g: Graph, loads: list[str], stores: list[str],
                     target: str, imports: set[str]) -> None:
    """The loop body of the CUDA emitter: load operands into locals ``x<k>``, one local ``v<j>``
    per op (``stages.scalar_program``), store the group's outputs (``stores`` are templates with
    ``{}`` for the value)."""
    prog, local = scalar_program(node, g, target, imports)
    for k, ld in enumerate(loads):
        buf.writeline(f"x{k} = {ld}")
    _emit_statements(buf, prog)
    for k, o in enumerate(node.outputs):
        buf.writeline(stores[k].format(local[o]))


def _emit_statements(buf: IndentedBuffer, prog: list[Statement]) -> None:
    for s in prog:
        for name, e in s.lets:
            buf.writeline(f"{name} = {e}")
        buf.writeline(f"{s.name} = {s.expr}")


# Elements per block of a staged kernel: every stage runs over one block before the next stage
# starts, so the block's inputs, buffers and outputs (a few KB each) stay in L1.
BLOCK = 512
# Stages pay a loop set-up (and LLVM's run-time alias checks) per row: an inner loop known to be
# shorter than this runs as one loop ([64, 3, 8, 16] with 16-element rows: 108 us staged, 94 us not).
MIN_STAGED_RUN = 128
MAX_EXPANDED = 8192
# A kernel whose output may be large enough to be worth splitting across threads gets a Python
# wrapper that splits it at this much estimated single-thread work (handing a part to a pool
# thread costs ~15-50 us); ns per element ~ 0.04 per cost unit + 0.25 per array element moved.
SPLIT_NS = 100_000


def _split_threshold(loop: Shape, prog: list[Statement], in_pats: list[tuple[str, ...]]) -> int | None:
    """Output size from which the kernel splits across threads; None: never (too small a loop)."""
    arrays = sum(1 for p in in_pats if "s" in p) + 1
    ns = 0.04 * sum(s.cost for s in prog) + 0.25 * arrays
    threshold = max(4096, int(SPLIT_NS / ns))
    if all(isinstance(d, int) for d in loop) and int(np.prod(loop)) < threshold:  # type: ignore[arg-type]
        return None
    return threshold


def _emit_flat(buf: IndentedBuffer, kname: str, node: Node, prog: list[Statement], local: dict[str, str],
               loop: Shape, dims: list[list[int]], in_pats: list[tuple[str, ...]], load: Callable[..., str],
               store: Callable[[int, str, str], str], threaded: bool) -> None:
    """A flat-mode kernel: outer loops over the collapsed dims but the last, an inner loop over the
    last (contiguous in every operand that varies along it). Operands constant along the inner loop
    are loaded outside it; a long chain runs as stages over blocks of ``BLOCK`` elements
    (``stages.split_stages``). ``threaded``: the kernel takes ``part, nparts`` and computes the
    part-th share of the outermost loop (of the blocks when there is one loop).

    Inner-loop indices are uint64: where LLVM could not prove a signed index non-negative,
    Numba's wraparound of negative indices turned every load into a gather."""
    n_in = len(node.inputs)
    args = [f"a{k}" for k in range(n_in)] + [f"o{k}" for k in range(len(node.outputs))]
    r0 = _inner_run(loop, dims, in_pats)
    expand = [k for k, p in enumerate(in_pats) if len(set(p[r0:])) > 1]  # constant over the outer dims
    run_dims, run_pats = dims[r0:], in_pats
    if r0 < len(dims) - 1:
        dims = dims[:r0] + [sum(dims[r0:], [])]
        in_pats = [p[:r0] + (("s",) if k in expand else p[r0:r0 + 1]) for k, p in enumerate(in_pats)]
    K = len(dims)
    inner = K - 1
    vec = [p[inner] == "s" for p in in_pats]
    run = [loop[d] for d in dims[-1]]
    short = all(isinstance(d, int) for d in run) and int(np.prod(run)) < MIN_STAGED_RUN  # type: ignore[arg-type]
    stages = [list(range(len(prog)))] if short else split_stages(prog)
    cross = crossing(prog, stages)
    slots, slot_dtypes = _assign_slots(prog, stages, cross)
    buf.writeline(f"def {kname}(" + ", ".join(args + (["part", "nparts"] if threaded else [])) + "):")
    with contextlib.ExitStack() as nest:
        nest.enter_context(buf.indent())
        buf.writeline("s = o0.shape")
        for a in args:
            buf.writeline(f"{a} = {a}.reshape(-1)")
        for k, group in enumerate(dims):
            size = " * ".join(f"s[{d}]" for d in group) if group else "1"
            buf.writeline(f"n{k} = {size}")
        for slot, dt in enumerate(slot_dtypes):
            buf.writeline(f"t{slot} = np.empty({BLOCK}, {np_name(dt)})")
        for g, group in enumerate(run_dims if expand else []):
            buf.writeline(f"r{g} = " + " * ".join(f"s[{d}]" for d in group))
        for k in expand:  # small operands broadcast inside the inner run: materialised once per call
            buf.writeline(f"e{k} = np.empty(n{inner}, a{k}.dtype)")
            with contextlib.ExitStack() as copy:
                for g in range(len(run_dims)):
                    buf.writeline(f"for q{g} in range(r{g}):")
                    copy.enter_context(buf.indent())
                full = flat_index(("s",) * len(run_dims), "q", "r")
                buf.writeline(f"e{k}[{full}] = a{k}[{flat_index(run_pats[k][r0:], 'q', 'r')}]")
        for k, p in enumerate(in_pats):  # operands constant over the whole loop
            if "s" not in p:
                buf.writeline(f"x{k} = {load(k, '[0]')}")
        if K == 1:
            buf.writeline(f"nb = (n0 + {BLOCK - 1}) // {BLOCK}")
            _emit_part_loop(buf, nest, "b", "nb", threaded)
            buf.writeline(f"jb = b * {BLOCK}")
            buf.writeline(f"m = min({BLOCK}, n0 - jb)")
            base = {k: "jb" for k in range(n_in) if vec[k]}
            base["o"] = "jb"
        else:
            _emit_part_loop(buf, nest, "i0", "n0", threaded)
            for k in range(1, inner):
                buf.writeline(f"for i{k} in range(n{k}):")
                nest.enter_context(buf.indent())
            for k, p in enumerate(in_pats):  # operands constant along the inner loop
                if "s" in p and not vec[k]:
                    buf.writeline(f"x{k} = {load(k, f'[{flat_index(p[:inner])}]')}")
            base = {}
            for k, p in [*((k, in_pats[k]) for k in range(n_in) if vec[k]), ("o", ("s",) * K)]:
                outer = flat_index(p[:inner])  # type: ignore[index]
                buf.writeline(f"c{k} = ({outer}) * n{inner}" if outer != "0" else f"c{k} = 0")
                base[k] = f"c{k}"
            if len(stages) > 1:
                buf.writeline(f"for jb in range(0, n{inner}, {BLOCK}):")
                nest.enter_context(buf.indent())
                buf.writeline(f"m = min({BLOCK}, n{inner} - jb)")
                for k in base:
                    buf.writeline(f"d{k} = c{k} + jb")
                    base[k] = f"d{k}"
            else:
                buf.writeline(f"m = n{inner}")
        for si, st in enumerate(stages):
            buf.writeline("for j in range(m):")
            with buf.indent():
                reads = {r for j in st for r in prog[j].reads}
                for k in range(n_in):
                    if vec[k] and f"x{k}" in reads:
                        buf.writeline(f"x{k} = {load(k, f'[np.uint64({base[k]} + j)]', f'e{k}' if k in expand else None)}")
                for v in sorted(cross[si], key=lambda v: int(v[1:])):
                    buf.writeline(f"{v} = t{slots[v]}[j]")
                _emit_statements(buf, [prog[j] for j in st])
                for j in st:
                    name = prog[j].name
                    if any(name in cross[later] for later in range(si + 1, len(stages))):
                        buf.writeline(f"t{slots[name]}[j] = {name}")
                    for k, o in enumerate(node.outputs):
                        if local[o] == name:
                            buf.writeline(store(k, f"[np.uint64({base['o']} + j)]", name))


def _emit_part_loop(buf: IndentedBuffer, nest: contextlib.ExitStack, var: str, n: str, threaded: bool) -> None:
    """``for var in range(n)``, restricted to the part's share when ``threaded``; the loop's body
    indentation is entered on ``nest``."""
    if not threaded:
        buf.writeline(f"for {var} in range({n}):")
        nest.enter_context(buf.indent())
        return
    buf.writeline(f"lo = {n} * part // nparts")
    buf.writeline(f"for {var} in range({n} * (part + 1) // nparts):")
    nest.enter_context(buf.indent())
    buf.writeline(f"if {var} < lo:")
    buf.writeline("    continue")


def _assign_slots(prog: list[Statement], stages: list[list[int]], cross: list[set[str]]
                  ) -> tuple[dict[str, int], list[np.dtype]]:
    """A block buffer per value carried between stages, reused (same dtype) once no later stage
    reads it: (value -> slot, slot dtypes)."""
    where = {prog[j].name: k for k, st in enumerate(stages) for j in st}
    dt = {s.name: s.dtype for s in prog}
    last = {v: max(k for k in range(len(stages)) if v in cross[k]) for c in cross for v in c}
    slot_of: dict[str, int] = {}
    slot_dt: list[np.dtype] = []
    free_at: list[int] = []  # stage after which the slot is free
    for v in sorted(last, key=lambda v: (where[v], int(v[1:]))):
        for sl in range(len(slot_dt)):
            if slot_dt[sl] == dt[v] and free_at[sl] < where[v]:
                slot_of[v] = sl
                free_at[sl] = last[v]
                break
        else:
            slot_of[v] = len(slot_dt)
            slot_dt.append(dt[v])
            free_at.append(last[v])
    return slot_of, slot_dt


def collapse_dims(loop: Shape, pats: list[tuple[str, ...]]) -> tuple[list[list[int]], list[tuple[str, ...]]]:
    """Group loop dims: drop static 1s, merge neighbours where every operand has the same pattern."""
    keep = [d for d in range(len(loop)) if loop[d] != 1]
    groups: list[list[int]] = []
    gp: list[list[str]] = [[] for _ in pats]
    for d in keep:
        col = ["s" if p[d] == "s" else "b" for p in pats]
        if groups and all(gp[k][-1] == col[k] for k in range(len(pats))):
            groups[-1].append(d)
        else:
            groups.append([d])
            for k in range(len(pats)):
                gp[k].append(col[k])
    if not groups:
        return [[]], [("s",) for _ in pats]
    return groups, [tuple(x) for x in gp]


def flat_index(p: tuple[str, ...], i: str = "i", n: str = "n") -> str:
    """Index of an operand whose collapsed dims have pattern p ('s' same as loop, '1' broadcast),
    with loop variables ``<i><k>`` over extents ``<n><k>``."""
    expr = ""
    for k, s in enumerate(p):
        if s != "s":
            continue
        expr = f"{i}{k}" if not expr else f"({expr}) * {n}{k} + {i}{k}"
    return expr or "0"


def _inner_run(loop: Shape, dims: list[list[int]], pats: list[tuple[str, ...]]) -> int:
    """The first collapsed dim of the inner loop's run: the last dim alone, unless it is known to
    be short (< ``MIN_STAGED_RUN``); then the shortest run of trailing dims that reaches it (or the
    longest there is) in which every operand either has one pattern throughout (contiguous, or
    constant along the run) or is constant over the outer dims, so that one copy of it expanded to
    the run (at most ``MAX_EXPANDED`` elements) serves every outer iteration."""
    K = len(dims)
    sizes = [int(np.prod([loop[d] for d in g])) if all(isinstance(loop[d], int) for d in g) else None
             for g in dims]
    best, run = K - 1, sizes[-1]
    if run is None or run >= MIN_STAGED_RUN:
        return best
    for r in range(K - 2, -1, -1):
        if sizes[r] is None or run * sizes[r] > MAX_EXPANDED:  # type: ignore[operator]
            break
        run *= sizes[r]  # type: ignore[operator]
        if all(len(set(p[r:])) == 1 or "s" not in p[:r] for p in pats):
            best = r
            if run >= MIN_STAGED_RUN:
                break
    return best
