"""Module-level runtime functions of onnxruntime's API: providers, versions, logging, seeding.

Process-wide state other jitort modules read: :func:`get_seed` / :func:`rng` (seeded randomness for
RandomNormal & co.), :func:`get_default_logger_severity` / :func:`get_default_logger_verbosity`.

jitort logs through the ``jitort`` Python logger (onnxruntime severity 0..4 <-> DEBUG..CRITICAL) and
warns through :func:`warn`; :func:`set_default_logger_callback` sends both to a Python callable with
onnxruntime's callback signature.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import operator
import platform
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "disable_telemetry_events",
    "enable_telemetry_events",
    "get_all_providers",
    "get_available_providers",
    "get_build_info",
    "get_default_logger_severity",
    "get_default_logger_verbosity",
    "get_device",
    "get_seed",
    "get_version_string",
    "has_collective_ops",
    "rng",
    "set_default_logger_callback",
    "set_default_logger_severity",
    "set_default_logger_verbosity",
    "set_seed",
]

# onnxruntime 1.32's get_all_providers(), verbatim (1.31 also listed NvTensorRTRTXExecutionProvider
# first and ACLExecutionProvider): sessions accept any of these names (and fall back to CPU for ones
# not available) exactly as onnxruntime does.
_ALL_PROVIDERS: tuple[str, ...] = (
    "TensorrtExecutionProvider", "CUDAExecutionProvider", "MIGraphXExecutionProvider",
    "OpenVINOExecutionProvider", "DnnlExecutionProvider", "VitisAIExecutionProvider",
    "QNNExecutionProvider", "NnapiExecutionProvider", "VSINPUExecutionProvider",
    "JsExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider",
    "RknpuExecutionProvider", "WebNNExecutionProvider", "WebGpuExecutionProvider",
    "XnnpackExecutionProvider", "CANNExecutionProvider", "AzureExecutionProvider",
    "CPUExecutionProvider",
)

logger = logging.getLogger("jitort")


# --- providers and build ---------------------------------------------------------------------


# jitort lists CUDA when numba-cuda finds a device (jitort.kernels.cuda, jitort.codegen.cuda_plan).
CUDA_BACKEND = True


@functools.lru_cache(maxsize=1)
def _cuda_available() -> bool:
    # Imported lazily: numba.cuda costs ~0.5 s to import and probes the driver. Any failure
    # (no numba-cuda, no driver, no device) means "no CUDA", never an error.
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - any failure here just means CUDA is unavailable
        return False


def get_available_providers() -> list[str]:
    """Execution providers usable in this process, highest priority first.

    ``CUDAExecutionProvider`` is listed only when ``numba.cuda`` imports and finds a device.
    """
    providers = ["CPUExecutionProvider"]
    if CUDA_BACKEND and _cuda_available():
        providers.insert(0, "CUDAExecutionProvider")
    return providers


def get_all_providers() -> list[str]:
    """Every execution-provider name onnxruntime defines (jitort implements only some)."""
    return list(_ALL_PROVIDERS)


def get_device() -> str:
    """``'GPU'`` when CUDA is available to jitort, else ``'CPU'`` (as onnxruntime's builds report)."""
    return "GPU" if "CUDAExecutionProvider" in get_available_providers() else "CPU"


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def get_version_string() -> str:
    """jitort's version (from the installed package metadata)."""
    v = _dist_version("jitort")
    return "0.0.0+unknown" if v == "unknown" else v


def get_build_info() -> str:
    """One line naming jitort and the compiler stack it generates code with."""
    # Versions come from package metadata so that asking does not import numba (slow).
    return (f"jitort {get_version_string()}, numba {_dist_version('numba')}, "
            f"llvmlite {_dist_version('llvmlite')}, numpy {np.__version__}, "
            f"python {platform.python_version()}")


def has_collective_ops() -> bool:
    """False: jitort has no multi-device collective ops."""
    return False


def enable_telemetry_events() -> None:
    """No-op: jitort sends no telemetry."""


def disable_telemetry_events() -> None:
    """No-op: jitort sends no telemetry."""


# --- logging ---------------------------------------------------------------------------------

# onnxruntime severity (0 verbose .. 4 fatal) -> the level of the "jitort" Python logger.
_LOGGING_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
_severity: int = 2  # onnxruntime's default: warnings and above
_verbosity: int = 0


def _check_severity(value: object, func: str) -> int:
    severity = _index(value, func)
    if not 0 <= severity <= 4:
        raise RuntimeError(f"severity >= 0 && severity <= 4 was false. Invalid logging severity "
                           f"{severity}. 0:Verbose, 1:Info, 2:Warning, 3:Error, 4:Fatal")
    return severity


def set_default_logger_severity(severity: int) -> None:
    """Minimum severity logged: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.

    Also sets the level of the ``jitort`` Python logger, where jitort's messages go.
    """
    global _severity
    _severity = _check_severity(severity, "set_default_logger_severity")
    logger.setLevel(_LOGGING_LEVELS[_severity])


LoggerCallback = Callable[[int, str, str, str, str], Any]


def _severity_of(levelno: int) -> int:
    """The onnxruntime severity of a Python logging level (levels between round down)."""
    return max((k for k, lv in enumerate(_LOGGING_LEVELS) if lv <= levelno), default=0)


class _CallbackHandler(logging.Handler):
    """Hands each record of the ``jitort`` logger to the installed callback as onnxruntime would:
    ``callback(severity, category, logid, code_location, message)``. An exception the callback
    raises is reported as logging reports a failing handler (a traceback on stderr), never raised
    in the code that logged (onnxruntime reports it through ``sys.unraisablehook``)."""

    def __init__(self, callback: LoggerCallback) -> None:
        super().__init__(logging.NOTSET)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.callback(_severity_of(record.levelno), "jitort", str(getattr(record, "logid", "")),
                          f"{record.filename}:{record.lineno} {record.funcName}", record.getMessage())
        except Exception:  # noqa: BLE001 - a user callback's failure must not break a session
            self.handleError(record)


_callback_handler: _CallbackHandler | None = None


def set_default_logger_callback(callback: LoggerCallback | None, severity: int = 2) -> None:
    """Send jitort's log messages and warnings to ``callback(severity, category, logid,
    code_location, message)`` instead of the default sink (onnxruntime 1.32's function).

    Installing a callback sets the default logger severity; ``None`` restores the default sink and
    leaves the severity as it is (``severity`` must still be 0..4). While a callback is installed,
    jitort's warnings reach it at severity 2 and are still issued as Python warnings.
    """
    global _callback_handler
    severity = _check_severity(severity, "set_default_logger_callback")
    if callback is not None and not callable(callback):
        raise RuntimeError("PyCallable_Check(callback.ptr()) was false. callback must be a callable")
    if _callback_handler is not None:
        logger.removeHandler(_callback_handler)
        _callback_handler = None
    if callback is None:
        logger.propagate = True
        return
    _callback_handler = _CallbackHandler(callback)
    logger.addHandler(_callback_handler)
    logger.propagate = False  # the callback replaces the default sink, as in onnxruntime
    set_default_logger_severity(severity)


def warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2, logid: str = "") -> None:
    """A jitort warning: a Python warning, and a severity-2 log record for an installed callback."""
    warnings.warn(message, category, stacklevel=stacklevel + 1)
    if _callback_handler is not None:
        logger.warning(message, stacklevel=stacklevel + 1, extra={"logid": logid})


