"""TopK (1, 10, 11): the k largest or smallest elements along an axis, and their indices."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.reduce_math import is_half
from jitort.kernels.registry import op

_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy")

# onnxruntime's algorithm choice is reproduced so results match it exactly, ties and NaN included:
# k == 1 a linear scan; small k a binary heap (its HeapifyIthPosition, unsorted output in heap
# order); otherwise a selection, here numpy's stable argsort by (value, index). Ties go to the lower
# index. NaN orders as onnxruntime 1.32 orders it: above every number (+inf included), NaNs equal
# to each other, so largest=1 returns NaNs first and largest=0 returns them last (1.31 compared with
# plain < and >, which let a NaN in the first position stick).

@njit(inline="always")
def _gt(v: Any, w: Any) -> Any:
    # v > w in the order where NaN is above every number (``x != x`` is False for integers)
    return v > w or (v != v and w == w)


@njit(inline="always")
def _better(v: Any, w: Any, a: Any, b: Any, largest: Any) -> Any:
    # the comparator: value strictly better, or equal value (NaN equals NaN) and lower index
    better = _gt(v, w) if largest else _gt(w, v)
    return better or (not _gt(v, w) and not _gt(w, v) and a < b)


@njit(inline="always")  # inlined: a call costs more than the work (array refcounting)
def _heapify(heap, i, k, row, largest):  # type: ignore[no-untyped-def]
    while True:
        left = 2 * i + 1
        right = left + 1
        if right < k:
            hi, hl, hr = heap[i], heap[left], heap[right]
            i_replaces_left = _better(row[hi], row[hl], hi, hl, largest)
            if i_replaces_left and _better(row[hr], row[hl], hr, hl, largest):
                heap[i], heap[left] = hl, hi
                i = left
            elif i_replaces_left or _better(row[hi], row[hr], hi, hr, largest):
                heap[i], heap[right] = hr, hi
                i = right
            else:
                break
        elif left < k and _better(row[heap[i]], row[heap[left]], heap[i], heap[left], largest):
            heap[i], heap[left] = heap[left], heap[i]
            i = left
        else:
            break


@njit(**_JIT)
def _topk_rows(x, values, indices, largest, sorted_):  # type: ignore[no-untyped-def]
    N, R = x.shape
    k = values.shape[1]
    heap = np.empty(k, np.int64)
    for n in range(N):
        row = x[n]
        if k == 1:
            best = row[0]
            bi = 0
            for r in range(1, R):
                v = row[r]
                if _gt(v, best) if largest else _gt(best, v):
                    best = v
                    bi = r
            values[n, 0] = best
            indices[n, 0] = bi
            continue
        for l in range(k):
            heap[k - l - 1] = l
            _heapify(heap, k - l - 1, k, row, largest)
        top = row[heap[0]]
        for r in range(k, R):
            if _gt(row[r], top) if largest else _gt(top, row[r]):
                heap[0] = r
                _heapify(heap, 0, k, row, largest)
                top = row[heap[0]]
        if sorted_:
            for l in range(k):
                idx = heap[0]
                values[n, k - l - 1] = row[idx]
                indices[n, k - l - 1] = idx
                heap[0] = heap[k - l - 1]
                _heapify(heap, 0, k - l - 1, row, largest)
        else:
            for l in range(k):
                values[n, l] = row[heap[l]]
                indices[n, l] = heap[l]


def _topk_run(x: np.ndarray, k: int, axis: int, largest: int, sorted_: int) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim == 0:
        raise InvalidArgument("TopK: the input must have rank >= 1, got a scalar")
    if not -x.ndim <= axis < x.ndim:
        raise InvalidArgument(f"TopK: axis {axis} is out of range for a tensor of rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    R = x.shape[axis]
    if k < 0 or k > R:
        raise InvalidArgument(f"TopK: k argument [{k}] should not be greater than specified axis dim value "
                              f"[{R}]" if k > R else f"TopK: k must be >= 0, got {k}")
    dt = x.dtype
    out_shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
    if k == 0 or x.size == 0:
        return np.empty(out_shape, dt), np.empty(out_shape, np.int64)
    xc = x.astype(np.float32) if is_half(dt) else x
    if xc.dtype.kind not in "fiu":
        raise OrtNotImplemented(f"TopK: input dtype {dt} is not supported")
    last = axis == x.ndim - 1
    rows = (xc if last else np.moveaxis(xc, axis, -1)).reshape(-1, R)  # a copy when axis is not last
    if k == 1 or k < 4 or math.log2(k) / math.log2(R) < 0.725:
        values = np.empty((rows.shape[0], k), xc.dtype)
        indices = np.empty((rows.shape[0], k), np.int64)
        _topk_rows(np.ascontiguousarray(rows), values, indices, bool(largest), bool(sorted_))
    else:
        # a stable ascending sort of a key that puts the better value first; NaN is the largest value
        if not largest:
            indices = np.argsort(rows, axis=1, kind="stable")[:, :k]  # numpy sorts NaN last
        elif xc.dtype.kind == "f":
            indices = np.lexsort((-rows, ~np.isnan(rows)), axis=1)[:, :k]  # NaN first, then descending
        else:
            indices = np.argsort(~rows, axis=1, kind="stable")[:, :k]
        values = np.take_along_axis(rows, indices, axis=1)
    moved = x.shape[:axis] + x.shape[axis + 1:] + (k,)
    values, indices = values.reshape(moved), indices.reshape(moved)
    if not last:
        values, indices = np.moveaxis(values, -1, axis), np.moveaxis(indices, -1, axis)
    return np.ascontiguousarray(values, dtype=dt), np.ascontiguousarray(indices)


def _k_input(K: np.ndarray | None) -> int:
    if K is None or K.size != 1 or K.ndim > 1 or K.dtype.kind not in "iu":
        raise InvalidArgument("TopK: 'K' must be a 1-D int64 tensor with one element, got "
                              f"{None if K is None else (K.dtype, list(K.shape))}")
    return int(K.reshape(-1)[0])


@op("TopK", since=1)
def TopK_1(X: np.ndarray, *, k: int, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    return _topk_run(X, k, axis, 1, 1)


@op("TopK", since=10)
def TopK_10(X: np.ndarray, K: np.ndarray, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    return _topk_run(X, _k_input(K), axis, 1, 1)


@op("TopK", since=11)
def TopK(X: np.ndarray, K: np.ndarray, *, axis: int = -1, largest: int = 1, sorted: int = 1
         ) -> tuple[np.ndarray, np.ndarray]:
    return _topk_run(X, _k_input(K), axis, largest, sorted)
