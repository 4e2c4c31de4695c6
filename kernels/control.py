"""Control flow: If, Loop, Scan, each running compiled subgraphs.

At import every node with graph attributes gets its subgraphs' free variables (outer-scope names
they use but do not define, nested subgraphs included) appended to its inputs, so the passes see
those uses. The ``lower`` hooks here compile each subgraph (the compiler's ``compile_graph``, reached through
``kernels.subgraph``)
into a :class:`SubPlan`: its inputs are the body's formal inputs followed by the free variables it
needs at run time (constant ones are baked into the body, where they fold). The run-time ops call
the SubPlan per branch / iteration.

A SubPlan pickles without its loaded plan (the compiled-model cache stores it with the outer
plan's constants) and binds on first use.
"""
from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jitort import run_state
from jitort.arrays import contiguous
from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, TensorType
from jitort.kernels import subgraph
from jitort.kernels.registry import Call, Ref, op

CPU = "CPUExecutionProvider"


def free_names(g: Graph) -> list[str]:
    """Names ``g`` uses (nested subgraphs included) that it neither takes as input nor defines."""
    defined = set(g.inputs) | {k for k, v in g.values.items() if v.const is not None}
    defined |= {o for n in g.nodes for o in n.outputs if o}
    out: dict[str, None] = {}
    for n in g.nodes:
        for i in n.inputs:
            if i and i not in defined:
                out[i] = None
        for sub in _subgraphs(n):
            for f in free_names(sub):
                if f not in defined:
                    out[f] = None
    for o in g.outputs:
        if o not in defined:
            out[o] = None
    return list(out)


def _subgraphs(n: Node) -> list[Graph]:
    subs: list[Graph] = []
    for a in n.attrs.values():
        if isinstance(a, Graph):
            subs.append(a)
        elif isinstance(a, list):
            subs.extend(x for x in a if isinstance(x, Graph))
    return subs


def _rank_unknown(t: TensorType | None) -> bool:
    return t is None or t.dtype is None or t.shape is None


