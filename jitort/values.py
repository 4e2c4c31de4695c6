"""``OrtValue``, ``NodeArg``, ``ModelMetadata`` and ``IOBinding``: onnxruntime's value-level API.

An ``OrtValue`` wraps a host numpy array (sharing its memory, as onnxruntime does on CPU) and
records the device it lives on in ``_device = (device_type, device_id)``. With the CUDA backend
usable (a GPU, numba-cuda), ``"cuda"`` values hold a numba device array in ``_data`` instead
(anything exposing ``__cuda_array_interface__`` or CUDA DLPack binds without a copy); the public
methods keep their signatures, and ``numpy()`` copies such a value back to the host.

``IOBinding`` talks to its session through exactly one private method (plus the optional public
``get_inputs``/``get_overridable_initializers`` for early name checks)::

    session._run_bound(inputs: dict[str, np.ndarray], output_names: list[str],
                       preallocated: dict[str, np.ndarray], *, run_options: RunOptions | None
                       ) -> list[np.ndarray]   # one array per output_names entry, in order

For names in ``preallocated`` the session should write into that array and may return it; if
it returns a different array, ``IOBinding`` copies the result in (shape and dtype must match).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jitort.dtypes import (
    np_dtype,
    onnx_elem_type,
    resolve_element_type,
    type_proto_shape,
    type_proto_string,
    type_string,
)
from jitort.runtime_info import get_available_providers

if TYPE_CHECKING:
    import onnx

RunOptions = Any  # jitort.options.RunOptions, which imports this module: not imported back

__all__ = ["IOBinding", "ModelMetadata", "NodeArg", "OrtValue"]

Device = tuple[str, int]
"""``(device_type, device_id)``, e.g. ``("cpu", 0)``."""

# Device names onnxruntime's OrtDevice.make() knows; anything else is "Unsupported device type".
_KNOWN_DEVICE_TYPES = ("cpu", "cuda", "gpu", "cann", "dml", "webgpu", "npu")


def _resolve_device(device_type: str, device_id: int) -> Device:
    """Validate a device request: "cpu", or "cuda" ("gpu") when the CUDA backend is usable."""
    dt = str(device_type).lower()
    if dt not in _KNOWN_DEVICE_TYPES:
        raise ValueError(f"Unsupported device type: {device_type}")
    if dt in ("cuda", "gpu") and _cuda_usable():
        if int(device_id) != 0:
            raise RuntimeError(f"jitort's CUDA backend uses device 0 only (asked for device {device_id})")
        return ("cuda", 0)
    if dt != "cpu":
        # onnxruntime's CPU build raises RuntimeError for a device it was not built for.
        raise RuntimeError(
            f"Can't allocate memory on the {device_type} device: this jitort build keeps "
            "OrtValues and IOBinding buffers in CPU memory only (no usable CUDA device).")
    return ("cpu", int(device_id))


# --- CUDA values (only reached when the CUDA backend is usable) -------------------------------

def _cuda_usable() -> bool:
    return "CUDAExecutionProvider" in get_available_providers()


def _cuda_rt() -> Any:
    # deferred: numba.cuda, imported only for CUDA sessions
    from jitort.kernels.cuda import runtime
    return runtime


def is_device(x: Any) -> bool:
    """A CUDA array (numba's, CuPy's, PyTorch's...; the simulator's in tests). Imports nothing."""
    if isinstance(x, np.ndarray) or x is None:
        return False
    return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"


def _to_device_like(arr: Any, device: Device) -> Any:
    """``arr`` (host or device) where ``device`` says, copying only when it is elsewhere."""
    if device[0] == "cuda":
        return _cuda_rt().as_device_array(arr) if is_device(arr) else _cuda_rt().upload(np.asarray(arr))
    return arr.copy_to_host() if is_device(arr) else arr


def _copy_into(dst: Any, src: Any) -> None:
    """Copy ``src`` into the existing buffer ``dst``; either may be on the device."""
    if is_device(dst):
        d = _cuda_rt().as_device_array(dst)
        d.copy_to_device(_cuda_rt().as_device_array(src) if is_device(src) else np.ascontiguousarray(src))
    else:
        np.copyto(dst, src.copy_to_host() if is_device(src) else src)


def _host_array(arr: np.ndarray) -> np.ndarray:
    """The array an OrtValue can hold: C-contiguous, native byte order, strings as objects.
    Returns ``arr`` itself (shared memory) whenever it already qualifies."""
    if arr.dtype.kind in "US":
        return arr.astype(object)  # onnxruntime represents string tensors as object arrays
    onnx_elem_type(arr.dtype)  # raises jitort.errors.NotImplemented for dtypes ONNX lacks
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return _c_contiguous(arr)


def _c_contiguous(arr: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


class OrtValue:
    """A tensor and the device holding it. Build one with the ``ortvalue_from_*`` class methods."""

    def __init__(self, data: np.ndarray | None, device: Device = ("cpu", 0),
                 numpy_obj: object = None) -> None:
        """Wrap ``data`` without copying (``None`` is an optional value with no value).

        ``numpy_obj`` is kept alive as long as this value: the object ``data`` was made from.
        """
        if data is not None and not isinstance(data, np.ndarray) and not (device[0] == "cuda" and is_device(data)):
            raise TypeError(f"OrtValue data must be a numpy.ndarray, got {type(data).__name__}")
        self._data: np.ndarray | None = data
        self._device: Device = device
        self._numpy_obj: object = numpy_obj

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def ortvalue_from_numpy(cls, numpy_obj: np.ndarray, /, device_type: str = "cpu",
                            device_id: int = 0, vendor_id: int = -1) -> OrtValue:
        """An OrtValue over ``numpy_obj``. On CPU it shares the array's memory (a copy is made only
        for non-contiguous, byte-swapped or ``str`` arrays) and keeps the array alive."""
        device = _resolve_device(device_type, device_id)
        if isinstance(numpy_obj, np.generic):
            numpy_obj = np.asarray(numpy_obj)
        if not isinstance(numpy_obj, np.ndarray):
            raise RuntimeError("Creation of OrtValues is currently only supported from numpy "
                               f"arrays, got {type(numpy_obj).__name__}")
        if device[0] == "cuda":
            host = _host_array(numpy_obj)
            if host.dtype == object:
                raise RuntimeError("string tensors cannot live on the CUDA device")
            return cls(_cuda_rt().upload(host), device)
        return cls(_host_array(numpy_obj), device, numpy_obj)

    @classmethod
    def ortvalue_from_numpy_with_onnx_type(cls, data: np.ndarray, /, onnx_element_type: int) -> OrtValue:
        """An OrtValue viewing ``data``'s bytes as ONNX type ``onnx_element_type`` (same item size),
        e.g. uint16 bits as bfloat16. No copy is made."""
        target = np_dtype(onnx_element_type)
        if target.itemsize != data.dtype.itemsize:
            raise ValueError(f"cannot view {data.dtype} (itemsize {data.dtype.itemsize}) as "
                             f"{target} (itemsize {target.itemsize})")
        return cls(_c_contiguous(data).view(target), ("cpu", 0), data)

    @classmethod
    def ortvalue_from_shape_and_type(cls, shape: Sequence[int], element_type: Any,
                                     device_type: str = "cpu", device_id: int = 0,
                                     vendor_id: int = -1, memory_info: object = None) -> OrtValue:
        """A new zero-filled tensor. ``element_type`` is a numpy type/dtype or an ONNX element-type
        int (``onnx.TensorProto.BFLOAT16``)."""
        if memory_info is not None:
            raise RuntimeError("jitort does not support OrtMemoryInfo-based allocation")
        device = _resolve_device(device_type, device_id)
        dims = [int(d) for d in shape]
        if any(d < 0 for d in dims):
            raise RuntimeError(f"Tensor shape cannot contain any negative value: {dims}")
        dtype = resolve_element_type(element_type)
        onnx_elem_type(dtype)
        if dtype == object:
            if device[0] == "cuda":
                raise RuntimeError("string tensors cannot live on the CUDA device")
            return cls(np.full(dims, "", dtype=object), device)
        if device[0] == "cuda":
            return cls(_cuda_rt().upload(np.zeros(dims, dtype=dtype)), device)
        return cls(np.zeros(dims, dtype=dtype), device)

    @classmethod
    def from_dlpack(cls, data: Any, /) -> OrtValue:
        """An OrtValue sharing memory with an object that implements the DLPack protocol (host memory,
        or CUDA memory when the CUDA backend is usable)."""
        if not hasattr(data, "__dlpack__"):
            raise TypeError("jitort's OrtValue.from_dlpack needs an object with __dlpack__")
        if isinstance(data, OrtValue):
            return cls(data._array(), data._device, data)
        dev = data.__dlpack_device__() if hasattr(data, "__dlpack_device__") else (1, 0)
        if int(dev[0]) in (2, 13):  # kDLCUDA, kDLCUDAManaged
            device = _resolve_device("cuda", int(dev[1]))
            return cls(_cuda_rt().from_dlpack(data), device, data)
        return cls(_host_array(np.from_dlpack(data)), ("cpu", 0), data)

    # --- inspection --------------------------------------------------------------------------

    def _array(self) -> np.ndarray:
        if self._data is None:
            raise RuntimeError("the OrtValue holds no value (an empty optional)")
        return self._data

    def numpy(self) -> np.ndarray:
        """The tensor as a numpy array; on CPU this shares memory with the OrtValue, from the CUDA
        device it is a copy."""
        a = self._array()
        return a.copy_to_host() if self._device[0] == "cuda" else a

    def shape(self) -> list[int]:
        """Shape as a list of ints."""
        return list(self._array().shape)

    def data_type(self) -> str:
        """ORT type string, e.g. ``'tensor(float)'``."""
        return type_string(self._array().dtype)

    def element_type(self) -> int:
        """ONNX ``TensorProto`` element type, e.g. ``1`` for float."""
        return onnx_elem_type(self._array().dtype)

    def tensor_size_in_bytes(self) -> int:
        """Size of the tensor's buffer in bytes."""
        return int(self._array().nbytes)

    def device_name(self) -> str:
        """Device the data lives on: ``'cpu'`` or ``'cuda'``."""
        return self._device[0]

    def data_ptr(self) -> int:
        """Address of the first element (a device address for a CUDA value)."""
        if self._device[0] == "cuda":
            return _cuda_rt().device_pointer(self._array())
        return int(self._array().ctypes.data)

    def has_value(self) -> bool:
        """False only for an optional value that holds nothing."""
        return self._data is not None

    def is_tensor(self) -> bool:
        """True when a tensor is held."""
        return self._data is not None

    def is_sparse_tensor(self) -> bool:
        """Always False: jitort has no sparse tensors."""
        return False

    def is_tensor_sequence(self) -> bool:
        """Always False: sequences are returned as Python lists."""
        return False

    def update_inplace(self, data: np.ndarray | OrtValue) -> None:
        """Copy ``data`` into this value's existing buffer (its address does not change).

        ``data`` must have the same dtype and number of elements; its shape may differ.
        """
        src = data._array() if isinstance(data, OrtValue) else data
        if not isinstance(src, np.ndarray) and not is_device(src):
            raise TypeError("data must be a numpy.ndarray or an OrtValue.")
        dst = self._array()
        if src.dtype != dst.dtype:
            # onnxruntime would reinterpret the bytes; refusing is kinder than silent garbage.
            raise TypeError(f"update_inplace: dtype {src.dtype} does not match the OrtValue's {dst.dtype}")
        if src.size != dst.size:
            raise ValueError(f"update_inplace: {src.size} elements do not fit an OrtValue of {dst.size}")
        _copy_into(dst, src.reshape(dst.shape))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = self.numpy()
        if copy is not None:
            return np.array(arr, dtype=dtype, copy=copy)
        return arr if dtype is None else np.asarray(arr, dtype=dtype)

    def __dlpack__(self, *, stream: Any = None) -> Any:
        if self._device[0] == "cuda":
            raise BufferError("jitort's CUDA OrtValues export __cuda_array_interface__, not DLPack: "
                              "use torch.as_tensor(value, device='cuda') or cupy.asarray(value)")
        return self._array().__dlpack__(stream=stream)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2 if self._device[0] == "cuda" else 1, self._device[1])  # kDLCUDA / kDLCPU

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        """Zero-copy export of a CUDA value to CuPy, PyTorch, numba..."""
        if self._device[0] != "cuda":
            raise AttributeError("__cuda_array_interface__: the OrtValue is in CPU memory")
        return self._array().__cuda_array_interface__  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        if self._data is None:
            return f"OrtValue(None, device={self.device_name()!r})"
        return f"OrtValue(shape={self.shape()}, type={self.data_type()!r}, device={self.device_name()!r})"


