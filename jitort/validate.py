"""Model checks onnxruntime makes at load, with its exception classes (``onnx.checker``'s per-node
schema check underneath): opset versions that exist, graph inputs defined once, and for every node of
a domain onnx has schemas for: known attributes of the right types, required attributes present, an
input and output count the schema allows. A model onnxruntime refuses is refused here too, naming the
node, instead of running with an unknown attribute ignored or failing later with an internal error.
"""
from __future__ import annotations

import onnx
from onnx import AttributeProto, checker, helper

from jitort.codegen.source import comment_safe
from jitort.errors import Fail, InvalidGraph

# Domains whose schemas onnx ships; nodes of other domains (com.microsoft, jitort, custom ones) are
# checked by the op that implements them.
SCHEMA_DOMAINS = ("", "ai.onnx.ml")
_GRAPH_ATTRS = (AttributeProto.GRAPH, AttributeProto.GRAPHS)


def opsets(ops: dict[str, int]) -> None:
    """Refuse an opset version newer than the ONNX release jitort is built with knows (onnxruntime
    refuses them: a future opset may change any op)."""
    newest = {"": onnx.defs.onnx_opset_version(), "ai.onnx.ml": helper.VERSION_TABLE[-1][3]}
    for domain, version in ops.items():
        limit = newest.get(domain)
        if limit is not None and not 1 <= version <= limit:
            raise Fail(f"Opset {version} for domain '{domain or 'ai.onnx'}' is not supported: jitort knows "
                       f"opsets 1 to {limit} of it")


def graph_inputs(g: onnx.GraphProto) -> None:
    """Each graph input is defined once (onnxruntime: 'Duplicate definition-site')."""
    seen: set[str] = set()
    for i in g.input:
        if i.name in seen:
            raise Fail(f"Error: Duplicate definition-site for ({comment_safe(i.name)}): graph input "
                       f"'{comment_safe(i.name)}' is listed twice")
        seen.add(i.name)


def node(n: onnx.NodeProto, domain: str, ops: dict[str, int]) -> None:
    """onnx's schema check of one node. Not checked here: nodes holding subgraphs (checked through
    their subgraphs' nodes: the checker cannot see the outer scope those read), Constant (its tensor
    is checked as it is decoded, with onnxruntime's class), ops without a schema at the model's
    opset (the op table says whether jitort has them, naming op, domain and opset) and deprecated
    ops."""
    if domain not in SCHEMA_DOMAINS or n.op_type == "Constant" or any(a.type in _GRAPH_ATTRS for a in n.attribute):
        return
    version = ops.get(domain, 1)
    if not onnx.defs.has(n.op_type, version, domain) or onnx.defs.get_schema(n.op_type, version, domain).deprecated:
        return  # onnx's checker refuses deprecated ops; onnxruntime (and jitort) still run them
    ctx = checker.C.CheckerContext()
    ctx.ir_version = onnx.IR_VERSION
    ctx.opset_imports = {d: v for d, v in ops.items() if d in SCHEMA_DOMAINS}
    try:
        checker.check_node(n, ctx)
    except checker.ValidationError as e:
        msg = str(e).split("\n\n==>")[0].strip()
        raise InvalidGraph(f"This is an invalid model. In Node, ('{comment_safe(n.name)}', {n.op_type}, "
                           f"'{domain}', {ops.get(domain, -1)}) : Error {msg}") from None
