"""Scaled-dot-product attention chains into one ``FusedAttention`` node (kernels/attention.py).

Recognised, from each Softmax over the last axis of a rank-4 score tensor whose probabilities only
feed ``MatMul(probs, V)``, walking back to ``MatMul(Q', K')``:

* the score MatMul may be com.microsoft's ``FusedMatMul(Q', K, alpha, transB)`` (what onnxruntime's
  optimiser writes for MatMul(Q, Transpose(K)) / sqrt(d)), without transA or batch transposes;
* between the score MatMul and the Softmax: Mul/Div by scalar constants (the legacy exporter's
  ``Div(., sqrt(d))``), then at most one ``Add(., mask)`` and at most one ``Where(bool, ., c)`` /
  ``Where(bool, c, .)`` with a scalar constant ``c``, in either order (the padding mask, the dynamo
  exporter's boolean and causal masks; a causal mask sliced from the origin of a constant
  lower-triangular buffer is recognised and computed, not read);
* before the MatMul, on each of Q and K^T: Mul/Div by scalar constants (the dynamo exporter's
  ``sqrt(scale)`` on both) and Transposes (head splits, K^T), folded into one permutation;
* after ``MatMul(probs, V)``: a ``Transpose(perm=[0, 2, 1, 3])`` (head merge), written by the kernel.

Every node absorbed has its output read only by the next one and is no graph output; the new node
takes the last absorbed node's output name and place. A chain that starts like attention (a Softmax
feeding a MatMul, or fed from one) but is not fused leaves a note in ``g.notes`` saying why
(``jitort explain`` prints them).

Invariant after the pass: no fusable chain (as above) is left; each FusedAttention node lists the
nodes it replaced in ``_absorbed``.
"""
from __future__ import annotations

import numpy as np

from jitort.ir import Graph, Node
from jitort.passes.match import Reads

DOMAIN = "jitort"
OP = "FusedAttention"
MS = "com.microsoft"


def _score_product(n: Node) -> tuple[float, int] | None:
    """(alpha, transB) when n computes the scores: MatMul, or FusedMatMul without transA and batch
    transposes."""
    if n.op_type == "MatMul" and not n.domain:
        return 1.0, 0
    a = n.attrs
    if (n.op_type == "FusedMatMul" and n.domain == MS and not a.get("transA", 0) and not a.get("transBatchA", 0)
            and not a.get("transBatchB", 0)):
        return float(a.get("alpha", 1.0)), int(a.get("transB", 0))
    return None


class _Refuse(Exception):
    pass


class _Ctx(Reads):
    def rank(self, name: str) -> int | None:
        return self.g.type_of(name).rank


def _scale_of(ctx: _Ctx, n: Node, chain: str) -> float | None:
    """The factor ``n`` multiplies ``chain`` by, when n is Mul/Div of chain by a scalar constant."""
    if n.domain or n.op_type not in ("Mul", "Div") or len(n.inputs) != 2:
        return None
    other = n.inputs[1] if n.inputs[0] == chain else n.inputs[0]
    c = ctx.scalar(other)
    if c is None or (n.op_type == "Div" and (n.inputs[0] != chain or c == 0)):
        return None
    return 1.0 / c if n.op_type == "Div" else c


def _operand(ctx: _Ctx, name: str, absorbed: list[Node], scaled: bool) -> tuple[str, list[int], float]:
    """Walk back from a MatMul operand through sole-consumer Transposes (and scalar Mul/Div when
    ``scaled``): (source value, perm with operand = source.transpose(perm), scale factor)."""
    perm, scale = [0, 1, 2, 3], 1.0
    while True:
        p = ctx.producers.get(name)
        if p is None or p.domain or ctx.sole(name) is None:
            return name, perm, scale
        if p.op_type == "Transpose" and len(p.attrs.get("perm", [])) == 4:
            t = [int(x) for x in p.attrs["perm"]]
            perm = [t[perm[i]] for i in range(4)]
        elif scaled and p.op_type in ("Mul", "Div"):
            chain = p.inputs[0] if _scale_of(ctx, p, p.inputs[0]) is not None else p.inputs[1]
            f = _scale_of(ctx, p, chain)
            if f is None or ctx.rank(chain) != 4:
                return name, perm, scale
            scale *= f
            absorbed.append(p)
            name = chain
            continue
        else:
            return name, perm, scale
        absorbed.append(p)
        name = p.inputs[0]


