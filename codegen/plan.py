"""The plan: one generated straight-line Python function that runs a compiled graph, for every provider.

Two steps, kept apart:

* **lowering** (``PlanTarget.lower``; over a graph, ``jitort.codegen.emit.lower``) turns every node
  into a ``Step``: a CPU library call (``call``), a CPU fused elementwise kernel (``kernel``), or the
  record a device target lowered the node to (``device``);
* **emission** (``PlanEmitter``) writes the plan module from the steps. The CPU plan is this module's
  ``PlanTarget``; a device provider subclasses it and overrides its hooks
  (``jitort.codegen.cuda_plan.CudaTarget`` adds arena slots, uploads, launches and the run context
  around the same steps).

The module: ``build(consts, slow_bind)`` binds constants to closure locals and returns ``(run,
run_feed)``. ``run(*inputs, _ro=None)`` is straight-line: per step a terminate check, a comment naming
the ONNX nodes it came from, the call (or the output allocation and the fused kernel's call), and a
``del`` of the temporaries read for the last time, so memory is returned as early as the reference
counts allow. ``run_feed(feed)`` checks a feed dict on a fast path (``jitort.codegen.feed_check``). At
the end of the module, ``NODE_LINES`` maps generated lines to ONNX nodes (``jitort.codegen.linemap``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from jitort.codegen.broadcast import output_shape_source
from jitort.codegen.cpu import FusedKernel, fused_kernel
from jitort.codegen.feed_check import emit_feed_check
from jitort.codegen.linemap import NodeLines, build_line_map, line_map_source
from jitort.codegen.names import PlanNames, as_storage, keyword, module_alias
from jitort.codegen.source import GENERATED_HEADER, IndentedBuffer, comment_safe
from jitort.ir import Graph, Node
from jitort.kernels.movement import Concat as _CONCAT
from jitort.kernels.registry import Call, Ref, lower_node
from jitort.passes.fusion import FUSED
from jitort.profiling import step_info


@dataclass
class Step:
    """One node, lowered: exactly one of ``call`` (a CPU library call), ``kernel`` (a CPU fused
    elementwise kernel) and ``device`` (what a device target lowered the node to) is set."""

    node: Node
    call: Call | None = None
    kernel: FusedKernel | None = None
    device: Any = None


@dataclass
class Emitted:
    """A plan module and what it needs: its constants, the kernel modules it imports (name ->
    source; CPU fused kernels first), the CPU fused kernels among them, and its line map (also in
    the source, as ``NODE_LINES``)."""

    source: str
    consts: dict[str, Any]
    kernel_sources: dict[str, str]
    kernels: list[FusedKernel]
    line_map: tuple[NodeLines, ...]


# Between plan steps: stop when the run's RunOptions.terminate was set (jitort.run_state). ``_ro`` is
# the plan's keyword argument, None when the run has no RunOptions (then the check is one compare).
TERMINATE_IMPORT = "from jitort.run_state import terminated as _terminated"
TERMINATE_CHECK = "if _ro is not None and _ro.terminate: _terminated()"

# A strided fused kernel's operands are broadcast at run time (jitort.codegen.broadcast).
BROADCAST_IMPORT = "from jitort.codegen.broadcast import broadcast_shape as _broadcast_shape, expand_to as _expand_to"

# The profiled variant (``profile=True``, only for sessions with enable_profiling, CPU plans only):
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


def is_fused(n: Node) -> bool:
    """A fused elementwise group (``jitort.passes.fusion``)."""
    return n.op_type == FUSED and n.domain == "jitort"


def step_label(n: Node) -> tuple[str, str]:
    """(op, node name) of a step as its comment prints them and the line map holds them."""
    if is_fused(n):
        return "fused elementwise", comment_safe(", ".join(b.name for b in n.attrs["body"]), 300)
    return comment_safe(n.op_type), comment_safe(n.name)


class PlanTarget:
    """The CPU plan, and the hooks a device provider overrides (one instance per plan: a device
    target keeps the plan's device state — slots, uploads, kernels — between its hooks)."""

    kind = "plan"                                      # the module docstring's word
    profiled = True                                    # has a profiled variant
    concat_in_place = True                             # Concat outputs written in place (InPlace)
    module_prefixes: tuple[tuple[str, str], ...] = ()  # (module prefix, alias prefix) for imports

    def lower(self, n: Node, g: Graph) -> Step:
        """Node ``n`` as a plan step (errors name no node: ``jitort.codegen.emit.lower`` adds it)."""
        if is_fused(n):
            return Step(n, kernel=fused_kernel(n, g))
        return Step(n, call=lower_node(n, g))

    def imports(self) -> set[str]:
        return {"import numpy as np", TERMINATE_IMPORT}

    def begin(self, em: PlanEmitter, steps: list[Step]) -> None:
        """Before the first step: plan the steps, write ``em.body``'s first lines."""

    def where(self, step: Step) -> str:
        """Text after the step's comment (a device plan: which provider runs it)."""
        return ""

    def emit_device(self, em: PlanEmitter, k: int, step: Step) -> None:
        """Write step ``k``, lowered by this target (``step.device``), into ``em.body``."""
        raise TypeError(f"the CPU plan cannot emit a device step ({step.node.describe()})")

    def end(self, em: PlanEmitter) -> None:
        """After the last step, before the outputs (counted as the last step's lines)."""

    def result(self, outputs: str) -> str:
        """The line that hands the outputs tuple back."""
        return f"return {outputs}"

    def write_build(self, em: PlanEmitter, buf: IndentedBuffer) -> None:
        """``build``'s lines after the constants are bound."""

    def write_run(self, em: PlanEmitter, buf: IndentedBuffer, args: str) -> None:
        """The run function(s) around ``em.body``; ``args`` are the inputs' locals."""
        buf.writeline(f"def run({args}{', ' if args else ''}_ro=None):")
        with buf.indent():
            if em.profile:
                buf.writeline("_rec = _recorder()")
            buf.splice(em.body)

    def write_tail(self, buf: IndentedBuffer) -> None:
        """``build``'s lines before it returns ``run, run_feed``."""

    def kernel_sources(self) -> dict[str, str]:
        """The device kernel modules the plan imports (name -> source)."""
        return {}


class PlanEmitter:
    """Writes one plan module: the step loop, names, imports, feed check and line map are shared;
    what a provider adds comes from its ``PlanTarget``."""

    def __init__(self, g: Graph, target: PlanTarget, profile: bool = False) -> None:
        self.g = g
        self.target = target
        self.profile = profile and target.profiled
        self.names = PlanNames(g)
        self.imports = target.imports()
        self.body = IndentedBuffer()  # run's body, written at level 0 and spliced where it belongs
        self.kernels: dict[str, FusedKernel] = {}
        if self.profile:
            self.imports.update(PROFILE_IMPORTS)

    # --- references used by the step writers -------------------------------------------------------
    def fn_ref(self, fn: Callable[..., Any], label: str) -> str:
        """Source naming a library function: ``module.name`` (imported) or a hoisted constant."""
        alias = module_alias(fn)
        if alias is None:
            return self.names.hoist(fn, label)
        mod, qn = alias
        short = mod.rsplit(".", 1)[-1]
        for prefix, tag in self.target.module_prefixes:
            if mod.startswith(prefix):
                short = tag + short
        self.imports.add(f"import {mod} as {short}" if "." in mod else f"import {mod}")
        return f"{short}.{qn}"

    # --- CPU steps --------------------------------------------------------------------------------
    def emit_call(self, n: Node, call: Call, into: str = "") -> None:
        """``outs = module.fn(args..., key=value...[, out=into])``."""
        names = self.names
        fn = self.fn_ref(call.fn, f"{n.name}.fn")
        args = [names.literal(a, n.name) if a is not None else "None" for a in call.args]
        args += [f"{keyword(key)}={names.literal(v, n.name + '.' + key)}" for key, v in call.kwargs.items()]
        if into:
            args.append(f"out={into}")
        outs = [names.ref(o) if o else "_" for o in n.outputs]
        self.body.writeline(f"{', '.join(outs)} = {fn}({', '.join(args)})")

    def emit_fused(self, fk: FusedKernel) -> None:
        """Allocate the group's outputs, call its kernel (where it is strided: with the operands
        broadcast at run time, one-element constants passed as they are)."""
        g, names, body = self.g, self.names, self.body
        self.kernels.setdefault(fk.name, fk)
        self.imports.add(f"from {fk.name} import {fk.name}")
        ins = [names.ref(i) for i in fk.inputs]
        outs = [names.ref(o) for o in fk.outputs]
        if fk.mode == "flat":
            assert fk.patterns is not None
            shape = output_shape_source(fk.inputs, fk.patterns, fk.loop_shape, dict(zip(fk.inputs, ins)))
            args = ins
        else:  # strided: the broadcast is resolved here, at run time
            assert fk.views is not None
            if len(ins) == 1:
                body.writeline(f"_s = {ins[0]}.shape")
                args = ins
            else:
                self.imports.add(BROADCAST_IMPORT)
                body.writeline(f"_s = _broadcast_shape({', '.join(x + '.shape' for x in ins)})")
                args = [f"_expand_to({x}, _s)" if view else x for x, view in zip(ins, fk.views)]
            shape = "_s"
        for o, name in zip(fk.outputs, outs):
            body.writeline(f"{name} = np.empty({shape}, {names.dtype(g.type_of(o).dtype)})")
        args = [as_storage(a, g.type_of(i).dtype) for a, i in zip(args, fk.inputs)]
        args += [as_storage(x, g.type_of(o).dtype) for x, o in zip(outs, fk.outputs)]
        body.writeline(f"{fk.name}({', '.join(args)})")

    def emit_concat_in_place(self, n: Node, buf: ConcatBuffer, channels: int, copies: list[tuple[str, int, int]],
                             last: bool) -> None:
        """A Concat written in place (``concat_in_place``): its output is the buffer's first channels;
        copy the inputs not already there into their channel ranges."""
        out = self.names.ref(n.outputs[0])
        self.body.writeline(f"{out} = {buf.local}[:, :{channels}]")
        for value, c0, c1 in copies:
            self.body.writeline(f"{buf.local}[:, {c0}:{c1}] = {self.names.ref(value)}")
        if last:
            self.body.writeline(f"del {buf.local}")

    # --- the module -------------------------------------------------------------------------------
    def emit(self, steps: list[Step], title: str) -> Emitted:
        g, names, body, target = self.g, self.names, self.body, self.target
        infos: list[dict[str, Any]] = []
        last_use: dict[str, int] = {}
        for k, s in enumerate(steps):
            for i in s.node.inputs:
                if i:
                    last_use[i] = k
        keep = set(g.outputs) | set(g.inputs)
        labels = [step_label(s.node) for s in steps]
        places = concat_in_place(g, steps) if target.concat_in_place else InPlace([], {}, {})
        target.begin(self, steps)
        for k, s in enumerate(steps):
            n = s.node
            op, name = labels[k]
            body.writeline(TERMINATE_CHECK)
            with body.origin(k):
                head = f"{len(n.attrs['body'])} fused: {name}" if is_fused(n) else f"{op} {name}"
                body.writeline(f"# {head}{target.where(s)}")
                if self.profile:
                    body.writeline("_t = _pc()")
                for buf in places.allocs(k):
                    body.writeline(f"{buf.local} = np.empty({tuple(buf.shape)!r}, np.float32)")
                if s.device is not None:
                    target.emit_device(self, k, s)
                elif s.kernel is not None:
                    self.emit_fused(s.kernel)
                elif k in places.concats:
                    b, channels, copies = places.concats[k]
                    buf = places.buffers[b]
                    self.emit_concat_in_place(n, buf, channels, copies, buf.last == k)
                else:
                    assert s.call is not None
                    into = places.into.get(k)
                    dst = f"{places.buffers[into[0]].local}[:, {into[1]}:{into[2]}]" if into else ""
                    self.emit_call(n, s.call, dst)
                if self.profile:
                    infos.append(step_info(s, g, s.kernel.name if s.kernel is not None else _function_label(s.call)))
                    ins = _tuple_source(names.local.get(i) if i else None for i in n.inputs)
                    outs_src = _tuple_source(names.local.get(o) if o else None for o in n.outputs)
                    body.writeline(f"_rec({k}, _t, _pc(), {ins}, {outs_src})")
                dead = sorted({i for i in n.inputs if i and last_use.get(i) == k and i not in keep
                               and g.const(i) is None and i in names.local})
                if dead:
                    body.writeline("del " + ", ".join(names.local[d] for d in dead))
        with body.origin(len(steps) - 1 if steps else None):
            target.end(self)
            # Outputs that are constants or inputs are copied: callers may write into what run() returns.
            outs = [names.ref(o) + (".copy()" if o in g.inputs or g.const(o) is not None else "")
                    for o in g.outputs]
            body.writeline(target.result(f"({', '.join(outs)}{',' if len(outs) == 1 else ''})"))
        args = ", ".join(names.local[i] for i in g.inputs)
        feed_check = IndentedBuffer()
        emit_feed_check(feed_check, g, names, args)  # may hoist dtypes: before the constant lines are written

        buf = IndentedBuffer()
        buf.writelines(plan_header(target.kind, title))
        buf.writelines(sorted(self.imports))
        buf.writeline("")
        buf.writeline("")
        buf.writeline("def build(consts, slow_bind):")
        with buf.indent():
            buf.writelines(names.const_lines)
            target.write_build(self, buf)
            buf.writeline("")
            target.write_run(self, buf, args)
            buf.writeline("")
            buf.splice(feed_check)
            buf.writeline("")
            target.write_tail(buf)
            buf.writeline("return run, run_feed")
        line_map = build_line_map(buf.origins(), labels)
        buf.writeline("")
        buf.writeline("")
        buf.writelines(line_map_source(line_map))
        if self.profile:
            names.consts[PROFILE_STEPS] = infos
        kernel_sources = {k.name: k.source for k in self.kernels.values()}
        kernel_sources.update(target.kernel_sources())
        return Emitted(buf.getvalue(), names.consts, kernel_sources, list(self.kernels.values()), line_map)


def emit_plan(g: Graph, steps: list[Step], title: str, profile: bool = False) -> tuple[str, dict[str, Any]]:
    """Source of a CPU plan module and the constants ``build(consts, slow_bind)`` expects (the
    interface the compiler has always called; ``jitort.codegen.emit.emit`` returns the full record).

    ``profile``: the profiled variant (timing around each step, see PROFILE_IMPORTS); its constants
    hold the steps' descriptions under PROFILE_STEPS (``jitort.profiling.step_info``).

    ``build`` returns ``(run, run_feed)``: ``run(*arrays)`` runs the graph; ``run_feed(feed)`` first
    checks the feed dict on a straight-line fast path (names, dtypes, ranks, static dims, symbolic
    dims that must agree, C-contiguous writeable arrays) and otherwise defers to ``slow_bind``,
    which converts what it can and raises onnxruntime's error for what it cannot.
    """
    e = PlanEmitter(g, PlanTarget(), profile).emit(steps, title)
    return e.source, e.consts


def _tuple_source(locals_: Any) -> str:
    """A tuple display of plan locals (``None`` where a value has none: an omitted optional input,
    a constant the step's call does not read)."""
    return "(" + "".join(f"{x or 'None'}, " for x in locals_) + ")"


def _function_label(call: Call | None) -> str:
    """``module.function`` of a library function, for the profile (data, never generated source)."""
    fn = call.fn if call is not None else None
    mod = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{mod.removeprefix('jitort.')}.{name}"


@dataclass
class ConcatBuffer:
    """One buffer that Concat outputs are channel prefixes of (``concat_in_place``): its local, shape
    (the widest Concat of its chain), the step before whose call it is allocated, and the last Concat
    step that takes a view of it (after which its local is dropped)."""

    local: str
    shape: list[int]
    alloc: int
    last: int


@dataclass
class InPlace:
    """Concat outputs written in place (``concat_in_place``), by step index: ``into`` a producer's
    (buffer, first channel, end channel); ``concats`` a Concat step's (buffer, its channels, the other
    inputs it still copies: value, first channel, end channel)."""

    buffers: list[ConcatBuffer]
    into: dict[int, tuple[int, int, int]]
    concats: dict[int, tuple[int, int, list[tuple[str, int, int]]]]

    def allocs(self, k: int) -> list[ConcatBuffer]:
        return [b for b in self.buffers if b.alloc == k]


def concat_in_place(g: Graph, steps: list[Step]) -> InPlace:
    """Concats on the channel axis of a batch of one (inception blocks, squeezenet's fire modules,
    densenet), static shapes, float32: each output is a channel prefix of a buffer allocated before
    the first step that writes into it. An input produced by a library call that can write into a
    given array (``writes_into``: Conv, pooling) and not a graph output is written straight into its
    channel range (for a batch of one a contiguous slice; its other consumers read that view, and no
    step writes into its inputs); an input that is an earlier such Concat's output
    (densenet: each layer's Concat extends the previous one) is already the buffer's prefix, when no
    other Concat extends it; the Concat copies only the other inputs. Anything else keeps the copying
    Concat."""
    producer = {o: k for k, s in enumerate(steps) for o in s.node.outputs if o}
    outputs = set(g.outputs)
    res = InPlace([], {}, {})
    extended: set[str] = set()
    for k, s in enumerate(steps):
        call = s.call
        if call is None or call.fn is not _CONCAT or len(s.node.outputs) != 1:
            continue
        t = g.type_of(s.node.outputs[0])
        if t.dtype is None or np.dtype(t.dtype) != np.float32 or not t.is_static() or len(t.shape) < 2 \
                or t.shape[0] != 1:
            continue
        rank = len(t.shape)
        axis = int(call.kwargs.get("axis", 1))
        if axis + (rank if axis < 0 else 0) != 1 or not all(isinstance(a, Ref) for a in call.args):
            continue
        spans, c0, ok = [], 0, True
        for a in call.args:
            it = g.type_of(a.name)
            if it.shape is None or not it.is_static() or len(it.shape) != rank:
                ok = False
                break
            spans.append((a.name, c0, c0 + int(it.shape[1])))
            c0 += int(it.shape[1])
        if not ok or c0 != t.shape[1]:
            continue
        first = spans[0][0]
        q = producer.get(first)
        if q in res.concats and first not in extended and first not in outputs:
            extended.add(first)  # the earlier Concat's output is this one's prefix already
            buf = res.concats[q][0]
            b = res.buffers[buf]
            b.shape[1] = max(b.shape[1], c0)
            b.last = k
            spans = spans[1:]
        else:
            buf = len(res.buffers)
            res.buffers.append(ConcatBuffer(f"_cat{buf}", [int(d) for d in t.shape], k, k))
        copies = []
        for name, a0, a1 in spans:
            p = producer.get(name)
            ps = steps[p] if p is not None else None
            if (ps is not None and ps.call is not None and getattr(ps.call.fn, "writes_into", False)
                    and name not in outputs and len(ps.node.outputs) == 1 and g.const(name) is None
                    and np.dtype(g.type_of(name).dtype) == np.float32 and p not in res.into):
                res.into[p] = (buf, a0, a1)
                res.buffers[buf].alloc = min(res.buffers[buf].alloc, p)
            else:
                copies.append((name, a0, a1))
        res.concats[k] = (buf, c0, copies)
    return res
