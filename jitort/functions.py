"""Function expansion: an op jitort does not implement, but which ONNX defines as a function, runs as
its function body.

At import, :func:`expand_functions` walks a graph's nodes; a node whose op has no jitort
registration at its opset and whose schema carries a function body (``function_body`` /
``get_function_with_opset_version``, or a context-dependent builder fed the node and its input
types) is replaced by the body: formal inputs/outputs bound to the node's values, intermediates
renamed uniquely, attribute references (``ref_attr_name``) resolved against the caller's attributes
(schema defaults filled first), subgraphs of body nodes renamed too. Body nodes keep the opset of
the function body (``Node.version``), not the model's, so an op whose semantics changed since
(ReduceMean's axes input, say) runs as the body means it. onnx's shape inference runs over each
instantiated body (constant inputs as initializers, so shape chains propagate) to type its
intermediates, and expansion recurses: a body may call other functions.

Model-local functions (``ModelProto.functions``) are inlined by onnx's own inliner before import
(:func:`inline_local_functions`); the schema functions they call then expand here.
"""
from __future__ import annotations

import copy
import itertools
import threading
from typing import Any, Iterable, Iterator

import numpy as np
import onnx
from onnx import AttributeProto, FunctionProto, NodeProto, TypeProto, helper, numpy_helper

_fresh = itertools.count()
MAX_CONST_ELEMENTS = 1 << 16  # constants larger than this are not handed to shape inference


