"""Fold what follows a float32 MatMul/Gemm with constant weights into the packed GEMM's epilogue:
a bias Add, a residual Add, an activation (applied while the output tile is in registers or cache).

Pattern, each part optional but at least one present, every intermediate value read only by the
next node and neither a graph output nor read by a subgraph:

    y = MatMul(A, W) | Gemm(A, W[, C])       W a float32 2-D constant (kernels/gemm_ops.lower_packed)
    y = Add(y, b)                            b a constant row vector ([N], [1, N], scalar); not after a Gemm with C
    y = Add(y, R)                            R a run-time value of y's exact shape
    y = act(y)                               Relu, Clip (constant bounds), LeakyRelu, HardSwish, HardSigmoid,
                                             Sigmoid, Mul(y, Sigmoid(y)) = SiLU, Gelu (opset 20, com.microsoft),
                                             GELU written out (y * 0.5 * (1 + Erf(y / sqrt 2)), any order),
                                             and its tanh form (GPT-2's: Pow, Mul, Add, Mul, Tanh, Add, Muls)

Invariant after the pass: such a chain is one node of domain ``jitort`` and the product's op type, with
inputs ``A, W, bias-or-C, R`` ("" where absent), the product's attributes, ``_activation`` /
``_alpha`` / ``_beta``, ``_absorbed`` (the folded nodes) and ``_written_inputs`` (the product's input
count, for the profile). The order of operations is the graph's: ((A @ W + b) + R), then the
activation. Every fold is recorded in ``g.notes``; runs before elementwise fusion.
"""
from __future__ import annotations

from jitort.ir import Graph, Node
from jitort.kernels.gemm_ops import lower_packed
from jitort.passes.match import Reads, activation


class _Chain(Reads):
    """Walks forward from a product over sole readers."""

    def add_operand(self, y: str) -> tuple[Node, str] | None:
        n = self.sole(y)
        if n is None or n.op_type != "Add" or n.domain != "" or len(n.inputs) != 2 or n.inputs[0] == n.inputs[1]:
            return None
        return n, n.inputs[1] if n.inputs[0] == y else n.inputs[0]


def _same_shape(g: Graph, a: str, b: str) -> bool:
    ta, tb = g.type_of(a), g.type_of(b)
    return ta.shape is not None and ta.shape == tb.shape and ta.dtype is not None and ta.dtype == tb.dtype


def fuse_gemm_epilogue(g: Graph) -> Graph:
    """Fold bias, residual and activation into MatMul/Gemm products (see the module docstring)."""
    walk = _Chain(g)
    removed: set[int] = set()
    replace: dict[int, Node] = {}
    for n in g.nodes:
        if n.op_type not in ("MatMul", "Gemm") or n.domain != "" or id(n) in removed:
            continue
        if len(n.outputs) != 1 or lower_packed(n, g, pack=False) is None:
            continue
        y = n.outputs[0]
        absorbed: list[Node] = []
        has_c = n.op_type == "Gemm" and len(n.inputs) > 2 and bool(n.inputs[2])
        inputs = list(n.inputs[:2]) + [n.inputs[2] if has_c else "", ""]
        attrs = {k: v for k, v in n.attrs.items()}
        step = walk.add_operand(y)
        if step is not None and not has_c and g.const(step[1]) is not None:
            trial = Node(n.op_type, inputs[:2] + [step[1], ""], [y], dict(attrs, beta=1.0), n.name, "jitort", 1)
            if lower_packed(trial, g, bias=step[1] if n.op_type == "MatMul" else "", pack=False) is not None:
                inputs[2] = step[1]
                attrs["beta"] = 1.0
                absorbed.append(step[0])
                y = step[0].outputs[0]
                step = walk.add_operand(y)
        if step is not None and g.const(step[1]) is None and _same_shape(g, y, step[1]):
            trial = Node(n.op_type, inputs[:3] + [step[1]], [y], attrs, n.name, "jitort", 1)
            bias = inputs[2] if n.op_type == "MatMul" else ""
            if lower_packed(trial, g, bias=bias, res=step[1], pack=False) is not None:
                inputs[3] = step[1]
                absorbed.append(step[0])
                y = step[0].outputs[0]
        act_node = walk.sole(y)
        act = activation(g, act_node, gelu=True) if act_node is not None and act_node.inputs[0] == y else None
        if act is not None:
            absorbed.append(act_node)  # type: ignore[arg-type]
            y = act_node.outputs[0]  # type: ignore[union-attr]
        else:  # activations written out as several nodes
            for name, written in (("SiLU", walk.silu), ("Gelu", walk.gelu_erf), ("GeluTanh", walk.gelu_tanh)):
                found = written(y)
                if found is not None:
                    act = (name, 0.0, 0.0)
                    absorbed += found[0]
                    y = found[1]
                    break
        if not absorbed:
            continue
        if act is not None:
            attrs["_activation"], attrs["_alpha"], attrs["_beta"] = act
        attrs["_absorbed"], attrs["_written_inputs"] = absorbed, len([i for i in n.inputs if i])
        # at the last folded node's place: R may be computed after the product
        replace[id(absorbed[-1])] = Node(n.op_type, inputs, [y], attrs, n.name, "jitort", 1, n.provider)
        removed.add(id(n))
        for d in absorbed[:-1]:
            removed.add(id(d))
            if d.outputs[0] != y:
                g.values.pop(d.outputs[0], None)
        if n.outputs[0] != y:
            g.values.pop(n.outputs[0], None)
        g.notes.append(f"gemm epilogue: {n.op_type} '{n.name}' + " + " + ".join(f"{d.op_type} '{d.name}'"
                                                                              for d in absorbed))
    g.nodes = [replace.get(id(n), n) for n in g.nodes if id(n) not in removed]
    return g
