"""The Q, K and V projections of a GroupQueryAttention (com.microsoft) into one product with packed
QKV output: three ``MatMul``s (constant float32 [K, N_i] weights) or three ``MatMulNBits`` (constant
weights, same K, bits and block size) that read the same A and whose outputs only the attention's
query, key and value inputs read become one node over the weights concatenated along N, and the
attention takes its packed-QKV form (query [B, S, (N + 2 Nkv) H], key and value omitted), which
onnxruntime defines as the same computation.

Why: in a decode step each projection is a GEMV whose call costs ~4 us of Python and dispatch
(measured on the 2-vCPU Intel Xeon Ice Lake VM), and a wider N splits better over threads; a
Llama-style layer then runs 5 products instead of 7.

Refused (left as they are): weights that are not constants, MatMulNBits with g_idx or uint8 zero
points (their packing is not per row), a mix of with and without zero points or bias, widths that
are not num_heads x H, kv_num_heads x H, kv_num_heads x H, or any output read elsewhere.
"""
from __future__ import annotations

import numpy as np

from jitort.ir import Graph, Node, TensorType, toposort
from jitort.passes.match import Reads

MS = "com.microsoft"
_F32 = np.dtype(np.float32)


def _widths(g: Graph, ns: list[Node], nbits: bool) -> list[int] | None:
    """Each projection's N, or None where the three are not one fusable kind over one A."""
    a = ns[0].inputs[0]
    if any(n.inputs[0] != a or len(n.outputs) != 1 for n in ns):
        return None
    if not nbits:
        ws = [g.const(n.inputs[1]) if len(n.inputs) == 2 else None for n in ns]
        if any(w is None or w.ndim != 2 or w.dtype != _F32 or w.shape[0] != ws[0].shape[0] for w in ws):
            return None
        return [int(w.shape[1]) for w in ws]  # type: ignore[union-attr]
    keys = ("K", "bits", "block_size", "accuracy_level")
    if any(int(n.attrs.get(k, 0)) != int(ns[0].attrs.get(k, 0)) for n in ns for k in keys) \
            or any(n.attrs.get("weight_prepacked", 0) for n in ns):
        return None
    ins = [list(n.inputs) + [""] * (6 - len(n.inputs)) for n in ns]
    if any(len(n.inputs) > 6 or i[4] for n, i in zip(ns, ins)):
        return None  # g_idx
    for k in (1, 2, 3, 5):  # B, scales, zero points, bias: constants, all present (or all absent)
        cs = [g.const(i[k]) if i[k] else None for i in ins]
        if (k in (1, 2) or any(i[k] for i in ins)) and any(c is None for c in cs):
            return None
        if k == 3 and cs[0] is not None and any(c.dtype != cs[0].dtype or c.dtype.kind != "f" for c in cs):
            return None
    return [int(n.attrs["N"]) for n in ns]


def _packed_node(g: Graph, ns: list[Node], widths: list[int], nbits: bool, out: str) -> Node:
    """One MatMul / MatMulNBits over the concatenated weights, output ``out``."""
    a = ns[0].inputs[0]
    first = ns[0]

    def const(tag: str, v: np.ndarray) -> str:
        name = f"{out}/{tag}"
        g.value(name).const = v
        g.value(name).type = TensorType(v.dtype, tuple(int(d) for d in v.shape))
        return name

    if not nbits:
        w = np.concatenate([g.const(n.inputs[1]) for n in ns], axis=1)  # type: ignore[misc]
        return Node("MatMul", [a, const("weight", np.ascontiguousarray(w))], [out], {}, f"{first.name}+qkv", "",
                    first.version, first.provider)
    ins = [list(n.inputs) + [""] * (6 - len(n.inputs)) for n in ns]
    new = [a]
    for k in range(1, 6):
        if not ins[0][k] or k == 4:
            new.append("")
            continue
        cs = [g.const(i[k]) for i in ins]
        v = np.concatenate([c.reshape(w, -1) for c, w in zip(cs, widths)], axis=0)  # type: ignore[union-attr]
        c0 = cs[0]
        shape = (-1,) if c0.ndim == 1 else (sum(widths),) + tuple(c0.shape[1:])  # type: ignore[union-attr]
        tag = ("", "weight", "scales", "zero_points", "", "bias")[k]
        new.append(const(tag, np.ascontiguousarray(v.reshape(shape))))
    while new and not new[-1]:
        new.pop()
    attrs = dict(first.attrs, N=sum(widths))
    return Node("MatMulNBits", new, [out], attrs, f"{first.name}+qkv", MS, first.version, first.provider)


def fuse_qkv(g: Graph) -> Graph:
    """Pack the projections of every GroupQueryAttention that qualifies (see the module docstring)."""
    r = Reads(g)
    removed: set[int] = set()
    placed: dict[int, Node] = {}
    for n in g.nodes:
        if n.op_type != "GroupQueryAttention" or n.domain != MS or len(n.inputs) < 3 or not all(n.inputs[:3]):
            continue
        nh, kvh = int(n.attrs.get("num_heads", 0)), int(n.attrs.get("kv_num_heads", 0))
        ps = [r.producers.get(x) for x in n.inputs[:3]]
        if any(p is None or r.sole(x) is not n for p, x in zip(ps, n.inputs[:3])) or len(set(map(id, ps))) != 3:
            continue
        kinds = {(p.op_type, p.domain) for p in ps}  # type: ignore[union-attr]
        if kinds not in ({("MatMul", "")}, {("MatMulNBits", MS)}):
            continue
        nbits = kinds == {("MatMulNBits", MS)}
        widths = _widths(g, ps, nbits)  # type: ignore[arg-type]
        if widths is None or nh <= 0 or kvh <= 0 or widths[0] % nh:
            continue
        H = widths[0] // nh
        if widths[1:] != [kvh * H, kvh * H]:
            continue
        qt = g.type_of(n.inputs[0])
        out = f"{n.inputs[0]}/qkv"
        node = _packed_node(g, ps, widths, nbits, out)  # type: ignore[arg-type]
        shape = None if qt.shape is None else tuple(qt.shape[:-1]) + (sum(widths),)
        g.value(out).type = TensorType(qt.dtype, shape)
        removed.update(id(p) for p in ps)
        placed[id(ps[0])] = node
        n.inputs = [out, "", ""] + n.inputs[3:]
        g.notes.append(f"Q, K and V projections of '{n.name}' packed into one {node.op_type} (N={sum(widths)})")
    if placed:
        for p in (x for x in g.nodes if id(x) in removed):  # the separate weights, unless read elsewhere
            for w in p.inputs[1:]:
                if w and len(r.consumers.get(w, [])) == 1 and w not in r.protected and w not in g.inputs:
                    g.values.pop(w, None)
        g.nodes = toposort([placed.get(id(x), x) for x in g.nodes if id(x) not in removed or id(x) in placed])
    return g