def inline_local_functions(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Inline the model's local functions (recursively) with onnx's inliner; a no-op without any."""
    if not proto.functions:
        return proto
    try:
        from onnx.inliner import inline_local_functions as inline
        return inline(proto, convert_version=True)
    except Exception:
        try:
            from onnx.inliner import inline_local_functions as inline
            return inline(proto, convert_version=False)
        except Exception:
            return proto


def _is_registered(op_type: str, domain: str, version: int) -> bool:
    from jitort.kernels.registry import is_registered
    return is_registered(op_type, domain, version)


def _pick(versions: Iterable[int], version: int) -> int | None:
    vs = sorted(versions)
    ok = [v for v in vs if v <= version]
    return ok[-1] if ok else None


def function_of(node: NodeProto, version: int, input_types: list[TypeProto]) -> FunctionProto | None:
    """The function body ONNX defines for ``node`` at opset ``version`` of its domain, or None."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    try:
        schema = onnx.defs.get_schema(node.op_type, version, domain)
    except Exception:
        return None
    fp = FunctionProto()
    v = _pick(getattr(schema, "function_opset_versions", []) or [], version)
    if v is not None:
        fp.ParseFromString(schema.get_function_with_opset_version(v))
        if fp.node:
            return fp
    v = _pick(getattr(schema, "context_dependent_function_opset_versions", []) or [], version)
    if v is not None:
        try:
            data = schema.get_context_dependent_function_with_opset_version(
                v, node.SerializeToString(), [t.SerializeToString() for t in input_types])
        except Exception:
            return None
        fp = FunctionProto()
        fp.ParseFromString(data)
        if fp.node:
            return fp
    if schema.has_function and schema.function_body.node:
        return schema.function_body
    return None


def _with_defaults(node: NodeProto, version: int) -> NodeProto:
    """A copy of ``node`` with the schema's attribute defaults added (function bodies may refer to them)."""
    out = NodeProto()
    out.CopyFrom(node)
    try:
        schema = onnx.defs.get_schema(node.op_type, version, "" if node.domain == "ai.onnx" else node.domain)
    except Exception:
        return out
    have = {a.name for a in node.attribute}
    for name, a in schema.attributes.items():
        if name not in have and a.default_value is not None and a.default_value.type != 0:
            out.attribute.append(a.default_value)
    return out


def _defined_in(g: onnx.GraphProto) -> set[str]:
    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    names |= {t.values.name for t in g.sparse_initializer}
    for n in g.node:
        names.update(o for o in n.output if o)
    return names


def _rename_attrs(n: NodeProto, rename: dict[str, str], caller: dict[str, AttributeProto],
                  defaults: dict[str, AttributeProto]) -> list[AttributeProto]:
    attrs: list[AttributeProto] = []
    for a in n.attribute:
        if a.ref_attr_name:
            src = caller.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
            if src is None:
                continue  # the caller omitted an optional attribute without a default
            b = AttributeProto()
            b.CopyFrom(src)
            b.name = a.name
            attrs.append(b)
            continue
        b = AttributeProto()
        b.CopyFrom(a)
        if b.type == AttributeProto.GRAPH:
            _rename_subgraph(b.g, rename, caller, defaults)
        elif b.type == AttributeProto.GRAPHS:
            for sg in b.graphs:
                _rename_subgraph(sg, rename, caller, defaults)
        attrs.append(b)
    return attrs


def _rename_subgraph(g: onnx.GraphProto, rename: dict[str, str], caller: dict[str, AttributeProto],
                     defaults: dict[str, AttributeProto]) -> None:
    """Rename outer-scope references inside a subgraph (names it defines itself stay)."""
    local = _defined_in(g)
    inner = {k: v for k, v in rename.items() if k not in local}
    for n in g.node:
        n.input[:] = [inner.get(i, i) for i in n.input]
        attrs = _rename_attrs(n, inner, caller, defaults)
        del n.attribute[:]
        n.attribute.extend(attrs)
    for o in g.output:
        if o.name in inner:
            o.name = inner[o.name]


def instantiate(node: NodeProto, fn: FunctionProto, tag: str) -> list[NodeProto]:
    """The body of ``fn`` bound to ``node``'s inputs, outputs and attributes, intermediates prefixed."""
    prefix = f"_{tag}_{next(_fresh)}_"
    rename: dict[str, str] = {}
    for k, formal in enumerate(fn.input):
        rename[formal] = node.input[k] if k < len(node.input) else ""
    for k, formal in enumerate(fn.output):
        actual = node.output[k] if k < len(node.output) else ""
        rename[formal] = actual if actual else prefix + formal
    caller = {a.name: a for a in node.attribute}
    defaults = {a.name: a for a in fn.attribute_proto}
    out: list[NodeProto] = []
    for k, n in enumerate(fn.node):
        for o in n.output:
            if o and o not in rename:
                rename[o] = prefix + o
        m = NodeProto()
        m.op_type, m.domain = n.op_type, n.domain
        m.name = f"{node.name or node.op_type}/{n.name or n.op_type + '_' + str(k)}"
        m.input.extend(rename.get(i, prefix + i) if i else "" for i in n.input)
        m.output.extend(rename[o] if o else "" for o in n.output)
        m.attribute.extend(_rename_attrs(n, rename, caller, defaults))
        out.append(m)
    return out


def _infer_body(nodes: list[NodeProto], outer_inputs: list[str], opsets: dict[str, int],
                types: dict[str, TypeProto], consts: dict[str, np.ndarray]) -> dict[str, TypeProto]:
    """onnx's shape inference over an instantiated body -> the types of its values."""
    inputs, inits = [], []
    for name in dict.fromkeys(i for i in outer_inputs if i):
        c = consts.get(name)
        if c is not None and c.size <= MAX_CONST_ELEMENTS and c.dtype != object:
            try:
                inits.append(numpy_helper.from_array(c, name))
                continue
            except Exception:
                pass
        inputs.append(helper.make_value_info(name, types.get(name, TypeProto())))
    produced = [o for n in nodes for o in n.output if o]
    g = helper.make_graph(nodes, "body", inputs, [helper.make_value_info(o, TypeProto()) for o in produced],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:
        try:
            m = onnx.shape_inference.infer_shapes(m, strict_mode=False)
        except Exception:
            return {}
    out = {}
    for vi in itertools.chain(m.graph.value_info, m.graph.output):
        if vi.type.WhichOneof("value") is not None:
            out[vi.name] = vi.type
    return out


def _type_proto(t: Any) -> TypeProto:
    """TypeProto of an importer TensorType (unknown dims become unnamed)."""
    if t is None or t.dtype is None:
        return TypeProto()
    try:
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
    except Exception:
        return TypeProto()
    shape = None if t.shape is None else [d if isinstance(d, int) else None for d in t.shape]
    return helper.make_tensor_type_proto(elem, shape)


def graph_free_variables(g: onnx.GraphProto) -> list[str]:
    """Names a subgraph uses (its own subgraphs included) that it does not define, in first-use order."""
    defined = _defined_in(g)
    out: dict[str, None] = {}
    for n in g.node:
        for i in n.input:
            if i and i not in defined:
                out[i] = None
        for a in n.attribute:
            subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)
            for sg in subs:
                for f in graph_free_variables(sg):
                    if f not in defined:
                        out[f] = None
    for o in g.output:
        if o.name not in defined:
            out[o.name] = None
    return list(out)


def _type_bodies(n: NodeProto, domain: str, version: int, values: dict[str, Any]) -> NodeProto:
    """Give a Loop / Scan body's untyped formal inputs the types the node's inputs imply, so the body
    can be typed (and its elementwise chains compiled): a Scan state keeps its outer type, a scan
    element drops the scan axis; Loop's iteration count and condition are int64/bool scalars, its
    carried values keep dtype and rank only (their shapes may change between iterations)."""
    if domain != "" or n.op_type not in ("Loop", "Scan") or (n.op_type == "Scan" and version < 9):
        return n
    body = next((a.g for a in n.attribute if a.name == "body"), None)
    if body is None:
        return n

    def outer(name: str) -> Any:
        v = values.get(name) if name else None
        return None if v is None or v.type.dtype is None else v.type

    formal: list[tuple[Any, Any]] = []  # (numpy dtype, dims or None)
    if n.op_type == "Loop":
        formal = [(np.dtype(np.int64), ()), (np.dtype(np.bool_), ())]
        for i in list(n.input)[2:len(body.input)]:
            t = outer(i)
            formal.append((t.dtype, None if t.shape is None else [None] * len(t.shape)) if t else (None, None))
    else:
        m = next((a.i for a in n.attribute if a.name == "num_scan_inputs"), 0)
        axes = next((list(a.ints) for a in n.attribute if a.name == "scan_input_axes"), None) or [0] * m
        n_state = len(body.input) - m
        for k, i in enumerate(list(n.input)[:len(body.input)]):
            t = outer(i)
            if t is None or t.shape is None:
                formal.append((None if t is None else t.dtype, None))
            elif k < n_state:
                formal.append((t.dtype, list(t.shape)))
            else:
                ax = axes[k - n_state] % len(t.shape)
                formal.append((t.dtype, [d for j, d in enumerate(t.shape) if j != ax]))
    if not any(dt is not None for dt, _ in formal):
        return n
    m = NodeProto()
    m.CopyFrom(n)
    mbody = next(a.g for a in m.attribute if a.name == "body")
    for vi, (dt, dims) in zip(mbody.input, formal):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if dt is None or vi.type.WhichOneof("value") not in (None, "tensor_type"):
            continue
        if tt is not None and tt.elem_type and tt.HasField("shape"):
            continue  # declared by the model: kept
        shape = None if dims is None else [d if isinstance(d, int) else None for d in dims]
        if tt is not None and tt.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        vi.type.CopyFrom(helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(dt), shape))
    return m


