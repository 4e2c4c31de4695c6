"""QDQ models to quantised operators: what onnxruntime does to the models its quantisers write.

``onnxruntime.quantization.quantize_static`` writes (by default) the QDQ form: every quantised
tensor is ``DequantizeLinear(q)`` before the float op and ``QuantizeLinear`` after it. Run as written,
each conv computes in float32 between two passes over its activations; onnxruntime instead
recognises the groups and runs its integer kernels on them. So does this pass, before constant
folding (which would turn the weights' DequantizeLinear into float weights):

- ``Q(Conv(DQ(x), DQ(w), DQ(b)))`` -> ``QLinearConv(x, .., w, .., b)``: x per tensor; w a constant
  int8/uint8, per tensor or per output channel (axis 0); b absent or a constant int32 whose scale
  is x_scale * w_scale (what the quantisers write: then its integers are QLinearConv's bias);
- ``Q(Add(DQ(a), DQ(b)))`` -> ``QLinearAdd`` and ``Q(GlobalAveragePool(DQ(x)))`` ->
  ``QLinearGlobalAveragePool`` (com.microsoft, as onnxruntime runs them);
- ``Q(MaxPool(DQ(x)))`` with the same scale and zero point on both sides -> ``MaxPool(x)``
  (exact: the max commutes with the monotonic dequantisation);
- ``Q(MatMul(DQ(a), DQ(b)))`` -> ``QLinearMatMul``: a per tensor, b a constant 2-D matrix per tensor
  or per column;
- and from ``quantize_dynamic``'s graphs: ``MatMulInteger(A, B)`` with a constant B -> ``Cast`` to
  float -> ``Mul`` by a scalar or per-column float32 scale (-> ``Add`` of a constant bias) ->
  com.microsoft ``MatMulIntegerToFloat`` (the same float32 operations, in the product's epilogue:
  kernels/qmatmul.py).

Each Q/DQ must be per tensor (except the weights'), of 8-bit integers with float32 scales, and the
float op's output must be read by the Q alone. The integer kernels round once where the float
graph rounds twice (to float32, then to the integer grid), as onnxruntime's do: results can differ
from the unfused graph's by one quantisation step, and equal onnxruntime's. A DequantizeLinear whose
output other nodes still read stays for them. Decisions go to ``g.notes``.
"""
from __future__ import annotations

import numpy as np

from jitort.ir import Graph, Node, TensorType
from jitort.passes.match import Reads

MS = "com.microsoft"
_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))
_F32 = np.dtype(np.float32)
_FLOAT = 1  # TensorProto.FLOAT


class _QDQ:
    """A DequantizeLinear's operands (or a QuantizeLinear's): the quantised value, scale and zero point names."""

    def __init__(self, q: str, scale: str, zp: str, s: np.ndarray, z: np.ndarray | None, axis: int) -> None:
        self.q, self.scale, self.zp, self.s, self.z, self.axis = q, scale, zp, s, z, axis

    @property
    def per_tensor(self) -> bool:
        return self.s.size == 1

    def same_params(self, other: "_QDQ") -> bool:
        zs = self.z if self.z is not None else np.zeros(1, np.uint8)
        zo = other.z if other.z is not None else np.zeros(1, np.uint8)
        return (self.per_tensor and other.per_tensor and float(self.s.reshape(-1)[0]) == float(other.s.reshape(-1)[0])
                and zs.dtype == zo.dtype and int(zs.reshape(-1)[0]) == int(zo.reshape(-1)[0]))


def _params(g: Graph, n: Node, op_type: str) -> _QDQ | None:
    """n's operands when n is a plain ``op_type`` (domain "", no block size) with a constant float32
    scale and a constant zero point (or none)."""
    if n.op_type != op_type or n.domain != "" or n.attrs.get("block_size", 0) or len(n.outputs) != 1:
        return None
    scale = n.inputs[1] if len(n.inputs) > 1 else ""
    zp = n.inputs[2] if len(n.inputs) > 2 else ""
    s = g.const(scale)
    z = g.const(zp) if zp else None
    if s is None or s.dtype != _F32 or (zp and z is None) or s.ndim > 1:
        return None
    return _QDQ(n.inputs[0], scale, zp, s, z, int(n.attrs.get("axis", 1)))


