"""TensorScatter: write an update into a fixed-size cache at per-batch positions along an axis
(linear or circular), the KV-cache update of the attention ops."""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.arrays import contiguous


@op("TensorScatter", since=24)
def TensorScatter(past_cache: np.ndarray, update: np.ndarray, write_indices: np.ndarray | None = None, *,
                  mode: str = "linear", axis: int = -2) -> np.ndarray:
    if mode not in ("linear", "circular"):
        raise InvalidArgument(f"TensorScatter: mode must be 'linear' or 'circular', got {mode!r}")
    rank = past_cache.ndim
    ax = axis % rank if -rank <= axis < rank else -1
    if ax < 1 or update.ndim != rank:
        raise InvalidArgument(f"TensorScatter: axis {axis} must address a non-batch axis of rank {rank}, "
                              f"update rank {update.ndim}")
    for d in range(rank):
        if (d != ax and past_cache.shape[d] != update.shape[d]) or (d == ax and update.shape[d] > past_cache.shape[d]):
            raise InvalidArgument(f"TensorScatter: update {list(update.shape)} does not fit cache "
                                  f"{list(past_cache.shape)} on axis {d}")
    batch, cap, n = past_cache.shape[0], past_cache.shape[ax], update.shape[ax]
    starts = np.zeros(batch, np.int64) if write_indices is None else write_indices.astype(np.int64).reshape(-1)
    out = past_cache.copy()
    for b in range(batch):
        pos = starts[b] + np.arange(n)
        if mode == "circular":
            pos %= cap
        elif n and (pos[0] < 0 or pos[-1] >= cap):
            raise InvalidArgument(f"TensorScatter: batch {b} writes positions {pos[0]}..{pos[-1]} outside a "
                                  f"cache of {cap}")
        idx = [slice(None)] * (rank - 1)
        idx[ax - 1] = pos
        out[b][tuple(idx)] = update[b]
    return contiguous(out)
