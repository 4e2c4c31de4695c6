"""The names a generated plan uses: locals for values, hoisted constants, literals, dtypes.

Identifiers in a plan are jitort's own (``i<k>`` graph inputs, ``t<k>`` temporaries, ``c<k>``
constants bound from ``consts``); model text reaches the source only through ``string_literal`` and
``comment_safe`` (``jitort.codegen.source``).
"""
from __future__ import annotations

import keyword as keyword_module
import sys
from typing import Any, Callable

import numpy as np

from jitort.codegen.source import comment_safe, string_literal
from jitort.ir import Graph
from jitort.kernels.registry import Ref

_SIMPLE = (bool, int, float, str, type(None))


class PlanNames:
    """Plan locals of a graph's values and the constants the plan binds.

    ``local`` maps a value name to its local (graph inputs are ``i<k>`` from the start);
    ``consts`` maps a constant local to the object ``build(consts, ...)`` receives; ``const_lines``
    are the lines of ``build`` that bind them, in hoisting order."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.local: dict[str, str] = {}
        self.consts: dict[str, Any] = {}
        self.const_lines: list[str] = []
        for k, i in enumerate(g.inputs):
            self.local[i] = f"i{k}"

    def ref(self, name: str) -> str:
        """The local of value ``name``: an input, a temporary (named on first use), a constant."""
        if name in self.local:
            return self.local[name]
        c = self.g.const(name)
        if c is not None:
            return self.hoist(c, name)
        n = f"t{len(self.local)}"
        self.local[name] = n
        return n

    def hoist(self, obj: Any, label: str) -> str:
        """A constant local bound to ``obj`` (once per ``label``); the label goes into a comment."""
        if label in self.local:
            return self.local[label]
        n = f"c{len(self.consts)}"
        self.consts[n] = obj
        self.local[label] = n
        desc = f"{obj.dtype}{list(obj.shape)}" if isinstance(obj, np.ndarray) else type(obj).__name__
        self.const_lines.append(f"{n} = consts[{n!r}]  # {comment_safe(label)}: {desc}")
        return n

    def literal(self, v: Any, label: str) -> str:
        """Source for a call argument: a value's local, a literal, or a hoisted constant."""
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

    def dtype(self, dt: np.dtype | None) -> str:
        """Source for a dtype: ``np.<name>`` where numpy has it, else a hoisted constant."""
        dt = np.dtype(dt)
        if dt.name == "bool":
            return "np.bool_"
        if dt.kind in "biuf" and hasattr(np, dt.name):
            return f"np.{dt.name}"
        return self.hoist(dt, f"dtype {dt.name}")


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


def module_alias(fn: Callable[..., Any]) -> tuple[str, str] | None:
    """(module, name) when ``fn`` is importable as ``module.name`` (a module-level function), else
    None (the plan then binds it as a constant)."""
    mod = getattr(fn, "__module__", None)
    qn = getattr(fn, "__qualname__", "")
    if not mod or "." in qn or "<" in qn:
        return None
    if getattr(sys.modules.get(mod), qn, None) is not fn:
        return None
    return mod, qn


def as_storage(src: str, dt: np.dtype | None) -> str:
    """A kernel argument as the kernel takes it: 16-bit floats travel as their uint16 bits."""
    return f"{src}.view(np.uint16)" if np.dtype(dt).name in ("float16", "bfloat16") else src
