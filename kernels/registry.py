"""The op registry: one registration per ONNX op (and opset range), named exactly as the spec names it.

Two kinds of op:

* **elementwise** — a scalar expression. ``@elementwise("Add", since=7)`` registers
  ``def Add(c: Scalar, a: str, b: str) -> str``: it receives the names of scalar locals and returns a
  Python/Numba expression. The emitters own loops, indexing, broadcasting and dtype casts, so the
  same expression serves every fused group, the CPU and the CUDA backend.
* **library** — a run-time function ``@op("MatMul", since=13)`` called from the generated plan with
  numpy arrays (``None`` for an omitted optional input) and the node's attributes as keyword-only
  arguments of the same name; defaults were filled from the schema at import. Parameters named
  ``_nout`` / ``_dtypes`` / ``_shapes`` receive the node's output count / output numpy dtypes /
  static output shapes. It returns one array or a tuple of arrays, always C-contiguous, and does
  its heavy lifting in ``@njit(cache=True, nogil=True)`` kernels compiled once per dtype and rank.
  An optional ``lower(node, graph) -> Call`` replaces the default binding when compile-time work
  pays (prepacked weights, a specialised function chosen from static shapes).

Ops onnx has no schema for (onnxruntime's com.microsoft contrib ops, its default-domain extras)
get no types from onnx's inference: a library registration gives ``infer(node, input types) ->
output types`` (jitort.frontend.refine calls it at import), and an elementwise one is typed by broadcasting.
The same rule fills output dtypes onnx's inference leaves unknown for ops it has schemas for
(ai.onnx.ml opset-1 scores: jitort.passes.shapes.complete_types).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, TensorType


@dataclass(frozen=True)
class Ref:
    """A run-time value of the graph, by name."""

    name: str


@dataclass
class Call:
    """How the plan invokes a library op: ``fn(*args, **kwargs)``; args hold Refs, None or constants."""

    fn: Callable[..., Any]
    args: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OpDef:
    op_type: str
    domain: str
    since: int
    scalar: Callable[..., str] | None = None
    out_dtype: Callable[[Node, list[np.dtype]], np.dtype] | None = None  # elementwise; default: input 0's
    fn: Callable[..., Any] | None = None
    lower: Callable[[Node, Graph], Call] | None = None
    infer: Callable[[Node, list[TensorType | None]], list[TensorType | None]] | None = None

    @property
    def is_elementwise(self) -> bool:
        return self.scalar is not None


_REGISTRY: dict[tuple[str, str], list[OpDef]] = {}


def _add(d: OpDef) -> None:
    defs = _REGISTRY.setdefault((d.domain, d.op_type), [])
    if any(x.since == d.since for x in defs):
        raise ValueError(f"{d.op_type} since {d.since} registered twice")
    defs.append(d)
    defs.sort(key=lambda x: x.since)


def elementwise(op_type: str, since: int = 1, domain: str = "",
                out_dtype: Callable[[Node, list[np.dtype]], np.dtype] | None = None,
                lower: Callable[[Node, Graph], Call] | None = None) -> Callable:
    """``lower``, when given, runs a node the fusion pass leaves out of every kernel (a variadic op
    too wide for one) as a library call."""
    def deco(f: Callable[..., str]) -> Callable[..., str]:
        _add(OpDef(op_type, domain, since, scalar=f, out_dtype=out_dtype, lower=lower))
        return f
    return deco


def op(op_type: str, since: int = 1, domain: str = "",
       lower: Callable[[Node, Graph], Call] | None = None,
       infer: Callable[[Node, list[TensorType | None]], list[TensorType | None]] | None = None) -> Callable:
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        _add(OpDef(op_type, domain, since, fn=f, lower=lower, infer=infer))
        return f
    return deco


def _load_families() -> None:
    # Importing a family module runs its registrations.
    import importlib
    import pkgutil

    import jitort.kernels as pkg
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name not in ("registry", "fastmath", "fp16") and not m.name.startswith("_") and not m.ispkg:
            try:
                importlib.import_module(f"jitort.kernels.{m.name}")
            except Exception as e:  # noqa: BLE001 - one broken family must not take the others down
                _broken[m.name] = f"{type(e).__name__}: {e}"


_loaded = False
_broken: dict[str, str] = {}  # kernel family -> why it failed to import (named in NotImplemented errors)


def load_families() -> None:
    """Import every kernel family once (lookups do it on first use)."""
    global _loaded
    if not _loaded:
        _load_families()
        _loaded = True


def lookup(op_type: str, domain: str, version: int, node_name: str = "") -> OpDef:
    """The registration serving ``op_type`` at opset ``version``, or NotImplemented naming op, domain, opset."""
    load_families()
    defs = _REGISTRY.get((domain, op_type))
    found = None
    for d in defs or ():
        if d.since <= version:
            found = d
    if found is None:
        where = f" (node '{node_name}')" if node_name else ""
        have = f"; jitort implements it from opset {defs[0].since}" if defs else ""
        if _broken:
            have += f"; kernel families that failed to import: {_broken}"
        raise OrtNotImplemented(
            f"jitort has no implementation for op "
            f"'{op_type}' in domain '{domain or 'ai.onnx'}' at opset {version}{where}{have}")
    return found


def elementwise_def(node: Node) -> OpDef | None:
    """The elementwise registration of ``node``, or None for library ops and unknown ops."""
    try:
        d = lookup(node.op_type, node.domain, node.version)
    except OrtNotImplemented:
        return None
    return d if d.is_elementwise else None


def is_registered(op_type: str, domain: str, version: int) -> bool:
    try:
        lookup(op_type, domain, version)
        return True
    except OrtNotImplemented:
        return False


def default_call(d: OpDef, node: Node, g: Graph) -> Call:
    """Inputs positionally (Ref or None), attributes as keyword-only arguments of the same name."""
    assert d.fn is not None
    args: list[Any] = [Ref(i) if i else None for i in node.inputs]
    kwargs: dict[str, Any] = {}
    for p in _keyword_params(d.fn):
        if p == "_nout":
            kwargs[p] = len(node.outputs)
        elif p == "_dtypes":
            kwargs[p] = tuple(g.type_of(o).dtype if o else None for o in node.outputs)
        elif p == "_shapes":
            kwargs[p] = tuple(g.type_of(o).shape if o else None for o in node.outputs)
        elif p in node.attrs:
            kwargs[p] = node.attrs[p]
    return Call(d.fn, args, kwargs)


def lower_node(node: Node, g: Graph) -> Call:
    d = lookup(node.op_type, node.domain, node.version, node.name)
    if d.lower is not None:
        return d.lower(node, g)
    return default_call(d, node, g)


_kw_cache: dict[Callable, tuple[str, ...]] = {}


def _keyword_params(fn: Callable) -> tuple[str, ...]:
    ps = _kw_cache.get(fn)
    if ps is None:
        ps = tuple(p.name for p in inspect.signature(fn).parameters.values()
                   if p.kind == inspect.Parameter.KEYWORD_ONLY)
        _kw_cache[fn] = ps
    return ps


def run_call(call: Call, env: dict[str, np.ndarray]) -> Any:
    """Evaluate a Call eagerly (constant folding and the reference path in tests)."""
    args = [env[a.name] if isinstance(a, Ref) else a for a in call.args]
    return call.fn(*args, **call.kwargs)


# --- the scalar-expression context -------------------------------------------------------------

try:
    import ml_dtypes as _ml
    BFLOAT16: np.dtype | None = np.dtype(_ml.bfloat16)
except ImportError:  # pragma: no cover - onnx depends on ml_dtypes
    BFLOAT16 = None
# Compare dtypes with these, not ``dtype.name``: building the name costs ~7 µs in numpy 2.4.

_NP_NAMES = {np.dtype(t): t.__name__ for t in (np.float32, np.float64, np.int8, np.int16, np.int32,
                                                 np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                                                 np.bool_)}


def np_name(dt: np.dtype) -> str:
    """``np.float32`` etc. as source text; float16/bfloat16 compute as float32."""
    dt = compute_dtype(dt)
    return "np." + _NP_NAMES[dt]


def compute_dtype(dt: np.dtype) -> np.dtype:
    dt = np.dtype(dt)
    if dt == np.float16 or dt == BFLOAT16:
        return np.dtype(np.float32)
    if dt not in _NP_NAMES:
        raise OrtNotImplemented(f"jitort's elementwise kernels do not support dtype {dt}")
    return dt


# The few spellings the CPU and CUDA emitters do not share (numba-cuda has no numpy ufuncs in
# kernels; math.floor returns an int in Numba, which loses inf and NaN).
_SPELLINGS = {
    "cpu": {"floor": "np.floor", "ceil": "np.ceil", "rint": "np.rint", "fmod": "np.fmod"},
    "cuda": {"floor": "libdevice.floor", "ceil": "libdevice.ceil", "rint": "libdevice.rint",
             "fmod": "libdevice.fmod"},
}


class Scalar:
    """What an elementwise op's scalar expression may ask of its context.

    ``dtype`` is the computation dtype of the node's output (float16 computes in float32),
    ``in_dtypes`` those of its inputs; ``const`` spells a literal in a dtype (never a bare Python
    float: that would promote float32 math to float64); ``math`` spells a math function, routing
    float32 to jitort's vectorisable versions.
    """

    def __init__(self, node: Node, in_dtypes: list[np.dtype], out_dtype: np.dtype,
                 consts: list[np.ndarray | None] | None = None, target: str = "cpu", local_prefix: str = "t"):
        self.node = node
        self.local_prefix = local_prefix
        self.lets: list[tuple[str, str]] = []  # (local, expression) the emitter writes before the op's value
        self.target = target
        self.consts = consts or [None] * len(in_dtypes)
        self.attrs = node.attrs
        self.in_dtypes = [compute_dtype(d) for d in in_dtypes]
        self.storage_in_dtypes = list(in_dtypes)
        self.dtype = compute_dtype(out_dtype)
        self.storage_dtype = np.dtype(out_dtype)
        self.imports: set[str] = set()

    @property
    def is_float(self) -> bool:
        return self.in_dtypes[0].kind == "f" if self.in_dtypes else self.dtype.kind == "f"

    def scalar_const(self, k: int) -> float | int | None:
        """Input k's value when it is a one-element compile-time constant (lets Pow(x, 2) be x*x)."""
        a = self.consts[k] if k < len(self.consts) else None
        if a is None or a.size != 1 or a.dtype.kind not in "biuf":
            return None
        return a.reshape(-1)[0].item()

    def const(self, value: float | int | bool, dtype: np.dtype | None = None) -> str:
        dt = compute_dtype(dtype if dtype is not None else self.dtype)
        if dt == np.bool_:
            return "True" if value else "False"
        if dt.kind == "f":
            v = float(value)
            if np.isnan(v):
                return f"{np_name(dt)}(np.nan)"
            if np.isinf(v):
                return f"{np_name(dt)}({'-' if v < 0 else ''}np.inf)"
            return f"{np_name(dt)}({v!r})"
        return f"{np_name(dt)}({int(value)})"

    def let(self, expr: str) -> str:
        """Bind ``expr`` to a fresh scalar local (named with ``local_prefix``) and return the local's
        name. An op over many operands (Sum of 300 inputs) folds through such locals, so the
        expression it returns stays shallow: Python's parser refuses nesting past 200 levels, and an
        operand repeated in a fold step (Max's NaN test) would grow the text exponentially."""
        name = f"{self.local_prefix}{len(self.lets)}"
        self.lets.append((name, expr))
        return name

    def cast(self, expr: str, dtype: np.dtype | None = None) -> str:
        return f"{np_name(dtype if dtype is not None else self.dtype)}({expr})"

    def fn(self, name: str, *args: str) -> str:
        """A function whose spelling differs by target (``_SPELLINGS``): floor, ceil, rint, fmod."""
        f32 = compute_dtype(self.dtype) == np.float32
        spelling = _SPELLINGS[self.target][name]
        if self.target == "cuda":
            self.imports.add("from numba.cuda import libdevice")
            spelling = spelling + ("f" if f32 else "")
        return f"{spelling}({', '.join(args)})"

    def math(self, fname: str, x: str, dtype: np.dtype | None = None) -> str:
        """A float math function: on the CPU float32 uses jitort.kernels.fastmath when it has one."""
        dt = compute_dtype(dtype if dtype is not None else self.dtype)
        if dt == np.float32 and self.target == "cpu":
            from jitort.kernels.fastmath import FLOAT32_FUNCS
            if fname in FLOAT32_FUNCS:
                f = FLOAT32_FUNCS[fname]
                self.imports.add(f"from jitort.kernels.fastmath import {f}")
                return f"{f}({x})"
        if fname == "sigmoid":
            one = self.const(1.0, dt)
            return f"{one} / ({one} + math.exp(-{x}))"
        return f"math.{fname}({x})"
