"""``SessionOptions``, ``RunOptions`` and the option enums, with onnxruntime's names and defaults.

Attribute assignment is type-checked the way onnxruntime's pybind layer checks it (a ``str`` for
``intra_op_num_threads`` or an ``int`` for ``graph_optimization_level`` raises ``TypeError``), and
unknown attribute names raise ``AttributeError``, so a typo fails loudly instead of being ignored.

What the session reads (the contract; all plain attributes unless marked private):

``SessionOptions``: the public attributes below, plus the private stores filled by the ``add_*``
methods: ``_config`` (session config entries), ``_free_dim_overrides_by_name``,
``_free_dim_overrides_by_denotation``, ``_initializers``, ``_external_initializers``,
``_external_files_in_memory``, ``_providers`` and ``_load_cancelled``.

``RunOptions``: the public attributes, ``_config`` (run config entries); ``terminate`` may be set
from another thread while a run is in progress, so the session should poll it between kernels.
"""

from __future__ import annotations

import enum
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.values import OrtValue

__all__ = [
    "ExecutionMode",
    "ExecutionOrder",
    "GraphOptimizationLevel",
    "OrtAllocatorType",
    "OrtMemType",
    "RunOptions",
    "SessionOptions",
]

T = TypeVar("T")


class OrtEnum(int, enum.Enum):
    """An int-valued enum that prints like onnxruntime's pybind11 enums.

    ``str()``/``format()`` give ``'GraphOptimizationLevel.ORT_ENABLE_ALL'`` on every Python version
    (``IntEnum`` changed its ``str`` to the bare number in 3.11); ``repr``, ``.name``, ``.value``,
    ``int()``, ``==`` with ints and ``hash`` already match.
    """

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}: {int(self)}>"


class GraphOptimizationLevel(OrtEnum):
    """How much graph rewriting to do before compiling (``ORT_DISABLE_ALL`` keeps the graph as is)."""

    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class ExecutionMode(OrtEnum):
    """Run independent graph branches one after another or concurrently."""

    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


class ExecutionOrder(OrtEnum):
    """Order in which nodes are scheduled."""

    DEFAULT = 0
    PRIORITY_BASED = 1
    MEMORY_EFFICIENT = 2


class OrtAllocatorType(OrtEnum):
    """Allocator kind (accepted for compatibility; jitort allocates with numpy)."""

    INVALID = -1
    ORT_DEVICE_ALLOCATOR = 0
    ORT_ARENA_ALLOCATOR = 1


class OrtMemType(OrtEnum):
    """Memory kind of a device allocation. ``CPU`` is an alias of ``CPU_OUTPUT``, as in onnxruntime."""

    CPU_INPUT = -2
    CPU_OUTPUT = -1
    CPU = -1
    DEFAULT = 0


# --- typed attributes ------------------------------------------------------------------------

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _type_error(owner: str, name: str, expected: str, value: object) -> TypeError:
    return TypeError(f"{owner}.{name}: expected {expected}, got {type(value).__name__} ({value!r})")


def _check_int(owner: str, name: str, value: object) -> int:
    # operator.index accepts int, bool and numpy integers but not floats, like pybind11's int caster.
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise _type_error(owner, name, "int", value) from None
    if not _INT32_MIN <= v <= _INT32_MAX:  # the C++ fields are 32-bit
        raise _type_error(owner, name, "a 32-bit int", value)
    return v


def _check_bool(owner: str, name: str, value: object) -> bool:
    # pybind11's bool caster (convert mode) takes anything numeric, and None as False; not str.
    if value is None or isinstance(value, (bool, np.bool_, numbers.Number)):
        return bool(value)
    raise _type_error(owner, name, "bool", value)


