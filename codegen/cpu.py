"""IR -> Python source for Numba's CPU target: fused elementwise kernels and the straight-line plan.

A fused kernel is one ``@njit`` function with one explicit signature, written to its own file: the
loop over the group's iteration space, loads with the broadcast pattern resolved at compile time
(dimensions collapsed where every operand agrees, so most kernels are one flat loop), the scalar
expressions of each op in order, stores of the group's outputs. Kernel source is canonical (no
value or node names) so identical chains in one model, or in different models, share one file and
one compile; the plan names the ONNX nodes each call came from.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jitort.codegen.source import GENERATED_HEADER, IndentedBuffer, comment_safe, content_hash, library_hash
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, Shape
from jitort.kernels.registry import Scalar, lookup
from jitort.passes.fusion import broadcast_pattern

_NB_TYPES = {"float32": "float32", "float64": "float64", "int8": "int8", "int16": "int16",
             "int32": "int32", "int64": "int64", "uint8": "uint8", "uint16": "uint16",
             "uint32": "uint32", "uint64": "uint64", "bool": "boolean"}
_HALF = {"float16": ("f16_to_f32", "f32_to_f16"), "bfloat16": ("bf16_to_f32", "f32_to_bf16")}


def storage_name(dt: np.dtype) -> str:
    """The Numba element type a kernel sees: 16-bit floats travel as their uint16 bits."""
    n = np.dtype(dt).name
    if n in _HALF:
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


def _value_dtype(g: Graph, name: str) -> np.dtype:
    dt = g.type_of(name).dtype
    if dt is None:
        raise OrtNotImplemented(f"jitort could not infer the dtype of '{name}'")
    return np.dtype(dt)


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
    dts = {n: _value_dtype(g, n) for n in [*node.inputs, *node.outputs]}

    def load(k: int, index: str) -> str:
        dt = dts[node.inputs[k]]
        raw = f"{in_args[k]}{index}"
        if dt.name in _HALF:
            imports.add(f"from jitort.kernels.fp16 import {_HALF[dt.name][0]}")
            return f"{_HALF[dt.name][0]}({raw})"
        return raw

    def store(k: int, index: str, val: str) -> str:
        dt = dts[node.outputs[k]]
        if dt.name in _HALF:
            imports.add(f"from jitort.kernels.fp16 import {_HALF[dt.name][1]}")
            val = f"{_HALF[dt.name][1]}({val})"
        return f"{out_args[k]}{index} = {val}"

    def emit_body(loads: list[str], stores: list[str]) -> None:
        emit_scalar_body(buf, node, g, loads, [store(k, st, "{}") for k, st in enumerate(stores)], "cpu", imports)

    if mode == "flat":
        dims, in_pats = _collapse(loop_shape, pats)  # type: ignore[arg-type]
        K = len(dims)
        buf.writeline("def {KNAME}(" + ", ".join(in_args + out_args) + "):")
        with buf.indent():
            buf.writeline("s = o0.shape")
            for a in in_args + out_args:
                buf.writeline(f"{a} = {a}.reshape(-1)")
            for k, group in enumerate(dims):
                size = " * ".join(f"s[{d}]" for d in group) if group else "1"
                buf.writeline(f"n{k} = {size}")
            for k in range(K):
                buf.writeline(f"for i{k} in range(n{k}):")
                buf.level += 1
            idx_in = [f"[{_flat_index(p)}]" for p in in_pats]
            idx_out = f"[{_flat_index(('s',) * K)}]"
            emit_body([load(k, idx_in[k]) for k in range(len(in_args))], [idx_out] * len(out_args))
            buf.level -= K
        src = buf.getvalue()
        in_layouts = ["C"] * len(in_args)
    else:
        R = len(loop_shape)
        buf.writeline("def {KNAME}(" + ", ".join(in_args + out_args) + "):")
        with buf.indent():
            for d in range(R):
                buf.writeline(f"for i{d} in range(o0.shape[{d}]):")
                buf.level += 1
            ix = "[" + ", ".join(f"i{d}" for d in range(R)) + "]" if R else "[()]"
            emit_body([load(k, ix) for k in range(len(in_args))], [ix] * len(out_args))
            buf.level -= R
        src = buf.getvalue()
        in_layouts = ["A"] * len(in_args)
    sig_parts = []
    for k, i in enumerate(node.inputs):
        r = len(loop_shape) if mode == "strided" else len(g.type_of(i).shape or ())
        # strided mode receives np.broadcast_to views, which are read-only
        ro = ", readonly=True" if mode == "strided" else ""
        sig_parts.append(f"Array({storage_name(dts[i])}, {r}, \"{in_layouts[k]}\"{ro})")
    for o in node.outputs:
        sig_parts.append(f"Array({storage_name(dts[o])}, {len(loop_shape)}, \"C\")")
    used_types = sorted({storage_name(dts[v]) for v in dts})
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
    name = "k_" + content_hash(text)[:20]
    text = text.replace("{KNAME}", name)
    return FusedKernel(name, text, mode, list(node.inputs), list(node.outputs),
                       pats if mode == "flat" else None,
                       tuple(loop_shape))


def emit_scalar_body(buf: IndentedBuffer, node: Node, g: Graph, loads: list[str], stores: list[str],
                     target: str, imports: set[str]) -> None:
    """The loop body shared by the CPU and CUDA emitters: load operands into locals ``x<k>``, one
    local ``v<j>`` per op (its scalar expression cast to the op's dtype, after the partial results
    ``v<j>_<k>`` the op bound with ``Scalar.let``), store the group's outputs (``stores`` are
    templates with ``{}`` for the value)."""
    local: dict[str, str] = {}
    for k, ld in enumerate(loads):
        local[node.inputs[k]] = f"x{k}"
        buf.writeline(f"x{k} = {ld}")
    for j, n in enumerate(node.attrs["body"]):
        d = lookup(n.op_type, n.domain, n.version, n.name)
        in_dt = [_value_dtype(g, i) if i else np.dtype(np.float32) for i in n.inputs]
        out_dt = _value_dtype(g, n.outputs[0])
        v = f"v{j}"
        c = Scalar(n, in_dt, out_dt, [g.const(i) for i in n.inputs], target, local_prefix=f"{v}_")
        expr = d.scalar(c, *[local[i] if i else None for i in n.inputs])  # type: ignore[misc]
        imports.update(c.imports)
        for name, e in c.lets:
            buf.writeline(f"{name} = {e}")
        if out_dt.name in _HALF:  # round intermediates to the storage precision, as per-op execution would
            f2, t2 = _HALF[out_dt.name]
            imports.add(f"from jitort.kernels.fp16 import {f2}, {t2}")
            buf.writeline(f"{v} = {f2}({t2}({c.cast(expr)}))")
        else:
            buf.writeline(f"{v} = {c.cast(expr)}")
        local[n.outputs[0]] = v
    for k, o in enumerate(node.outputs):
        buf.writeline(stores[k].format(local[o]))


def _collapse(loop: Shape, pats: list[tuple[str, ...]]) -> tuple[list[list[int]], list[tuple[str, ...]]]:
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


def _flat_index(p: tuple[str, ...]) -> str:
    """Index of an operand whose collapsed dims have pattern p ('s' same as loop, '1' broadcast)."""
    expr = ""
    for k, s in enumerate(p):
        if s != "s":
            continue
        expr = f"i{k}" if not expr else f"({expr}) * n{k} + i{k}"
    return expr or "0"


def output_shape_source(fk: FusedKernel, names: dict[str, str]) -> str:
    """Source for the shape of a flat-mode kernel's outputs, read from its inputs' shapes at run time."""
    R = len(fk.loop_shape)
    assert fk.patterns is not None
    for k, p in enumerate(fk.patterns):
        if all(s == "s" for s in p):
            return f"{names[fk.inputs[k]]}.shape"
    dims = []
    for d in range(R):
        src = None
        for k, p in enumerate(fk.patterns):
            off = R - _rank_of(p)
            if p[d] == "s" and d >= off:
                src = f"{names[fk.inputs[k]]}.shape[{d - off}]"
                break
        if src is None:
            dim = fk.loop_shape[d]
            if not isinstance(dim, int):
                raise OrtNotImplemented(f"jitort cannot derive output dim {dim} of a fused kernel")
            src = str(dim)
        dims.append(src)
    return "(" + ", ".join(dims) + ("," if R == 1 else "") + ")"


def _rank_of(p: tuple[str, ...]) -> int:
    # broadcast_pattern marks dims an operand lacks (leading) with '-'.
    return sum(1 for s in p if s != "-")
