"""The CUDA plan: generated host-side source that runs a partitioned graph.

Emitted from the same structure as the CPU plan (``jitort.codegen.plan``): one straight-line
function, a comment naming the ONNX nodes above each step, the same feed check. What differs:

* ``build`` uploads the constants CUDA kernels read (once), pre-compiles every kernel the plan
  launches (``cuda.jit`` on the GPU), and creates a pool of run contexts;
* ``run_on(device_out, *inputs)`` takes a context (one stream and one arena of device buffers) for
  the duration of the run. A CUDA library op is one launcher call, ``rows.softmax(ctx, (3,), t5,
  axis=-1, ...)``, which computes its grid from the shapes it is given; a fused elementwise group
  is launched inline, its collapsed loop sizes computed from the output shape; CPU nodes are the
  CPU plan's lines; ``MemcpyFromHost`` / ``MemcpyToHost`` nodes are ``ctx.to_device`` /
  ``ctx.to_host``. Graph outputs come back as host arrays, or — ``device_out``, for IOBinding —
  as device arrays of their own (``ctx.detach``) where they were computed on the device;
* every device value lives in an arena slot: slots are assigned here by liveness (a value's slot is
  free again after its last read, and a view — Reshape & co. — keeps its base alive), and each
  slot's buffer is reused by the next run of the same shapes. The run waits for its stream before
  returning, so a context's buffers are never in flight when another run takes it; a run that
  raises drops its context.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jitort.codegen.cpu import FusedKernel, fused_kernel, output_shape_source
from jitort.codegen.cuda import CudaKernel, fused_cuda_kernel
from jitort.codegen.plan import (TERMINATE_CHECK, TERMINATE_IMPORT, _dtype_src, _emit_feed_check, _emit_fused,
                                 _module_alias, _Names, keyword, plan_header)
from jitort.codegen.source import IndentedBuffer, comment_safe, string_literal
from jitort.ir import Graph, Node
from jitort.kernels.registry import Call, Ref, lower_node
from jitort.passes.fusion import FUSED, broadcast_pattern
from jitort.passes.partition import CUDA, TO_DEVICE, TO_HOST, is_copy


def _is_fused(n: Node) -> bool:
    return n.op_type == FUSED and n.domain == "jitort"


class _Plan:
    def __init__(self, g: Graph) -> None:
        from jitort.kernels.cuda import ops
        self.g = g
        self.ops = ops
        self.names = _Names(g)
        self.imports: set[str] = {"import numpy as np", "import jitort.kernels.cuda.runtime as rt", TERMINATE_IMPORT}
        self.build = IndentedBuffer(1)           # device constants and kernel warm-up
        self.body = IndentedBuffer(3)            # inside run_on's try:
        self.dev_consts: dict[str, str] = {}     # const name / Dev id -> device local
        self.cpu_kernels: dict[str, FusedKernel] = {}
        self.cuda_kernels: dict[str, CudaKernel] = {}
        self.fused_locals: dict[str, str] = {}
        self.warm: set[tuple[str, str]] = set()
        self.uses_errors = False

    # --- references ----------------------------------------------------------------------------
    def dev(self, name: str) -> str:
        """The device local of a value (constants are uploaded once, at build)."""
        if self.g.const(name) is None:
            return self.names.ref(name)
        if name not in self.dev_consts:
            host = self.names.ref(name)
            d = f"d{len(self.dev_consts)}"
            self.dev_consts[name] = d
            self.build.writeline(f"{d} = rt.upload({host})  # {comment_safe(name)} on the device")
        return self.dev_consts[name]

    def dev_array(self, obj: Any) -> str:
        key = f"#{id(obj.data)}"
        if key not in self.dev_consts:
            host = self.names.hoist(obj.data, obj.label or key)
            d = f"d{len(self.dev_consts)}"
            self.dev_consts[key] = d
            self.build.writeline(f"{d} = rt.upload({host})  # {comment_safe(obj.label)}: "
                                 f"{obj.data.dtype}{list(obj.data.shape)}")
        return self.dev_consts[key]

    def fn_ref(self, fn: Any, label: str) -> str:
        alias = _module_alias(fn)
        if alias is None:
            return self.names.hoist(fn, label)
        mod, qn = alias
        short = mod.rsplit(".", 1)[-1]
        if mod.startswith("jitort.kernels.cuda."):
            short = "cu_" + short
        self.imports.add(f"import {mod} as {short}" if "." in mod else f"import {mod}")
        return f"{short}.{qn}"

    def literal(self, v: Any, label: str) -> str:
        ops = self.ops
        if isinstance(v, Ref):
            return self.dev(v.name)
        if isinstance(v, ops.HostRef):
            return self.names.ref(v.name)
        if isinstance(v, ops.Dev):
            return self.dev_array(v)
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            return "{" + ", ".join(f"{string_literal(k)}: {self.literal(x, label + '.' + k)}"
                                   for k, x in v.items()) + "}"
        if callable(v) and not isinstance(v, np.ndarray):
            return self.fn_ref(v, label)
        return self.names.literal(v, label)


def _liveness(g: Graph, plan: _Plan) -> dict[int, tuple[Any, ...]]:
    """Arena slots per step that allocates device memory: one slot per node output.

    A value's slot is free again after the last step reading the value or any view of it; unnamed
    and unread outputs get a slot that is free again right after their step. A step's outputs are
    given slots before the inputs it reads last are freed, so an output never aliases an input.
    """
    ops = plan.ops
    base: dict[str, str] = {}
    allocating: set[int] = set()
    for k, n in enumerate(g.nodes):
        if n.provider != CUDA or n.op_type == TO_HOST:
            continue
        entry = ops.cuda_op(n) if not is_copy(n) and not _is_fused(n) else None
        if entry is not None and entry.view:
            base[n.outputs[0]] = base.get(n.inputs[0], n.inputs[0])
        elif entry is None or not entry.host_outputs:
            allocating.add(k)
    last: dict[str, int] = {}
    for k, n in enumerate(g.nodes):
        for i in n.inputs:
            if i:
                last[base.get(i, i)] = k
    for o in g.outputs:
        last[base.get(o, o)] = len(g.nodes)
    slots: dict[int, tuple[Any, ...]] = {}
    free: list[int] = []
    held: dict[str, int] = {}
    count = 0
    for k, n in enumerate(g.nodes):
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
    """(plan source, constants, kernel module sources) for a graph partitioned across CUDA and CPU."""
    plan = _Plan(g)
    names, body = plan.names, plan.body
    slots = _liveness(g, plan)
    last_use: dict[str, int] = {}
    for k, n in enumerate(g.nodes):
        for i in n.inputs:
            if i:
                last_use[i] = k
    keep = set(g.outputs) | set(g.inputs)
    host_read_inputs = set(g.inputs) & set(g.outputs)
    for n in g.nodes:
        if n.provider != CUDA:
            host_read_inputs.update(i for i in n.inputs if i in g.inputs)
    # IOBinding may hand device arrays to inputs the CPU reads: bring those to the host first.
    for i in sorted(host_read_inputs, key=g.inputs.index):
        loc = names.ref(i)
        body.writeline(f"{loc} = ctx.to_host({loc})")
    for k, n in enumerate(g.nodes):
        where = "CUDA" if n.provider == CUDA else "CPU"
        body.writeline(TERMINATE_CHECK)
        if _is_fused(n):
            label = ", ".join(b.name for b in n.attrs["body"])
            body.writeline(f"# {len(n.attrs['body'])} fused: {comment_safe(label, 300)}  [{where}]")
        else:
            body.writeline(f"# {comment_safe(n.op_type)} {comment_safe(n.name)}  [{where}]")
        if n.provider != CUDA:
            _emit_cpu(plan, n)
        elif n.op_type == TO_DEVICE:
            s = slots.get(k, (None,))[0]
            body.writeline(f"{names.ref(n.outputs[0])} = ctx.to_device({names.ref(n.inputs[0])}, {s})")
        elif n.op_type == TO_HOST:
            src, dst = names.ref(n.inputs[0]), names.ref(n.outputs[0])
            if n.outputs[0] in g.outputs:
                body.writeline(f"{dst} = ctx.detach({src}) if device_out else ctx.to_host({src})")
            else:
                body.writeline(f"{dst} = ctx.to_host({src})")
        elif _is_fused(n):
            _emit_cuda_fused(plan, n, slots.get(k, (None,) * len(n.outputs)))
        else:
            _emit_cuda_call(plan, n, slots.get(k, (None,) * len(n.outputs)))
        dead = sorted({i for i in n.inputs if i and last_use.get(i) == k and i not in keep
                       and g.const(i) is None and i in names.local})
        if dead:
            body.writeline("del " + ", ".join(names.local[d] for d in dead))
    if plan.uses_errors:
        body.writeline("ctx.check_errors()")
    body.writeline("ctx.synchronize()")
    outs = [names.ref(o) + (".copy()" if o in g.inputs or g.const(o) is not None else "") for o in g.outputs]
    body.writeline(f"_out = ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
    args = ", ".join(names.local[i] for i in g.inputs)
    feed_check = IndentedBuffer(1)
    _emit_feed_check(feed_check, g, names, args)

    buf = IndentedBuffer()
    buf.writelines(plan_header("CUDA plan", title))
    for line in sorted(plan.imports):
        buf.writeline(line)
    buf.writeline("")
    buf.writeline("")
    buf.writeline("def build(consts, slow_bind):")
    with buf.indent():
        buf.writelines(names.const_lines)
        buf.lines.extend(plan.build.lines)
        for fn_src, key in sorted(plan.warm):
            buf.writeline(f"rt.compiled({fn_src}, {string_literal(key)})")
        buf.writeline("pool = rt.ContextPool()")
        buf.writeline("")
        buf.writeline(f"def run_on(device_out, {args}, _ro=None):" if args else "def run_on(device_out, _ro=None):")
        with buf.indent():
            buf.writeline("ctx = pool.acquire()")
            buf.writeline("s = ctx.stream")
            buf.writeline("try:")
            buf.lines.extend(body.lines)
            buf.writeline("except BaseException:")
            with buf.indent():
                buf.writeline("raise  # a failed run's context (error flag, stream) is dropped, not reused")
            buf.writeline("pool.release(ctx)")
            buf.writeline("return _out")
        buf.writeline("")
        buf.writeline(f"def run({args}{', ' if args else ''}_ro=None):")
        with buf.indent():
            buf.writeline(f"return run_on(False{', ' + args if args else ''}, _ro=_ro)")
        buf.writeline("")
        buf.lines.extend(feed_check.lines)
        buf.writeline("")
        buf.writeline("run.run_on = run_on")
        buf.writeline("return run, run_feed")
    sources = {k.name: k.source for k in plan.cpu_kernels.values()}
    sources.update({k.name: k.source for k in plan.cuda_kernels.values()})
    return buf.getvalue(), names.consts, sources


def _emit_cpu(plan: _Plan, n: Node) -> None:
    g, names, body = plan.g, plan.names, plan.body
    if _is_fused(n):
        fk = fused_kernel(n, g)
        plan.cpu_kernels.setdefault(fk.name, fk)
        _emit_fused(body, fk, names, g, plan.imports)
        return
    call: Call = lower_node(n, g)
    fn = plan.fn_ref(call.fn, f"{n.name}.fn")
    args = [names.literal(a, n.name) if a is not None else "None" for a in call.args]
    args += [f"{keyword(key)}={names.literal(v, n.name + '.' + key)}" for key, v in call.kwargs.items()]
    outs = [names.ref(o) if o else "_" for o in n.outputs]
    body.writeline(f"{', '.join(outs)} = {fn}({', '.join(args)})")


def _emit_cuda_call(plan: _Plan, n: Node, slots: tuple[Any, ...]) -> None:
    g, names, body = plan.g, plan.names, plan.body
    call = plan.ops.lower(n, g)
    for kfn, key in call.kernels:
        plan.warm.add((plan.fn_ref(kfn, kfn.__name__), key))
        if kfn.__name__ == "gather_axis":
            plan.uses_errors = True
    fn = plan.fn_ref(call.fn, f"{n.name}.launcher")
    args = ["ctx", repr(tuple(slots))]
    args += [plan.literal(a, n.name) if a is not None else "None" for a in call.args]
    args += [f"{keyword(key)}={plan.literal(v, n.name + '.' + key)}" for key, v in call.kwargs.items()]
    outs = [names.ref(o) if o else "_" for o in n.outputs]
    body.writeline(f"{', '.join(outs)} = {fn}({', '.join(args)})")


def _emit_cuda_fused(plan: _Plan, n: Node, slots: tuple[Any, ...]) -> None:
    """Allocate the outputs, compute the collapsed loop sizes from the output shape, launch."""
    g, names, body = plan.g, plan.names, plan.body
    ck = fused_cuda_kernel(n, g)
    plan.cuda_kernels.setdefault(ck.name, ck)
    if ck.name not in plan.fused_locals:
        kl = f"k{len(plan.fused_locals)}"
        plan.fused_locals[ck.name] = kl
        plan.imports.add(f"import {ck.name}")
        plan.build.writeline(f"{kl} = rt.compiled_fused({ck.name}.{ck.name}, {ck.name}.SIGNATURE)")
    kl = plan.fused_locals[ck.name]
    ins = [plan.dev(i) for i in ck.inputs]
    pats = [broadcast_pattern(g.type_of(i).shape, ck.loop_shape) for i in ck.inputs]
    shim = FusedKernel(ck.name, "", "flat", ck.inputs, ck.outputs, pats, ck.loop_shape)  # type: ignore[arg-type]
    shape = output_shape_source(shim, dict(zip(ck.inputs, ins)))
    body.writeline(f"_s = {shape}")
    outs = [names.ref(o) for o in ck.outputs]
    for o, name, s in zip(ck.outputs, outs, slots):
        body.writeline(f"{name} = ctx.alloc({s}, _s, {_dtype_src(g.type_of(o).dtype, names)})")
    sizes = [" * ".join(f"_s[{d}]" for d in grp) if grp else "1" for grp in ck.dim_groups]
    body.writeline(f"_n = {outs[0]}.size")
    body.writeline("if _n:")
    with body.indent():
        body.writeline("_b, _t = rt.grid1d(_n)")
        flat = [f"rt.flat({x})" for x in ins + outs]
        body.writeline(f"{kl}[_b, _t, s]({', '.join(flat + sizes)})")


# --- what a CUDA plan launches, compiled ahead of time -------------------------------------------

def kernel_ptx(g: Graph, cc: tuple[int, int] = (9, 0), root: Any = None) -> list[dict[str, Any]]:
    """PTX of every kernel the CUDA plan of partitioned graph ``g`` launches, compiled with NVVM alone
    (no GPU, no driver): ``[{"kernel", "key", "nodes", "ptx"}]``, one entry per distinct kernel."""
    from jitort.codegen.cuda import compile_ptx as fused_ptx
    from jitort.kernels.cuda import ops
    from jitort.kernels.cuda import runtime as rt
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for n in g.nodes:
        if n.provider != CUDA or is_copy(n):
            continue
        if _is_fused(n):
            ck = fused_cuda_kernel(n, g)
            e = found.get((ck.name, "fused"))
            if e is None:
                e = found[(ck.name, "fused")] = {"kernel": ck.name, "key": "fused", "nodes": [],
                                                 "ptx": fused_ptx(ck, cc, root)}
            e["nodes"].append(n.name)
            continue
        for fn, key in ops.lower(n, g).kernels:
            e = found.get((fn.__name__, key))
            if e is None:
                e = found[(fn.__name__, key)] = {"kernel": fn.__name__, "key": key, "nodes": [],
                                                 "ptx": rt.ptx(fn, key, cc)}
            e["nodes"].append(n.name)
    return list(found.values())
