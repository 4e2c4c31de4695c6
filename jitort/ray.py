"""Batch inference on Ray Data, with the model compiled once and shipped to the workers as an artifact.

Ray Data's ``map_batches`` with a callable class is the standard batch-inference pattern:
:class:`Predictor` is that class for jitort, and :func:`predict` wires it up so that the model is
compiled **once**, on the driver (or beforehand by ``jitort compile``), and every worker loads the
artifact without compiling::

    import ray, jitort.ray
    ds = ray.data.read_parquet("tokens/")                 # input_ids, token_type_ids, attention_mask
    out = jitort.ray.predict(ds, "bert.onnx", batch_size=256, concurrency=4, num_cpus=2)
    out.write_parquet("embeddings/")                     # the input columns plus one per model output

How the artifact reaches the workers: :func:`predict` packs the artifact directory into one bytes
object (:mod:`jitort.archive`) and puts it in Ray's object store, so a worker on another node never
needs the driver's disk. Each worker unpacks it once per node into ``<its jitort cache>/shipped/``
(content-addressed; safe unpacking: no path traversal, no symlinks) and loads it. A worker whose CPU
differs from the driver's (the artifact's compiled code targets the driver's CPU) falls back to
compiling the model (the session's safe miss) and says so in its log. A worker loading the artifact
imports neither the compiler nor onnx (``jitort.aot`` is imported on the driver only).

This is the only module of jitort that imports Ray (``pip install 'jitort[ray]'``).
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import ray

import jitort
from jitort import archive, artifact, cache
from jitort.errors import Fail, NoSuchFile

__all__ = ["Predictor", "predict"]

log = logging.getLogger("jitort.ray")

_PREDICTOR_KWARGS = ("providers", "sess_options", "input_columns", "output_columns", "threads")


@dataclass(frozen=True)
class _Shipped:
    """A packed artifact in Ray's object store: what :func:`predict` hands the workers' Predictor."""

    ref: Any          # ray.ObjectRef of the archive's bytes
    sha256: str       # of those bytes: the unpacked directory's name, and checked after the transfer
    name: str         # the model as the user named it, for messages


class Predictor:
    """A callable class for ``Dataset.map_batches(Predictor, fn_constructor_kwargs=..., batch_format="numpy")``.

    ``model`` is an ``.onnx`` path, model bytes, or an artifact directory (``jitort compile``).
    ``input_columns`` maps a model input to the column feeding it (default: the column of the
    input's name); ``output_columns`` maps the outputs to add to the batch to their column names
    (default: every output, under its own name). ``threads`` sets ``intra_op_num_threads``
    (default: the CPUs Ray assigned this actor, when it runs in one; else the session's default).
    ``.session`` is the jitort ``InferenceSession`` (its ``compile_report`` says what was compiled).

    The session is created here, so a model that does not load fails in the constructor, with the
    session's own error class; a batch without an input's column is a ValueError naming both.
    """

    def __init__(self, model: Any, *, providers: list[Any] | None = None, sess_options: Any = None,
                 input_columns: Mapping[str, str] | None = None, output_columns: Mapping[str, str] | None = None,
                 threads: int | None = None) -> None:
        source = _unshipped(model) if isinstance(model, _Shipped) else model
        self._setup(source, _model_name(model), providers=providers, sess_options=sess_options,
                    input_columns=input_columns, output_columns=output_columns, threads=threads)
        report = self.session.compile_report
        if isinstance(model, _Shipped) and report["loaded_from"] != source:  # the safe miss: say so
            how = (f"took the model from {report['loaded_from']}" if report["loaded_from"]
                   else f"compiled the model ({len(report['compiled'])} Numba compilations)")
            log.warning("jitort.ray: worker pid %d did not use the artifact shipped for %s (%s); it %s instead",
                        os.getpid(), self.model_name, "; ".join(report["cache_notes"]) or "see the session's warning",
                        how)

    def _setup(self, source: Any, name: str, *, providers: list[Any] | None = None, sess_options: Any = None,
               input_columns: Mapping[str, str] | None = None, output_columns: Mapping[str, str] | None = None,
               threads: int | None = None) -> None:
        self.model_name = name
        so = copy.deepcopy(sess_options) if sess_options is not None else jitort.SessionOptions()
        if threads is None and not so.intra_op_num_threads:
            threads = _ray_assigned_cpus()
        if threads is not None:
            so.intra_op_num_threads = _check_threads(threads)
        self.session = jitort.InferenceSession(source, sess_options=so, providers=providers)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        self.input_columns = _mapping("input_columns", input_columns, inputs, name, default_all=True)
        self.output_columns = _mapping("output_columns", output_columns, outputs, name, default_all=not output_columns)
        clash = sorted(set(self.input_columns.values()) & set(self.output_columns.values()))
        if clash:
            raise ValueError(f"model {name}: column(s) {clash} would be both read as an input and written as an "
                             "output; rename them with output_columns")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [c for c in self.input_columns.values() if c not in batch]
        if missing:
            wanted = {i: c for i, c in self.input_columns.items() if c in missing}
            raise ValueError(f"model {self.model_name}: the batch has no column(s) {missing} (for input(s) "
                             f"{wanted}); its columns are {sorted(batch)}")
        feeds = {i: _as_array(batch[c], c, self.model_name) for i, c in self.input_columns.items()}
        rows = len(next(iter(feeds.values()))) if feeds else len(next(iter(batch.values())))
        results = self.session.run(list(self.output_columns), feeds)
        out = dict(batch)
        for (name, column), value in zip(self.output_columns.items(), results):
            value = np.asarray(value)
            if value.ndim == 0 or value.shape[0] != rows:
                raise ValueError(f"model {self.model_name}: output {name!r} has shape {value.shape}, not one row "
                                 f"per input row ({rows}); it cannot be a column of the batch")
            out[column] = value
        return out


def predict(ds: Any, model: Any, *, batch_size: int | None = 256,
            concurrency: int | tuple[int, int] | tuple[int, int, int] | None = None, num_cpus: float = 1,
            **predictor_kwargs: Any) -> Any:
    """``ds`` with the model's outputs added as columns: ``ds.map_batches(Predictor, ...)``, lazily.

    Before returning, so before any batch runs, it checks that ``ds`` has the columns the model's
    inputs need; compiles ``model`` (a path or bytes) into an artifact on this driver, once per model
    and machine (the artifact is kept in the jitort cache under ``artifacts/``), or takes ``model``
    as an artifact directory as it is; loads the artifact here once (which checks the model and the
    column mappings); and puts it, packed, in Ray's object store. The artifact is warmed up at the
    dataset's row shapes (2 rows), so the library kernels the batches need are in it too.

    ``batch_size`` and ``num_cpus`` (per actor) go to ``map_batches``; ``concurrency`` is the actor
    pool: ``n`` actors, ``(min, max)`` or ``(min, max, initial)`` to autoscale, None for Ray Data's
    default (an ``ActorPoolStrategy``; Ray 2.51 deprecated ``map_batches(concurrency=)``).
    ``num_cpus`` also becomes each session's ``intra_op_num_threads`` (unless ``threads`` or
    ``sess_options`` say otherwise), so actors do not oversubscribe a node. ``predictor_kwargs`` are
    :class:`Predictor`'s keywords.
    """
    unknown = sorted(set(predictor_kwargs) - set(_PREDICTOR_KWARGS))
    if unknown:
        raise TypeError(f"predict() got unexpected keyword argument(s) {unknown}; Predictor takes {_PREDICTOR_KWARGS}")
    if not isinstance(ds, ray.data.Dataset):
        raise TypeError(f"predict() needs a ray.data.Dataset, not {type(ds).__name__}")
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus <= 0:
        raise ValueError(f"num_cpus must be positive, not {num_cpus!r}")
    pool = _actor_pool(concurrency)
    so = predictor_kwargs.get("sess_options")
    if predictor_kwargs.get("threads") is not None:
        _check_threads(predictor_kwargs["threads"])
    elif not (so is not None and so.intra_op_num_threads):
        predictor_kwargs["threads"] = max(1, int(num_cpus))
    name = _model_name(model)
    schema = ds.schema()
    columns = list(schema.names) if schema is not None else None
    input_columns = predictor_kwargs.get("input_columns") or {}
    with tempfile.TemporaryDirectory(prefix="jitort-ray-") as tmp:
        path = _model_path(model, name, Path(tmp))
        specs = _model_specs(path, name)
        feeds = _mapping("input_columns", input_columns, [n for n, _, _ in specs], name, default_all=True)
        missing = {i: c for i, c in feeds.items() if columns is not None and c not in columns}
        if missing:
            raise ValueError(f"model {name}: the dataset has no column(s) {sorted(set(missing.values()))} "
                             f"(for input(s) {missing}); its columns are {columns}")
        art = path if path.is_dir() else _compiled(path, name, _warmup_shapes(specs, _row_shapes(schema),
                                                                              input_columns))
    # Load it here once: the model loads, the output mapping fits it (not with the thread budget:
    # that is the workers', and setting it would change this process's thread pools).
    local = Predictor.__new__(Predictor)
    local._setup(str(art), name, **{k: v for k, v in predictor_kwargs.items() if k != "threads"})
    clash = sorted(set(local.output_columns.values()) & set(columns or []))
    if clash:
        raise ValueError(f"model {name}: output column(s) {clash} already exist in the dataset; rename them "
                         "with output_columns")
    data = archive.pack(art)
    shipped = _Shipped(ray.put(data), hashlib.sha256(data).hexdigest(), name)
    return ds.map_batches(Predictor, fn_constructor_kwargs={"model": shipped, **predictor_kwargs},
                          batch_size=batch_size, compute=pool, num_cpus=num_cpus, batch_format="numpy")


# --- the driver's artifact -----------------------------------------------------------------------

def _model_path(model: Any, name: str, tmp: Path) -> Path:
    """``model`` on disk: an artifact directory or ``.onnx`` file as it is, bytes written into ``tmp``."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        path = tmp / "model.onnx"
        path.write_bytes(bytes(model))
        return path
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be an .onnx path, model bytes or an artifact directory, not {type(model).__name__}")
    path = Path(model)
    if path.is_dir():
        artifact.check_artifact_dir(path)
    elif not path.is_file():
        raise NoSuchFile(f"model {name}: no such file")
    return path


def _model_specs(path: Path, name: str) -> list[tuple[str, np.dtype, Any]]:
    """The model's graph inputs; Fail naming the model when it cannot be read."""
    from jitort import aot  # deliberate start-up deferral: the compiler and onnx on the driver, not in workers
    onnx_file = path / "model.onnx" if path.is_dir() else path
    try:
        return aot.model_specs(str(onnx_file))
    except Fail as e:
        raise Fail(e.args[0].replace(str(onnx_file), name)) from None


def _compiled(path: Path, name: str, shapes: dict[str, list[int]]) -> Path:
    """The artifact of the model at ``path`` warmed up at ``shapes``, from ``<jitort cache>/artifacts/``
    or compiled into it now; Fail naming the model when it does not compile."""
    from jitort import aot  # deliberate start-up deferral: the compiler and onnx on the driver, not in workers
    key, _ = artifact.model_key(path.read_bytes(), [], {"ray_warmup": shapes})
    out = cache.ensure_private_dir(cache.cache_root()) / "artifacts" / key[:2] / key
    if (out / artifact.MANIFEST).is_file():
        return out
    log.info("jitort.ray: compiling %s into %s", name, out)
    try:
        aot.compile_artifact(str(path), str(out), input_shapes=shapes, quiet=True)
    except Fail as e:
        raise Fail(f"cannot compile the model {name}: {e.args[0]}".replace(str(path), name)) from None
    except ValueError as e:  # the dataset's row shapes against the model's input shapes
        raise ValueError(f"model {name}: the dataset's rows do not fit the model's inputs: {e}") from None
    return out


def _warmup_shapes(specs: list[tuple[str, np.dtype, Any]], rows: dict[str, tuple[int, ...]],
                   input_columns: Mapping[str, str]) -> dict[str, list[int]]:
    """Warm-up shapes for every input of known rank: fixed dims as declared, symbolic dims from
    the dataset's row shapes where a column gives them, else 2 (a warm-up at 1 misses library
    kernels that larger dims take); the batch dim 2."""
    bound: dict[str, int] = {}
    for name, _, shape in specs:
        row = rows.get(input_columns.get(name, name))
        if shape is not None and row is not None and len(row) == len(shape) - 1:
            for d, v in zip(shape[1:], row):
                if isinstance(d, str):
                    bound.setdefault(d, int(v))
    return {name: [d if isinstance(d, int) else bound.get(d, 2) if k else 2 for k, d in enumerate(shape)]
            for name, _, shape in specs if shape is not None}


def _row_shapes(schema: Any) -> dict[str, tuple[int, ...]]:
    """Per column, the shape of one row where the schema fixes it (``()`` for scalars)."""
    if schema is None:
        return {}
    out: dict[str, tuple[int, ...]] = {}
    for name, t in zip(schema.names, schema.types):
        shape = getattr(t, "shape", None)
        if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
            out[name] = shape
        elif not hasattr(t, "shape") and not hasattr(t, "ndim"):
            out[name] = ()
    return out


# --- the worker's side ---------------------------------------------------------------------------

def _unshipped(shipped: _Shipped) -> str:
    """The shipped artifact as a directory of this node: ``<jitort cache>/shipped/<sha256>``,
    unpacked by the first actor that needs it (into a private temporary directory, renamed into
    place, so a reader sees a complete artifact or none)."""
    root = cache.ensure_private_dir(cache.cache_root()) / "shipped"
    out = root / shipped.sha256[:32]
    if (out / artifact.MANIFEST).is_file():
        return str(out)
    data = ray.get(shipped.ref)
    if hashlib.sha256(data).hexdigest() != shipped.sha256:
        raise Fail(f"the artifact shipped for {shipped.name} arrived damaged (its sha256 differs)")
    root.mkdir(mode=0o700, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{out.name}-"))
    try:
        archive.unpack(data, tmp / "a")
        try:
            os.replace(tmp / "a", out)
        except OSError:  # another actor on this node put it in place first
            if not (out / artifact.MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def _ray_assigned_cpus() -> int | None:
    """The CPUs Ray assigned the actor or task this runs in; None outside one."""
    try:
        if not ray.is_initialized():
            return None
        ctx = ray.get_runtime_context()
        if ctx.worker.mode != ray.WORKER_MODE:
            return None
        n = ctx.get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - no Ray context: no budget to apply
        return None
    return max(1, int(n)) if n else None


# --- small helpers -------------------------------------------------------------------------------

def _actor_pool(concurrency: Any) -> Any:
    if concurrency is None:
        return ray.data.ActorPoolStrategy()
    if isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency >= 1:
        return ray.data.ActorPoolStrategy(size=concurrency)
    if isinstance(concurrency, tuple) and len(concurrency) in (2, 3) and all(
            isinstance(n, int) and n >= 1 for n in concurrency):
        return ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1],
                                          initial_size=concurrency[2] if len(concurrency) == 3 else None)
    raise ValueError(f"concurrency must be a positive int, (min, max) or (min, max, initial), not {concurrency!r}")


def _check_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive int, not {threads!r}")
    return int(threads)


def _model_name(model: Any) -> str:
    if isinstance(model, _Shipped):
        return model.name
    if isinstance(model, (bytes, bytearray, memoryview)):
        return f"<model bytes, {len(model)} B>"
    return str(model)


def _mapping(what: str, given: Mapping[str, str] | None, names: list[str], model: str,
             default_all: bool) -> dict[str, str]:
    """``name -> column`` for the model's ``names``: ``given`` renames some (all of them by
    default, else only those given); ValueError for a name the model does not have."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        kind = "inputs" if what == "input_columns" else "outputs"
        raise ValueError(f"model {model}: {what} names {unknown}, which the model does not have; its {kind} "
                         f"are {names}")
    return {n: given.get(n, n) for n in names if default_all or n in given}


def _as_array(value: Any, column: str, model: str) -> np.ndarray:
    """A batch column as one contiguous array (Ray hands ragged tensor columns over as object arrays)."""
    a = np.asarray(value)
    if a.dtype == object:
        try:
            a = np.stack(list(a))
        except ValueError:
            raise ValueError(f"model {model}: column {column!r} holds rows of different shapes; pad them to one "
                             "shape per batch") from None
    return np.ascontiguousarray(a)
