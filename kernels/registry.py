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

A registration is also the one place that states the op's facts, which the passes read from here
rather than from lists of op names:

* ``random=True`` — every run draws fresh values (RandomNormal...): constant folding, warm-up runs,
  FLOP counting and the conformance comparison treat it apart (``is_random``); ``random_inputs``
  name inputs that make the op random when a run-time value turns them on (Dropout's
  ``training_mode``);
* ``halts=False`` — a run may not terminate (Loop with an unbounded trip count): no warm-up run;
* ``tensor_outputs=False`` — outputs are sequences, optionals or maps, which constant folding
  cannot store (``folds``);
* ``host_inputs`` — inputs that are shape data (shape, axes, starts/ends), read in host memory by
  every provider (onnxruntime's kernels declare the same inputs as CPU memory); ``meta_inputs`` —
  inputs of which only the shape is read; ``host_outputs`` — outputs that are host tensors
  (Shape, Size);
* ``compute`` — the compute-dtype policy (``FLOAT``, ``FLOAT_OR_INT8``...): a library function
  declaring a keyword-only ``_compute`` parameter receives the dtype it computes in, chosen from
  its first input's dtype by the policy, which refuses any other dtype with NotImplemented naming
  the op (``compute_dtype_for``);
* per-provider implementations: ``implement("CUDAExecutionProvider", "Softmax", since=13, ...)``
  registers the CUDA kernel of the same entry over the same opset range as the CPU one
  (``provider_impl``); a provider registration never serves a version that a later CPU
  registration of the op took over, so an opset's semantic change is one more registration on
  both sides instead of a version test inside the kernel.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Container, Sequence

import numpy as np

from jitort.dtypes import resolve_element_type
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, TensorType
import jitort.kernels as pkg
from jitort.kernels.fastmath import FLOAT32_FUNCS


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


class ComputePolicy:
    """Which dtype an op computes in for a given input dtype: ``table`` maps the storage dtypes the
    op supports to their compute dtypes; any other dtype is refused with NotImplemented naming the op."""

    def __init__(self, name: str, table: dict[np.dtype, np.dtype], supported: str,
                 bfloat16: np.dtype | None = None):
        self.name = name
        self.table = table
        self.supported = supported
        self.bfloat16 = bfloat16  # kept apart from ``table``: its key would need ml_dtypes imported

    def __call__(self, dt: Any, op_type: str) -> np.dtype:
        dt = resolve_element_type(dt) if isinstance(dt, str) else dt  # 'bfloat16' too
        cd = self.table.get(np.dtype(dt))
        if cd is None and self.bfloat16 is not None and np.dtype(dt) == BFLOAT16:
            cd = self.bfloat16
        if cd is None:
            raise OrtNotImplemented(f"{op_type}: jitort does not support input dtype {np.dtype(dt)} "
                                    f"({self.supported})")
        return cd

    def __repr__(self) -> str:
        return f"ComputePolicy({self.name})"


@dataclass(frozen=True)
class ProviderImpl:
    """An execution provider's kernel for one registration (same op, same opset range).

    ``check(node, graph)`` is None when the kernel covers the node (dtypes, attributes, ranks known at
    compile time), else the reason it stays on the CPU; ``lower(node, graph)`` returns the
    provider's call record; ``view``: output 0 aliases input 0's memory (Reshape & co.)."""

    provider: str
    op_type: str
    domain: str
    since: int
    check: Callable[[Node, Graph], str | None]
    lower: Callable[[Node, Graph], Any]
    view: bool = False


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
    # The op's facts (module docstring).
    random: bool = False
    random_inputs: tuple[int, ...] = ()
    halts: bool = True
    tensor_outputs: bool = True
    host_inputs: tuple[int, ...] = ()
    meta_inputs: tuple[int, ...] = ()
    host_outputs: bool = False
    compute: ComputePolicy | None = None

    @property
    def is_elementwise(self) -> bool:
        return self.scalar is not None


_REGISTRY: dict[tuple[str, str], list[OpDef]] = {}
# (provider, domain, op_type) -> that provider's registrations, by since
_PROVIDERS: dict[tuple[str, str, str], list[ProviderImpl]] = {}


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
       infer: Callable[[Node, list[TensorType | None]], list[TensorType | None]] | None = None, *,
       random: bool = False, random_inputs: tuple[int, ...] = (), halts: bool = True,
       tensor_outputs: bool = True, host_inputs: tuple[int, ...] = (), meta_inputs: tuple[int, ...] = (),
       host_outputs: bool = False, compute: ComputePolicy | None = None) -> Callable:
    """Register a library op; the keyword-only arguments are its facts (module docstring)."""
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        fn = f if compute is None else apply_compute(f, compute, op_type)
        _add(OpDef(op_type, domain, since, fn=fn, lower=lower, infer=infer, random=random,
                   random_inputs=random_inputs, halts=halts, tensor_outputs=tensor_outputs,
                   host_inputs=host_inputs, meta_inputs=meta_inputs, host_outputs=host_outputs,
                   compute=compute))
        return fn
    return deco


