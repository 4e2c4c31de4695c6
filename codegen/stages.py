"""A fused group's scalar program, and its split into stages (loop fission) for the CPU emitter.

The program is one statement per op (``v<j> = <expression>``, after the partial results the op
bound with ``Scalar.let``), shared by the CPU and CUDA emitters. On the CPU the statements of one
element form a single dependency chain: a 20-op chain with four fast-math functions is ~180 vector
instructions per 16 floats, mostly serial, and one loop over all of them ran at the chain's latency,
not at the machine's throughput (the out-of-order window holds about one iteration; measured on a
Zen 4 EPYC: 300 us for [64, 1024] floats, 0.52 ns/element per fast-math function in a loop of its
own). ``split_stages`` cuts the chain into loops of a few fast-math calls each, run one after the
other over a block of elements that stays in L1, passing the values live across a cut through
small per-block buffers: each stage loop is short enough that consecutive iterations overlap
(167 us on the same chain; the stage loops vectorise as the single loop did).

Cost units are rough instruction counts of one element's latency chain (a simple op is 1); they
only place cuts and estimate when a kernel is worth splitting across threads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.registry import Scalar, lookup

HALF_CONVERSIONS = {"float16": ("f16_to_f32", "f32_to_f16"), "bfloat16": ("bf16_to_f32", "f32_to_bf16")}

# What a call costs per element, by the name the expression calls it with (jitort.kernels.fastmath,
# libm through math.*); anything else is one unit per operator.
_CALL_COST = {"exp_f32": 10, "log_f32": 12, "tanh_f32": 10, "sigmoid_f32": 13, "erf_f32": 10,
              "gelu_erf_f32": 13, "gelu_tanh_f32": 13, "math.sqrt": 4}
_LIBM_COST = 20     # a scalar libm call (float64 exp, sin, ...): the loop does not vectorise anyway
_DIV_COST = 4
STAGE_COST = 16     # cut a stage once it costs this much (about one fast-math function and a few ops)
MAX_LIVE = 3        # ... where at most this many values cross the cut (each a buffer store + load)
_LOCAL = re.compile(r"\b([xv]\d+)\b")
_CALL = re.compile(r"\b((?:math\.)?[A-Za-z_]\w*)\(")


@dataclass
class Statement:
    """One op of the group: ``name = expr`` after ``lets``; ``reads`` are the x<k>/v<j> locals used."""

    name: str
    lets: list[tuple[str, str]]
    expr: str
    dtype: np.dtype                    # compute dtype of the value
    reads: set[str] = field(default_factory=set)
    cost: int = 1


def value_dtype(g: Graph, name: str) -> np.dtype:
    dt = g.type_of(name).dtype
    if dt is None:
        raise OrtNotImplemented(f"jitort could not infer the dtype of '{name}'")
    return np.dtype(dt)


def expression_cost(text: str) -> int:
    """Rough per-element latency of an expression (see the module docstring)."""
    cost = 1
    for f in _CALL.findall(text):
        if f in _CALL_COST:
            cost += _CALL_COST[f]
        elif f.startswith("math.") or f in ("np.fmod", "np.floor", "np.ceil", "np.rint"):
            cost += _LIBM_COST
    cost += _DIV_COST * len(re.findall(r"(?<![/])/(?![/])", text))
    return cost


def scalar_program(node: Node, g: Graph, target: str, imports: set[str]) -> tuple[list[Statement], dict[str, str]]:
    """The group's statements, and the local each group value (input or op output) lives in.

    Inputs are the locals ``x<k>`` (k: position in ``node.inputs``), op outputs ``v<j>``."""
    local: dict[str, str] = {i: f"x{k}" for k, i in enumerate(node.inputs)}
    prog: list[Statement] = []
    for j, n in enumerate(node.attrs["body"]):
        d = lookup(n.op_type, n.domain, n.version, n.name)
        in_dt = [value_dtype(g, i) if i else np.dtype(np.float32) for i in n.inputs]
        out_dt = value_dtype(g, n.outputs[0])
        v = f"v{j}"
        c = Scalar(n, in_dt, out_dt, [g.const(i) for i in n.inputs], target, local_prefix=f"{v}_")
        expr = d.scalar(c, *[local[i] if i else None for i in n.inputs])  # type: ignore[misc]
        imports.update(c.imports)
        if out_dt.name in HALF_CONVERSIONS:  # round intermediates to the storage precision, as per-op execution would
            f2, t2 = HALF_CONVERSIONS[out_dt.name]
            imports.add(f"from jitort.kernels.fp16 import {f2}, {t2}")
            text = f"{f2}({t2}({c.cast(expr)}))"
        else:
            text = c.cast(expr)
        lets = list(c.lets)
        every = " ".join([e for _, e in lets] + [text])
        prog.append(Statement(v, lets, text, c.dtype, set(_LOCAL.findall(every)), expression_cost(every)))
        local[n.outputs[0]] = v
    return prog, local


def split_stages(prog: list[Statement]) -> list[list[int]]:
    """Statement indices per stage, in order: a cut is placed after a stage reaches ``STAGE_COST``
    where at most ``MAX_LIVE`` op values are still needed later (inputs are loaded again, never
    carried; the group's outputs are stored where they are computed)."""
    last_use: dict[str, int] = {}
    for j, s in enumerate(prog):
        for r in s.reads:
            last_use[r] = j
    stages: list[list[int]] = [[]]
    acc = 0
    total = sum(s.cost for s in prog)
    done = 0
    for j, s in enumerate(prog):
        stages[-1].append(j)
        acc += s.cost
        done += s.cost
        if j == len(prog) - 1 or acc < STAGE_COST or total - done < 4:
            continue
        live = [p.name for p in prog[:j + 1] if last_use.get(p.name, -1) > j]
        if len(live) <= MAX_LIVE:
            stages.append([])
            acc = 0
    return stages


def crossing(prog: list[Statement], stages: list[list[int]]) -> list[set[str]]:
    """Per stage, the op values it reads that an earlier stage computed."""
    where = {prog[j].name: k for k, st in enumerate(stages) for j in st}
    out = []
    for k, st in enumerate(stages):
        out.append({r for j in st for r in prog[j].reads if r.startswith("v") and where.get(r, k) < k})
    return out