class NodeArg:
    """Name, type string and shape of a model input or output, as ``get_inputs()`` returns them.

    ``shape`` holds ints for fixed dimensions, strings for symbolic ones, ``None`` for unnamed ones.
    """

    __slots__ = ("_name", "_shape", "_type")

    def __init__(self, name: str, type: str, shape: Sequence[int | str | None]) -> None:  # noqa: A002
        self._name = name
        self._type = type
        self._shape: tuple[int | str | None, ...] = tuple(shape)

    @classmethod
    def from_value_info(cls, value_info: onnx.ValueInfoProto) -> NodeArg:
        """The NodeArg onnxruntime reports for an ONNX ``ValueInfoProto``."""
        return cls(value_info.name, type_proto_string(value_info.type), type_proto_shape(value_info.type))

    @property
    def name(self) -> str:
        """The graph input/output name."""
        return self._name

    @property
    def type(self) -> str:
        """ORT type string, e.g. ``'tensor(float)'`` or ``'seq(tensor(int64))'``."""
        return self._type

    @property
    def shape(self) -> list[int | str | None]:
        """A fresh list on every access, so callers may modify it."""
        return list(self._shape)

    def __str__(self) -> str:
        return f"NodeArg(name={self._name!r}, type={self._type!r}, shape={list(self._shape)!r})"

    __repr__ = __str__


