"""What a benchmark runs: a model from its name, made concrete for one batch size, and its inputs.

A MODEL argument is one of

* a path to an ``.onnx`` file;
* ``light_<name>``: one of the nine CNNs the onnx wheel ships (see ``jitort.models``);
* a zoo model: ``chain``, ``mlp``, ``bert``, ``gpt``, ``conv_block`` (``jitort.zoo``), optionally with
  builder arguments after a colon: ``bert:hidden=256,heads=8``, ``chain:n_ops=40,shape=Nx64x56x56``,
  ``mlp:sizes=1024x1024x10`` (integers; ``x`` separates tuple items; other words stay strings).

Input shapes: the first dim of every input is the batch. Where it is symbolic it takes ``batch``;
where the model fixes it (the light CNNs are exported at batch 1) and ``batch`` differs, the model is
rewritten for that batch (``with_batch``): its inputs' and outputs' first dims are set, and the
constant shape of every Reshape fed by the activations that begins with the exported batch gets the
new one. Other symbolic dims take ``dims[NAME]`` (``--dim NAME=N``), else ``seq`` (``--seq``,
default 128), in every input alike. Inputs are seeded: floats standard normal, integers uniform in
[0, 10) except inputs whose name contains "mask" (all ones: nothing padded), bools fair coins.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper
from jitort import zoo
from jitort.models import input_specs, resolve_model

__all__ = ["DEFAULT_SEQ", "Workload", "ZOO", "load_model", "make_feeds", "parse_spec", "prepare", "with_batch"]

DEFAULT_SEQ = 128


def _zoo() -> dict[str, Callable[..., onnx.ModelProto]]:
    return {"chain": zoo.elementwise_chain, "mlp": zoo.mlp, "bert": zoo.bert_layer, "gpt": zoo.gpt_block,
            "conv_block": zoo.conv_block}


ZOO = ("chain", "mlp", "bert", "gpt", "conv_block")


@dataclass
class Workload:
    """One model at one batch size: the model the runtimes load, and its inputs."""

    label: str
    source: str  # the file, or the zoo builder call
    proto: onnx.ModelProto
    batch: int
    feeds: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)

    @property
    def input_shapes(self) -> dict[str, list[int]]:
        return {k: list(v.shape) for k, v in self.feeds.items()}


def _value(text: str) -> Any:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", text):
        return float(text)
    if "x" in text and all(re.fullmatch(r"\d+|[A-Za-z_]\w*", p) for p in text.split("x")):
        return tuple(int(p) if p.isdigit() else p for p in text.split("x"))
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"bert:hidden=256,heads=8"`` -> ``("bert", {"hidden": 256, "heads": 8})``."""
    name, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValueError(f"model {spec!r}: expected NAME:KEY=VALUE,..., got {item!r}")
        kwargs[k.strip()] = _value(v.strip())
    return name, kwargs


def load_model(spec: str) -> tuple[onnx.ModelProto, str]:
    """The ModelProto for a MODEL argument, and where it came from."""
    if os.path.exists(spec):
        return onnx.load(spec), str(Path(spec).resolve())
    name, kwargs = parse_spec(spec)
    zoo = _zoo()
    if name in zoo:
        try:
            proto = zoo[name](**kwargs)
        except TypeError as e:
            raise ValueError(f"model {spec!r}: {e}") from None
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        return proto, f"jitort.zoo.{zoo[name].__name__}({args})"
    if ":" in spec:
        raise FileNotFoundError(f"{spec}: only zoo models ({', '.join(ZOO)}) take arguments")
    try:
        path = resolve_model(spec)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; or a zoo model: {', '.join(ZOO)}") from None
    return onnx.load(str(path)), str(path)


def _activations(graph: onnx.GraphProto) -> set[str]:
    """Values computed from graph inputs (not from constants only)."""
    inits = {t.name for t in graph.initializer}
    live = {vi.name for vi in graph.input if vi.name not in inits}
    for n in graph.node:
        if any(i in live for i in n.input):
            live.update(n.output)
    return live


