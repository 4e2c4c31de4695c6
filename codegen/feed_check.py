"""``run_feed``: the plan's straight-line check of a feed dict before it runs the graph.

Names, dtypes, ranks, static dims, symbolic dims that must agree, C-contiguous writeable aligned
arrays: a feed that passes runs at once; anything else goes through ``slow_bind``, which converts
what it can and raises onnxruntime's error for what it cannot.
"""
from __future__ import annotations

from jitort.codegen.names import PlanNames
from jitort.codegen.source import IndentedBuffer, string_literal
from jitort.ir import Graph


def emit_feed_check(buf: IndentedBuffer, g: Graph, names: PlanNames, args: str) -> None:
    """Write ``run_feed(feed, _ro=None)`` (and its ``ndarray`` alias) into ``buf``; ``args`` is the
    source of ``run``'s positional arguments. May hoist dtypes into ``names``."""
    ins = [names.local[i] for i in g.inputs]
    conds: list[str] = []
    first_axis: dict[str, str] = {}
    for name, local in zip(g.inputs, ins):
        t = g.type_of(name)
        dt = names.dtype(t.dtype)
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
                cond = ["if (" + conds[0]] + ["and " + c for c in conds[1:]]
                cond[-1] += "):"
                buf.writeline(cond[0])
                with buf.indent(2):
                    buf.writelines(cond[1:])
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
