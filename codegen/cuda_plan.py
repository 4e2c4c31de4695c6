"""The CUDA plan: the plan emitter's CUDA target, for a graph partitioned across CUDA and CPU.

The steps, names, feed check and line map are the CPU plan's (``jitort.codegen.plan``); CPU nodes are
the CPU plan's lines. What this target adds:

* ``build`` uploads the constants CUDA kernels read (once), pre-compiles every kernel the plan
  launches (``cuda.jit`` on the GPU), and creates a pool of run contexts;
* ``run_on(device_out, *inputs)`` takes a context (one stream and one arena of device buffers) for
  the duration of the run. A CUDA library op is one launcher call, ``rows.softmax(ctx, (3,), t5,
  axis=-1, ...)``, which computes its grid from the shapes it is given; a fused elementwise group
  is launched inline, its collapsed loop sizes computed from the output shape; ``MemcpyFromHost`` /
  ``MemcpyToHost`` nodes are ``ctx.to_device`` / ``ctx.to_host``. Graph outputs come back as host
  arrays, or — ``device_out``, for IOBinding — as device arrays of their own (``ctx.detach``) where
  they were computed on the device;
* every device value lives in an arena slot: slots are assigned here by liveness (a value's slot is
  free again after its last read, and a view — Reshape & co. — keeps its base alive), and each
  slot's buffer is reused by the next run of the same shapes. The run waits for its stream before
  returning, so a context's buffers are never in flight when another run takes it; a run that
  raises drops its context.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jitort.codegen.broadcast import output_shape_source
from jitort.codegen.cuda import CudaKernel, fused_cuda_kernel
from jitort.codegen.names import keyword
from jitort.codegen.plan import PlanEmitter, PlanTarget, Step, is_fused
from jitort.codegen.source import IndentedBuffer, comment_safe, string_literal
from jitort.ir import Graph, Node
from jitort.kernels.cuda import ops
from jitort.kernels.cuda.call import CudaCall, Dev, HostRef
from jitort.kernels.registry import Ref
from jitort.passes.partition import CUDA, TO_DEVICE, TO_HOST, is_copy


@dataclass
class CudaStep:
    """A node the CUDA provider runs, lowered: a launcher call (``launch``), a fused elementwise
    kernel (``kernel``), or neither for a copy (``MemcpyFromHost`` / ``MemcpyToHost``)."""

    launch: CudaCall | None = None
    kernel: CudaKernel | None = None


class CudaTarget(PlanTarget):
    """The plan emitter's hooks for a graph partitioned across CUDA and CPU."""

    kind = "CUDA plan"
    profiled = False
    concat_in_place = False  # its steps run where the partition put them: no CPU producer writes into another's
    # launcher modules share their short names with CPU kernel families (gemm, rows, ...)
    module_prefixes = (("jitort.kernels.cuda.", "cu_"),)

    def __init__(self) -> None:
        self.build = IndentedBuffer()             # device constants and kernel warm-up
        self.dev_consts: dict[str, str] = {}      # const name / Dev id -> device local
        self.cuda_kernels: dict[str, CudaKernel] = {}
        self.fused_locals: dict[str, str] = {}
        self.warm: set[tuple[str, str]] = set()
        self.slots: dict[int, tuple[Any, ...]] = {}
        self.uses_errors = False

    # --- lowering ---------------------------------------------------------------------------------
    def lower(self, n: Node, g: Graph) -> Step:
        if n.provider != CUDA:
            return super().lower(n, g)
        if is_copy(n):
            return Step(n, device=CudaStep())
        if is_fused(n):
            return Step(n, device=CudaStep(kernel=fused_cuda_kernel(n, g)))
        return Step(n, device=CudaStep(launch=ops.lower(n, g)))

    # --- hooks ------------------------------------------------------------------------------------
    def imports(self) -> set[str]:
        return super().imports() | {"import jitort.kernels.cuda.runtime as rt"}

    def begin(self, em: PlanEmitter, steps: list[Step]) -> None:
        g = em.g
        self.slots = arena_slots(g, [s.node for s in steps])
        host_read_inputs = set(g.inputs) & set(g.outputs)
        for s in steps:
            if s.node.provider != CUDA:
                host_read_inputs.update(i for i in s.node.inputs if i in g.inputs)
        # IOBinding may hand device arrays to inputs the CPU reads: bring those to the host first.
        for i in sorted(host_read_inputs, key=g.inputs.index):
            loc = em.names.ref(i)
            em.body.writeline(f"{loc} = ctx.to_host({loc})")

    def where(self, step: Step) -> str:
        return "  [CUDA]" if step.node.provider == CUDA else "  [CPU]"

    def emit_device(self, em: PlanEmitter, k: int, step: Step) -> None:
        n, names, body = step.node, em.names, em.body
        cs: CudaStep = step.device
        if n.op_type == TO_DEVICE:
            s = self.slots.get(k, (None,))[0]
            body.writeline(f"{names.ref(n.outputs[0])} = ctx.to_device({names.ref(n.inputs[0])}, {s})")
        elif n.op_type == TO_HOST:
            src, dst = names.ref(n.inputs[0]), names.ref(n.outputs[0])
            if n.outputs[0] in em.g.outputs:
                body.writeline(f"{dst} = ctx.detach({src}) if device_out else ctx.to_host({src})")
            else:
                body.writeline(f"{dst} = ctx.to_host({src})")
        elif cs.kernel is not None:
            self._emit_fused(em, n, cs.kernel, self.slots.get(k, (None,) * len(n.outputs)))
        else:
            assert cs.launch is not None
            self._emit_launch(em, n, cs.launch, self.slots.get(k, (None,) * len(n.outputs)))

    def end(self, em: PlanEmitter) -> None:
        if self.uses_errors:
            em.body.writeline("ctx.check_errors()")
        em.body.writeline("ctx.synchronize()")

    def result(self, outputs: str) -> str:
        return f"_out = {outputs}"

    def write_build(self, em: PlanEmitter, buf: IndentedBuffer) -> None:
        buf.splice(self.build)
        for fn_src, key in sorted(self.warm):
            buf.writeline(f"rt.compiled({fn_src}, {string_literal(key)})")
        buf.writeline("pool = rt.ContextPool()")

    def write_run(self, em: PlanEmitter, buf: IndentedBuffer, args: str) -> None:
        buf.writeline(f"def run_on(device_out, {args}, _ro=None):" if args else "def run_on(device_out, _ro=None):")
        with buf.indent():
            buf.writeline("ctx = pool.acquire()")
            buf.writeline("s = ctx.stream")
            buf.writeline("try:")
            with buf.indent():
                buf.splice(em.body)
            buf.writeline("except BaseException:")
            with buf.indent():
                buf.writeline("raise  # a failed run's context (error flag, stream) is dropped, not reused")
            buf.writeline("pool.release(ctx)")
            buf.writeline("return _out")
        buf.writeline("")
        buf.writeline(f"def run({args}{', ' if args else ''}_ro=None):")
        with buf.indent():
            buf.writeline(f"return run_on(False{', ' + args if args else ''}, _ro=_ro)")

    def write_tail(self, buf: IndentedBuffer) -> None:
        buf.writeline("run.run_on = run_on")

    def kernel_sources(self) -> dict[str, str]:
        return {k.name: k.source for k in self.cuda_kernels.values()}

    # --- device references --------------------------------------------------------------------------
    def dev(self, em: PlanEmitter, name: str) -> str:
        """The device local of a value (constants are uploaded once, at build)."""
        if em.g.const(name) is None:
            return em.names.ref(name)
        if name not in self.dev_consts:
            host = em.names.ref(name)
            d = f"d{len(self.dev_consts)}"
            self.dev_consts[name] = d
            self.build.writeline(f"{d} = rt.upload({host})  # {comment_safe(name)} on the device")
        return self.dev_consts[name]

    def dev_array(self, em: PlanEmitter, obj: Dev) -> str:
        key = f"#{id(obj.data)}"
        if key not in self.dev_consts:
            host = em.names.hoist(obj.data, obj.label or key)
            d = f"d{len(self.dev_consts)}"
            self.dev_consts[key] = d
            self.build.writeline(f"{d} = rt.upload({host})  # {comment_safe(obj.label)}: "
                                 f"{obj.data.dtype}{list(obj.data.shape)}")
        return self.dev_consts[key]

    def literal(self, em: PlanEmitter, v: Any, label: str) -> str:
        """Source for a launcher argument: device values, host values, uploaded constants."""
        if isinstance(v, Ref):
            return self.dev(em, v.name)
        if isinstance(v, HostRef):
            return em.names.ref(v.name)
        if isinstance(v, Dev):
            return self.dev_array(em, v)
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            return "{" + ", ".join(f"{string_literal(k)}: {self.literal(em, x, label + '.' + k)}"
                                   for k, x in v.items()) + "}"
        if callable(v) and not isinstance(v, np.ndarray):
            return em.fn_ref(v, label)
        return em.names.literal(v, label)

    # --- device steps -------------------------------------------------------------------------------
    def _emit_launch(self, em: PlanEmitter, n: Node, call: CudaCall, slots: tuple[Any, ...]) -> None:
        for kfn, key in call.kernels:
            self.warm.add((em.fn_ref(kfn, kfn.__name__), key))
            if kfn.__name__ == "gather_axis":  # the one kernel that reports bad indices through the error flag
                self.uses_errors = True
        fn = em.fn_ref(call.fn, f"{n.name}.launcher")
        args = ["ctx", repr(tuple(slots))]
        args += [self.literal(em, a, n.name) if a is not None else "None" for a in call.args]
        args += [f"{keyword(key)}={self.literal(em, v, n.name + '.' + key)}" for key, v in call.kwargs.items()]
        outs = [em.names.ref(o) if o else "_" for o in n.outputs]
        em.body.writeline(f"{', '.join(outs)} = {fn}({', '.join(args)})")

    def _emit_fused(self, em: PlanEmitter, n: Node, ck: CudaKernel, slots: tuple[Any, ...]) -> None:
        """Allocate the outputs, compute the collapsed loop sizes from the output shape, launch."""
        names, body = em.names, em.body
        self.cuda_kernels.setdefault(ck.name, ck)
        if ck.name not in self.fused_locals:
            kl = f"k{len(self.fused_locals)}"
            self.fused_locals[ck.name] = kl
            em.imports.add(f"import {ck.name}")
            self.build.writeline(f"{kl} = rt.compiled_fused({ck.name}.{ck.name}, {ck.name}.SIGNATURE)")
        kl = self.fused_locals[ck.name]
        ins = [self.dev(em, i) for i in ck.inputs]
        shape = output_shape_source(ck.inputs, ck.patterns, ck.loop_shape, dict(zip(ck.inputs, ins)))
        body.writeline(f"_s = {shape}")
        outs = [names.ref(o) for o in ck.outputs]
        for o, name, s in zip(ck.outputs, outs, slots):
            body.writeline(f"{name} = ctx.alloc({s}, _s, {names.dtype(em.g.type_of(o).dtype)})")
        sizes = [" * ".join(f"_s[{d}]" for d in grp) if grp else "1" for grp in ck.dim_groups]
        body.writeline(f"_n = {outs[0]}.size")
        body.writeline("if _n:")
        with body.indent():
            body.writeline("_b, _t = rt.grid1d(_n)")
            flat = [f"rt.flat({x})" for x in ins + outs]
            body.writeline(f"{kl}[_b, _t, s]({', '.join(flat + sizes)})")


