"""``njit_one``: an ``@njit`` whose calls from other jitted code share one compiled signature.

Numba compiles a callee once per distinct argument *type tuple* its callers pass, and inside
jitted code a constant argument is typed ``Literal[int](0)`` and a slice of a C-contiguous array
may be 'C' or 'A' depending on how it was cut. A GEMM called as ``gemm_packed(w, 0, ...)`` from one
kernel and ``gemm_packed(w, ao, ...)`` from another compiled twice, and again for every
C-vs-'A' view combination: light_resnet50's cold start compiled ``gemm_packed`` five times
(1.4 s each, and again inside every caller's module).

The dispatcher here canonicalises the argument types of calls from jitted code before Numba looks
for an overload: literals become their plain type, and the arrays named in ``any_layout`` become
layout 'A'. Callers then resolve to the one canonical overload and Numba casts their arguments to
it (a literal to its type, a 'C' array to 'A': no copy). Use it for helpers whose code does not
depend on a literal's value (Numba does not prune branches on literal arguments anyway; a branch
on ``x is None`` is what it prunes) or, for ``any_layout``, on contiguity: an 'A' array's loops are
not vectorised, so it suits code that indexes through pointers and strides. Calls from Python are
unchanged.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from numba.core import types
from numba.core.registry import CPUDispatcher


def _canon(t: Any, any_layout: bool) -> Any:
    if isinstance(t, types.BooleanLiteral):
        return t  # a flag that picks a code path: its specialisation compiles only that path
    t = types.unliteral(t)
    if any_layout and isinstance(t, types.Array) and t.layout != "A":
        return t.copy(layout="A")
    return t


class _OneSignature(CPUDispatcher):  # type: ignore[misc]
    any_layout: frozenset[int] = frozenset()  # positions of the arguments typed layout 'A'

    def get_call_template(self, args, kws):  # type: ignore[no-untyped-def]
        _, args = self._compiler.fold_argument_types(args, kws)
        return super().get_call_template(tuple(_canon(a, i in self.any_layout) for i, a in enumerate(args)), {})


def njit_one(*, any_layout: tuple[str, ...] = (), cache: bool = False,
             **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@njit(cache=..., **options)`` with canonical signatures for jitted callers (see module
    doc); the array arguments named in ``any_layout`` are typed layout 'A'."""
    def deco(fn: Callable[..., Any]) -> Any:
        params = list(inspect.signature(fn).parameters)
        disp = _OneSignature(py_func=fn, locals={}, targetoptions=dict(options, nopython=True, boundscheck=None))
        disp.any_layout = frozenset(params.index(n) for n in any_layout)
        if cache:
            disp.enable_caching()
        return disp
    return deco