def set_default_logger_verbosity(verbosity: int) -> None:
    """Detail of verbose (severity 0) messages; any int, as in onnxruntime."""
    global _verbosity
    _verbosity = _index(verbosity, "set_default_logger_verbosity")


def get_default_logger_severity() -> int:
    """The severity set by :func:`set_default_logger_severity` (default 2)."""
    return _severity


def get_default_logger_verbosity() -> int:
    """The verbosity set by :func:`set_default_logger_verbosity` (default 0)."""
    return _verbosity


# --- seeding ---------------------------------------------------------------------------------

_seed: int | None = None
_rng: np.random.Generator | None = None


def set_seed(seed: int) -> None:
    """Seed jitort's random ops (RandomNormal, RandomUniform, Dropout in training mode...).

    numpy's global generator is left alone; jitort draws from :func:`rng`.
    """
    global _seed, _rng
    _seed = _index(seed, "set_seed")
    _rng = None  # rebuilt from the new seed on next use


def get_seed() -> int | None:
    """The last value passed to :func:`set_seed`, or None if never seeded."""
    return _seed


def rng() -> np.random.Generator:
    """jitort's random generator: deterministic after :func:`set_seed`, entropy-seeded otherwise."""
    global _rng
    if _rng is None:
        # numpy seeds must be non-negative; onnxruntime accepts any int64, so wrap into uint64.
        _rng = np.random.default_rng(None if _seed is None else _seed % 2**64)
    return _rng


def _index(value: object, func: str) -> int:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{func}(): incompatible function arguments: expected int, "
                        f"got {type(value).__name__}") from None