def _with_free_variables(n: NodeProto) -> NodeProto:
    """A node with subgraphs gets their free variables appended to its inputs (jitort's IR
    convention: passes then see every use; the control-flow ops take them as trailing inputs)."""
    free: dict[str, None] = {}
    for a in n.attribute:
        subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs) if a.type == AttributeProto.GRAPHS else []
        for sg in subs:
            free.update((f, None) for f in graph_free_variables(sg))
    if not free:
        return n
    m = NodeProto()
    m.CopyFrom(n)
    m.input.extend(free)
    return m


MAX_DATA_ELEMENTS = 4096  # constant values evaluated at import to sharpen inference (shape arithmetic)


def _unknown(t: Any) -> bool:
    return t is None or t.dtype is None or t.shape is None or any(
        isinstance(d, str) and (d.startswith("?") or d.startswith("unk__")) for d in t.shape)


class _Refiner:
    """Node-by-node type refinement where onnx's graph inference stopped short.

    onnx's data propagation covers Shape/Gather/Concat/Slice-style chains but not Range, Div or
    Cast of shape arithmetic, so a ReduceMean whose axes come from ``Range(axis, Size(Shape(X)))``
    gets no rank and its fused consumers cannot be compiled. Here small values computable at import
    (constants, Shapes of statically shaped values, and ops over those, evaluated with jitort's own
    kernels) feed onnx's per-node inference (``infer_node_outputs``) for outputs still untyped.
    The data only sharpens types; the nodes stay in the graph for the passes to fold.
    """

    def __init__(self, values: dict[str, Any], types: dict[str, TypeProto], outer: _Refiner | None) -> None:
        self.values = values
        self.types = types
        # A subgraph sees the enclosing graphs' known values (its importer only passes their types).
        self.data: dict[str, np.ndarray] = dict(outer.data) if outer is not None else {}
        self.data.update({k: v.const for k, v in values.items()
                          if v.const is not None and v.const.size <= MAX_DATA_ELEMENTS})

    def _type(self, name: str) -> TypeProto | None:
        t = self.types.get(name)
        if (t is None or t.WhichOneof("value") is None) and name in self.values:
            t = _type_proto(self.values[name].type)
        return t

    def node(self, n: NodeProto, domain: str, version: int, opsets: dict[str, int]) -> None:
        if domain != "" or any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in n.attribute):
            return
        try:
            self._node(n, version, opsets)
        except Exception:
            pass  # refinement is best effort: the graph's own types stand

    def _node(self, n: NodeProto, version: int, opsets: dict[str, int]) -> None:
        from jitort.ir import Value
        from jitort.onnx_import import constant_value, tensor_type, _attr_value
        if n.op_type == "Constant":
            a = constant_value({x.name: _attr_value(x, {}, {}) for x in n.attribute}, n.name)
            if a.size <= MAX_DATA_ELEMENTS and a.dtype != object:
                self.data[n.output[0]] = a
            return
        outs = [o for o in n.output if o]
        if any(_unknown(self.values[o].type) if o in self.values else True for o in outs):
            ins = {i: self._type(i) for i in n.input if i}
            if all(t is not None and t.WhichOneof("value") is not None for t in ins.values()):
                schema = onnx.defs.get_schema(n.op_type, version, "")
                data = {i: numpy_helper.from_array(self.data[i], i) for i in ins if i in self.data}
                inferred = onnx.shape_inference.infer_node_outputs(
                    schema, n, ins, data, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
                for o, t in inferred.items():
                    new = tensor_type(t)
                    old = self.values.get(o)
                    if new.dtype is not None and new.shape is not None and (
                            old is None or _unknown(old.type) and not _unknown(new)
                            or old.type.shape is None or old.type.dtype is None):
                        self.values[o] = Value(o, new)
                        self.types[o] = t
            if n.op_type.startswith("Reduce") and outs and self.values.get(outs[0]) is not None \
                    and self.values[outs[0]].type.shape is None:
                self._reduce_rank(n, outs[0])
        self._evaluate(n, version, outs)

    def _reduce_rank(self, n: NodeProto, out: str) -> None:
        """A reduction with run-time axes: keepdims keeps the rank; otherwise a static number of
        axes removes that many (onnx's inference gives up without the axes' values)."""
        from jitort.ir import TensorType, Value
        from jitort.onnx_import import _unknown_dims
        x = self.values.get(n.input[0])
        if x is None or x.type.shape is None:
            return
        attrs = {a.name: a.i for a in n.attribute if a.type == AttributeProto.INT}
        rank = len(x.type.shape)
        if attrs.get("keepdims", 1):
            new_rank = rank
        else:
            axes = self.values.get(n.input[1]) if len(n.input) > 1 and n.input[1] else None
            if axes is None or axes.type.shape is None or len(axes.type.shape) != 1 or \
                    not isinstance(axes.type.shape[0], int) or axes.type.shape[0] == 0:
                return
            new_rank = rank - axes.type.shape[0]
        dt = self.values[out].type.dtype or x.type.dtype
        self.values[out] = Value(out, TensorType(dt, tuple(f"?{next(_unknown_dims)}" for _ in range(new_rank))))
        self.types.pop(out, None)

    def _evaluate(self, n: NodeProto, version: int, outs: list[str]) -> None:
        if n.op_type == "Shape" and n.input[0] in self.values and self.values[n.input[0]].type.is_static():
            shape = [int(d) for d in self.values[n.input[0]].type.shape]  # type: ignore[union-attr]
            attrs = {a.name: a.i for a in n.attribute}
            r = len(shape)
            lo, hi = attrs.get("start", 0), attrs.get("end", r)
            lo, hi = (lo + r if lo < 0 else lo), (hi + r if hi < 0 else hi)
            self.data[outs[0]] = np.array(shape[max(0, min(r, lo)):max(0, min(r, hi))], np.int64)
            return
        if n.op_type == "Size" and n.input[0] in self.values and self.values[n.input[0]].type.is_static():
            self.data[outs[0]] = np.array(int(np.prod(self.values[n.input[0]].type.shape)), np.int64)
            return
        ins = [i for i in n.input if i]
        if not ins or not all(i in self.data for i in ins) or n.op_type in _NO_EVAL:
            return
        if not all(o in self.values and self.values[o].type.dtype is not None for o in outs):
            return
        from jitort.compiler import evaluate
        from jitort.ir import Graph, Node, Value
        from jitort.onnx_import import _attr_value, _fill_defaults
        attrs = {a.name: _attr_value(a, {}, {}) for a in n.attribute}
        _fill_defaults(n.op_type, "", version, attrs)
        node = Node(n.op_type, list(n.input), list(n.output), attrs, n.name or n.op_type, "", version)
        vals = {i: Value(i, self.values[i].type if i in self.values else _tensor_type_of(self.data[i]),
                         self.data[i]) for i in ins}
        for o in outs:
            vals[o] = Value(o, copy.deepcopy(self.values[o].type))
        g = Graph([node], [], outs, vals)
        results = evaluate(node, g)
        for o, r in zip(n.output, results):
            if o and isinstance(r, np.ndarray) and r.size <= MAX_DATA_ELEMENTS:
                self.data[o] = r


_NO_EVAL = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
            "Constant"}


