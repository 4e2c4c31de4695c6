"""Unique: the distinct elements (or slices along an axis) of a tensor, with first-occurrence
indices, inverse indices and counts."""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.arrays import contiguous


@op("Unique", since=11)
def Unique(x: np.ndarray, *, axis: int | None = None, sorted: int = 1, _nout: int = 1) -> tuple | np.ndarray:
    """``sorted=1``: ascending unique values; ``sorted=0``: in order of first occurrence. NaNs
    compare equal (one NaN entry)."""
    work = x
    if x.dtype.kind not in "biufcUSO":  # bfloat16 / float8 (ml_dtypes): exact in float32
        work = x.astype(np.float32)
    if axis is None:
        flat = work.reshape(-1)
        _, idx, inv, cnt = np.unique(flat, return_index=True, return_inverse=True, return_counts=True)
        src, ax = x.reshape(-1), 0
    else:
        ax = axis + x.ndim if axis < 0 else axis
        if not 0 <= ax < x.ndim:
            raise InvalidArgument(f"Unique: axis {axis} is out of range for rank {x.ndim}")
        _, idx, inv, cnt = np.unique(work, return_index=True, return_inverse=True, return_counts=True, axis=ax)
        src = x
    inv = inv.reshape(-1)
    if not sorted:
        order = np.argsort(idx, kind="stable")  # unique entries by first occurrence
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        idx, cnt, inv = idx[order], cnt[order], rank[inv]
    y = np.take(src, idx, axis=ax)
    outs = (contiguous(y), contiguous(idx.astype(np.int64)), contiguous(inv.astype(np.int64)),
            contiguous(cnt.astype(np.int64)))
    return outs[0] if _nout == 1 else outs[:_nout]
