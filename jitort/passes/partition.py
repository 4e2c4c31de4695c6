"""Assign each node to the first provider, in the session's priority order, that can run it, and insert
device copies where a value crosses between host and device memory.

Invariant after the pass: every node's ``provider`` names a provider in the list (CPU when nothing
else supports it); every input a CUDA node reads on the device is a constant or produced on the
device; every input a CPU node reads, every input a CUDA kernel declares as host memory (shapes,
axes, starts...), and every graph output is in host memory. Crossings are explicit nodes of domain
``jitort`` run by the CUDA provider: ``MemcpyFromHost`` (host -> device) and ``MemcpyToHost``
(device -> host), one per value and direction. A device-resident graph output keeps its name: its
producer writes ``<name>::cuda`` and a MemcpyToHost node produces ``<name>``.

Which inputs a provider reads in host memory (shape, axes, starts/ends tensors) and which outputs
are host tensors (Shape, Size) are the op's facts in the op table (``jitort.kernels.registry``).
Where values live: graph inputs in host memory; constants wherever they are read (the CUDA plan
uploads the ones CUDA kernels read, once); outputs of CPU nodes in host memory; outputs of CUDA
nodes on the device, except Shape/Size, whose outputs are host tensors. Integer-valued CUDA nodes
whose every consumer reads the result on the host (the Shape -> Gather -> Unsqueeze -> Concat
chains feeding a Reshape) move to the CPU — onnxruntime does the same — so shape arithmetic never
crosses the bus. Producers of values read inside a subgraph (If/Loop/Scan bodies run on the CPU)
stay on the CPU.

The pass never probes a device: whether a GPU is usable is the session's question (it drops
CUDAExecutionProvider, with a warning, when none is), so a partition can be computed, tested and
compiled to PTX on any machine. Every CPU fallback of a node the CUDA provider was asked to run is
noted in ``g.notes`` with its reason.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from jitort.ir import Graph, Node, TensorType, Value, toposort
from jitort.kernels import registry

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TO_DEVICE, TO_HOST = "MemcpyFromHost", "MemcpyToHost"
HOST, DEVICE, CONST, ANY = "host", "device", "const", "any"

SUPPORTS: dict[str, Callable[[Node, Graph], str | None]] = {CPU: lambda n, g: None}


def _cuda_supports(n: Node, g: Graph) -> str | None:
    from jitort.kernels.cuda.ops import supports  # the CUDA half of the op table (no device runtime)
    return supports(n, g)


SUPPORTS[CUDA] = _cuda_supports


def is_copy(n: Node) -> bool:
    return n.domain == "jitort" and n.op_type in (TO_DEVICE, TO_HOST)


def partition(g: Graph, providers: list[str]) -> Graph:
    for n in g.nodes:
        n.provider = CPU
        for p in providers:
            check = SUPPORTS.get(p)
            if check is None:
                continue
            why = check(n, g)
            if why is None:
                n.provider = p
                break
            if p != CPU:
                g.notes.append(f"{p}: {n.op_type} '{n.name}' runs on the CPU: {why}")
    if not any(n.provider == CUDA for n in g.nodes):
        return g
    _keep_subgraph_reads_on_cpu(g)
    _shape_arithmetic_on_cpu(g)
    return insert_copies(g)


# --- placement refinements -------------------------------------------------------------------

def _keep_subgraph_reads_on_cpu(g: Graph) -> None:
    reads = g.subgraph_reads()
    if not reads:
        return
    for n in g.nodes:
        if n.provider == CUDA and any(o in reads for o in n.outputs if o):
            n.provider = CPU
            g.notes.append(f"{CUDA}: {n.op_type} '{n.name}' runs on the CPU: a subgraph reads its output")


def _slot_location(n: Node, k: int) -> str:
    """Where node n reads its input k (the op table's host/meta inputs of its registration)."""
    if n.provider != CUDA:
        return HOST
    if is_copy(n):
        return HOST if n.op_type == TO_DEVICE else DEVICE
    d = registry.find(n.op_type, n.domain, n.version)
    if d is None:  # FusedElementwise
        return DEVICE
    if k in d.meta_inputs:
        return ANY
    return HOST if k in d.host_inputs else DEVICE


def _host_outputs(n: Node) -> bool:
    if n.provider != CUDA or is_copy(n):
        return n.provider != CUDA or n.op_type == TO_HOST
    d = registry.find(n.op_type, n.domain, n.version)
    return d is not None and d.host_outputs


def _shape_like(t: TensorType) -> bool:
    """An integer scalar or short vector of static size: what shape arithmetic computes."""
    if t.dtype is None or np.dtype(t.dtype).kind not in "iu" or t.shape is None or len(t.shape) > 1:
        return False
    return all(isinstance(d, int) and d <= 64 for d in t.shape)


def _shape_arithmetic_on_cpu(g: Graph) -> None:
    """Move integer-valued CUDA nodes whose results are only ever read on the host to the CPU."""
    consumers = g.consumers()
    outputs = set(g.outputs)
    changed = True
    while changed:
        changed = False
        for n in reversed(g.nodes):
            if n.provider != CUDA or _host_outputs(n):
                continue
            outs = [o for o in n.outputs if o]
            if not outs or not all(_shape_like(g.type_of(o)) for o in outs):
                continue
            reads = [(c, k) for o in outs for c in consumers.get(o, []) for k, i in enumerate(c.inputs) if i == o]
            if all(_slot_location(c, k) in (HOST, ANY) for c, k in reads) or (
                    not reads and all(o in outputs for o in outs)):
                n.provider = CPU
                changed = True
                g.notes.append(f"{CUDA}: {n.op_type} '{n.name}' runs on the CPU: its integer result is only "
                               "read on the host (shape arithmetic)")


# --- copies ------------------------------------------------------------------------------------

def _new_value(g: Graph, like: str, base: str) -> str:
    name = g.fresh_name(base)
    t = g.type_of(like)
    g.values[name] = Value(name, TensorType(t.dtype, t.shape))
    return name


def _rename(n: Node, old: str, new: str, outputs: bool = False) -> None:
    """Rename a value n reads (or writes), inside a fused group's body too (it names its operands)."""
    if outputs:
        n.outputs = [new if x == old else x for x in n.outputs]
    else:
        n.inputs = [new if x == old else x for x in n.inputs]
    for b in n.attrs.get("body", []) if n.domain == "jitort" else []:
        _rename(b, old, new, outputs)


def insert_copies(g: Graph) -> Graph:
    """Make every read find its value where it reads it (see the module docstring)."""
    loc: dict[str, str] = {i: HOST for i in g.inputs}
    for name, v in g.values.items():
        if v.const is not None:
            loc[name] = CONST
    for n in g.nodes:
        where = HOST if _host_outputs(n) else DEVICE
        for o in n.outputs:
            if o:
                loc[o] = where
    after: dict[int, list[Node]] = {}   # copies to insert after node index (-1: at the start)
    producer_index = {o: k for k, n in enumerate(g.nodes) for o in n.outputs if o}
    copies: dict[tuple[str, str], str] = {}

    def copy(value: str, to: str) -> str:
        key = (value, to)
        if key not in copies:
            suffix = "::cuda" if to == DEVICE else "::host"
            out = _new_value(g, value, value + suffix)
            op = TO_DEVICE if to == DEVICE else TO_HOST
            node = Node(op, [value], [out], {}, f"{op}({value})", "jitort", 1, CUDA)
            after.setdefault(producer_index.get(value, -1), []).append(node)
            loc[out] = to
            copies[key] = out
        return copies[key]

    # A graph output produced on the device keeps its name on the host side of a copy.
    for k, o in enumerate(g.outputs):
        if loc.get(o) != DEVICE:
            continue
        dev = g.fresh_name(o + "::cuda")
        g.values[dev] = Value(dev, TensorType(g.type_of(o).dtype, g.type_of(o).shape))
        p = producer_index[o]
        _rename(g.nodes[p], o, dev, outputs=True)
        for n in g.nodes:
            if o in n.inputs:
                _rename(n, o, dev)
        producer_index[dev] = p
        loc[dev] = DEVICE
        node = Node(TO_HOST, [dev], [o], {}, f"{TO_HOST}({o})", "jitort", 1, CUDA)
        after.setdefault(p, []).append(node)
        loc[o] = HOST
        copies[(dev, HOST)] = o

    for n in list(g.nodes):
        for k, i in enumerate(n.inputs):
            if not i:
                continue
            want, have = _slot_location(n, k), loc.get(i, HOST)
            if want == ANY or have == CONST or want == have:
                continue
            _rename(n, i, copy(i, want))
    nodes: list[Node] = list(after.get(-1, []))
    for k, n in enumerate(g.nodes):
        nodes.append(n)
        nodes.extend(after.get(k, []))
    g.nodes = toposort(nodes)
    return g
