"""Types of contrib ops' outputs (``infer=`` rules, see kernels/registry.py), from onnx's own
inference of the standard op each one extends: FusedConv is typed as Conv, FusedGemm as Gemm,
FusedMatMul as MatMul of its transposed operands. No registrations here."""
from __future__ import annotations

from typing import Any

from jitort.ir import Node, TensorType


def infer_as(op_type: str, version: int, attrs: dict[str, Any], ins: list[TensorType | None]
             ) -> list[TensorType | None]:
    """Output types of the standard ``op_type`` at opset ``version`` with ``attrs`` (those its schema
    knows) on inputs of types ``ins`` (None: an omitted optional input); [] when unknown."""
    # deliberate start-up deferral: onnx (and ml_dtypes, ~0.7 s) when a model is compiled, not when
    # a plan that imports this module's callers is loaded
    import onnx
    from onnx import helper
    from jitort.protos import tensor_type, type_proto
    schema = onnx.defs.get_schema(op_type, version, "")
    names = [f"i{k}" if t is not None else "" for k, t in enumerate(ins)]
    while names and not names[-1]:
        names.pop()
    proto = helper.make_node(op_type, names, [f"o{k}" for k in range(len(schema.outputs))])
    proto.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items()
                           if k in schema.attributes and v is not None)
    types = {n: type_proto(t) for n, t in zip(names, ins) if n}
    if any(t.WhichOneof("value") is None for t in types.values()):
        return []
    try:
        out = onnx.shape_inference.infer_node_outputs(schema, proto, types, {},
                                                      opset_imports=[helper.make_opsetid("", version)])
    except Exception:  # noqa: BLE001 - inference is best effort; the kernel checks at run time
        return []
    return [tensor_type(out[o]) if o in out else None for o in proto.output]


def same_as_input(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    """One output of input 0's type (QLinear unary ops, ...)."""
    return [ins[0]] if ins and ins[0] is not None else []
