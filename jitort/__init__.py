"""jitort: a JIT-compiling ONNX inference runtime with onnxruntime's Python API.

Use it as ``import jitort as ort``; the names below are onnxruntime's, with its signatures.
As in onnxruntime, the exception classes live in ``jitort.capi.onnxruntime_pybind11_state`` (and
``jitort.errors``), not here: a top-level ``NotImplemented`` would shadow the builtin under
``from jitort import *``.

Inside, one path: ModelProto -> ``frontend`` (import) -> ``passes`` -> ``compiler`` (lowering,
emission through ``codegen``) -> ``cache``/``artifact`` -> ``compile_service`` (which owns that path
and returns one ``compiled.Artifact``) -> ``session``. Layers, lowest first (a module imports only
from its layer or below; ``tests/test_layers.py`` fails on any import cycle):
errors/ir/arrays/dtypes/memory/cache/numba_target -> protos -> kernels (registry, op families, engines) ->
codegen/passes/evaluate (the compiler's internals) -> frontend -> compiler -> artifact/compile_pool ->
compile_service -> session/values/options/aot/ray/backend -> cli.
"""

from jitort import numba_target  # noqa: F401 - first: Numba's target is fixed at its first compile
from jitort import capi
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
from jitort.model_package import (
    ModelPackage,
    ModelPackageComponentContext,
    ModelPackageContext,
    ModelPackageOptions,
    ModelPackageWriteMode,
)
from jitort.values import IOBinding, ModelMetadata, NodeArg, OrtValue
from jitort.session import InferenceSession

__version__: str = get_version_string()

__all__ = [
    "ExecutionMode", "ExecutionOrder", "GraphOptimizationLevel", "IOBinding", "InferenceSession",
    "ModelMetadata", "ModelPackage", "ModelPackageComponentContext", "ModelPackageContext",
    "ModelPackageOptions", "ModelPackageWriteMode", "NodeArg", "OrtAllocatorType", "OrtMemType", "OrtValue", "RunOptions",
    "SessionOptions", "__version__", "capi",
    "disable_telemetry_events", "enable_telemetry_events", "get_all_providers",
    "get_available_providers", "get_build_info", "get_device", "get_version_string",
    "has_collective_ops", "set_default_logger_callback", "set_default_logger_severity", "set_default_logger_verbosity",
    "set_seed",
]