def _is_causal_slice(ctx: _Ctx, name: str) -> bool:
    """``name`` is Slice(tril(ones) constant, starts 0 on its last two axes, steps 1): keep = t <= s."""
    p = ctx.producers.get(name)
    if p is None or p.op_type != "Slice" or p.domain or p.version < 10 or len(p.inputs) < 3:
        return False
    data = ctx.g.const(p.inputs[0])
    if data is None or data.ndim < 2 or data.dtype != np.bool_:
        return False
    lead = data.reshape(-1, data.shape[-2], data.shape[-1])
    if lead.shape[0] != 1 or not np.array_equal(lead[0], np.tril(np.ones(data.shape[-2:], bool))):
        return False
    starts = ctx.g.const(p.inputs[1])
    axes = ctx.g.const(p.inputs[3]) if len(p.inputs) > 3 and p.inputs[3] else np.arange(data.ndim)
    steps = ctx.g.const(p.inputs[4]) if len(p.inputs) > 4 and p.inputs[4] else np.ones(len(axes), np.int64)
    if starts is None or axes is None or steps is None or len(starts) != len(axes):
        return False
    ax = [int(a) % data.ndim for a in axes]
    return all(int(s) == 0 and int(st) == 1 for s, st in zip(starts, steps)) and \
        set(ax) <= {data.ndim - 2, data.ndim - 1} | set(range(data.ndim - 2))


def _match(ctx: _Ctx, sm: Node) -> tuple[Node, list[Node]]:
    g = ctx.g
    x = sm.inputs[0]
    rank = ctx.rank(x)
    if rank != 4:
        raise _Refuse(f"the scores have rank {rank if rank is not None else 'unknown'}, not 4 ([B, heads, S, T])")
    axis = int(sm.attrs.get("axis", -1 if sm.version >= 13 else 1))
    if axis % 4 != 3:
        raise _Refuse(f"Softmax axis {axis} is not the last")
    dt = g.type_of(x).dtype
    if dt is None or np.dtype(dt) not in (np.float16, np.float32, np.float64):
        raise _Refuse(f"score element type {dt} (float16/32/64 only)")
    pv = ctx.sole(sm.outputs[0])
    if pv is None or pv.op_type != "MatMul" or pv.domain or pv.inputs[0] != sm.outputs[0]:
        raise _Refuse("the probabilities are not read by one MatMul(probs, V) alone")
    absorbed: list[Node] = [sm, pv]
    steps: list[tuple[str, Node]] = []
    cur = x
    while True:  # back from the Softmax to the score MatMul
        p = ctx.producers.get(cur)
        if p is None:
            raise _Refuse("the scores are not computed by a MatMul")
        if ctx.sole(cur) is None:
            why = "is a graph output" if cur in ctx.protected else \
                f"is read by {len(ctx.consumers.get(cur, []))} nodes"
            raise _Refuse(f"the intermediate score value '{cur}' {why}")
        product = _score_product(p)
        if product is not None:
            qk = p
            absorbed.append(p)
            break
        if p.domain or p.op_type not in ("Add", "Mul", "Div", "Where"):
            raise _Refuse(f"a {p.op_type} node '{p.name}' between the score MatMul and the Softmax")
        absorbed.append(p)
        if p.op_type in ("Mul", "Div"):
            chain = p.inputs[0] if _scale_of(ctx, p, p.inputs[0]) is not None else p.inputs[1]
            if _scale_of(ctx, p, chain) is None:
                raise _Refuse(f"{p.op_type} node '{p.name}' does not scale the scores by a scalar constant")
        else:
            cands = [i for i in (p.inputs[1:] if p.op_type == "Where" else p.inputs) if i and _on_path(ctx, i)]
            if len(cands) != 1 or len(p.inputs) != (3 if p.op_type == "Where" else 2):
                raise _Refuse(f"{p.op_type} node '{p.name}' does not combine the scores with a mask")
            chain = cands[0]
        steps.append((chain, p))
        cur = chain
    scale, add, keep, fill, keep_is, order = product[0], "", "", "-inf", 1, []
    for chain, n in reversed(steps):  # from the MatMul towards the Softmax
        if n.op_type in ("Mul", "Div"):
            if order:
                raise _Refuse(f"{n.op_type} node '{n.name}' scales the scores after a mask")
            scale *= _scale_of(ctx, n, chain)  # type: ignore[operator]
        elif n.op_type == "Add":
            if add:
                raise _Refuse(f"a second mask Add '{n.name}'")
            add = n.inputs[1] if n.inputs[0] == chain else n.inputs[0]
            adt = g.type_of(add).dtype
            if adt is None or np.dtype(adt) != np.dtype(dt) or (ctx.rank(add) or 0) > 4:
                raise _Refuse(f"mask '{add}' of Add '{n.name}' is not a {np.dtype(dt)} tensor of rank <= 4")
            order.append("add")
        else:
            if keep:
                raise _Refuse(f"a second mask Where '{n.name}'")
            keep_is = 1 if n.inputs[1] == chain else 0
            c = ctx.scalar(n.inputs[2 if keep_is else 1])
            if c is None or n.inputs[1] == n.inputs[2]:
                raise _Refuse(f"Where '{n.name}' does not choose between the scores and a scalar constant")
            keep, fill = n.inputs[0], repr(float(c))
            order.append("where")
    q, q_perm, qs = _operand(ctx, qk.inputs[0], absorbed, True)
    k, kt_perm, ks = _operand(ctx, qk.inputs[1], absorbed, True)
    v, v_perm, _ = _operand(ctx, pv.inputs[1], absorbed, False)
    for name, what in ((q, "query"), (k, "key"), (v, "value")):
        if ctx.rank(name) != 4:
            raise _Refuse(f"the {what} '{name}' is not of rank 4")
    if product[1]:  # FusedMatMul's transB: its B is K itself, not K^T
        kt_perm = [kt_perm[i] for i in (0, 1, 3, 2)]
    k_perm = [kt_perm[i] for i in (0, 1, 3, 2)]
    out, out_bsnh = pv.outputs[0], 0
    t = ctx.sole(out)
    if t is not None and t.op_type == "Transpose" and not t.domain and list(t.attrs.get("perm", [])) == [0, 2, 1, 3]:
        out, out_bsnh = t.outputs[0], 1
        absorbed.append(t)
    causal = int(bool(keep) and keep_is == 1 and _is_causal_slice(ctx, keep))
    attrs = dict(q_perm=tuple(q_perm), k_perm=tuple(k_perm), v_perm=tuple(v_perm), out_bsnh=out_bsnh,
                 scale=float(scale * qs * ks), keep_is=keep_is, fill=fill,
                 where_first=int(bool(order) and order[0] == "where"), causal=causal)
    node = Node(OP, [q, k, v, add, keep], [out], attrs, f"{sm.name}/FusedAttention", DOMAIN, 1)
    node.attrs["_absorbed"] = absorbed
    return node, absorbed