class _Fuser(Reads):
    def __init__(self, g: Graph) -> None:
        super().__init__(g)
        self.dead: set[int] = set()

    def dq(self, value: str) -> _QDQ | None:
        """The DequantizeLinear producing ``value``, when it dequantises an 8-bit tensor."""
        p = self.producers.get(value)
        d = None if p is None else _params(self.g, p, "DequantizeLinear")
        if d is None:
            return None
        t = self.g.type_of(d.q)
        if t is None or t.dtype is None or np.dtype(t.dtype) not in _INT8:
            return None
        return d

    def q_after(self, n: Node) -> tuple[Node, _QDQ] | None:
        """The per-tensor 8-bit QuantizeLinear that alone reads n's output."""
        if len(n.outputs) != 1:
            return None
        q = self.sole(n.outputs[0])
        p = None if q is None else _params(self.g, q, "QuantizeLinear")
        if p is None or not p.per_tensor or q.attrs.get("output_dtype", 0):
            return None
        out = self.g.type_of(q.outputs[0])
        if out is None or out.dtype is None or np.dtype(out.dtype) not in _INT8:
            return None
        return q, p

    def replace(self, n: Node, gone: list[Node], new: Node) -> None:
        """``new`` (producing the last of ``gone``'s output) takes n's place; n and ``gone`` go."""
        for m in [n] + gone[:-1]:
            self.g.values.pop(m.outputs[0], None)
        self.dead.update(id(m) for m in [n] + gone)
        self.g.nodes[self.g.nodes.index(n)] = new
        after = " and ".join(f"{m.op_type} '{m.name}'" for m in gone)
        self.g.notes.append(f"qdq: {n.describe()} with its {after} runs as {new.op_type}")


def _conv(f: _Fuser, n: Node) -> tuple[Node, Node] | None:
    g = f.g
    ins = list(n.inputs) + [""] * (3 - len(n.inputs))
    x, w = f.dq(ins[0]), f.dq(ins[1])
    after = f.q_after(n)
    if x is None or w is None or after is None or not x.per_tensor:
        return None
    q, y = after
    wq = g.const(w.q)
    if wq is None or wq.ndim < 3:
        return None
    if y.z is None and np.dtype(g.type_of(q.outputs[0]).dtype) != np.dtype(g.type_of(x.q).dtype):
        return None  # QLinearConv without y_zero_point writes x's type
    M = wq.shape[0]
    if not w.per_tensor and (w.s.size != M or w.axis not in (0, -wq.ndim)):
        return None
    bias = ""
    if ins[2]:
        p = f.producers.get(ins[2])  # an int32 tensor's DequantizeLinear (``dq`` takes 8-bit ones)
        b = None if p is None else _params(g, p, "DequantizeLinear")
        bq = None if b is None else g.const(b.q)
        if b is None or bq is None or bq.dtype != np.int32 or bq.size != M or (b.z is not None and np.any(b.z)):
            return None
        want = np.float32(x.s.reshape(-1)[0]) * w.s.reshape(-1).astype(_F32)
        if not np.array_equal(np.broadcast_to(b.s.reshape(-1), (M,)), np.broadcast_to(want, (M,))):
            return None
        bias = b.q
    return Node("QLinearConv", [x.q, x.scale, x.zp, w.q, w.scale, w.zp, y.scale, y.zp] + ([bias] if bias else []),
                [q.outputs[0]], {k: v for k, v in n.attrs.items() if not k.startswith("_")}, name=n.name,
                version=max(10, g.opsets.get("", n.version))), q


def _add(f: _Fuser, n: Node) -> tuple[Node, Node] | None:
    if len(n.inputs) != 2:
        return None
    a, b = f.dq(n.inputs[0]), f.dq(n.inputs[1])
    after = f.q_after(n)
    if a is None or b is None or after is None or not (a.per_tensor and b.per_tensor):
        return None
    ta, tb = f.g.type_of(a.q), f.g.type_of(b.q)
    q, y = after
    if ta.dtype != tb.dtype or np.dtype(f.g.type_of(q.outputs[0]).dtype) != np.dtype(ta.dtype):
        return None
    return Node("QLinearAdd", [a.q, a.scale, a.zp, b.q, b.scale, b.zp, y.scale, y.zp], [q.outputs[0]], name=n.name,
                domain=MS, version=1), q


def _gap(f: _Fuser, n: Node) -> tuple[Node, Node] | None:
    x = f.dq(n.inputs[0])
    after = f.q_after(n)
    if x is None or after is None or not x.per_tensor:
        return None
    q, y = after
    if np.dtype(f.g.type_of(q.outputs[0]).dtype) != np.dtype(f.g.type_of(x.q).dtype):
        return None
    return Node("QLinearGlobalAveragePool", [x.q, x.scale, x.zp, y.scale, y.zp], [q.outputs[0]], name=n.name,
                domain=MS, version=1), q


def _maxpool(f: _Fuser, n: Node) -> tuple[Node, Node] | None:
    if len(n.outputs) != 1 or n.version < 12:  # int8/uint8 MaxPool: opset 12
        return None
    x = f.dq(n.inputs[0])
    after = f.q_after(n)
    if x is None or after is None or not x.same_params(after[1]):
        return None
    q = after[0]
    if np.dtype(f.g.type_of(q.outputs[0]).dtype) != np.dtype(f.g.type_of(x.q).dtype):
        return None
    return Node("MaxPool", [x.q], [q.outputs[0]], dict(n.attrs), name=n.name, version=n.version), q