def with_batch(model: onnx.ModelProto, batch: int) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` with its inputs' first dims at ``batch`` where they are fixed to something else
    (see the module's docstring); unchanged when no input fixes its first dim. Notes say what changed."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    fixed = [vi for vi in g.input if vi.name not in inits and vi.type.tensor_type.shape.dim
             and vi.type.tensor_type.shape.dim[0].HasField("dim_value")
             and vi.type.tensor_type.shape.dim[0].dim_value != batch]
    if not fixed:
        return model, []
    old = {vi.type.tensor_type.shape.dim[0].dim_value for vi in fixed}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    notes = [f"inputs {', '.join(vi.name for vi in fixed)}: first dim {sorted(old)} -> {batch}"]
    for vi in list(g.input) + list(g.output):
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value in old:
            dims[0].dim_value = batch
    del g.value_info[:]
    live = _activations(g)
    consts = {t.name: t for t in g.initializer}
    renamed = 0
    for n in g.node:
        if n.op_type != "Reshape" or len(n.input) < 2 or n.input[0] not in live or n.input[1] not in consts:
            continue
        shape = numpy_helper.to_array(consts[n.input[1]])
        if shape.ndim == 1 and shape.size and int(shape[0]) in old:
            new = shape.copy()
            new[0] = batch
            name = f"{n.input[1]}__batch{batch}"
            if name not in consts:
                t = numpy_helper.from_array(new, name)
                g.initializer.append(t)
                consts[name] = t
            n.input[1] = name
            renamed += 1
    if renamed:
        notes.append(f"{renamed} Reshape target shape(s) with the batch fixed: first element -> {batch}")
    return m, notes


def _named_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """Unnamed symbolic dims get names (``unk_<input>_<axis>``) so that the rules can bind them."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value") and not d.dim_param:
                d.dim_param = f"unk_{re.sub(r'[^A-Za-z0-9_]', '_', vi.name)}_{k}"
    return m


def dim_values(model: onnx.ModelProto, batch: int, dims: dict[str, int] | None = None,
               seq: int | None = None) -> dict[str, int]:
    """The value of every symbolic input dim under the rules in the module's docstring."""
    dims = dict(dims or {})
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, int] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") or not d.dim_param or d.dim_param in out:
                continue
            name = d.dim_param
            out[name] = dims[name] if name in dims else batch if k == 0 else (seq if seq is not None else DEFAULT_SEQ)
    return out


def make_feeds(model: onnx.ModelProto, values: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for ``model`` with symbolic dims set from ``values``."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, dt, shape in input_specs(model):
        if shape is None:
            raise ValueError(f"input '{name}' has no declared shape; give the model a shape for it")
        sh = tuple(d if isinstance(d, int) else int(values.get(d, 1)) if isinstance(d, str) else 1 for d in shape)
        if dt.kind == "f":
            feeds[name] = rng.standard_normal(sh).astype(dt)
        elif dt.kind in "iu":
            feeds[name] = (np.ones(sh, dt) if "mask" in name.lower()
                           else rng.integers(0, 10, size=sh).astype(dt))
        elif dt.kind == "b":
            feeds[name] = rng.random(sh) < 0.5
        else:
            raise ValueError(f"input '{name}': cannot generate data of type {dt}")
    return feeds


def prepare(spec: str, batch: int, dims: dict[str, int] | None = None, seq: int | None = None,
            seed: int = 0, loaded: tuple[onnx.ModelProto, str] | None = None) -> Workload:
    """The model ``spec`` at ``batch``, with its inputs. ``loaded`` reuses a ``load_model`` result."""
    proto, source = loaded if loaded is not None else load_model(spec)
    proto, notes = with_batch(_named_dims(proto), batch)
    values = dim_values(proto, batch, dims, seq)
    if values:
        notes.append("symbolic dims: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return Workload(spec, source, proto, batch, make_feeds(proto, values, seed), notes)
