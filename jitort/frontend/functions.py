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

:func:`expand_functions` is the importer's one hook: besides expansion it applies the node rewrites
of :mod:`jitort.frontend.rewrites` and the type refinement of :mod:`jitort.frontend.refine` to every node it yields.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

import numpy as np
import onnx
from onnx import AttributeProto, FunctionProto, NodeProto, TypeProto, helper, numpy_helper

from jitort.frontend.refine import Refiner, active
from jitort.frontend.rewrites import (LEGACY_BROADCAST, castlike_as_cast, defined_in, direct_attention, in_domain,
                                      legacy_broadcast,
                                      type_bodies, untypable, with_free_variables)
from jitort.ir import Value
from jitort.kernels.registry import is_registered
from jitort.protos import tensor_type, type_proto

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
    local = defined_in(g)
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


def expand_functions(g: onnx.GraphProto, opsets: dict[str, int], values: dict[str, Any]
                     ) -> Iterator[tuple[NodeProto, int]]:
    """Yield ``(node, opset version)`` for the graph's nodes, function ops replaced by their bodies.

    ``values`` is the importer's name -> Value table: the types of expanded intermediates are added
    to it (from onnx's shape inference over each body).
    """
    types: dict[str, TypeProto] = {}
    for vi in itertools.chain(g.input, g.value_info, g.output):
        types[vi.name] = vi.type
    stack = active()
    refine = Refiner(values, types, stack[-1] if stack else None)
    stack.append(refine)  # subgraphs are imported while this generator waits at a yield
    try:
        yield from _expand(g, opsets, values, types, refine)
    finally:
        stack.remove(refine)


def _expand(g: onnx.GraphProto, opsets: dict[str, int], values: dict[str, Any], types: dict[str, TypeProto],
            refine: Refiner) -> Iterator[tuple[NodeProto, int]]:
    stack: list[tuple[NodeProto, int | None]] = [(n, None) for n in reversed(g.node)]
    while stack:
        n, ver = stack.pop()
        domain = "" if n.domain == "ai.onnx" else n.domain
        version = ver if ver is not None else opsets.get(domain, 1)
        if n.op_type == "CastLike" and domain == "":
            n = castlike_as_cast(n, values, types)
        if domain == "" and version < 7 and n.op_type in LEGACY_BROADCAST and \
                not is_registered(n.op_type, domain, version):
            legacy = legacy_broadcast(n, values, refine.data)
            if legacy is not None:
                stack.extend((m, 7 if m.op_type == n.op_type else version) for m in reversed(legacy))
                continue
        if n.op_type in ("Cast", "Equal") and domain == "" and untypable(n, values):
            n = in_domain(n, "jitort")  # kernels/lowbit.py: types Numba cannot compute with
            domain = "jitort"
        if n.op_type == "Attention" and domain == "" and version >= 23 and direct_attention(n, values):
            refine.node(n, domain, version, opsets)  # typed by onnx's schema, then run by the kernel
            n, domain = in_domain(n, "jitort"), "jitort"
        if (n.op_type == "Constant" and domain == "") or is_registered(n.op_type, domain, version):
            refine.node(n, domain, version, {**opsets, domain: version})
            yield with_free_variables(type_bodies(n, domain, version, values)), version
            continue
        in_types = []
        for i in n.input:
            t = types.get(i)
            if t is None and i in values:
                t = type_proto(values[i].type)
                types[i] = t
            in_types.append(t if t is not None else TypeProto())
        caller = _with_defaults(n, version)
        fn = function_of(caller, version, in_types)
        if fn is None:
            # not implemented: the registry says so when the node is lowered
            yield with_free_variables(type_bodies(n, domain, version, values)), version
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


