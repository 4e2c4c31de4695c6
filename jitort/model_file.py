"""Reading a model: an ``.onnx`` path, bytes or ModelProto -> ModelProto (external data loaded).

Below the frontend: a session loading an AOT artifact parses its ``model.onnx`` here (inputs,
outputs, metadata) and needs nothing else from ONNX, so this module parses with
``jitort.onnx_proto`` (onnx's message classes without ``import onnx``, which costs a fresh process
~0.7 s); onnx itself is imported only for a model with external data.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from jitort.errors import Fail, InvalidProtobuf, NoSuchFile
from jitort.onnx_proto import messages

if TYPE_CHECKING:
    import onnx

__all__ = ["load_model"]


def load_model(model: str | bytes | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, bytes | None]:
    """Return the ModelProto (external data loaded) and the serialized bytes it was parsed from
    (None when they are not the whole story: a ModelProto argument, or external data)."""
    pb = messages()
    if isinstance(model, pb.ModelProto):
        if _decode_text_fields(model, dry_run=True):
            model = pb.ModelProto.FromString(model.SerializeToString())  # the caller's proto stays as it is
            _decode_text_fields(model)
        return model, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        proto = pb.ModelProto()
        try:
            proto.ParseFromString(bytes(model))
        except Exception as e:
            raise InvalidProtobuf("Failed to load model "
                                  f"because protobuf parsing failed: {e}") from None
        _check_not_empty(proto, "<bytes>")
        _decode_text_fields(proto)
        return proto, bytes(model)
    path = os.fspath(model)
    if not isinstance(path, str):
        raise TypeError(f"model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")
    if not os.path.isfile(path):
        raise NoSuchFile(f"Load model from {path} failed:"
                         f"Load model {path} failed. File doesn't exist")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        proto = pb.ModelProto()
        proto.ParseFromString(raw)
    except Exception as e:
        raise InvalidProtobuf(f"Load model from {path} "
                              f"failed:Protobuf parsing failed. ({e})") from None
    _check_not_empty(proto, path)
    _decode_text_fields(proto)
    if not any(t.data_location == pb.TensorProto.EXTERNAL for t in _all_tensors(proto.graph)):
        return proto, raw
    import onnx  # external data: onnx's loader (and its import cost) only for such models
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
    except onnx.checker.ValidationError as e:  # a location outside the model's directory, absolute, missing
        raise Fail(f"External data path validation failed: {e}") from None
    except (OSError, ValueError) as e:
        raise NoSuchFile(f"Load model from {path} failed: external data could not be read: {e}") from None
    return proto, None


def _all_tensors(g: onnx.GraphProto) -> Any:
    """Every TensorProto of a graph: initializers and node attributes (Constant values), subgraphs
    included: each may keep its data in an external file."""
    yield from g.initializer
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for sub in a.graphs:
                yield from _all_tensors(sub)


def _decode_text_fields(msg: Any, dry_run: bool = False) -> bool:
    """Replace every string field protobuf handed back as bytes (it was not valid UTF-8) by its
    UTF-8 decoding with backslash escapes for the bad bytes, as onnxruntime runs such models.
    Returns whether any field was (or, with ``dry_run``, would be) replaced. Tensors' data fields
    are not visited (they are bytes by type, and can be large)."""
    changed = False
    if msg.DESCRIPTOR.full_name == "onnx.TensorProto":
        fields = [(msg.DESCRIPTOR.fields_by_name[f], getattr(msg, f)) for f in ("name", "doc_string")]
        fields.append((msg.DESCRIPTOR.fields_by_name["external_data"], msg.external_data))
    else:
        fields = msg.ListFields()
    for fd, value in fields:
        if fd.type == fd.TYPE_MESSAGE:
            for m in (value if _is_repeated(fd) else [value]):
                changed |= _decode_text_fields(m, dry_run)
        elif fd.type == fd.TYPE_STRING:
            items = list(value) if _is_repeated(fd) else [value]
            if any(isinstance(v, bytes) for v in items):
                changed = True
                if dry_run:
                    continue
                fixed = [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v for v in items]
                if _is_repeated(fd):
                    del value[:]
                    value.extend(fixed)
                else:
                    setattr(msg, fd.name, fixed[0])
    return changed


def _is_repeated(fd: Any) -> bool:
    return bool(fd.is_repeated)


def _check_not_empty(proto: onnx.ModelProto, where: str) -> None:
    # protobuf happily parses many byte strings into an empty message: a model needs a graph.
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise InvalidProtobuf(f"Load model from {where} "
                              "failed:Protobuf parsing failed (no graph in the model).")
