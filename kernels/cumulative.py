"""CumProd: cumulative product along an axis (inclusive or exclusive, forward or reversed), in
the input's own type as the spec's accumulation is."""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.arrays import contiguous


@op("CumProd", since=26)
def CumProd(x: np.ndarray, axis: np.ndarray, *, exclusive: int = 0, reverse: int = 0) -> np.ndarray:
    a = np.asarray(axis)
    if a.size != 1:
        raise InvalidArgument(f"CumProd: axis must hold one element, got shape {list(a.shape)}")
    ax = int(a.reshape(-1)[0])
    if not -x.ndim <= ax < max(x.ndim, 1):
        raise InvalidArgument(f"CumProd: axis {ax} is out of range for rank {x.ndim}")
    ax %= max(x.ndim, 1)
    work = x.astype(np.float32) if x.dtype in (np.float16,) or x.dtype.name == "bfloat16" else x
    if reverse:
        work = np.flip(work, ax)
    y = np.cumprod(work, axis=ax, dtype=work.dtype)
    if exclusive:
        y = np.roll(y, 1, axis=ax)
        idx = [slice(None)] * x.ndim
        idx[ax] = 0
        y[tuple(idx)] = 1
    if reverse:
        y = np.flip(y, ax)
    return contiguous(y.astype(x.dtype))