def arena_slots(g: Graph, nodes: list[Node]) -> dict[int, tuple[Any, ...]]:
    """Arena slots per step (``nodes[k]``) that allocates device memory: one slot per node output.

    A value's slot is free again after the last step reading the value or any view of it; unnamed
    and unread outputs get a slot that is free again right after their step. A step's outputs are
    given slots before the inputs it reads last are freed, so an output never aliases an input.
    """
    base: dict[str, str] = {}
    allocating: set[int] = set()
    for k, n in enumerate(nodes):
        if n.provider != CUDA or n.op_type == TO_HOST:
            continue
        entry = ops.cuda_op(n) if not is_copy(n) and not is_fused(n) else None
        if entry is not None and entry.view:
            base[n.outputs[0]] = base.get(n.inputs[0], n.inputs[0])
        elif entry is None or not entry.host_outputs:
            allocating.add(k)
    last: dict[str, int] = {}
    for k, n in enumerate(nodes):
        for i in n.inputs:
            if i:
                last[base.get(i, i)] = k
    for o in g.outputs:
        last[base.get(o, o)] = len(nodes)
    slots: dict[int, tuple[Any, ...]] = {}
    free: list[int] = []
    held: dict[str, int] = {}
    count = 0
    for k, n in enumerate(nodes):
        if k in allocating:
            mine, done = [], []
            for o in n.outputs:
                if free:
                    s = free.pop()
                else:
                    s, count = count, count + 1
                mine.append(s)
                if o and last.get(o, k) > k:
                    held[o] = s
                else:
                    done.append(s)
            slots[k] = tuple(mine)
            free.extend(done)
        for b, s in list(held.items()):
            if last.get(b, k) <= k:
                del held[b]
                free.append(s)
    return slots