def _on_path(ctx: _Ctx, value: str) -> bool:
    """``value`` leads back to a MatMul through score steps (it is the scores, not the mask)."""
    for _ in range(16):
        p = ctx.producers.get(value)
        if p is not None and _score_product(p) is not None:
            return ctx.sole(value) is not None
        if p is None or p.domain:
            return False
        if p.op_type not in ("Add", "Mul", "Div", "Where") or ctx.sole(value) is None:
            return False
        cands = [i for i in (p.inputs[1:] if p.op_type == "Where" else p.inputs) if i and ctx.rank(i) == 4]
        if not cands:
            return False
        value = next((c for c in cands if _on_path(ctx, c)), "")
        if not value:
            return False
    return False


def _looks_like_attention(ctx: _Ctx, sm: Node) -> bool:
    cs = ctx.consumers.get(sm.outputs[0], [])
    return any(c.op_type == "MatMul" for c in cs) or _on_path(ctx, sm.inputs[0])


def fuse_attention(g: Graph) -> Graph:
    """Rewrite attention chains to FusedAttention nodes (see the module docstring)."""
    ctx = _Ctx(g)
    removed: set[int] = set()
    replaced: dict[int, Node] = {}
    for sm in list(g.nodes):
        if sm.op_type != "Softmax" or sm.domain or id(sm) in removed or not sm.outputs or not sm.outputs[0]:
            continue
        try:
            node, absorbed = _match(ctx, sm)
        except _Refuse as e:
            if _looks_like_attention(ctx, sm):
                g.notes.append(f"attention not fused at Softmax '{sm.name}': {e}")
            continue
        if any(id(n) in removed for n in absorbed):
            continue
        last = max(absorbed, key=lambda n: g.nodes.index(n))
        removed.update(id(n) for n in absorbed)
        replaced[id(last)] = node
        masks = ", ".join(w for w, on in (("additive mask", node.inputs[3]), ("causal" if node.attrs["causal"]
                                          else "boolean mask", node.inputs[4])) if on) or "no mask"
        g.notes.append(f"attention fused: Softmax '{sm.name}' and {len(absorbed) - 1} more nodes -> {OP} ({masks})")
    if replaced:
        g.nodes = [replaced.get(id(n), n) for n in g.nodes if id(n) not in removed or id(n) in replaced]
    return g
