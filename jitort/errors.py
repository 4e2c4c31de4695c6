"""Exceptions with onnxruntime's names, codes and message format.

They mirror ``onnxruntime.capi.onnxruntime_pybind11_state``: each class derives directly from
``Exception`` (not ``RuntimeError``) exactly as there, so ``except`` clauses written against
onnxruntime behave the same. ``str(err)`` reads like onnxruntime's
``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : <message>``, while ``err.args[0]`` stays the plain
message jitort raised with.

``NotImplemented`` shadows the builtin constant inside any module that imports it by that name;
onnxruntime does the same, and code that catches ``ort.capi...NotImplemented`` needs the name.
Inside jitort import it as ``from jitort.errors import NotImplemented as OrtNotImplemented``.

Errors onnxruntime raises as plain ``RuntimeError`` / ``TypeError`` / ``ValueError`` (a missing
config key, a badly typed option, a device this build lacks) are raised as those builtins too.
"""

from __future__ import annotations

__all__ = [
    "ALL_ERRORS",
    "DeviceReset",
    "EPFail",
    "EngineError",
    "Fail",
    "InvalidArgument",
    "InvalidGraph",
    "InvalidProtobuf",
    "ModelLoadCanceled",
    "ModelLoaded",
    "ModelRequiresCompilation",
    "NoModel",
    "NoSuchFile",
    "NotFound",
    "NotImplemented",
    "RuntimeException",
]


def _format_status(self: Exception) -> str:
    """``__str__`` shared by every class below: onnxruntime's ``[ONNXRuntimeError]`` prefix."""
    msg = Exception.__str__(self)
    code: int | None = getattr(self, "code", None)
    if code is None:
        return msg
    return f"[ONNXRuntimeError] : {code} : {getattr(self, 'status', '')} : {msg}"


# Each class gets `code`, `status` and `__str__` in its own body rather than from a shared base:
# a base would add a class to the MRO that onnxruntime's exceptions do not have.


class Fail(Exception):
    """Generic failure (StatusCode FAIL)."""

    code, status = 1, "FAIL"
    __str__ = _format_status


class InvalidArgument(Exception):
    """A caller-supplied value is wrong: unknown input name, bad dtype or shape in a feed."""

    code, status = 2, "INVALID_ARGUMENT"
    __str__ = _format_status


class NoSuchFile(Exception):
    """The model path (or an external-data file) does not exist."""

    code, status = 3, "NO_SUCHFILE"
    __str__ = _format_status


class NoModel(Exception):
    """No model has been loaded."""

    code, status = 4, "NO_MODEL"
    __str__ = _format_status


class EngineError(Exception):
    """The execution engine failed."""

    code, status = 5, "ENGINE_ERROR"
    __str__ = _format_status


class RuntimeException(Exception):
    """An error while running a kernel (e.g. a shape that only turns out wrong at run time)."""

    code, status = 6, "RUNTIME_EXCEPTION"
    __str__ = _format_status


class InvalidProtobuf(Exception):
    """The model bytes do not parse as an ONNX ModelProto."""

    code, status = 7, "INVALID_PROTOBUF"
    __str__ = _format_status


class ModelLoaded(Exception):
    """A model was already loaded into this session."""

    code, status = 8, "MODEL_LOADED"
    __str__ = _format_status


class NotImplemented(Exception):  # noqa: A001 - onnxruntime's name, deliberately
    """An op, attribute, type or API that jitort does not implement."""

    code, status = 9, "NOT_IMPLEMENTED"
    __str__ = _format_status


class InvalidGraph(Exception):
    """The model's graph is malformed (dangling names, type errors, cycles)."""

    code, status = 10, "INVALID_GRAPH"
    __str__ = _format_status


class EPFail(Exception):
    """An execution provider failed."""

    code, status = 11, "EP_FAIL"
    __str__ = _format_status


class ModelLoadCanceled(Exception):
    """Loading was cancelled via ``SessionOptions.set_load_cancellation_flag(True)``."""

    code, status = 12, "MODEL_LOAD_CANCELED"
    __str__ = _format_status


class ModelRequiresCompilation(Exception):
    """The model must be compiled for an execution provider before it can run."""

    code, status = 13, "MODEL_REQUIRES_COMPILATION"
    __str__ = _format_status


class NotFound(Exception):
    """A named thing (e.g. a registered library or device) was not found."""

    code, status = 14, "NOT_FOUND"
    __str__ = _format_status


class DeviceReset(Exception):
    """The accelerator was reset and device state is lost (no onnxruntime status code)."""

    code: int | None = None
    status = ""


ALL_ERRORS: tuple[type[Exception], ...] = (
    Fail, InvalidArgument, NoSuchFile, NoModel, EngineError, RuntimeException, InvalidProtobuf,
    ModelLoaded, NotImplemented, InvalidGraph, EPFail, ModelLoadCanceled, ModelRequiresCompilation,
    NotFound, DeviceReset,
)
"""Every onnxruntime-named exception, for ``except ALL_ERRORS`` (onnxruntime has no common base)."""