def emit_cuda_plan(g: Graph, title: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(plan source, constants, kernel module sources) for a graph partitioned across CUDA and CPU
    (the interface the compiler has always called; ``jitort.codegen.emit`` is the general one)."""
    target = CudaTarget()
    steps = [target.lower(n, g) for n in g.nodes]
    e = PlanEmitter(g, target).emit(steps, title)
    return e.source, e.consts, e.kernel_sources


# --- what a CUDA plan launches, compiled ahead of time -------------------------------------------

def kernel_ptx(g: Graph, cc: tuple[int, int] = (9, 0), root: Any = None) -> list[dict[str, Any]]:
    """PTX of every kernel the CUDA plan of partitioned graph ``g`` launches, compiled with NVVM alone
    (no GPU, no driver): ``[{"kernel", "key", "nodes", "ptx"}]``, one entry per distinct kernel."""
    from jitort.codegen.cuda import compile_ptx as fused_ptx
    from jitort.kernels.cuda import runtime as rt  # imports numba.cuda: only when PTX is asked for
    found: dict[tuple[str, str], dict[str, Any]] = {}
    target = CudaTarget()
    for n in g.nodes:
        if n.provider != CUDA or is_copy(n):
            continue
        cs: CudaStep = target.lower(n, g).device
        if cs.kernel is not None:
            ck = cs.kernel
            e = found.get((ck.name, "fused"))
            if e is None:
                e = found[(ck.name, "fused")] = {"kernel": ck.name, "key": "fused", "nodes": [],
                                                 "ptx": fused_ptx(ck, cc, root)}
            e["nodes"].append(n.name)
            continue
        assert cs.launch is not None
        for fn, key in cs.launch.kernels:
            e = found.get((fn.__name__, key))
            if e is None:
                e = found[(fn.__name__, key)] = {"kernel": fn.__name__, "key": key, "nodes": [],
                                                 "ptx": rt.ptx(fn, key, cc)}
            e["nodes"].append(n.name)
    return list(found.values())