def _tensor_type_of(a: np.ndarray) -> Any:
    from jitort.ir import TensorType
    return TensorType(a.dtype, tuple(a.shape))


def _untypable(n: NodeProto, values: dict[str, Any]) -> bool:
    from jitort.kernels.lowbit import numba_typed
    dts = [values[i].type.dtype for i in n.input if i and i in values]
    for a in n.attribute:
        if a.name == "to":
            dts.append(np.dtype(helper.tensor_dtype_to_np_dtype(a.i)))
    return any(not numba_typed(d) for d in dts)


def _in_domain(n: NodeProto, domain: str) -> NodeProto:
    m = NodeProto()
    m.CopyFrom(n)
    m.domain = domain
    return m


_LEGACY_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less", "PRelu"}


def _legacy_broadcast(n: NodeProto, values: dict[str, Any], data: dict[str, np.ndarray]) -> list[NodeProto] | None:
    """A binary op of opset < 7 as its opset-7 form (numpy broadcasting), when that means the same.

    Before opset 7, ``broadcast=1`` aligned B with A at ``axis`` (default: the trailing axes), and
    PRelu's 1-D slope ran along the channel axis (1). Numpy broadcasting agrees when B fills A's
    trailing axes; a constant B aligned elsewhere is reshaped with trailing 1s. None when neither
    holds (the op then reports itself not implemented at its opset).
    """
    attrs = {a.name: a.i for a in n.attribute if a.type == AttributeProto.INT}
    a_t = values[n.input[0]].type if n.input[0] in values else None
    b = n.input[1] if len(n.input) > 1 else ""
    b_t = values[b].type if b in values else None
    if a_t is None or b_t is None or a_t.shape is None or b_t.shape is None:
        return None
    ra, rb = len(a_t.shape), len(b_t.shape)
    if n.op_type == "PRelu":
        axis = 1 if rb == 1 and ra > 2 and b_t.shape[0] != 1 and b_t.shape[0] != a_t.shape[-1] else ra - rb
    elif attrs.get("broadcast", 0):
        axis = attrs.get("axis", ra - rb)
        axis = axis + ra if axis < 0 else axis
    else:
        axis = ra - rb
    m = NodeProto()
    m.CopyFrom(n)
    del m.attribute[:]
    if axis + rb == ra:
        return [m]
    c = data.get(b)
    if c is None or axis < 0 or axis + rb > ra:
        return None
    shaped = f"{b}__aligned_{next(_fresh)}"
    const = helper.make_node("Constant", [], [shaped], value=numpy_helper.from_array(
        c.reshape(c.shape + (1,) * (ra - axis - rb)), shaped))
    m.input[1] = shaped
    return [const, m]


