"""Models to run without downloading anything: the nine CNNs the onnx wheel ships, and inputs.

``resolve_model("light_squeezenet")`` finds ``onnx/backend/test/data/light/light_squeezenet.onnx``
inside the installed onnx package; any existing path is returned as is. The wheel ships one
expected output per model (``light_<name>_output_0.pb``), computed by the ONNX backend test runner
from a deterministic input — :func:`reference_inputs` rebuilds that input, :func:`expected_output`
reads the output. :func:`random_feeds` makes seeded inputs for any model from its declared types;
:func:`warmup_feeds` makes inputs whose values are valid by construction, for a run whose only job
is to compile what the model calls.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
from jitort.dtypes import dtype_from_type_string, np_dtype

__all__ = ["LIGHT_MODELS", "expected_output", "input_specs", "light_dir", "light_models",
           "random_feeds", "reference_inputs", "resolve_model", "warmup_feeds"]

# onnx.backend.test.case.model lists these nine; the wheel carries them with constant weights.
LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                "squeezenet", "vgg19", "zfnet512")

_LIGHT_RE = re.compile(r"^light_([a-z0-9_]+)$")


def light_dir() -> Path:
    """The directory of the onnx wheel's light models."""
    import importlib.resources
    try:
        root = Path(str(importlib.resources.files("onnx")))
    except (TypeError, ModuleNotFoundError):  # pragma: no cover - namespace or zipped installs
        root = Path(onnx.__file__).parent
    return root / "backend" / "test" / "data" / "light"


def light_models() -> list[str]:
    """Short names (``light_<name>``) of the light models present in the installed onnx wheel."""
    d = light_dir()
    return [f"light_{n}" for n in LIGHT_MODELS if (d / f"light_{n}.onnx").is_file()]


def _light_name(name: str) -> str:
    base = name[len("light_"):] if name.startswith("light_") else name
    if base not in LIGHT_MODELS:
        raise FileNotFoundError(f"unknown light model {name!r}; the onnx wheel ships: "
                                + ", ".join(f"light_{n}" for n in LIGHT_MODELS))
    return base


def resolve_model(arg: str | os.PathLike[str]) -> Path:
    """An existing path, or a short name ``light_<name>`` of a model shipped in the onnx wheel."""
    p = Path(arg)
    if p.exists():
        return p
    m = _LIGHT_RE.match(str(arg))
    if m is not None:
        base = _light_name(str(arg))
        path = light_dir() / f"light_{base}.onnx"
        if not path.is_file():
            raise FileNotFoundError(f"{arg}: not found at {path} (is the onnx package complete?)")
        return path
    raise FileNotFoundError(f"no such model file: {arg} (or use a shipped model: {', '.join(light_models())})")


def expected_output(name: str) -> np.ndarray:
    """The output the onnx wheel ships for light model ``name`` (``squeezenet`` or
    ``light_squeezenet``), produced from :func:`reference_inputs`."""
    base = _light_name(name)
    t = onnx.load_tensor(str(light_dir() / f"light_{base}_output_0.pb"))
    return onnx.numpy_helper.to_array(t)


# --- inputs -----------------------------------------------------------------------------------------

# A path or short name, serialized bytes, a ModelProto, or anything with ``get_inputs()``
# returning NodeArgs (jitort's or onnxruntime's InferenceSession).
ModelLike = Union[str, os.PathLike, bytes, onnx.ModelProto, Any]


