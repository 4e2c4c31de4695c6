"""How control-flow kernels (If, Loop, Scan, SequenceMap: ``jitort.kernels.control``) compile their
bodies. The compiler sits above the kernels and imports them, so they must not import it: it installs
its graph compiler here when it is imported (``jitort.compiler``), before any lowering can run.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

_compiler: Callable[..., Any] | None = None


def install(compile_graph: Callable[..., Any]) -> None:
    """``compile_graph(g, providers, title, retype) -> jitort.compiled.Artifact``."""
    global _compiler
    _compiler = compile_graph


def compile_graph(g: Any, providers: Sequence[str], title: str, retype: bool = False) -> Any:
    """Compile a body graph into an unbound ``Artifact``; ``retype``: re-run type inference over it
    first (its inputs were given the dtypes and ranks of a call)."""
    if _compiler is None:
        raise RuntimeError("jitort.compiler was not imported: no graph compiler is installed")
    return _compiler(g, providers, title, retype)