def _castlike_as_cast(n: NodeProto, values: dict[str, Any], types: dict[str, TypeProto]) -> NodeProto:
    """CastLike(x, like) is Cast(x, to=dtype of like): only like's dtype matters, never its shape.

    jitort's elementwise CastLike treats ``like`` as a broadcast operand (a wrong shape whenever
    ``like``'s shape differs from ``x``'s), so where ``like``'s dtype is known it becomes a Cast.
    """
    like = n.input[1] if len(n.input) > 1 else ""
    elem = 0
    t = types.get(like)
    if t is not None and t.HasField("tensor_type"):
        elem = t.tensor_type.elem_type
    if not elem and like in values and values[like].type.dtype is not None:
        try:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(values[like].type.dtype))
        except Exception:
            elem = 0
    if not elem:
        return n
    m = NodeProto()
    m.CopyFrom(n)
    m.op_type = "Cast"
    del m.input[1:]
    m.attribute.append(helper.make_attribute("to", elem))
    return m


def expand_functions(g: onnx.GraphProto, opsets: dict[str, int], values: dict[str, Any]
                     ) -> Iterator[tuple[NodeProto, int]]:
    """Yield ``(node, opset version)`` for the graph's nodes, function ops replaced by their bodies.

    ``values`` is the importer's name -> Value table: the types of expanded intermediates are added
    to it (from onnx's shape inference over each body).
    """
    types: dict[str, TypeProto] = {}
    for vi in itertools.chain(g.input, g.value_info, g.output):
        types[vi.name] = vi.type
    active = _active()
    refine = _Refiner(values, types, active[-1] if active else None)
    active.append(refine)  # subgraphs are imported while this generator waits at a yield
    try:
        yield from _expand(g, opsets, values, types, refine)
    finally:
        active.remove(refine)


