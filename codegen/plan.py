"""The plan: a generated straight-line Python function that runs a compiled graph.

``build(consts)`` binds constants to closure locals and returns ``run(*inputs) -> tuple``. Each
step is one line or two: a library op call (``linalg.MatMul(t3, c1)``) or an output allocation
plus a fused kernel call. Temporaries are deleted after their last use so memory is returned as
early as the reference counts allow. A comment above each step names the ONNX nodes it came from.
"""
from __future__ import annotations

import keyword as keyword_module
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from jitort.codegen.cpu import FusedKernel, output_shape_source
from jitort.codegen.source import GENERATED_HEADER, IndentedBuffer, comment_safe, string_literal
from jitort.ir import Graph, Node
from jitort.kernels.registry import Call, Ref

_SIMPLE = (bool, int, float, str, type(None))


@dataclass
class Step:
    node: Node
    call: Call | None = None
    kernel: FusedKernel | None = None


class _Names:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.local: dict[str, str] = {}
        self.consts: dict[str, Any] = {}
        self.const_lines: list[str] = []
        for k, i in enumerate(g.inputs):
            self.local[i] = f"i{k}"

    def ref(self, name: str) -> str:
        if name in self.local:
            return self.local[name]
        c = self.g.const(name)
        if c is not None:
            return self.hoist(c, name)
        n = f"t{len(self.local)}"
        self.local[name] = n
        return n

    def hoist(self, obj: Any, label: str) -> str:
        if label in self.local:
            return self.local[label]
        n = f"c{len(self.consts)}"
        self.consts[n] = obj
        self.local[label] = n
        desc = f"{obj.dtype}{list(obj.shape)}" if isinstance(obj, np.ndarray) else type(obj).__name__
        self.const_lines.append(f"{n} = consts[{n!r}]  # {comment_safe(label)}: {desc}")
        return n

    def literal(self, v: Any, label: str) -> str:
        if isinstance(v, Ref):
            return self.ref(v.name)
        if isinstance(v, np.generic):
            v = v.item()
        if _is_simple(v):
            return _simple_literal(v)
        if isinstance(v, (list, tuple)) and all(_is_simple(x) for x in v):
            return "(" + "".join(_simple_literal(x) + ", " for x in v) + ")"
        if isinstance(v, np.dtype) and v.kind in "biuf" and v.name != "bfloat16":
            return f"np.{v.name if v.name != 'bool' else 'bool_'}"
        return self.hoist(v, f"{label}#{len(self.consts)}")


def _is_simple(v: Any) -> bool:
    return isinstance(v, _SIMPLE) and not (isinstance(v, float) and not np.isfinite(v))


def _simple_literal(v: Any) -> str:
    """Source for a bool, int, finite float, None or str (model text: through string_literal)."""
    return string_literal(v) if isinstance(v, str) else repr(v)


def keyword(key: str) -> str:
    """A keyword argument's name in a generated call: a kernel parameter's, never model text."""
    if not key.isidentifier() or keyword_module.iskeyword(key):
        raise ValueError(f"jitort: {key!r} is not a keyword argument name a kernel can take")
    return key


# Between plan steps: stop when the run's RunOptions.terminate was set (jitort.run_state). ``_ro`` is
# the plan's keyword argument, None when the run has no RunOptions (then the check is one compare).
TERMINATE_IMPORT = "from jitort.run_state import terminated as _terminated"
TERMINATE_CHECK = "if _ro is not None and _ro.terminate: _terminated()"

# The profiled variant (``emit_plan(..., profile=True)``, only for sessions with enable_profiling):
# ``_rec`` is the recorder of the run (jitort.profiling.recorder(), taken once per run), each step
# is timed between its comment and its ``del`` line and reported as
# ``_rec(step, t_start, t_end, (inputs...), (outputs...))``. What the trace says about each step
# (node names, op types, kernel) is data, ``consts[PROFILE_STEPS]``, never text in the source.
PROFILE_IMPORTS = ("from time import perf_counter as _pc", "from jitort.profiling import recorder as _recorder")
PROFILE_STEPS = "profile_steps"


def plan_header(kind: str, title: str) -> list[str]:
    """The first lines of a generated plan module: the fixed encoding line, a docstring without
    model text, the model's title in a comment."""
    return [GENERATED_HEADER, f'"""jitort {kind} (generated; edits are overwritten)."""',
            f"# model: {comment_safe(title)}"]


