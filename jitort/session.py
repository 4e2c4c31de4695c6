"""InferenceSession: load -> import -> compile (through the cache) -> run, with onnxruntime's API.

``run`` validates feeds (names, dtype, rank, static dims) and calls the generated plan. A symbolic
dim name is a hint, not a constraint (as in onnxruntime): the plan is compiled assuming inputs that
share a name agree there; a feed where they do not runs on a second plan, compiled on first need
with every input dim its own symbol (``_DimsDiffer``, ``_relaxed``). The plan holds no per-run state, so
concurrent ``run`` calls on one session are safe, and its kernels release the GIL.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from jitort import allocator, artifact, compile_service, feeds, memory, node_errors, profiling, run_state
from jitort.arrays import contiguous
from jitort.codegen.plan import PROFILE_STEPS
from jitort.compiled import Artifact
from jitort.dtypes import type_string
from jitort.errors import InvalidArgument, RuntimeException
from jitort.ir import Dim
from jitort.model_file import load_model
from jitort.kernels.threads import current_setting, set_num_threads, usable_cpus
from jitort.options import RunOptions, SessionOptions
from jitort.runtime_info import get_available_providers, logger, warn
from jitort.values import IOBinding, ModelMetadata, NodeArg, OrtValue, is_device

if TYPE_CHECKING:  # onnx is imported where a model needs it, not by every session (see jitort.onnx_proto)
    import onnx

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class _InputSpec:
    name: str
    dtype: np.dtype | None  # None: a sequence or optional input, checked against ``proto``
    shape: tuple[Dim, ...] | None
    proto: onnx.TypeProto | None = None


def _as_value(x: Any, tp: onnx.TypeProto, name: str) -> Any:
    """The feed for a graph input of ONNX type ``tp``: tensors as C-contiguous arrays of its element
    type, sequences as lists of them, optionals as None or their value, maps as ordered dicts."""
    if tp.HasField("map_type"):
        return feeds.map_feed(x, tp, name)
    if tp.HasField("sequence_type"):
        if not isinstance(x, (list, tuple)):
            raise InvalidArgument(f"input '{name}' is a sequence: expected a list of arrays, got {type(x).__name__}")
        return [_as_value(e, tp.sequence_type.elem_type, name) for e in x]
    if tp.HasField("optional_type"):
        return None if x is None else _as_value(x, tp.optional_type.elem_type, name)
    import onnx  # a sequence, optional or map input: onnx's helpers (a float32 tensor model never comes here)
    if isinstance(x, onnx.TensorProto):
        x = onnx.numpy_helper.to_array(x)
    x = x.numpy() if isinstance(x, OrtValue) else np.asarray(x)
    want = tp.tensor_type.elem_type if tp.HasField("tensor_type") else 0
    if want:
        dt = onnx.helper.tensor_dtype_to_np_dtype(want)
        if x.dtype != dt:
            raise InvalidArgument(f"Unexpected input data type. Actual: ({type_string(x.dtype)}) , "
                                  f"expected: ({type_string(np.dtype(dt))}) for input '{name}'")
    return contiguous(x)


def _normalize_providers(providers: Sequence[Any] | None, provider_options: Sequence[dict] | None
                         ) -> tuple[list[str], list[dict[str, str]]]:
    names: list[str] = []
    opts: list[dict[str, str]] = []
    for k, p in enumerate(providers or [CPU]):
        name, o = (p[0], dict(p[1])) if isinstance(p, (tuple, list)) else (p, {})
        if provider_options is not None and k < len(provider_options):
            o.update(provider_options[k])
        names.append(name)
        opts.append({str(a): str(b) for a, b in o.items()})
    # Probing for CUDA imports numba.cuda (~0.5 s): only when something other than the CPU is asked for.
    available = get_available_providers() if any(n != CPU for n in names) else [CPU]
    keep = [(n, o) for n, o in zip(names, opts) if n in available]
    for n in names:
        if n not in available:
            warn(f"Specified provider '{n}' is not in available provider names."
                 f"Available providers: '{', '.join(available)}'", UserWarning, stacklevel=3)
    if not any(n == CPU for n, _ in keep):
        keep.append((CPU, {}))
    return [n for n, _ in keep], [o for _, o in keep]


def _artifact_dir(source: Any, config: dict[str, str]) -> Path | None:
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        artifact.check_artifact_dir(Path(source))
        return Path(source)
    named = config.get("session.jitort.artifact")
    return Path(named) if named else None


def _apply_options(proto: onnx.ModelProto, so: SessionOptions) -> onnx.ModelProto:
    """Free-dimension overrides and added initializers change the model itself: apply them first."""
    dims = getattr(so, "_free_dim_overrides_by_name", {})
    denots = getattr(so, "_free_dim_overrides_by_denotation", {})
    inits = getattr(so, "_initializers", {})
    if not (dims or denots or inits):
        return proto
    import onnx  # only with free-dimension overrides or added initializers
    proto2 = onnx.ModelProto()
    proto2.CopyFrom(proto)
    for vi in proto2.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            v = dims.get(d.dim_param) if d.HasField("dim_param") else None
            if v is None and d.denotation:
                v = denots.get(d.denotation)
            if v is not None:
                d.dim_value = int(v)
    for name, ov in inits.items():
        arr = ov.numpy() if isinstance(ov, OrtValue) else np.asarray(ov)
        t = onnx.numpy_helper.from_array(arr, name)
        for k, old in enumerate(proto2.graph.initializer):
            if old.name == name:
                proto2.graph.initializer[k].CopyFrom(t)
                break
        else:
            proto2.graph.initializer.append(t)
    return proto2


def _no_outputs(*args: Any, **kwargs: Any) -> tuple:
    raise InvalidArgument("At least one output should be requested.")


class _DimsDiffer(InvalidArgument):
    """A feed whose inputs differ where they share a symbolic dim name: not an error (onnxruntime
    binds such dims independently), but the plan compiled for equal sizes cannot run it."""


def _shared_dim_names(specs: list[_InputSpec]) -> bool:
    """Does a symbolic dim name occur twice among the inputs (in one input or across inputs)?"""
    seen: set[str] = set()
    for spec in specs:
        for d in spec.shape or ():
            if isinstance(d, str):
                if d in seen:
                    return True
                seen.add(d)
    return False


class InferenceSession:
    """Runs an ONNX model with jitort-generated kernels (onnxruntime's ``InferenceSession`` API)."""

    def __init__(self, path_or_bytes: str | bytes | os.PathLike | onnx.ModelProto,
                 sess_options: SessionOptions | None = None, providers: Sequence[Any] | None = None,
                 provider_options: Sequence[dict] | None = None, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        start_ns = time.time_ns()
        allocator.tune()
        self._sess_options = sess_options if sess_options is not None else SessionOptions()
        profile = bool(self._sess_options.enable_profiling)
        self._providers, self._provider_options = _normalize_providers(providers, provider_options)
        config = dict(getattr(self._sess_options, "_config", {}))
        limit = config.get(memory.CONFIG_KEY)
        self._tensor_limit = memory.parse_limit(limit, memory.CONFIG_KEY) if limit else None
        art = _artifact_dir(path_or_bytes, config)
        model_arg = art / "model.onnx" if art is not None and os.path.isdir(path_or_bytes) else path_or_bytes
        self._source = model_arg
        proto, raw = load_model(model_arg)
        proto2 = _apply_options(proto, self._sess_options)
        raw = raw if proto2 is proto else None
        proto = proto2
        self._meta = ModelMetadata.from_model_proto(proto)
        init_names = {t.name for t in proto.graph.initializer}
        self._inputs = [NodeArg.from_value_info(v) for v in proto.graph.input if v.name not in init_names]
        self._overridable = [NodeArg.from_value_info(v) for v in proto.graph.input if v.name in init_names]
        self._outputs = [NodeArg.from_value_info(v) for v in proto.graph.output]
        level = int(self._sess_options.graph_optimization_level)
        self._flags = {"fold": level > 0, "fuse": level > 0}
        profile_plan = profile and CUDA not in self._providers  # a CUDA plan has no profiled variant
        source, so = model_arg, self._sess_options
        req = compile_service.Request(
            proto, raw, self._providers, config, reload=lambda: _apply_options(load_model(source)[0], so),
            profile=profile_plan, artifact_dir=art, title=self._meta.graph_name or "model",
            logid=self._sess_options.logid, progress=kwargs.get("progress"), **self._flags)
        job = compile_service.resolve(req)
        compiled = job.artifact
        self._cache = job.policy
        self._compiled: Artifact = compiled
        self._specs = []
        input_types = {v.name: v.type for v in proto.graph.input}
        for name, dtype, shape in compiled.inputs:
            tp = input_types.get(name)
            if dtype is not None:
                self._specs.append(_InputSpec(name, np.dtype(dtype), shape))
            elif tp is not None and (tp.HasField("sequence_type") or tp.HasField("optional_type")
                                     or tp.HasField("map_type")):
                self._specs.append(_InputSpec(name, None, None, tp))
            else:
                raise InvalidArgument(f"graph input '{name}' has no tensor element type")
        self._input_names = [s.name for s in self._specs]
        self._n_inputs = len(self._specs)
        self._threads: tuple[int, int] = (0, 0)  # (threads, BLAS threads) this session runs with
        self._set_threads()
        self._plan, self._run_feed = job.start(self._bind)
        del job, req, proto  # the session keeps the artifact, not the model
        self._lock = threading.Lock()
        self._relaxed_session: InferenceSession | None = None
        if _shared_dim_names(self._specs):
            self._run_feed = self._with_relaxed(self._run_feed)
        self._out_index = {o: k for k, o in enumerate(compiled.outputs)}
        if not compiled.outputs:  # onnxruntime creates such a session and refuses every run
            self._run_feed = _no_outputs
        self._profiler = profiling.Profiler(compiled.consts.get(PROFILE_STEPS), start_ns, t0) if profile else None
        self._profile_start_ns = start_ns if profile else 0
        self.session_seconds = time.perf_counter() - t0
        if self._profiler is not None:
            self._profiler.session_seconds = self.session_seconds
        self._log_creation()

    def _log_creation(self) -> None:
        """Severity 1 (info): how the session was made; severity 0 (verbose): the passes' notes."""
        if not logger.isEnabledFor(logging.INFO):
            return
        c, extra = self._compiled, {"logid": self._sess_options.logid}
        how = (f"compiled {len(c.compiled)} functions in {c.seconds:.3f} s" if c.fresh
               else f"loaded from {c.loaded_from}")
        logger.info("session for graph '%s' on %s created in %.3f s: %s", self._meta.graph_name,
                    self._providers, self.session_seconds, how, extra=extra)
        if c.fresh and c.graph is not None and logger.isEnabledFor(logging.DEBUG):
            for note in c.graph.notes:
                logger.debug("%s", note, extra=extra)

    @property
    def artifact(self) -> Artifact:
        """The compiled model (jitort's own API): plan and kernel sources, constants, what creating
        the session compiled, and ``artifact.ir()``, the IR after passes."""
        return self._compiled

    # --- introspection ----------------------------------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_overridable_initializers(self) -> list[NodeArg]:
        return list(self._overridable)

    def get_modelmeta(self) -> ModelMetadata:
        return self._meta

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {p: dict(o) for p, o in zip(self._providers, self._provider_options)}

    def get_session_options(self) -> SessionOptions:
        return self._sess_options

    def set_providers(self, providers: Sequence[Any] | None = None,
                      provider_options: Sequence[dict] | None = None) -> None:
        names, opts = _normalize_providers(providers, provider_options)
        if names != self._providers:
            raise RuntimeException("jitort compiles for its providers at session creation; "
                                   f"create a new session to run on {names}")
        self._provider_options = opts

    def disable_fallback(self) -> None:
        """onnxruntime API; jitort's provider fallback happens per node at compile time."""

    def enable_fallback(self) -> None:
        """onnxruntime API; jitort's provider fallback happens per node at compile time."""

    @property
    def compile_report(self) -> dict[str, Any]:
        """What this session's creation compiled (function, seconds) vs loaded from the cache."""
        c = self._compiled
        return {"compiled": list(c.compiled), "kernels": list(c.kernel_sources),
                "plan": c.plan_name, "compile_seconds": c.seconds, "loaded_from": c.loaded_from,
                "cache_root": str(self._cache.root), "cache_notes": list(self._cache.notes),
                "session_seconds": self.session_seconds}

    # --- running --------------------------------------------------------------------------------
    def _with_relaxed(self, run_feed: Any) -> Any:
        def run_feed_or_relaxed(feed: dict[str, Any], _ro: Any = None) -> tuple:
            try:
                return run_feed(feed, _ro)
            except _DimsDiffer:
                return self._relaxed()._run_feed(feed, _ro)
        return run_feed_or_relaxed

    def _relaxed(self) -> InferenceSession:
        """The session for feeds that differ where inputs share a dim name: the same model with
        every input dim its own symbol (compiled, or loaded from the cache, on first need)."""
        with self._lock:
            if self._relaxed_session is None:
                # deliberate start-up deferral: the frontend (and onnx) only when a feed needs the relaxed model
                from jitort.frontend.importer import distinct_input_dims
                proto = _apply_options(load_model(self._source)[0], self._sess_options)
                self._relaxed_session = InferenceSession(distinct_input_dims(proto, across_inputs=True),
                                                         self._sess_options, self._providers,
                                                         self._provider_options)
            return self._relaxed_session

    def _bind(self, feed: dict[str, Any]) -> list[np.ndarray]:
        """The general feed check: converts lists/OrtValues/non-contiguous arrays, raises
        onnxruntime's exception (naming the input, expected vs actual) for anything invalid."""
        if len(feed) != self._n_inputs or any(k not in feed for k in self._input_names):
            missing = [n for n in self._input_names if n not in feed]
            if missing:
                raise ValueError(f"Required inputs ({missing}) are missing from input feed ({list(feed)}).")
            extra = [k for k in feed if k not in self._input_names]
            raise InvalidArgument(f"Invalid input name: {extra[0]}")
        args: list[np.ndarray] = []
        dims: dict[str, tuple[int, str]] = {}
        for spec in self._specs:
            x = feed[spec.name]
            if spec.proto is not None:
                args.append(_as_value(x, spec.proto, spec.name))
                continue
            if type(x) is not np.ndarray:
                x = self._to_array(spec, x)
            if x.dtype != spec.dtype:
                raise InvalidArgument(f"Unexpected input data type. Actual: ({type_string(x.dtype)}) , "
                                      f"expected: ({type_string(spec.dtype)}) for input '{spec.name}'")
            if spec.shape is not None:
                if x.ndim != len(spec.shape):
                    raise InvalidArgument(f"Invalid rank for input: {spec.name} Got: {x.ndim} Expected: "
                                          f"{len(spec.shape)} Please fix either the inputs/outputs or the model.")
                for k, d in enumerate(spec.shape):
                    got = x.shape[k]
                    if isinstance(d, int):
                        if got != d:
                            raise InvalidArgument(
                                f"Got invalid dimensions for input: {spec.name} for the following indices\n"
                                f" index: {k} Got: {got} Expected: {d}\n"
                                " Please fix either the inputs/outputs or the model.")
                    elif d in dims and dims[d][0] != got:
                        raise _DimsDiffer(
                            f"Symbolic dimension '{d}' is {dims[d][0]} in input '{dims[d][1]}' but {got} in "
                            f"input '{spec.name}' (index {k}): this plan was compiled for equal sizes")
                    else:
                        dims[d] = (got, spec.name)
            if isinstance(x, np.ndarray) and not (x.flags.c_contiguous and x.flags.writeable and x.flags.aligned):
                x = np.array(x, order="C", copy=True)
            args.append(x)
        return args

    def _to_array(self, spec: _InputSpec, x: Any) -> np.ndarray:
        # A CUDA plan takes device arrays as they are (IOBinding, CUDA OrtValues); a CPU plan copies.
        device_ok = hasattr(self._plan, "run_on")
        if isinstance(x, OrtValue):
            return x._array() if device_ok and x._device[0] == "cuda" else x.numpy()
        if not isinstance(x, (list, tuple, np.generic)) and is_device(x):
            return x if device_ok else x.copy_to_host()
        if isinstance(x, (list, tuple)):
            return np.asarray(x, dtype=spec.dtype)
        if isinstance(x, np.generic):
            return np.asarray(x)
        raise RuntimeError(f"Unable to handle object of type {type(x)}")

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any],
            run_options: RunOptions | None = None) -> list[np.ndarray]:
        """Run the model: ``output_names`` None or empty means every output, in model order."""
        try:
            if current_setting() != self._threads:
                set_num_threads(*self._threads)  # another session of this process set its own count
            if run_options is None and self._profiler is None and self._tensor_limit is None:
                outs = self._run_feed(input_feed)
            else:
                outs = self._run_with(input_feed, run_options)
        except Exception as e:
            mapped = node_errors.at_node(e)  # onnxruntime's class, naming the failing node
            if mapped is None:
                raise
            raise mapped from e
        if not output_names:
            return list(outs)
        try:
            return [outs[self._out_index[n]] for n in output_names]
        except KeyError:
            bad = next(n for n in output_names if n not in self._out_index)
            raise InvalidArgument(f"Invalid output name:{bad}") from None

    def _run_with(self, input_feed: dict[str, Any], run_options: RunOptions | None) -> tuple:
        """A run with run options, profiling or a tensor limit of this session's."""
        if run_options is not None and run_options.terminate:
            run_state.terminated()
        profiler = self._profiler
        with run_state.running(run_options), memory.budget(self._tensor_limit), \
                profiler.run() if profiler is not None else contextlib.nullcontext():
            return self._run_feed(input_feed, run_options)

    def run_with_ort_values(self, output_names: Sequence[str] | None, input_dict_ort_values: dict[str, OrtValue],
                            run_options: RunOptions | None = None) -> list[OrtValue]:
        feeds = {k: v.numpy() if isinstance(v, OrtValue) else v for k, v in input_dict_ort_values.items()}
        return [OrtValue.ortvalue_from_numpy(a) for a in self.run(output_names, feeds, run_options)]

    def _run_bound(self, inputs: dict[str, np.ndarray], output_names: list[str],
                   preallocated: dict[str, np.ndarray], *, run_options: RunOptions | None = None
                   ) -> list[np.ndarray]:
        run_on = getattr(self._plan, "run_on", None)
        if run_on is not None:
            # CUDA plan: bound device inputs are read in place and outputs computed on the device stay
            # there; IOBinding copies each result to where its binding wants it.
            if run_options is not None and run_options.terminate:
                run_state.terminated()
            try:
                with run_state.running(run_options), memory.budget(self._tensor_limit):
                    outs = run_on(True, *self._bind(inputs), _ro=run_options)
            except Exception as e:
                mapped = node_errors.at_node(e)
                if mapped is None:
                    raise
                raise mapped from e
            names = output_names or list(self._out_index)
            bad = [n for n in names if n not in self._out_index]
            if bad:
                raise InvalidArgument(f"Invalid output name:{bad[0]}")
            return [outs[self._out_index[n]] for n in names]
        outs = self.run(output_names or None, inputs, run_options)
        names = output_names or list(self._out_index)
        for n, a in zip(names, outs):
            dst = preallocated.get(n)
            if dst is not None and isinstance(dst, np.ndarray):
                if dst.shape != a.shape or dst.dtype != a.dtype:
                    raise InvalidArgument(f"bound output '{n}' is {dst.dtype}{list(dst.shape)} but the model "
                                          f"produced {a.dtype}{list(a.shape)}")
                np.copyto(dst, a)
        return [dst if isinstance(dst := preallocated.get(n), np.ndarray) else a for n, a in zip(names, outs)]

    def io_binding(self) -> IOBinding:
        return IOBinding(self)

    def run_with_iobinding(self, iobinding: IOBinding, run_options: RunOptions | None = None) -> None:
        iobinding._run(self, run_options)

    # --- profiling --------------------------------------------------------------------------------
    def end_profiling(self) -> str:
        """Write the Chrome-trace profile (``jitort.profiling``: one event per plan step of every run
        since the session was created) and return its file name, ``<profile_file_prefix>_<date and
        time of the session's creation>.json``; profiling ends here, as in onnxruntime (runs after it
        are not recorded, a second call returns ""). "" when the session was not profiling."""
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return ""
        path = profiler.file_name(self._sess_options.profile_file_prefix)
        config = dict(getattr(self._sess_options, "_config", {}))
        mode = config.get(profiling.PEAKS_CONFIG_KEY, "measure")
        peaks = None
        if profiler.steps is not None:
            threads = int(self._sess_options.intra_op_num_threads or 0) or usable_cpus()
            peaks = profiling.machine_peaks(threads, mode, self._cache.root if self._cache.enabled else None)
        try:
            profiler.write(path, peaks)
        except OSError as e:  # onnxruntime returns the name without writing the file: say why
            warn(f"jitort: cannot write the profile {path}: {e}", RuntimeWarning, stacklevel=2,
                 logid=self._sess_options.logid)
        return path

    def get_profiling_start_time_ns(self) -> int:
        """When profiling started (the session's creation), in nanoseconds since the epoch; 0 when the
        session does not profile."""
        return self._profile_start_ns

    def _set_threads(self) -> None:
        """intra_op_num_threads (0: the usable cores) for jitort's kernels and BLAS; a model that
        runs jitort's own threaded GEMMs (convolutions, packed MatMul/Gemm: ``Artifact.own_threads``)
        keeps BLAS single-threaded, so no spinning BLAS worker competes with them (``kernels.threads``).
        The setting is process-wide: ``run`` puts this session's back when another session changed it."""
        n = int(self._sess_options.intra_op_num_threads or 0)
        n = n if n > 0 else usable_cpus()
        self._threads = (n, 1 if self._compiled.own_threads else n)
        set_num_threads(*self._threads)