_local = threading.local()


def _active() -> list[_Refiner]:
    """This thread's refiners of the graphs being imported, outermost first."""
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _expand(g: onnx.GraphProto, opsets: dict[str, int], values: dict[str, Any], types: dict[str, TypeProto],
            refine: _Refiner) -> Iterator[tuple[NodeProto, int]]:
    from jitort.ir import Value
    from jitort.onnx_import import tensor_type
    stack: list[tuple[NodeProto, int | None]] = [(n, None) for n in reversed(g.node)]
    while stack:
        n, ver = stack.pop()
        domain = "" if n.domain == "ai.onnx" else n.domain
        version = ver if ver is not None else opsets.get(domain, 1)
        if n.op_type == "CastLike" and domain == "":
            n = _castlike_as_cast(n, values, types)
        if domain == "" and version < 7 and n.op_type in _LEGACY_BROADCAST and \
                not _is_registered(n.op_type, domain, version):
            legacy = _legacy_broadcast(n, values, refine.data)
            if legacy is not None:
                stack.extend((m, 7 if m.op_type == n.op_type else version) for m in reversed(legacy))
                continue
        if n.op_type in ("Cast", "Equal") and domain == "" and _untypable(n, values):
            n = _in_domain(n, "jitort")  # kernels/lowbit.py: types Numba cannot compute with
            domain = "jitort"
        if (n.op_type == "Constant" and domain == "") or _is_registered(n.op_type, domain, version):
            refine.node(n, domain, version, {**opsets, domain: version})
            yield _with_free_variables(_type_bodies(n, domain, version, values)), version
            continue
        in_types = []
        for i in n.input:
            t = types.get(i)
            if t is None and i in values:
                t = _type_proto(values[i].type)
                types[i] = t
            in_types.append(t if t is not None else TypeProto())
        caller = _with_defaults(n, version)
        fn = function_of(caller, version, in_types)
        if fn is None:
            yield _with_free_variables(_type_bodies(n, domain, version, values)), version  # not implemented: the registry says so when the node is lowered
            continue
        body_opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in fn.opset_import}
        body_opsets.setdefault(domain, version)
        body = instantiate(caller, fn, n.op_type)
        consts = {k: v.const for k, v in values.items() if v.const is not None}
        for name, t in _infer_body(body, list(n.input), body_opsets, types, consts).items():
            if name in set(n.output) and name in types and types[name].WhichOneof("value") is not None:
                continue
            types[name] = t
            old = values.get(name)
            if old is None or old.type.dtype is None or old.type.shape is None:
                values[name] = Value(name, tensor_type(t))
        for m in reversed(body):
            d = "" if m.domain == "ai.onnx" else m.domain
            stack.append((m, body_opsets.get(d, opsets.get(d, 1))))