def _module_alias(fn: Callable[..., Any]) -> tuple[str, str] | None:
    mod = getattr(fn, "__module__", None)
    qn = getattr(fn, "__qualname__", "")
    if not mod or "." in qn or "<" in qn:
        return None
    import sys
    if getattr(sys.modules.get(mod), qn, None) is not fn:
        return None
    return mod, qn


def emit_plan(g: Graph, steps: list[Step], title: str, profile: bool = False) -> tuple[str, dict[str, Any]]:
    """Source of the plan module and the constants ``build(consts, slow_bind)`` expects.

    ``profile``: the profiled variant (timing around each step, see PROFILE_IMPORTS); its constants
    hold the steps' descriptions under PROFILE_STEPS (``jitort.profiling.step_info``).

    ``build`` returns ``(run, run_feed)``: ``run(*arrays)`` runs the graph; ``run_feed(feed)`` first
    checks the feed dict on a straight-line fast path (names, dtypes, ranks, static dims, symbolic
    dims that must agree, C-contiguous writeable arrays) and otherwise defers to ``slow_bind``,
    which converts what it can and raises onnxruntime's error for what it cannot.
    """
    names = _Names(g)
    body = IndentedBuffer(2)
    imports: set[str] = {"import numpy as np", TERMINATE_IMPORT}
    if profile:
        from jitort.profiling import step_info
        imports.update(PROFILE_IMPORTS)
        infos: list[dict[str, Any]] = []
    last_use: dict[str, int] = {}
    for k, s in enumerate(steps):
        for i in s.node.inputs:
            if i:
                last_use[i] = k
    keep = set(g.outputs) | set(g.inputs)
    for k, s in enumerate(steps):
        n = s.node
        body.writeline(TERMINATE_CHECK)
        if s.kernel is not None:
            body_nodes = n.attrs["body"]
            label = ", ".join(b.name for b in body_nodes)
            body.writeline(f"# {len(body_nodes)} fused: {comment_safe(label, 300)}")
            if profile:
                body.writeline("_t = _pc()")
            _emit_fused(body, s.kernel, names, g, imports)
            kernel_label = s.kernel.name
        else:
            assert s.call is not None
            body.writeline(f"# {comment_safe(n.op_type)} {comment_safe(n.name)}")
            if profile:
                body.writeline("_t = _pc()")
            alias = _module_alias(s.call.fn)
            if alias is None:
                fn = names.hoist(s.call.fn, f"{n.name}.fn")
            else:
                mod, qn = alias
                short = mod.rsplit(".", 1)[-1]
                imports.add(f"import {mod} as {short}" if "." in mod else f"import {mod}")
                fn = f"{short}.{qn}"
            args = [names.literal(a, n.name) if a is not None else "None" for a in s.call.args]
            args += [f"{keyword(key)}={names.literal(v, n.name + '.' + key)}" for key, v in s.call.kwargs.items()]
            outs = [names.ref(o) if o else "_" for o in n.outputs]
            lhs = outs[0] if len(outs) == 1 else ", ".join(outs)
            body.writeline(f"{lhs} = {fn}({', '.join(args)})")
            kernel_label = _function_label(s.call.fn)
        if profile:
            infos.append(step_info(s, g, kernel_label))
            ins = _tuple_source(names.local.get(i) if i else None for i in n.inputs)
            outs_src = _tuple_source(names.local.get(o) if o else None for o in n.outputs)
            body.writeline(f"_rec({k}, _t, _pc(), {ins}, {outs_src})")
        dead = sorted({i for i in n.inputs if i and last_use.get(i) == k and i not in keep
                       and g.const(i) is None and i in names.local})
        if dead:
            body.writeline("del " + ", ".join(names.local[d] for d in dead))
    # Outputs that are constants or inputs are copied: callers may write into what run() returns.
    outs = [names.ref(o) + (".copy()" if o in g.inputs or g.const(o) is not None else "") for o in g.outputs]
    args = ", ".join(names.local[i] for i in g.inputs)
    feed_check = IndentedBuffer(1)
    _emit_feed_check(feed_check, g, names, args)  # may hoist dtypes: before the constant lines are written
    buf = IndentedBuffer()
    buf.writelines(plan_header("plan", title))
    for line in sorted(imports):
        buf.writeline(line)
    buf.writeline("")
    buf.writeline("")
    buf.writeline("def build(consts, slow_bind):")
    with buf.indent():
        buf.writelines(names.const_lines)
        buf.writeline("")
        buf.writeline(f"def run({args}{', ' if args else ''}_ro=None):")
        if profile:
            with buf.indent():
                buf.writeline("_rec = _recorder()")
        buf.lines.extend(body.lines)
        with buf.indent():
            buf.writeline(f"return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
        buf.writeline("")
        buf.lines.extend(feed_check.lines)
        buf.writeline("")
        buf.writeline("return run, run_feed")
    if profile:
        names.consts[PROFILE_STEPS] = infos
    return buf.getvalue(), names.consts


def _tuple_source(locals_: Any) -> str:
    """A tuple display of plan locals (``None`` where a value has none: an omitted optional input,
    a constant the step's call does not read)."""
    return "(" + "".join(f"{x or 'None'}, " for x in locals_) + ")"


def _function_label(fn: Callable[..., Any]) -> str:
    """``module.function`` of a library function, for the profile (data, never generated source)."""
    mod = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{mod.removeprefix('jitort.')}.{name}"


def _emit_feed_check(buf: IndentedBuffer, g: Graph, names: _Names, args: str) -> None:
    ins = [names.local[i] for i in g.inputs]
    conds: list[str] = []
    first_axis: dict[str, str] = {}
    for name, local in zip(g.inputs, ins):
        t = g.type_of(name)
        dt = _dtype_src(t.dtype, names)
        conds.append(f"type({local}) is ndarray and {local}.dtype == {dt}")
        if t.shape is not None:
            conds.append(f"{local}.ndim == {len(t.shape)}")
            for k, d in enumerate(t.shape):
                ax = f"{local}.shape[{k}]"
                if isinstance(d, int):
                    conds.append(f"{ax} == {d}")
                elif d in first_axis:
                    conds.append(f"{ax} == {first_axis[d]}")
                else:
                    first_axis[d] = ax
    buf.writeline("ndarray = np.ndarray")
    buf.writeline("")
    buf.writeline("def run_feed(feed, _ro=None):")
    with buf.indent():
        buf.writeline(f"if len(feed) == {len(ins)}:")
        with buf.indent():
            if ins:
                buf.writeline("try:")
                with buf.indent():
                    for name, local in zip(g.inputs, ins):
                        buf.writeline(f"{local} = feed[{string_literal(name)}]")
                buf.writeline("except KeyError:")
                with buf.indent():
                    buf.writeline("return run(*slow_bind(feed), _ro=_ro)")
                buf.writeline("if (" + "\n                    and ".join(conds) + "):")
                with buf.indent():
                    for local in ins:
                        buf.writeline(f"f = {local}.flags")
                        buf.writeline("if not (f.c_contiguous and f.writeable and f.aligned):")
                        with buf.indent():
                            buf.writeline("return run(*slow_bind(feed), _ro=_ro)")
                    buf.writeline(f"return run({args}, _ro=_ro)")
            else:
                buf.writeline("return run(_ro=_ro)")
        buf.writeline("return run(*slow_bind(feed), _ro=_ro)")


def _emit_fused(body: IndentedBuffer, fk: FusedKernel, names: _Names, g: Graph, imports: set[str]) -> None:
    imports.add(f"from {fk.name} import {fk.name}")
    ins = [names.ref(i) for i in fk.inputs]
    outs = [names.ref(o) for o in fk.outputs]
    if fk.mode == "flat":
        shape = output_shape_source(fk, {i: r for i, r in zip(fk.inputs, ins)})
        args = ins
    else:
        body.writeline(f"_s = np.broadcast_shapes({', '.join(x + '.shape' for x in ins)})")
        shape = "_s"
        args = [f"np.broadcast_to({x}, _s)" for x in ins]
    for o, name in zip(fk.outputs, outs):
        body.writeline(f"{name} = np.empty({shape}, {_dtype_src(g.type_of(o).dtype, names)})")
    args = [_as_storage(a, g.type_of(i).dtype) for a, i in zip(args, fk.inputs)]
    args += [_as_storage(x, g.type_of(o).dtype) for x, o in zip(outs, fk.outputs)]
    body.writeline(f"{fk.name}({', '.join(args)})")


def _dtype_src(dt: np.dtype | None, names: _Names) -> str:
    dt = np.dtype(dt)
    if dt.name == "bool":
        return "np.bool_"
    if dt.kind in "biuf" and hasattr(np, dt.name):
        return f"np.{dt.name}"
    return names.hoist(dt, f"dtype {dt.name}")


def _as_storage(src: str, dt: np.dtype | None) -> str:
    return f"{src}.view(np.uint16)" if np.dtype(dt).name in ("float16", "bfloat16") else src
