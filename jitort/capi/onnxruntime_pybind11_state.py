"""The names of ``onnxruntime.capi.onnxruntime_pybind11_state`` that jitort implements.

Everything here is re-exported, not redefined: ``jitort.capi.onnxruntime_pybind11_state.InvalidArgument``
is ``jitort.errors.InvalidArgument``, so ``except`` clauses written either way catch the same errors.
"""

from jitort.errors import (
    DeviceReset,
    EngineError,
    EPFail,
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    ModelLoadCanceled,
    ModelLoaded,
    ModelRequiresCompilation,
    NoModel,
    NoSuchFile,
    NotFound,
    NotImplemented,  # noqa: A004 - onnxruntime's name
    RuntimeException,
)
from jitort.model_package import (
    ModelPackage,
    ModelPackageComponentContext,
    ModelPackageContext,
    ModelPackageOptions,
    ModelPackageWriteMode,
)
from jitort.options import (
    ExecutionMode,
    ExecutionOrder,
    GraphOptimizationLevel,
    OrtAllocatorType,
    OrtMemType,
    RunOptions,
    SessionOptions,
)
from jitort.runtime_info import (
    disable_telemetry_events,
    enable_telemetry_events,
    get_all_providers,
    get_available_providers,
    get_build_info,
    get_device,
    get_version_string,
    has_collective_ops,
    set_default_logger_callback,
    set_default_logger_severity,
    set_default_logger_verbosity,
    set_seed,
)
from jitort.values import ModelMetadata, NodeArg, OrtValue

__all__ = [
    "DeviceReset", "EPFail", "EngineError", "ExecutionMode", "ExecutionOrder", "Fail",
    "GraphOptimizationLevel", "InvalidArgument", "InvalidGraph", "InvalidProtobuf",
    "ModelLoadCanceled", "ModelLoaded", "ModelMetadata", "ModelPackage",
    "ModelPackageComponentContext", "ModelPackageContext", "ModelPackageOptions", "ModelPackageWriteMode", "ModelRequiresCompilation", "NoModel",
    "NoSuchFile", "NodeArg", "NotFound", "NotImplemented", "OrtAllocatorType", "OrtMemType",
    "OrtValue", "RunOptions", "RuntimeException", "SessionOptions", "disable_telemetry_events",
    "enable_telemetry_events", "get_all_providers", "get_available_providers", "get_build_info",
    "get_device", "get_version_string", "has_collective_ops", "set_default_logger_callback", "set_default_logger_severity",
    "set_default_logger_verbosity", "set_seed",
]