def _ir_attr(name: str, v: Any) -> AttributeProto | None:
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(v))
    if isinstance(v, (list, tuple)) and v and isinstance(v[0], np.ndarray):
        return helper.make_attribute(name, [numpy_helper.from_array(x) for x in v])
    try:
        return helper.make_attribute(name, v)
    except Exception:
        return None


def retype(g: Any) -> None:
    """Re-run onnx's per-node type inference over an IR graph in order, filling outputs whose type
    is unknown or partial (after its inputs were given sharper types, e.g. a subgraph compiled for
    the ranks it is called with). Nodes with subgraph attributes keep their types."""
    from jitort.ir import Graph
    from jitort.onnx_import import tensor_type
    for n in g.nodes:
        outs = [o for o in n.outputs if o]
        if not any(_unknown(g.type_of(o)) for o in outs):
            continue
        if any(isinstance(a, Graph) or (isinstance(a, list) and a and isinstance(a[0], Graph))
               for a in n.attrs.values()):
            continue
        try:
            schema = onnx.defs.get_schema(n.op_type, n.version, n.domain)
        except Exception:
            continue
        proto = helper.make_node(n.op_type, list(n.inputs), list(n.outputs), domain=n.domain or None)
        proto.attribute.extend(a for a in (_ir_attr(k, v) for k, v in n.attrs.items()) if a is not None)
        ins = {i: _type_proto(g.type_of(i)) for i in n.inputs if i}
        if any(t.WhichOneof("value") is None for t in ins.values()):
            continue
        data = {}
        for i in ins:
            c = g.const(i)
            if c is not None and c.size <= MAX_DATA_ELEMENTS and c.dtype != object:
                data[i] = numpy_helper.from_array(c, i)
        try:
            inferred = onnx.shape_inference.infer_node_outputs(
                schema, proto, ins, data, opset_imports=[helper.make_opsetid(n.domain, n.version)])
        except Exception:
            continue
        for o, t in inferred.items():
            new = tensor_type(t)
            old = g.type_of(o)
            if new.dtype is not None and new.shape is not None and (old.shape is None or old.dtype is None or
                                                                    _unknown(old) and not _unknown(new)):
                g.value(o).type = new
