"""MaxUnpool: the inverse of MaxPool with Indices, a scatter of the pooled values into zeros."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op


@op("MaxUnpool", since=9)
def MaxUnpool(X: np.ndarray, I: np.ndarray, output_shape: np.ndarray | None = None, *,  # noqa: E741
              kernel_shape: Sequence[int], pads: Sequence[int] | None = None,
              strides: Sequence[int] | None = None) -> np.ndarray:
    """MaxUnpool (opset 9, 11, 22): zeros, then Y.flat[I] = X (indices as MaxPool produces them)."""
    if X.ndim < 3 or X.ndim > 5:
        raise InvalidArgument(f"MaxUnpool: input rank must be 3..5, got {X.ndim}")
    if I.shape != X.shape:
        raise InvalidArgument(f"MaxUnpool: index tensor shape {list(I.shape)} must equal X shape {list(X.shape)}")
    r = X.ndim - 2
    k = [int(v) for v in kernel_shape]
    s = [int(v) for v in strides] if strides else [1] * r
    p = [int(v) for v in pads] if pads else [0] * (2 * r)
    shape = list(X.shape[:2]) + [(X.shape[2 + d] - 1) * s[d] - (p[d] + p[d + r]) + k[d] for d in range(r)]
    if any(v <= 0 for v in shape[2:]):
        raise InvalidArgument(f"MaxUnpool: computed output shape {shape} is not positive")
    if output_shape is not None:
        given = [int(v) for v in np.asarray(output_shape).reshape(-1)]
        if len(given) != X.ndim:
            raise InvalidArgument(f"MaxUnpool: output_shape must have {X.ndim} elements, got {len(given)}")
        if int(np.prod(given)) < int(np.prod(shape)):
            raise InvalidArgument(f"MaxUnpool: output_shape {given} is smaller than the minimum {shape}")
        shape = given
    out = np.zeros(int(np.prod(shape)), X.dtype)
    idx = np.asarray(I, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= out.size):
        raise InvalidArgument(f"MaxUnpool: index value out of bounds [0, {out.size})")
    out[idx] = X.reshape(-1)
    return out.reshape(shape)
