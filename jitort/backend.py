"""The ONNX backend API (``onnx.backend.base.Backend``) over jitort, as ``onnxruntime.backend`` offers it.

``prepare(model, device)`` compiles a model into a :class:`JitortBackendRep` whose ``run(inputs)``
returns the outputs in graph order; ``run_model`` prepares and runs; ``run_node`` wraps one
NodeProto in a model typed from the given inputs. Sequence inputs are Python lists of arrays,
optional inputs ``None`` or their value, as in ``onnx.backend.test``.

Every model runs through :class:`jitort.InferenceSession` (its feed checks included). Errors are
jitort's exceptions (``jitort.errors``).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TypeProto, helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from jitort.errors import InvalidArgument
from jitort.model_file import load_model
from jitort.options import SessionOptions
from jitort.session import InferenceSession

CPU = "CPUExecutionProvider"
# SessionOptions attributes prepare(**kwargs) may set, as onnxruntime.backend allows.
_SESSION_OPTIONS = frozenset({
    "enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse", "execution_mode", "execution_order",
    "graph_optimization_level", "inter_op_num_threads", "intra_op_num_threads", "log_severity_level",
    "log_verbosity_level", "logid", "use_deterministic_compute", "use_per_session_threads"})


def _is_tensor(tp: TypeProto) -> bool:
    return tp.HasField("tensor_type") or tp.HasField("sparse_tensor_type")


class JitortBackendRep(BackendRep):
    """A prepared model: ``run(inputs)`` with inputs as a list in graph-input order (or one array)."""

    def __init__(self, proto: onnx.ModelProto, so: SessionOptions) -> None:
        init = {t.name for t in proto.graph.initializer}
        self.inputs = [vi for vi in proto.graph.input if vi.name not in init]
        self.output_names = [o.name for o in proto.graph.output]
        self.session = InferenceSession(proto, so, providers=[CPU])

    def run(self, inputs: Any, **kwargs: Any) -> list[Any]:
        if isinstance(inputs, dict):
            feeds = [inputs[vi.name] for vi in self.inputs]
        elif isinstance(inputs, (list, tuple)):
            feeds = list(inputs)
        else:
            feeds = [inputs]
        if len(feeds) != len(self.inputs):
            raise InvalidArgument(f"the model has {len(self.inputs)} inputs, got {len(feeds)}")
        return self.session.run(None, {vi.name: (np.asarray(x) if _is_tensor(vi.type) and not isinstance(
            x, np.ndarray) else x) for vi, x in zip(self.inputs, feeds)})


def _device_type(device: str | Device | None) -> str:
    if device is None:
        return "CPU"
    if isinstance(device, Device):
        return "CPU" if device.type == DeviceType.CPU else "CUDA"
    return str(device).split(":")[0].upper()


def _latest_opset(domain: str) -> int:
    if domain in ("", "ai.onnx"):
        return onnx.defs.onnx_opset_version()
    versions = [s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.domain == domain]
    return max(versions) if versions else 1


def _type_of(x: Any) -> TypeProto:
    """The TypeProto of a run_node input: an array, a list (sequence) or None (an empty optional)."""
    if x is None:
        raise InvalidArgument("run_node: an input of None needs outputs_info-like typing; pass a typed model")
    if isinstance(x, (list, tuple)):
        elem = _type_of(x[0]) if len(x) else helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, None)
        return helper.make_sequence_type_proto(elem)
    a = np.asarray(x)
    return helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))


class JitortBackend(Backend):
    """jitort as an ONNX backend (``onnx.backend.base.Backend``); CPU only."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device: str | Device | None) -> bool:
        return _device_type(device) == "CPU"

    @classmethod
    def prepare(cls, model: Any, device: str | Device | None = "CPU", **kwargs: Any) -> JitortBackendRep:
        """Compile ``model`` (ModelProto, bytes or path); kwargs set SessionOptions attributes."""
        if isinstance(model, JitortBackendRep):
            return model
        if not cls.supports_device(device):
            raise RuntimeError(f"Incompatible device expected '{device}', got 'CPU'")
        so = SessionOptions()
        for k, v in kwargs.items():
            if k in _SESSION_OPTIONS:
                setattr(so, k, v)
            elif hasattr(so, k):
                raise RuntimeError(f"SessionOptions attribute '{k}' is not permitted via the backend API")
        proto = model if isinstance(model, onnx.ModelProto) else load_model(
            model if isinstance(model, (bytes, bytearray)) else os.fspath(model))[0]
        return JitortBackendRep(proto, so)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str | Device | None = "CPU", **kwargs: Any) -> list[Any]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str | Device | None = "CPU",
                 outputs_info: Sequence[tuple[Any, Any]] | None = None, **kwargs: Any) -> list[Any]:
        """Run one node: ``inputs`` (a list for the node's non-empty inputs, or a dict by name).

        Omitted optional inputs ('' in ``node.input``) stay omitted; omitted optional outputs are
        not returned. ``outputs_info`` (numpy dtype, shape) pairs type the outputs when given.
        ``opset_version`` in kwargs picks the node domain's opset (default: the newest onnx knows).
        """
        names = [n for n in node.input if n]
        if isinstance(inputs, dict):
            values = [inputs[n] for n in names]
        else:
            values = list(inputs)
        if len(values) != len(names):
            raise InvalidArgument(f"run_node: {node.op_type} has {len(names)} inputs, got {len(values)}")
        feeds = {n: v for n, v in zip(names, values)}
        vis = [helper.make_value_info(n, _type_of(v)) for n, v in feeds.items()]
        outs = [o for o in node.output if o]
        if outputs_info:
            out_vis = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
                       for o, (dt, shape) in zip(outs, outputs_info)]
        else:
            out_vis = [helper.make_value_info(o, TypeProto()) for o in outs]
        opset = kwargs.pop("opset_version", None)
        domains = {"": opset if node.domain in ("", "ai.onnx") and opset else onnx.defs.onnx_opset_version()}
        if node.domain not in ("", "ai.onnx"):
            domains[node.domain] = opset or _latest_opset(node.domain)
        graph = helper.make_graph([node], f"run_node_{node.op_type}", vis, out_vis)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in domains.items()])
        return cls.prepare(model, device, **kwargs).run([feeds[n] for n in names])


is_compatible = JitortBackend.is_compatible
prepare = JitortBackend.prepare
run = JitortBackend.run_model
run_model = JitortBackend.run_model
run_node = JitortBackend.run_node
supports_device = JitortBackend.supports_device