def _check_str(owner: str, name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # pybind11 decodes bytes as UTF-8
        return value.decode("utf-8")
    raise _type_error(owner, name, "str", value)


def _enum_checker(cls: type[OrtEnum]) -> Callable[[str, str, object], Any]:
    def check(owner: str, name: str, value: object) -> OrtEnum:
        # A plain int is refused, as onnxruntime refuses it: it is usually a mix-up of two enums.
        if isinstance(value, cls):
            return value
        raise _type_error(owner, name, cls.__name__, value)
    return check


class _Option(Generic[T]):
    """A typed attribute with a default; the value lives in the instance ``__dict__``."""

    def __init__(self, default: T, check: Callable[[str, str, object], T], doc: str) -> None:
        self.default = default
        self.check = check
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(self.name, self.default)

    def __set__(self, obj: object, value: object) -> None:
        obj.__dict__[self.name] = self.check(type(obj).__name__, self.name, value)


class _Options:
    """Refuses unknown public attribute names, as onnxruntime's pybind classes do."""

    def __setattr__(self, name: str, value: object) -> None:
        if not name.startswith("_") and not isinstance(getattr(type(self), name, None), _Option):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={getattr(self, k)!r}" for k, v in vars(type(self)).items() if isinstance(v, _Option))
        return f"{type(self).__name__}({fields})"


def _get_config(owner: str, config: Mapping[str, str], key: str) -> str:
    try:
        return config[key]
    except KeyError:
        # onnxruntime raises a plain RuntimeError here, with this exact message.
        raise RuntimeError(f"{owner} does not have configuration with key: {key}") from None


# --- SessionOptions --------------------------------------------------------------------------


class SessionOptions(_Options):
    """Configuration for an ``InferenceSession``; defaults equal ``onnxruntime.SessionOptions()``.

    ``intra_op_num_threads == 0`` means "use all physical cores"; ``log_severity_level == -1``
    means "use the default logger's severity" (see ``set_default_logger_severity``).
    """

    intra_op_num_threads = _Option(0, _check_int, "Threads used inside one kernel; 0 = all cores.")
    inter_op_num_threads = _Option(0, _check_int, "Threads running independent nodes (ORT_PARALLEL).")
    graph_optimization_level = _Option(
        GraphOptimizationLevel.ORT_ENABLE_ALL, _enum_checker(GraphOptimizationLevel),
        "How much graph optimisation to apply before compiling.")
    execution_mode = _Option(ExecutionMode.ORT_SEQUENTIAL, _enum_checker(ExecutionMode),
                             "Sequential or parallel execution of independent branches.")
    execution_order = _Option(ExecutionOrder.DEFAULT, _enum_checker(ExecutionOrder),
                              "Node scheduling order.")
    enable_profiling = _Option(False, _check_bool, "Write a chrome://tracing JSON profile.")
    profile_file_prefix = _Option("onnxruntime_profile_", _check_str, "Profile file name prefix.")
    optimized_model_filepath = _Option("", _check_str, "If set, save the optimised model here.")
    log_severity_level = _Option(-1, _check_int, "0 verbose .. 4 fatal; -1 = default logger's.")
    log_verbosity_level = _Option(0, _check_int, "Verbose-log detail when severity is 0.")
    logid = _Option("", _check_str, "Identifier prefixed to this session's log lines.")
    use_deterministic_compute = _Option(False, _check_bool, "Prefer deterministic kernels.")
    enable_cpu_mem_arena = _Option(True, _check_bool, "Use an arena for CPU allocations.")
    enable_mem_pattern = _Option(True, _check_bool, "Pre-plan memory for fixed input shapes.")
    enable_mem_reuse = _Option(True, _check_bool, "Reuse intermediate buffers across nodes.")
    use_per_session_threads = _Option(True, _check_bool, "Own thread pools rather than global ones.")

    def __init__(self) -> None:
        self._config: dict[str, str] = {}
        self._free_dim_overrides_by_name: dict[str, int] = {}
        self._free_dim_overrides_by_denotation: dict[str, int] = {}
        self._initializers: dict[str, OrtValue] = {}
        self._external_initializers: dict[str, OrtValue] = {}
        self._external_files_in_memory: dict[str, memoryview] = {}
        self._providers: list[tuple[str, dict[str, str]]] = []
        self._load_cancelled: bool = False

    def add_session_config_entry(self, key: str, value: str) -> None:
        """Set a session configuration entry (e.g. ``'session.intra_op.allow_spinning'``)."""
        self._config[_check_str("SessionOptions", "config key", key)] = _check_str(
            "SessionOptions", "config value", value)

    def get_session_config_entry(self, key: str) -> str:
        """Get a session configuration entry; ``RuntimeError`` if it was never set (as onnxruntime)."""
        return _get_config("SessionOptions", self._config, key)

    def add_free_dimension_override_by_name(self, dim_name: str, dim_value: int) -> None:
        """Fix the size of every input dimension whose symbolic name is ``dim_name``."""
        key = _check_str("SessionOptions", "dim_name", dim_name)
        self._free_dim_overrides_by_name[key] = _check_int("SessionOptions", "dim_value", dim_value)

    def add_free_dimension_override_by_denotation(self, dim_denotation: str, dim_value: int) -> None:
        """Fix the size of every input dimension carrying denotation ``dim_denotation``
        (e.g. ``'DATA_BATCH'``)."""
        key = _check_str("SessionOptions", "dim_denotation", dim_denotation)
        self._free_dim_overrides_by_denotation[key] = _check_int(
            "SessionOptions", "dim_value", dim_value)

    def add_initializer(self, name: str, ort_value: OrtValue) -> None:
        """Replace the model initializer ``name`` with ``ort_value`` (kept alive by these options)."""
        if not isinstance(ort_value, OrtValue):
            raise RuntimeError("The provided Python object must be an OrtValue")
        self._initializers[_check_str("SessionOptions", "name", name)] = ort_value

    def add_external_initializers(self, names: Sequence[str], ort_values: Sequence[OrtValue]) -> None:
        """Supply in memory the initializers the model stores as external data."""
        if len(names) != len(ort_values):
            raise ValueError("names and ort_values must have the same length")
        for name, value in zip(names, ort_values):
            if not isinstance(value, OrtValue):
                raise TypeError(f"external initializer {name!r} must be an OrtValue, "
                                f"got {type(value).__name__}")
            self._external_initializers[_check_str("SessionOptions", "name", name)] = value

    def add_external_initializers_from_files_in_memory(
            self, names: Sequence[str], buffers: Sequence[Any], lengths: Sequence[int]) -> None:
        """Supply the contents of external-data files by file name (as the model's ``location``)."""
        if not len(names) == len(buffers) == len(lengths):
            raise ValueError("names, buffers and lengths must have the same length")
        for name, buf, n in zip(names, buffers, lengths):
            view = memoryview(buf).cast("B")
            n = _check_int("SessionOptions", "length", n)
            if n > view.nbytes:
                raise ValueError(f"length {n} for {name!r} exceeds its buffer ({view.nbytes} bytes)")
            self._external_files_in_memory[_check_str("SessionOptions", "name", name)] = view[:n]

    def add_provider(self, provider_name: str, provider_options: Mapping[str, str]) -> None:
        """Add an execution provider explicitly (used when ``providers`` is not passed to the session)."""
        opts = {_check_str("SessionOptions", "option key", k): _check_str("SessionOptions", "option value", v)
                for k, v in provider_options.items()}
        self._providers.append((_check_str("SessionOptions", "provider_name", provider_name), opts))

    def has_providers(self) -> bool:
        """True if ``add_provider`` configured at least one execution provider."""
        return bool(self._providers)

    def set_load_cancellation_flag(self, value: bool) -> None:
        """Ask a session that is loading with these options to stop (raises ``ModelLoadCanceled``)."""
        self._load_cancelled = _check_bool("SessionOptions", "cancel", value)

    def register_custom_ops_library(self, library_path: str) -> None:
        """Not supported: jitort compiles ops from Python and cannot load onnxruntime kernels."""
        raise OrtNotImplemented(
            f"jitort cannot load custom-op library {library_path!r}: onnxruntime custom-op "
            "shared libraries are compiled against onnxruntime's C++ kernel API, which jitort "
            "does not provide")


# --- RunOptions ------------------------------------------------------------------------------


class RunOptions(_Options):
    """Per-call options for ``InferenceSession.run``; defaults equal ``onnxruntime.RunOptions()``."""

    log_severity_level = _Option(-1, _check_int, "0 verbose .. 4 fatal; -1 = the session's.")
    log_verbosity_level = _Option(0, _check_int, "Verbose-log detail when severity is 0.")
    logid = _Option("", _check_str, "Identifier prefixed to this run's log lines.")
    terminate = _Option(False, _check_bool,
                        "Set True (from any thread) to abort runs using these options.")
    only_execute_path_to_fetches = _Option(
        False, _check_bool, "Run only the nodes the requested outputs depend on.")

    def __init__(self) -> None:
        self._config: dict[str, str] = {}

    def add_run_config_entry(self, key: str, value: str) -> None:
        """Set a run configuration entry."""
        self._config[_check_str("RunOptions", "config key", key)] = _check_str(
            "RunOptions", "config value", value)

    def get_run_config_entry(self, key: str) -> str:
        """Get a run configuration entry; ``RuntimeError`` if it was never set (as onnxruntime)."""
        return _get_config("RunOptions", self._config, key)