def _load(model: str | os.PathLike[str] | bytes | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    return onnx.load(str(resolve_model(model)), load_external_data=False)


def input_specs(model: ModelLike) -> list[tuple[str, np.dtype, list[int | str | None] | None]]:
    """``(name, dtype, shape)`` per graph input that is not an initializer. ``shape`` is None when
    the rank is unknown; a dim is an int, a symbolic name, or None (unnamed). ``model`` is a path,
    short name, bytes, ModelProto, or anything with ``get_inputs()`` (an InferenceSession)."""
    if hasattr(model, "get_inputs"):
        out = []
        for a in model.get_inputs():
            shape = None if a.shape is None else [d if isinstance(d, (int, str)) or d is None else int(d)
                                                  for d in a.shape]
            out.append((a.name, dtype_from_type_string(a.type), shape))
        return out
    proto = _load(model)
    inits = {t.name for t in proto.graph.initializer} | {t.name for t in proto.graph.sparse_initializer}
    out = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if vi.type.WhichOneof("value") != "tensor_type":
            raise ValueError(f"input '{vi.name}' is not a tensor; cannot generate it")
        shape: list[int | str | None] | None = None
        if tt.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        out.append((vi.name, np_dtype(tt.elem_type), shape))
    return out


def _concrete(name: str, shape: list[int | str | None] | None, dims: dict[str, int]) -> tuple[int, ...]:
    if shape is None:
        raise ValueError(f"input '{name}' has no declared shape (unknown rank); give it explicitly")
    out = []
    for d in shape:
        if isinstance(d, int) and d >= 0:
            out.append(d)
        elif isinstance(d, str) and d in dims:
            out.append(int(dims[d]))
        else:
            out.append(1)
    return tuple(out)


def random_feeds(session_or_model: ModelLike, seed: int = 0,
                 dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs from the declared types and shapes.

    Symbolic dims take their value from ``dims`` (default 1; unnamed dims are 1). Floats are
    standard normal, integers uniform in [0, 10) (small enough to be valid indices for many
    models), bools fair coins. Same model, seed and dims: same arrays.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, dt, shape in input_specs(session_or_model):
        sh = _concrete(name, shape, dims or {})
        if dt.kind == "f" or dt.name == "bfloat16":
            feeds[name] = rng.standard_normal(sh).astype(dt)
        elif dt.kind in "iu":
            feeds[name] = rng.integers(0, 10, size=sh).astype(dt)
        elif dt.kind == "b":
            feeds[name] = rng.random(sh) < 0.5
        else:
            raise ValueError(f"input '{name}': cannot generate random data of type {dt}")
    return feeds


_MASK_RE = re.compile(r"mask", re.IGNORECASE)


def warmup_feeds(session_or_model: ModelLike, dims: dict[str, int] | None = None,
                 given: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Inputs whose values no model can reject as indices, for a run that only has to compile the
    kernels the model calls (library kernels specialise on dtype, rank and layout, not values).

    Integers are 0 (a valid token, position, segment or class id for any non-empty table), booleans
    False, inputs named like a mask (``attention_mask``) all ones / True (nothing masked), floats
    1.0 (never an index; a neutral scale or divisor). Symbolic dims take their value from ``dims``
    (default 1). Inputs in ``given`` (samples) are used as they are.
    """
    feeds: dict[str, np.ndarray] = {}
    for name, dt, shape in input_specs(session_or_model):
        if given is not None and name in given:
            feeds[name] = given[name]
            continue
        if dt.kind in "OSUM":
            raise ValueError(f"input '{name}': cannot make warm-up data of type {dt}")
        one = dt.kind not in "biu" or _MASK_RE.search(name) is not None
        feeds[name] = (np.ones if one else np.zeros)(_concrete(name, shape, dims or {}), dt)
    return feeds


def reference_inputs(name: str) -> dict[str, np.ndarray]:
    """The input that produced :func:`expected_output` (the ONNX backend test runner's dummy input:
    ``arange(n).reshape(shape) / n`` in float32, symbolic dims 1)."""
    base = _light_name(name)
    feeds = {}
    for inp, dt, shape in input_specs(light_dir() / f"light_{base}.onnx"):
        sh = _concrete(inp, shape, {})
        n = int(np.prod(sh))
        feeds[inp] = (np.arange(n).reshape(sh) / n).astype(np.float32)
    return feeds
