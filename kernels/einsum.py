"""Einsum (ai.onnx): the equation is parsed once per (equation, ranks) into a plan of diagonals,
one-sided sums and pairwise contractions, each contraction one ``bmm`` call (the batched BLAS core,
``kernels/batched_gemm.py``) on operands arranged so the common layouts need no copy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.batched_gemm import as_dtype, bmm, gemm_compute_dtype, same_dtype
from jitort.kernels.registry import op

# --- Einsum ---------------------------------------------------------------------------------------
# Labels are strings: a letter, or ".k" for the k-th ellipsis dimension counted from the right
# (so ellipses of different ranks line up right-aligned, as numpy broadcasts them).

def _parse_einsum(equation: str, ranks: tuple[int, ...]) -> tuple[list[list[str]], list[str]]:
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise InvalidArgument(f"Einsum: equation '{equation}' has {len(terms)} operand terms, "
                              f"got {len(ranks)} inputs")
    labels: list[list[str]] = []
    n_ell = 0
    for t, r in zip(terms, ranks):
        head, dots, tail = t.partition("...")
        if "." in head + tail or not (head + tail).isalpha() and head + tail:
            raise InvalidArgument(f"Einsum: invalid term '{t}' in equation '{equation}'")
        e = r - len(head) - len(tail)
        if (e != 0 and not dots) or e < 0:
            raise InvalidArgument(f"Einsum: term '{t}' of equation '{equation}' does not match an "
                                  f"input of rank {r}")
        n_ell = max(n_ell, e)
        labels.append(list(head) + [f".{e - j}" for j in range(e)] + list(tail))
    ell = [f".{n_ell - j}" for j in range(n_ell)]
    if arrow:
        head, dots, tail = rhs.partition("...")
        if "." in head + tail or (head + tail and not (head + tail).isalpha()):
            raise InvalidArgument(f"Einsum: invalid output term '{rhs}' in equation '{equation}'")
        out = list(head) + (ell if dots else []) + list(tail)
        seen = {x for ls in labels for x in ls}
        for x in head + tail:
            if x not in seen or out.count(x) > 1:
                raise InvalidArgument(f"Einsum: output label '{x}' of equation '{equation}' "
                                      f"{'repeats' if x in seen else 'is in no input'}")
    else:
        counts: dict[str, int] = {}
        for ls in labels:
            for x in ls:
                counts[x] = counts.get(x, 0) + 1
        out = ell + sorted(x for x, c in counts.items() if c == 1 and not x.startswith("."))
    return labels, out


@dataclass(frozen=True)
class _Arrange:
    """How one operand becomes a GEMM operand ``[*batch, p, q]``: optional transpose, then reshape.
    Index tuples are axes of the operand before the transpose."""

    perm: tuple[int, ...] | None
    trans: int
    batch: tuple[int, ...]
    p: tuple[int, ...]
    q: tuple[int, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:
        s = x.shape
        shape = tuple(s[i] for i in self.batch) + (math.prod(s[i] for i in self.p),
                                                    math.prod(s[i] for i in self.q))
        return (x if self.perm is None else x.transpose(self.perm)).reshape(shape)


@dataclass(frozen=True)
class _Pair:
    """Contract the first two operands: sum labels only one side has, then one batched GEMM."""

    sum_x: tuple[int, ...]
    sum_y: tuple[int, ...]
    k_pairs: tuple[tuple[int, int], ...]  # contraction axes (x, y) after the sums
    x: _Arrange
    y: _Arrange
    m: tuple[int, ...]  # axes of x / y whose sizes name the result's row / column dims
    n: tuple[int, ...]


@dataclass(frozen=True)
class _EinsumPlan:
    diagonals: tuple[tuple[tuple[int, int], ...], ...]  # per operand: axis pairs to take diagonals of
    pairs: tuple[_Pair, ...]
    final_sum: tuple[int, ...]
    final_perm: tuple[int, ...] | None


def _arrange(lx: list[str], batch: list[str], first: list[str], second: list[str]) -> _Arrange:
    """Operand with labels lx as [*batch, first, second]; read transposed in place when it already
    is [*batch, second, first] (BLAS takes the flag), transposed by a copy otherwise."""
    ix = {t: k for k, t in enumerate(lx)}
    b, f, sc = tuple(ix[t] for t in batch), tuple(ix[t] for t in first), tuple(ix[t] for t in second)
    if lx == batch + first + second:
        return _Arrange(None, 0, b, f, sc)
    if lx == batch + second + first:
        return _Arrange(None, 1, b, sc, f)
    return _Arrange(b + f + sc, 0, b, f, sc)


def _pair_plan(lx: list[str], ly: list[str], keep: set[str]) -> tuple[_Pair, list[str]]:
    """The grouping follows x's own label order (batch, rows, contraction) so the common
    transformer layouts need no copy: 'bhqd,bhkd->bhqk' is x as [bh, q, d] and y read transposed
    in place as [bh, k, d]."""
    sum_x = tuple(k for k, t in enumerate(lx) if t not in keep and t not in ly)
    sum_y = tuple(k for k, t in enumerate(ly) if t not in keep and t not in lx)
    lx, ly = [t for t in lx if t in keep or t in ly], [t for t in ly if t in keep or t in lx]
    batch = [t for t in lx if t in ly and t in keep]
    kk = [t for t in lx if t in ly and t not in keep]
    mm = [t for t in lx if t not in ly]
    nn = [t for t in ly if t not in lx]
    pair = _Pair(sum_x, sum_y, tuple((lx.index(t), ly.index(t)) for t in kk),
                 _arrange(lx, batch, mm, kk), _arrange(ly, batch, kk, nn),
                 tuple(lx.index(t) for t in mm), tuple(ly.index(t) for t in nn))
    return pair, batch + mm + nn


def _einsum_plan(equation: str, ranks: tuple[int, ...]) -> _EinsumPlan:
    key = (equation, ranks)
    plan = _EINSUM_PLANS.get(key)
    if plan is not None:
        return plan
    labels, out = _parse_einsum(equation, ranks)
    diagonals = []
    ops = []
    for lx in labels:
        steps = []
        while len(set(lx)) < len(lx):  # a repeated label ('ii', 'bii') takes the diagonal
            t = next(t for t in lx if lx.count(t) > 1)
            i = lx.index(t)
            j = lx.index(t, i + 1)
            steps.append((i, j))
            lx = [u for k, u in enumerate(lx) if k not in (i, j)] + [t]  # np.diagonal appends it
        diagonals.append(tuple(steps))
        ops.append(lx)
    want = set(out)
    pairs = []
    while len(ops) > 1:
        keep = want.union(*ops[2:])
        pair, lz = _pair_plan(ops[0], ops[1], keep)
        pairs.append(pair)
        ops = [lz] + ops[2:]
    lx = ops[0]
    final_sum = tuple(k for k, t in enumerate(lx) if t not in want)
    lx = [t for t in lx if t in want]
    perm = None if lx == out else tuple(lx.index(t) for t in out)
    plan = _EinsumPlan(tuple(diagonals), tuple(pairs), final_sum, perm)
    _EINSUM_PLANS[key] = plan
    return plan


_EINSUM_PLANS: dict[tuple[str, tuple[int, ...]], _EinsumPlan] = {}


def _contract(p: _Pair, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if p.sum_x:
        x = x.sum(axis=p.sum_x, dtype=x.dtype)
    if p.sum_y:
        y = y.sum(axis=p.sum_y, dtype=y.dtype)
    for i, j in p.k_pairs:  # a size-1 (broadcast) contraction dim: sum the other side over it
        if x.shape[i] != y.shape[j]:
            if x.shape[i] == 1:
                y = y.sum(axis=j, keepdims=True, dtype=y.dtype)
            elif y.shape[j] == 1:
                x = x.sum(axis=i, keepdims=True, dtype=x.dtype)
            else:
                raise InvalidArgument(f"Einsum: a contracted label has sizes {x.shape[i]} and {y.shape[j]}")
    z = bmm(p.x.apply(x), p.y.apply(y), p.x.trans, p.y.trans, "Einsum")
    return z.reshape(z.shape[:-2] + tuple(x.shape[i] for i in p.m) + tuple(y.shape[i] for i in p.n))


def _einsum(xs: Sequence[np.ndarray], equation: str) -> np.ndarray:
    plan = _einsum_plan(equation, tuple(x.ndim for x in xs))
    dt = same_dtype("Einsum", *xs)
    cd = gemm_compute_dtype(dt, "Einsum")
    ops = []
    for x, steps in zip(xs, plan.diagonals):
        x = as_dtype(x, cd)
        for i, j in steps:
            if x.shape[i] != x.shape[j]:
                raise InvalidArgument(f"Einsum: a repeated label has sizes {x.shape[i]} and {x.shape[j]}")
            x = np.diagonal(x, axis1=i, axis2=j)
        ops.append(x)
    for p in plan.pairs:
        ops = [_contract(p, ops[0], ops[1])] + ops[2:]
    x = ops[0]
    if plan.final_sum:
        x = x.sum(axis=plan.final_sum, dtype=x.dtype)
    if plan.final_perm is not None:
        x = x.transpose(plan.final_perm)
    y = np.asarray(x, order="C")
    if len(xs) == 1 and y.dtype == dt and np.may_share_memory(y, xs[0]):
        y = y.copy()  # 'ij->ij' (or a diagonal that happens to be contiguous): never alias an input
    return as_dtype(y, dt)


@op("Einsum", since=12)
def Einsum(*inputs: np.ndarray, equation: str) -> np.ndarray:
    if not inputs:
        raise InvalidArgument("Einsum: needs at least one input")
    return _einsum(inputs, equation)
