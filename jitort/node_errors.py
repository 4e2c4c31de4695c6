"""The error boundary of a run: whatever goes wrong inside a node becomes onnxruntime's exception class,
with onnxruntime's words and the node named.

onnxruntime reports a kernel's failure as ``Non-zero status code returned while running <Op> node.
Name:'<name>' Status Message: <message>``, nested for nodes inside If/Loop/Scan bodies. jitort's
kernels raise onnxruntime's classes without knowing their node; numpy and Numba raise their own
(``MemoryError``, ``ValueError: array is too big``, ``IndexError`` ...). :func:`at_node` finds the
failing plan step(s) from the traceback (every generated plan module carries a generated-line ->
node map, ``NODE_LINES``, see ``jitort.codegen.linemap``) and rebuilds the exception: jitort's
classes keep their class, allocation failures and every other internal exception become ``Fail``.
Node names appear as the plan's step comments print them (printable ASCII, escaped by
``jitort.codegen.source.comment_safe``).
"""
from __future__ import annotations

from types import TracebackType

from jitort.codegen.linemap import node_at
from jitort.errors import ALL_ERRORS, Fail

_PLAN_FUNCTIONS = ("run", "run_on")


def failing_steps(tb: TracebackType | None) -> list[tuple[str, str]]:
    """The plan steps (op, node name) a traceback passes through, outermost first (nested subgraph
    plans follow the If/Loop/Scan step that called them)."""
    steps = []
    while tb is not None:
        frame = tb.tb_frame
        # a generated module (jitort.cache.load_source_module marks it), in its run function
        if "__jitort_source__" in frame.f_globals and frame.f_code.co_name in _PLAN_FUNCTIONS:
            step = node_at(frame.f_globals, tb.tb_lineno)
            if step is not None:
                steps.append(step)
        tb = tb.tb_next
    return steps


def _message(e: BaseException) -> str:
    if type(e) in ALL_ERRORS:
        return str(e.args[0]) if e.args else ""
    text = str(e)
    if isinstance(e, MemoryError) or (isinstance(e, ValueError) and "array is too big" in text):
        return f"Failed to allocate memory: {text}"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def with_node(e: BaseException, steps: list[tuple[str, str]]) -> BaseException:
    """``e`` as onnxruntime reports it from inside ``steps`` (outermost first)."""
    msg = _message(e)
    for op, name in reversed(steps):
        msg = f"Non-zero status code returned while running {op} node. Name:'{name}' Status Message: {msg}"
    cls = type(e) if type(e) in ALL_ERRORS else Fail
    return cls(msg)


def at_compile(e: BaseException, op: str, name: str) -> BaseException | None:
    """The exception to raise instead of ``e``, raised while lowering node ``name`` (``op``) at
    session creation, as onnxruntime reports a node it cannot load: its class kept when it is one of
    onnxruntime's (``Fail`` otherwise), the node named once. None: re-raise ``e`` as it is."""
    msg = _message(e)
    if msg.startswith("Node (") or f"'{name}'" in msg:
        return None if type(e) in ALL_ERRORS else Fail(msg)
    return (type(e) if type(e) in ALL_ERRORS else Fail)(f"Node ({name}) Op ({op}) {msg}")


def at_creation(e: BaseException) -> BaseException | None:
    """The exception to raise instead of ``e`` escaping session creation: None for onnxruntime's
    classes (raised as they are), ``Fail`` naming the internal error otherwise."""
    if type(e) in ALL_ERRORS:
        return None
    return Fail(f"jitort could not compile the model: {_message(e)}")


def at_node(e: BaseException) -> BaseException | None:
    """The exception to raise instead of ``e``, caught at the run boundary; None to re-raise ``e``
    as it is (it did not come from a plan step: a feed check, say, or a run that was terminated)."""
    if getattr(e, "run_state", None) == "terminated":
        return None
    steps = failing_steps(e.__traceback__)
    return with_node(e, steps) if steps else None