class SubPlan:
    """A compiled subgraph: ``plan(*formal, *free)`` -> tuple of outputs.

    ``free`` is the node's whole tail of free variables; ``pick`` selects those this body needs at
    run time. ``checks`` holds (formal index, static shape) pairs verified on each call: a body
    compiled for one shape must never silently run another.
    """

    def __init__(self, compiled: Any, n_formal: int, pick: list[int], checks: list[tuple[int, tuple]],
                 generic: Graph | None = None) -> None:
        self.compiled = compiled
        self.n_formal = n_formal
        self.pick = pick
        self.checks = checks
        self.generic = generic  # a body whose formal inputs have no rank: compiled per call signature
        self._specialized: dict[tuple, Callable[..., tuple]] = {}
        self._run: Callable[..., tuple] | None = None
        self._lock = threading.Lock()
        self.root: Path | None = None  # the cache root of the session that binds it (set_cache_root)
        self._index()

    def set_cache_root(self, root: Path | None) -> None:
        """Called by ``Compiled.bind``: this body's modules go where the enclosing plan's went."""
        self.root = root

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_run"] = None
        state["_lock"] = None
        state["_specialized"] = {}
        state["root"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._index()  # (a SubPlan pickled before these attributes existed has none)

    def _index(self) -> None:
        """What a call passes on: ``all_free`` when the body takes the node's whole tail of free
        variables in order (the arguments go as they are), else the positions ``take`` picks."""
        self.all_free = self.pick == list(range(len(self.pick)))
        self.take = tuple(range(self.n_formal)) + tuple(self.n_formal + k for k in self.pick)

    def _bind(self) -> Callable[..., tuple]:
        with self._lock:
            if self._run is None:
                def no_feed(feed: dict) -> list:
                    raise Fail("a subgraph plan takes positional inputs only")
                self._run, _ = self.compiled.bind(no_feed, self.root)
            return self._run

    def _specialize(self, args: tuple) -> Callable[..., tuple]:
        """The body compiled for the dtypes and ranks of this call's formal inputs (dims symbolic)."""
        key = tuple((a.dtype.str, a.ndim) if isinstance(a, np.ndarray) else type(a).__name__
                    for a in args[:self.n_formal])
        run = self._specialized.get(key)
        if run is None:
            assert self.generic is not None
            g = copy.deepcopy(self.generic)
            for k, (name, a) in enumerate(zip(g.inputs, args[:self.n_formal])):
                if isinstance(a, np.ndarray) and _rank_unknown(g.type_of(name)):
                    g.value(name).type = TensorType(a.dtype, tuple(f"?s{k}_{j}" for j in range(a.ndim)))
            compiled = subgraph.compile_graph(g, [CPU], title=g.name or "subgraph", retype=True)

            def no_feed(feed: dict) -> list:
                raise Fail("a subgraph plan takes positional inputs only")
            with self._lock:
                run = self._specialized.setdefault(key, compiled.bind(no_feed, self.root)[0])
        return run

    def __call__(self, *args: Any) -> tuple:
        n = self.n_formal
        ro = run_state.current()  # each branch / iteration polls the run's terminate flag
        if ro is not None and ro.terminate:
            run_state.terminated()
        if self.generic is not None:
            run = self._specialize(args)
            return run(*args[:n], *[args[n + k] for k in self.pick], _ro=ro)
        run = self._run or self._bind()
        for k, shape in self.checks:
            a = args[k]
            if isinstance(a, np.ndarray) and a.shape != shape and (a.ndim != len(shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(shape, a.shape))):
                raise OrtNotImplemented(f"a subgraph was compiled for input {k} of shape {list(shape)} but got "
                                        f"{list(a.shape)} (shape-changing loop state is not supported)")
        if self.all_free and len(args) == n + len(self.pick):
            return run(*args, _ro=ro)
        return run(*[args[k] for k in self.take], _ro=ro)


def compile_body(sub: Graph, outer: Graph, free: Sequence[str], formal_types: Sequence[TensorType | None] = (),
                 title: str = "") -> SubPlan:
    """Compile subgraph ``sub`` of a node whose free-variable inputs are ``free`` (in ``outer``)."""
    sub = copy.deepcopy(sub)
    for name, t in zip(sub.inputs, formal_types):
        cur = sub.value(name).type
        if t is not None and (cur.dtype is None or cur.shape is None):
            sub.value(name).type = TensorType(cur.dtype if cur.dtype is not None else t.dtype,
                                              cur.shape if cur.shape is not None else t.shape)
    need = set(free_names(sub))
    pick: list[int] = []
    runtime: list[str] = []
    for k, f in enumerate(free):
        if not f or f not in need:
            continue
        v = sub.value(f)
        ot = outer.type_of(f)
        v.type = copy.deepcopy(ot) if ot.dtype is not None or v.type.dtype is None else v.type
        c = outer.const(f)
        if c is not None:
            v.const = c
        else:
            pick.append(k)
            runtime.append(f)
    n_formal = len(sub.inputs)
    checks = [(k, tuple(sub.type_of(i).shape)) for k, i in enumerate(sub.inputs)
              if sub.type_of(i).shape is not None and any(isinstance(d, int) for d in sub.type_of(i).shape)]
    sub.inputs = list(sub.inputs) + runtime
    sub.name = title or sub.name or "subgraph"
    if any(_rank_unknown(sub.type_of(i)) for i in sub.inputs[:n_formal]):
        return SubPlan(None, n_formal, pick, checks, generic=sub)  # compiled per call signature
    compiled = subgraph.compile_graph(sub, [CPU], title=sub.name)
    compiled.graph = None  # the IR is not needed at run time; keeps the pickled plan small
    return SubPlan(compiled, n_formal, pick, checks)


def _kw(node: Node, g: Graph, n_inputs: int) -> dict[str, Any]:
    return {"n_inputs": n_inputs, "_nout": len(node.outputs),
            "_dtypes": tuple(g.type_of(o).dtype if o else None for o in node.outputs),
            "_shapes": tuple(g.type_of(o).shape if o else None for o in node.outputs)}


def _args(node: Node) -> list[Any]:
    return [Ref(i) if i else None for i in node.inputs]


# --- If ------------------------------------------------------------------------------------------

def _lower_if(node: Node, g: Graph) -> Call:
    free = node.inputs[1:]
    then_p = compile_body(node.attrs["then_branch"], g, free, title=f"{node.name}.then_branch")
    else_p = compile_body(node.attrs["else_branch"], g, free, title=f"{node.name}.else_branch")
    return Call(If, _args(node), {"then_branch": then_p, "else_branch": else_p, "_nout": len(node.outputs)})


@op("If", since=1, lower=_lower_if)
def If(cond: np.ndarray, *free: Any, then_branch: SubPlan, else_branch: SubPlan, _nout: int = 1) -> Any:
    c = cond if type(cond) is np.ndarray else np.asarray(cond)
    if c.size != 1:
        raise InvalidArgument(f"If: cond must hold one element, got shape {list(c.shape)}")
    outs = (then_branch if c.item() else else_branch)(*free)
    if len(outs) != _nout:
        raise Fail(f"If: the branch produced {len(outs)} outputs, the node has {_nout}")
    return outs[0] if _nout == 1 else tuple(outs)


# --- Loop ----------------------------------------------------------------------------------------

def _lower_loop(node: Node, g: Graph) -> Call:
    body: Graph = node.attrs["body"]
    n_in = len(body.inputs)
    carried = node.inputs[2:n_in]
    types: list[TensorType | None] = [TensorType(np.dtype(np.int64), ()), TensorType(np.dtype(np.bool_), ())]
    types += [g.type_of(c) if c else None for c in carried]
    plan = compile_body(body, g, node.inputs[n_in:], types, title=f"{node.name}.body")
    return Call(Loop, _args(node), {"body": plan, **_kw(node, g, n_in)})


def _empty_scan(dtype: Any, shape: Any) -> np.ndarray:
    rest = tuple(shape[1:]) if shape is not None and all(isinstance(d, int) for d in shape[1:]) else ()
    return np.zeros((0, *rest), dtype if dtype is not None else np.float32)


@op("Loop", since=1, lower=_lower_loop, halts=False)  # its trip count may be unbounded
def Loop(M: np.ndarray | None, cond: np.ndarray | None, *rest: Any, body: SubPlan, n_inputs: int,
         _nout: int = 1, _dtypes: tuple = (), _shapes: tuple = ()) -> Any:
    n_carried = n_inputs - 2
    state = list(rest[:n_carried])
    free = rest[n_carried:]
    trips = None if M is None else int(np.asarray(M).reshape(-1)[0])
    go = True if cond is None else bool(np.asarray(cond).reshape(-1)[0])
    n_scan = _nout - n_carried
    scans: list[list[Any]] = [[] for _ in range(n_scan)]
    i = 0
    while go and (trips is None or i < trips):
        outs = body(np.array(i, np.int64), np.array(go), *state, *free)
        if cond is not None:
            c = outs[0]
            go = bool((c if type(c) is np.ndarray else np.asarray(c)).reshape(-1)[0])
        state = outs[1:1 + n_carried]
        for j in range(n_scan):
            scans[j].append(outs[1 + n_carried + j])
        i += 1
    results: list[Any] = list(state)
    for j in range(n_scan):
        k = n_carried + j
        if scans[j]:
            results.append(contiguous(np.stack(scans[j])))
        else:
            results.append(_empty_scan(_dtypes[k] if k < len(_dtypes) else None,
                                       _shapes[k] if k < len(_shapes) else None))
    return results[0] if _nout == 1 else tuple(results)


# --- Scan ----------------------------------------------------------------------------------------

def _drop_axis(t: TensorType, axis: int) -> TensorType:
    if t.shape is None:
        return TensorType(t.dtype, None)
    ax = axis + len(t.shape) if axis < 0 else axis
    return TensorType(t.dtype, tuple(d for k, d in enumerate(t.shape) if k != ax))


def _lower_scan(node: Node, g: Graph) -> Call:
    body: Graph = node.attrs["body"]
    m = int(node.attrs["num_scan_inputs"])
    n_body = len(body.inputs)
    if node.version < 9:
        n_in = 1 + n_body
        ins = node.inputs[1:n_in]
        types = [_drop_axis(g.type_of(i), 0) if i else None for i in ins]
        types = types[:n_body - m] + [_drop_axis(t, 0) if t is not None else None for t in types[n_body - m:]]
    else:
        n_in = n_body
        ins = node.inputs[:n_in]
        axes = list(node.attrs.get("scan_input_axes") or [0] * m)
        types = [g.type_of(i) if i else None for i in ins[:n_body - m]]
        types += [_drop_axis(g.type_of(i), a) for i, a in zip(ins[n_body - m:], axes)]
    plan = compile_body(body, g, node.inputs[n_in:], types, title=f"{node.name}.body")
    fn = Scan if node.version >= 9 else Scan8
    return Call(fn, _args(node), {"body": plan, "num_scan_inputs": m, **{
        k: node.attrs[k] for k in ("scan_input_axes", "scan_input_directions", "scan_output_axes",
                                   "scan_output_directions", "directions") if k in node.attrs},
        **_kw(node, g, n_in)})


def _run_scan(body: SubPlan, states: list[Any], xs: Sequence[np.ndarray], free: Sequence[Any], in_axes: list[int],
              in_dirs: list[int], n_out_scan: int) -> tuple[list[Any], list[list[np.ndarray]]]:
    lengths = {x.shape[a] for x, a in zip(xs, in_axes)}
    if len(lengths) != 1:
        raise InvalidArgument(f"Scan: scan inputs disagree on the sequence length: {sorted(lengths)}")
    n = lengths.pop()
    outs: list[list[np.ndarray]] = [[] for _ in range(n_out_scan)]
    for t in range(n):
        sl = [np.take(x, n - 1 - t if d else t, axis=a) for x, a, d in zip(xs, in_axes, in_dirs)]
        res = body(*states, *[contiguous(s) for s in sl], *free)
        states = list(res[:len(states)])
        for j in range(n_out_scan):
            outs[j].append(res[len(states) + j])
    return states, outs


def _stack(parts: list[np.ndarray], axis: int, reverse: bool, dtype: Any, shape: Any) -> np.ndarray:
    if not parts:
        return _empty_scan(dtype, shape)
    if reverse:
        parts = parts[::-1]
    ax = axis + parts[0].ndim + 1 if axis < 0 else axis
    return contiguous(np.stack(parts, axis=ax))


@op("Scan", since=9, lower=_lower_scan)
def Scan(*args: Any, body: SubPlan, num_scan_inputs: int, n_inputs: int, scan_input_axes: list | None = None,
         scan_input_directions: list | None = None, scan_output_axes: list | None = None,
         scan_output_directions: list | None = None, _nout: int = 1, _dtypes: tuple = (),
         _shapes: tuple = ()) -> Any:
    m = num_scan_inputs
    n_state = n_inputs - m
    states, xs, free = list(args[:n_state]), args[n_state:n_inputs], args[n_inputs:]
    in_axes = [a + x.ndim if a < 0 else a for a, x in zip(scan_input_axes or [0] * m, xs)]
    in_dirs = list(scan_input_directions or [0] * m)
    k = _nout - n_state
    states, outs = _run_scan(body, states, xs, free, in_axes, in_dirs, k)
    out_axes = list(scan_output_axes or [0] * k)
    out_dirs = list(scan_output_directions or [0] * k)
    res = list(states) + [_stack(outs[j], out_axes[j], bool(out_dirs[j]), _dtypes[n_state + j] if _dtypes else None,
                                 _shapes[n_state + j] if _shapes else None) for j in range(k)]
    return res[0] if _nout == 1 else tuple(res)


@op("Scan", since=8, lower=_lower_scan)
def Scan8(sequence_lens: np.ndarray | None, *args: Any, body: SubPlan, num_scan_inputs: int, n_inputs: int,
          directions: list | None = None, _nout: int = 1, _dtypes: tuple = (), _shapes: tuple = ()) -> Any:
    """Scan-8: a leading batch axis on every state and scan input, scan axis 1, optional lengths."""
    m = num_scan_inputs
    n_state = n_inputs - 1 - m
    states, xs, free = args[:n_state], args[n_state:n_inputs - 1], args[n_inputs - 1:]
    batch = xs[0].shape[0]
    k = _nout - n_state
    dirs = list(directions or [0] * m)
    out_states: list[list[np.ndarray]] = [[] for _ in range(n_state)]
    out_scans: list[list[np.ndarray]] = [[] for _ in range(k)]
    for b in range(batch):
        n = xs[0].shape[1] if sequence_lens is None else int(sequence_lens[b])
        sb = [contiguous(np.array(s[b])) for s in states]
        xb = [contiguous(np.array(x[b, :n])) for x in xs]
        st, outs = _run_scan(body, sb, xb, free, [0] * m, dirs, k)
        for j in range(n_state):
            out_states[j].append(st[j])
        for j in range(k):
            out_scans[j].append(_stack(outs[j], 0, False, _dtypes[n_state + j] if _dtypes else None, None))
    res: list[np.ndarray] = [contiguous(np.stack(s)) for s in out_states]
    for j in range(k):
        parts = out_scans[j]
        longest = max(p.shape[0] for p in parts)
        padded = [np.concatenate([p, np.zeros((longest - p.shape[0], *p.shape[1:]), p.dtype)]) for p in parts]
        res.append(contiguous(np.stack(padded)))
    return res[0] if _nout == 1 else tuple(res)


def lower_with_bodies(node: Node, g: Graph, fn: Callable[..., Any], formal_counts: dict[str, Any]) -> Call:
    """SequenceMap-style lowering: one ``body`` whose formal inputs are the node's leading inputs."""
    body: Graph = node.attrs["body"]
    n_in = len(body.inputs)
    ins = node.inputs[:n_in]
    types: list[TensorType | None] = [None] * n_in
    for k, i in enumerate(ins):
        t = g.type_of(i) if i else None
        if t is not None and t.dtype is not None:  # a tensor input is passed whole
            types[k] = t
    plan = compile_body(body, g, node.inputs[n_in:], types, title=f"{node.name}.body")
    return Call(fn, _args(node), {"body": plan, "n_additional": n_in - 1, "_nout": len(node.outputs)})