_MODEL_VERSION_UNSET = 2**63 - 1  # what onnxruntime reports when the model sets no model_version


@dataclass
class ModelMetadata:
    """Model-level metadata, as ``InferenceSession.get_modelmeta()`` returns it."""

    producer_name: str = ""
    graph_name: str = ""
    domain: str = ""
    description: str = ""
    graph_description: str = ""
    version: int = _MODEL_VERSION_UNSET
    custom_metadata_map: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_model_proto(cls, model: onnx.ModelProto) -> ModelMetadata:
        """Read the fields onnxruntime reads from a ``ModelProto``."""
        return cls(
            producer_name=model.producer_name,
            graph_name=model.graph.name,
            domain=model.domain,
            description=model.doc_string,
            graph_description=model.graph.doc_string,
            version=model.model_version if model.HasField("model_version") else _MODEL_VERSION_UNSET,
            custom_metadata_map={p.key: p.value for p in model.metadata_props},
        )


class _BoundSession(Protocol):
    def _run_bound(self, inputs: dict[str, np.ndarray], output_names: list[str],
                   preallocated: dict[str, np.ndarray], *, run_options: RunOptions | None
                   ) -> list[np.ndarray]: ...


def _array_from_pointer(ptr: int, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    """A numpy view of caller-owned host memory; the caller keeps that memory alive (as in ORT)."""
    dims = [int(d) for d in shape]
    count = math.prod(dims)
    if dtype == object:
        raise RuntimeError("string tensors cannot be bound by pointer")
    if count == 0:
        return np.empty(dims, dtype=dtype)
    buf = (ctypes.c_char * (count * dtype.itemsize)).from_address(int(ptr))
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(dims)


@dataclass
class _OutputBinding:
    device: Device
    value: OrtValue | None  # caller's preallocated destination; None = the session allocates


class IOBinding:
    """Bind inputs and outputs to buffers ahead of ``InferenceSession.run_with_iobinding``.

    On CPU, bound arrays are used in place: changing a bound numpy array between runs changes
    the next run's input, and preallocated outputs are written into the caller's buffers.
    """

    def __init__(self, session: Any) -> None:
        self._session = session
        self._inputs: dict[str, np.ndarray] = {}
        self._outputs: dict[str, _OutputBinding] = {}  # insertion order = get_outputs() order
        self._results: list[OrtValue] = []

    def _check_input_name(self, name: str) -> None:
        # Fail at bind time like onnxruntime, when the session can tell us its input names.
        get_inputs = getattr(self._session, "get_inputs", None)
        if get_inputs is None:
            return
        names = {a.name for a in get_inputs()}
        get_overridable = getattr(self._session, "get_overridable_initializers", None)
        if get_overridable is not None:
            names |= {a.name for a in get_overridable()}
        if name not in names:
            raise RuntimeError(f"Failed to find NodeArg with name: {name} in the def list")

    # --- inputs ------------------------------------------------------------------------------

    def bind_cpu_input(self, name: str, arr_on_cpu: np.ndarray) -> None:
        """Bind input ``name`` to a numpy array, used without copying (and kept alive)."""
        if not isinstance(arr_on_cpu, np.ndarray):
            raise RuntimeError("Unable to create OrtValue from the given python object")
        self._check_input_name(name)
        self._inputs[name] = arr_on_cpu

    def bind_input(self, name: str, device_type: str, device_id: int, element_type: Any,
                   shape: Sequence[int], buffer_ptr: int) -> None:
        """Bind input ``name`` to raw memory at ``buffer_ptr`` holding ``shape`` elements of
        ``element_type`` (a numpy type or an ONNX element-type int)."""
        if buffer_ptr is None or isinstance(buffer_ptr, bool):
            raise TypeError("bind_input(): buffer_ptr must be an int address")
        try:
            device = _resolve_device(device_type, device_id)
        except RuntimeError as e:
            raise RuntimeError(f"Error when binding input: {e}") from None
        self._check_input_name(name)
        if device[0] == "cuda":
            self._inputs[name] = _cuda_rt().from_pointer(buffer_ptr, shape, resolve_element_type(element_type))
            return
        self._inputs[name] = _array_from_pointer(buffer_ptr, resolve_element_type(element_type), shape)

    def bind_ortvalue_input(self, name: str, ortvalue: OrtValue) -> None:
        """Bind input ``name`` to an OrtValue's buffer (on the device for a CUDA value: no copy)."""
        self._check_input_name(name)
        self._inputs[name] = ortvalue._array()

    def synchronize_inputs(self) -> None:
        """Wait for pending device work (CUDA); a no-op on CPU, where bound memory is always visible."""
        if any(is_device(x) for x in self._inputs.values()):
            from numba import cuda
            cuda.synchronize()

    def clear_binding_inputs(self) -> None:
        """Forget all input bindings."""
        self._inputs.clear()

    # --- outputs -----------------------------------------------------------------------------

    def bind_output(self, name: str, device_type: str = "cpu", device_id: int = 0,
                    element_type: Any = None, shape: Sequence[int] | None = None,
                    buffer_ptr: int | None = None) -> None:
        """Request output ``name``. Without ``buffer_ptr`` the session allocates it each run;
        with it, results are written into that caller-owned memory (``element_type`` and
        ``shape`` are then required)."""
        device = _resolve_device(device_type, device_id)
        if buffer_ptr is None:
            self._outputs[name] = _OutputBinding(device, None)
            return
        if element_type is None or shape is None:
            raise ValueError(
                "`element_type` and `shape` are to be provided if pre-allocated memory is provided")
        if device[0] == "cuda":
            arr = _cuda_rt().from_pointer(buffer_ptr, shape, resolve_element_type(element_type))
        else:
            arr = _array_from_pointer(buffer_ptr, resolve_element_type(element_type), shape)
        self._outputs[name] = _OutputBinding(device, OrtValue(arr, device))

    def bind_ortvalue_output(self, name: str, ortvalue: OrtValue) -> None:
        """Have output ``name`` written into ``ortvalue``'s buffer."""
        self._outputs[name] = _OutputBinding(ortvalue._device, ortvalue)

    def synchronize_outputs(self) -> None:
        """Wait for pending device work (CUDA); jitort's runs already wait for their stream."""
        if any(b.device[0] == "cuda" for b in self._outputs.values()):
            from numba import cuda
            cuda.synchronize()

    def clear_binding_outputs(self) -> None:
        """Forget all output bindings and the previous run's outputs."""
        self._outputs.clear()
        self._results = []

    def get_outputs(self) -> list[OrtValue]:
        """The previous run's outputs, in binding order (``[]`` before the first run)."""
        return list(self._results)

    def get_outputs_as_ortvaluevector(self) -> list[OrtValue]:
        """Same as :meth:`get_outputs` (onnxruntime returns its C++ vector type here)."""
        return list(self._results)

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        """Copies of the previous run's outputs as numpy arrays."""
        return [v.numpy() if v._device[0] == "cuda" else np.array(v.numpy(), copy=True) for v in self._results]

    # --- the session's side ------------------------------------------------------------------

    def _run(self, session: _BoundSession, run_options: RunOptions | None = None) -> None:
        """Run ``session`` on the bound inputs; called by ``session.run_with_iobinding``."""
        if session is not self._session:
            raise ValueError("IOBinding must be used with the session that created it.")
        if not self._outputs:
            raise RuntimeError("Error in execution: At least one output should be requested.")
        names = list(self._outputs)
        preallocated = {n: b.value._array() for n, b in self._outputs.items() if b.value is not None}
        arrays = session._run_bound(dict(self._inputs), names, preallocated, run_options=run_options)
        if len(arrays) != len(names):
            raise RuntimeError(f"session returned {len(arrays)} outputs for {len(names)} bound names")
        self._results = [self._deliver(n, a) for n, a in zip(names, arrays)]

    def _deliver(self, name: str, arr: Any) -> OrtValue:
        """The session's result for ``name`` (host or device array) where its binding wants it."""
        binding = self._outputs[name]
        if binding.value is None:
            return OrtValue(_to_device_like(arr, binding.device), binding.device)
        dst = binding.value._array()
        if arr is not dst:
            if tuple(arr.shape) != tuple(dst.shape) or arr.dtype != dst.dtype:
                raise RuntimeError(
                    f"Error in execution: output {name!r} is {arr.dtype}{list(arr.shape)} but its "
                    f"bound buffer is {dst.dtype}{list(dst.shape)}")
            _copy_into(dst, arr)
        return binding.value