def _matmul(f: _Fuser, n: Node) -> tuple[Node, Node] | None:
    """``Q(MatMul(DQ(a), DQ(b)))`` -> QLinearMatMul: a per tensor, b a constant 2-D 8-bit matrix per
    tensor or per column (axis 1)."""
    if len(n.inputs) != 2:
        return None
    a, b = f.dq(n.inputs[0]), f.dq(n.inputs[1])
    after = f.q_after(n)
    if a is None or b is None or after is None or not a.per_tensor:
        return None
    bq = f.g.const(b.q)
    if bq is None or bq.ndim != 2 or not (b.per_tensor or (b.s.size == bq.shape[1] and b.axis in (1, -1))):
        return None
    q, y = after
    if y.z is None and np.dtype(f.g.type_of(q.outputs[0]).dtype) != np.dtype(f.g.type_of(a.q).dtype):
        return None  # QLinearMatMul without y_zero_point writes a's type
    return Node("QLinearMatMul", [a.q, a.scale, a.zp, b.q, b.scale, b.zp, y.scale, y.zp], [q.outputs[0]],
                name=n.name, version=max(10, f.g.opsets.get("", n.version))), q


def _matmul_integer(f: _Fuser, n: Node) -> tuple[Node, list[Node]] | None:
    """MatMulInteger with a constant 2-D B -> Cast to float -> Mul by a float32 scalar or per-column
    scale s (-> Add of a constant float32 bias [N]): what ``quantize_dynamic`` writes for a MatMul,
    and onnxruntime runs as one MatMulIntegerToFloat (the scale in the product's epilogue)."""
    g = f.g
    ins = list(n.inputs) + [""] * (4 - len(n.inputs))
    B = g.const(ins[1])
    zt = g.type_of(ins[2]) if ins[2] else None  # MatMulIntegerToFloat takes a scalar a_zero_point only
    if (B is None or B.ndim != 2 or len(n.outputs) != 1
            or (zt is not None and (zt.shape is None or len(zt.shape) > 1 or any(d != 1 for d in zt.shape)))):
        return None
    N = B.shape[1]
    cast = f.sole(n.outputs[0])
    if cast is None or (cast.op_type, cast.domain) != ("Cast", "") or cast.attrs.get("to") != _FLOAT:
        return None
    mul = f.sole(cast.outputs[0])
    if mul is None or (mul.op_type, mul.domain) != ("Mul", "") or len(mul.inputs) != 2:
        return None
    others = [i for i in mul.inputs if i != cast.outputs[0]]
    st = g.type_of(others[0]) if len(others) == 1 else None
    if (st is None or st.dtype is None or np.dtype(st.dtype) != _F32 or st.shape is None
            or not (tuple(st.shape) == (N,) or (len(st.shape) <= 1 and all(d == 1 for d in st.shape)))):
        return None
    gone, bias = [cast, mul], ""
    add = f.sole(mul.outputs[0])
    if add is not None and (add.op_type, add.domain) == ("Add", "") and len(add.inputs) == 2:
        c = [i for i in add.inputs if i != mul.outputs[0]]
        v = g.const(c[0]) if len(c) == 1 else None
        if v is not None and v.dtype == _F32 and v.shape == (N,):
            gone, bias = gone + [add], c[0]
    one = g.fresh_name(f"{n.outputs[0]}/one")
    g.value(one).const = np.ones((), _F32)
    g.value(one).type = TensorType(_F32, ())
    scales = [one, others[0]] if tuple(st.shape) == (N,) and N > 1 else [others[0], one]  # a_scale is a scalar
    return Node("MatMulIntegerToFloat", [ins[0], ins[1], *scales, ins[2], ins[3]] + ([bias] if bias else []),
                [gone[-1].outputs[0]], name=n.name, domain=MS, version=1), gone


_RULES = {"Conv": _conv, "Add": _add, "GlobalAveragePool": _gap, "MaxPool": _maxpool, "MatMul": _matmul,
          "MatMulInteger": _matmul_integer}


def fuse_qdq(g: Graph) -> Graph:
    f = _Fuser(g)
    for n in list(g.nodes):
        rule = _RULES.get(n.op_type) if n.domain == "" else None
        if rule is None or id(n) in f.dead or n.outputs[0] in f.protected:
            continue
        done = rule(f, n)
        if done is not None:
            f.replace(n, done[1] if isinstance(done[1], list) else [done[1]], done[0])
    g.nodes = [n for n in g.nodes if id(n) not in f.dead]
    return g
