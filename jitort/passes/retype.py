"""Re-run onnx's per-node type inference over an IR graph (control-flow bodies compiled for the
dtypes and ranks they are called with: see ``jitort.kernels.control``)."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

from jitort.ir import Graph
from jitort.protos import MAX_DATA_ELEMENTS, tensor_type, type_proto, unknown


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
    for n in g.nodes:
        outs = [o for o in n.outputs if o]
        if not any(unknown(g.type_of(o)) for o in outs):
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
        ins = {i: type_proto(g.type_of(i)) for i in n.inputs if i}
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
                                                                    unknown(old) and not unknown(new)):
                g.value(o).type = new