def apply_compute(f: Callable[..., Any], policy: ComputePolicy, op_type: str) -> Callable[..., Any]:
    """``f`` given ``_compute``, the dtype its first input computes in under ``policy`` (which refuses
    other dtypes before the body runs), unless the caller passes one (a lowering that chose it at
    compile time)."""
    if getattr(f, "__jitort_compute__", None) is not None:
        return f  # stacked registrations of one function (LSTM since 1, 7, 14)
    if "_compute" not in _keyword_params(f):
        raise TypeError(f"{op_type}: a compute policy needs a keyword-only '_compute' parameter")

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_compute") is None:
            kwargs["_compute"] = policy(args[0].dtype, op_type)
        return f(*args, **kwargs)
    run.__jitort_compute__ = policy  # type: ignore[attr-defined]
    return run


def implement(provider: str, op_type: str, since: int, domain: str = "", *,
              check: Callable[[Node, Graph], str | None], lower: Callable[[Node, Graph], Any],
              view: bool = False) -> None:
    """Register ``provider``'s kernel for the CPU registration of ``op_type`` that serves opset
    ``since`` (the CPU's ``since`` itself, or a later opset when the provider covers only part of
    the range)."""
    impls = _PROVIDERS.setdefault((provider, domain, op_type), [])
    if any(x.since == since for x in impls):
        raise ValueError(f"{provider} {op_type} since {since} registered twice")
    impls.append(ProviderImpl(provider, op_type, domain, since, check, lower, view))
    impls.sort(key=lambda x: x.since)


# Provider tables registered into the op table with the families; they import no device runtime.
PROVIDER_TABLES = ("jitort.kernels.cuda.ops",)


def _load_families() -> None:
    # Importing a family module runs its registrations.
    import importlib
    import pkgutil

    names = [f"jitort.kernels.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
             if m.name not in ("registry", "fastmath", "fp16") and not m.name.startswith("_") and not m.ispkg]
    for name in [*names, *PROVIDER_TABLES]:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - one broken family must not take the others down
            _broken[name.rsplit(".", 1)[-1]] = f"{type(e).__name__}: {e}"


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


def find(op_type: str, domain: str, version: int) -> OpDef | None:
    """The registration serving ``op_type`` at opset ``version``, or None."""
    load_families()
    found = None
    for d in _REGISTRY.get((_domain(domain), op_type)) or ():
        if d.since <= version:
            found = d
    return found


def _domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def _all(op_type: str, domain: str) -> list[OpDef]:
    load_families()
    return _REGISTRY.get((_domain(domain), op_type)) or []


def is_random(op_type: str, domain: str = "") -> bool:
    """Whether a registration of the op (at any opset) draws fresh values on every run."""
    return any(d.random for d in _all(op_type, domain))


def warmup_safe(op_type: str, domain: str, inputs: Sequence[str], constants: Container[str]) -> bool:
    """Whether a warm-up run may execute this node (of the given input names; ``constants`` holds
    the names of the graph's initializers): not for ops that consume random state or may not
    terminate, nor for ops made random by a run-time input (Dropout's training_mode). Opset-blind,
    as the question is asked of an ONNX graph before import."""
    for d in _all(op_type, domain):
        if d.random or not d.halts:
            return False
        if any(k < len(inputs) and inputs[k] and inputs[k] not in constants for k in d.random_inputs):
            return False
    return True


