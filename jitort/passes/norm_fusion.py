"""Layer and RMS normalisations, with the residual Add before them and the scale/bias after them, into
one ``FusedNorm`` node (kernels/contrib_norm.py: one row kernel).

Recognised, all over the last axis:

* LayerNorm decomposed as exporters write it: ``m = ReduceMean(X); d = Sub(X, m);
  v = ReduceMean(Pow(d, 2) | Mul(d, d)); y = Div(d, Sqrt(Add(v, eps)))`` (or ``Mul(d, Reciprocal(..))``);
* RMSNorm decomposed: ``ms = ReduceMean(Pow(X, 2) | Mul(X, X)); y = Mul(X, Reciprocal(Sqrt(Add(ms, eps))))``
  (or ``Div(X, Sqrt(..))``);
* each followed by an optional ``Mul(., gamma)`` and, for LayerNorm, ``Add(., beta)`` with [D] vectors;
* the ops ``LayerNormalization`` (last axis, only Y read) and ``SimplifiedLayerNormalization``,
  when a residual Add feeds them (alone they already are one kernel);
* ``X = Add(a, b)`` with a and b both of X's shape (the residual) is taken into the node; when X is
  read elsewhere too, the node also outputs it.

Every absorbed value is read only inside the pattern and is no graph output (the residual sum
excepted, as said). Near misses (a ReduceMean over the last axis that starts the pattern but breaks
it) leave a note in ``g.notes`` saying why (``jitort explain`` prints them). Invariant after the
pass: none of these patterns is left; each FusedNorm lists the nodes it replaced in ``_absorbed``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jitort.ir import Graph, Node, toposort
from jitort.passes.match import Reads

DOMAIN = "jitort"
OP = "FusedNorm"


class _Refuse(Exception):
    pass


class _Ctx(Reads):
    def __init__(self, g: Graph) -> None:
        super().__init__(g)
        self.removed: set[int] = set()

    def readers(self, value: str) -> list[Node]:
        seen: dict[int, Node] = {}
        for n in self.consumers.get(value, []):
            if id(n) not in self.removed:
                seen[id(n)] = n
        return list(seen.values())

    def only(self, value: str, what: str) -> Node:
        """The one node reading ``value``; refuses when there are others or it is a graph output."""
        rs = self.readers(value)
        if len(rs) != 1 or value in self.protected:
            raise _Refuse(f"{what} '{value}' is read by {len(rs)} nodes" +
                          (" and is a graph output" if value in self.protected else ""))
        return rs[0]

    def other(self, n: Node, value: str) -> str:
        return n.inputs[1] if n.inputs[0] == value else n.inputs[0]


def _is(n: Node | None, *ops: str) -> bool:
    return n is not None and not n.domain and n.op_type in ops


def _last_axis_mean(ctx: _Ctx, n: Node) -> bool:
    """ReduceMean over only the last axis, keeping dims."""
    if not _is(n, "ReduceMean") or not n.attrs.get("keepdims", 1):
        return False
    rank = ctx.g.type_of(n.inputs[0]).rank
    if n.version >= 18:
        axes = ctx.g.const(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] else None
        axes_l = None if axes is None else [int(a) for a in axes.reshape(-1)]
    else:
        axes_l = [int(a) for a in n.attrs.get("axes", [])] or None
    return rank is not None and axes_l is not None and len(axes_l) == 1 and axes_l[0] % rank == rank - 1


def _square_of(ctx: _Ctx, n: Node, x: str) -> bool:
    """n is Pow(x, 2) or Mul(x, x)."""
    if _is(n, "Pow") and n.inputs[0] == x:
        c = ctx.g.const(n.inputs[1])
        return c is not None and c.size == 1 and float(c.reshape(-1)[0]) == 2.0
    return _is(n, "Mul") and n.inputs[0] == x and n.inputs[1] == x


def _vector(ctx: _Ctx, name: str, D: Any) -> bool:
    """``name`` is a [D] (or [1, .., D]) float vector."""
    t = ctx.g.type_of(name)
    if t.shape is None or not t.shape or t.shape[-1] != D or any(d != 1 for d in t.shape[:-1]):
        return False
    return t.dtype is not None and np.dtype(t.dtype).kind == "f"


def _inv_std(ctx: _Ctx, mean2: Node, absorbed: list[Node], x: str) -> tuple[float, Node]:
    """From the mean of squares: Add(eps) -> Sqrt -> Div(x, .) or Reciprocal -> Mul(x, .);
    returns (eps, the node whose output is the normalised x)."""
    add = ctx.only(mean2.outputs[0], "the variance")
    eps = ctx.scalar(ctx.other(add, mean2.outputs[0]), "f") if _is(add, "Add") else None
    if eps is None:
        raise _Refuse(f"the variance is not followed by Add of a scalar epsilon (got {add.op_type} '{add.name}')")
    sq = ctx.only(add.outputs[0], "variance + epsilon")
    if not _is(sq, "Sqrt"):
        raise _Refuse(f"variance + epsilon is not followed by Sqrt (got {sq.op_type} '{sq.name}')")
    absorbed += [add, sq]
    n = ctx.only(sq.outputs[0], "the standard deviation")
    if _is(n, "Div") and n.inputs == [x, sq.outputs[0]]:
        absorbed.append(n)
        return eps, n
    if _is(n, "Reciprocal"):
        m = ctx.only(n.outputs[0], "1 / std")
        if _is(m, "Mul") and sorted(m.inputs) == sorted([x, n.outputs[0]]):
            absorbed += [n, m]
            return eps, m
    raise _Refuse(f"the standard deviation is not divided into the input (got {n.op_type} '{n.name}')")


def _decomposed(ctx: _Ctx, r1: Node) -> tuple[str, float, int, Node, list[Node]]:
    """(input X, eps, simplified, node of normalised X, absorbed) from a last-axis ReduceMean."""
    src = r1.inputs[0]
    p = ctx.producers.get(src)
    absorbed = [r1]
    if p is not None and _square_of(ctx, p, p.inputs[0]) and p.outputs[0] not in ctx.protected \
            and len(ctx.readers(p.outputs[0])) == 1:  # RMSNorm: ReduceMean(X^2)
        x = p.inputs[0]
        absorbed.append(p)
        eps, y = _inv_std(ctx, r1, absorbed, x)
        return x, eps, 1, y, absorbed
    x = src
    sub = ctx.only(r1.outputs[0], "the mean")
    if not _is(sub, "Sub") or sub.inputs != [x, r1.outputs[0]]:
        raise _Refuse(f"the mean is not subtracted from the input (got {sub.op_type} '{sub.name}')")
    d = sub.outputs[0]
    readers = ctx.readers(d)
    sq = next((n for n in readers if _square_of(ctx, n, d)), None)
    if sq is None or len(readers) != 2 or d in ctx.protected:
        raise _Refuse("the centred input is not read by exactly a square and the division")
    r2 = ctx.only(sq.outputs[0], "the squared deviation")
    if not _last_axis_mean(ctx, r2):
        raise _Refuse(f"the squared deviation is not averaged over the last axis (got {r2.op_type} '{r2.name}')")
    absorbed += [sub, sq, r2]
    eps, y = _inv_std(ctx, r2, absorbed, d)
    return x, eps, 0, y, absorbed


def _affine(ctx: _Ctx, y: Node, absorbed: list[Node], D: Any, simplified: int) -> tuple[Node, str, str]:
    """Optional Mul(., gamma) then (LayerNorm only) Add(., beta)."""
    gamma = beta = ""
    out = y
    rs = ctx.readers(out.outputs[0])
    if len(rs) == 1 and out.outputs[0] not in ctx.protected and _is(rs[0], "Mul") \
            and _vector(ctx, ctx.other(rs[0], out.outputs[0]), D):
        gamma, out = ctx.other(rs[0], out.outputs[0]), rs[0]
        absorbed.append(out)
        rs = ctx.readers(out.outputs[0])
        if not simplified and len(rs) == 1 and out.outputs[0] not in ctx.protected and _is(rs[0], "Add") \
                and _vector(ctx, ctx.other(rs[0], out.outputs[0]), D):
            beta, out = ctx.other(rs[0], out.outputs[0]), rs[0]
            absorbed.append(out)
    return out, gamma, beta


def _residual(ctx: _Ctx, x: str, inside: list[Node]) -> tuple[list[str], str, Node | None]:
    """([a, b] or [x, ""], the sum output to keep ("" if none), the Add) for x = Add(a, b) of equal shapes."""
    p = ctx.producers.get(x)
    t = ctx.g.type_of(x)
    if not _is(p, "Add") or t.shape is None or any(ctx.g.type_of(i).shape != t.shape for i in p.inputs) \
            or ctx.g.const(p.inputs[0]) is not None or ctx.g.const(p.inputs[1]) is not None:
        return [x, ""], "", None
    ids = {id(n) for n in inside}
    keep = x if x in ctx.protected or any(id(n) not in ids for n in ctx.readers(x)) else ""
    return list(p.inputs), keep, p


def _match(ctx: _Ctx, n: Node) -> tuple[Node, list[Node]] | None:
    g = ctx.g
    if _is(n, "LayerNormalization", "SimplifiedLayerNormalization"):
        if any(o for o in n.outputs[1:]):
            return None
        rank = g.type_of(n.inputs[0]).rank
        if rank is None or int(n.attrs.get("axis", -1)) % rank != rank - 1:
            return None
        simplified = int(n.op_type == "SimplifiedLayerNormalization")
        ins, keep, add = _residual(ctx, n.inputs[0], [n])
        if add is None:
            return None  # already one kernel
        eps = float(n.attrs.get("epsilon", 1e-5))
        gamma = n.inputs[1]
        beta = n.inputs[2] if not simplified and len(n.inputs) > 2 else ""
        node = Node(OP, ins + [gamma, beta], [n.outputs[0]] + ([keep] if keep else []),
                    dict(epsilon=eps, simplified=simplified), f"{n.name}/FusedNorm", DOMAIN, 1)
        node.attrs["_absorbed"] = [add, n]
        return node, [add, n]
    if not _last_axis_mean(ctx, n):
        return None
    x, eps, simplified, y, absorbed = _decomposed(ctx, n)
    D = (g.type_of(x).shape or (None,))[-1]
    dt = g.type_of(x).dtype
    if D is None or dt is None or np.dtype(dt).kind != "f":
        raise _Refuse("the input's last dim or float type is unknown")
    out, gamma, beta = _affine(ctx, y, absorbed, D, simplified)
    ins, keep, add = _residual(ctx, x, absorbed)
    if add is not None:
        absorbed.insert(0, add)
    node = Node(OP, ins + [gamma, beta], [out.outputs[0]] + ([keep] if keep else []),
                dict(epsilon=eps, simplified=simplified), f"{n.name}/FusedNorm", DOMAIN, 1)
    node.attrs["_absorbed"] = absorbed
    return node, absorbed


def fuse_norms(g: Graph) -> Graph:
    """Rewrite normalisation patterns to FusedNorm nodes (see the module docstring)."""
    ctx = _Ctx(g)
    replaced: dict[int, Node] = {}
    for n in list(g.nodes):
        if id(n) in ctx.removed or n.domain:
            continue
        try:
            found = _match(ctx, n)
        except _Refuse as e:
            g.notes.append(f"normalisation not fused at ReduceMean '{n.name}': {e}")
            continue
        if found is None:
            continue
        node, absorbed = found
        if any(id(a) in ctx.removed for a in absorbed):
            continue
        ctx.removed.update(id(a) for a in absorbed)
        replaced[id(absorbed[-1])] = node
        kind = "RMSNorm" if node.attrs["simplified"] else "LayerNorm"
        extra = " with the residual Add" if len(node.inputs) and node.inputs[1] else ""
        g.notes.append(f"normalisation fused: {kind} at '{n.name}'{extra} ({len(absorbed)} nodes) -> {OP}")
    if replaced:
        g.nodes = toposort([replaced.get(id(n), n) for n in g.nodes if id(n) not in ctx.removed or id(n) in replaced])
    return g