def folds(node: Node) -> bool:
    """Whether constant folding may compute the node once: its values are the same every run and
    its outputs are tensors. Ops jitort does not register fold (their evaluation decides)."""
    d = find(node.op_type, node.domain, node.version)
    return d is None or (not d.random and d.tensor_outputs)


def compute_dtype_for(node: Node, dt: Any) -> np.dtype | None:
    """The dtype ``node``'s library kernel computes in for input dtype ``dt`` (None when its
    registration declares no policy); NotImplemented naming the op for a dtype it refuses."""
    d = find(node.op_type, node.domain, node.version)
    if d is None or d.compute is None:
        return None
    return d.compute(dt, node.op_type)


def provider_impl(provider: str, node: Node) -> tuple[OpDef, ProviderImpl] | None:
    """``provider``'s kernel for ``node`` with the CPU registration it belongs to, or None: the
    provider's latest registration at or below the node's opset that does not predate the CPU
    registration serving that opset."""
    d = find(node.op_type, node.domain, node.version)
    if d is None:
        return None
    found = None
    for impl in _PROVIDERS.get((provider, _domain(node.domain), node.op_type)) or ():
        if d.since <= impl.since <= node.version:
            found = impl
    return None if found is None else (d, found)


def provider_registrations(provider: str) -> list[ProviderImpl]:
    """Every registration of ``provider`` (for tests and documentation)."""
    load_families()
    return [impl for (p, _, _), impls in sorted(_PROVIDERS.items()) if p == provider for impl in impls]


def registrations() -> list[OpDef]:
    """Every CPU registration, by domain, op and opset."""
    load_families()
    return [d for _, defs in sorted(_REGISTRY.items()) for d in defs]


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

BFLOAT16 = "bfloat16"
# ``dtype == BFLOAT16`` is true for ml_dtypes' bfloat16 only, without importing ml_dtypes (~0.7 s of
# a fresh process's start-up; an array of that dtype exists only once something imported it).
# Compare dtypes with these, not ``dtype.name``: building the name costs ~7 µs in numpy 2.4.

_NP_NAMES = {np.dtype(t): t.__name__ for t in (np.float32, np.float64, np.int8, np.int16, np.int32,
                                                 np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                                                 np.bool_)}


def np_name(dt: np.dtype) -> str:
    """``np.float32`` etc. as source text; float16/bfloat16 compute as float32."""
    dt = compute_dtype(dt)
    return "np." + _NP_NAMES[dt]


def _policy(name: str, pairs: dict[Any, Any], supported: str) -> ComputePolicy:
    table = {np.dtype(k): np.dtype(v) for k, v in pairs.items() if k is not BFLOAT16}
    return ComputePolicy(name, table, supported, np.dtype(pairs[BFLOAT16]) if BFLOAT16 in pairs else None)


_FLOAT_PAIRS = {np.float32: np.float32, np.float64: np.float64, np.float16: np.float32, BFLOAT16: np.float32}
# Float kernels: float32/float64 compute as themselves, float16/bfloat16 in float32.
FLOAT = _policy("FLOAT", _FLOAT_PAIRS, "float16, bfloat16, float32 and float64 only")
# The same, and int8/uint8 computed as themselves (MaxPool: comparisons only).
FLOAT_OR_INT8 = _policy("FLOAT_OR_INT8", {**_FLOAT_PAIRS, np.int8: np.int8, np.uint8: np.uint8},
                        "float16, bfloat16, float32, float64, int8 and uint8 only")


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
            if fname in FLOAT32_FUNCS:
                f = FLOAT32_FUNCS[fname]
                self.imports.add(f"from jitort.kernels.fastmath import {f}")
                return f"{f}({x})"
        if fname == "sigmoid":
            one = self.const(1.0, dt)
            return f"{one} / ({one} + math.exp(-{x}))"
        return f"math.{fname}({x})"
