"""Det: determinants of square matrices in the last two axes (LAPACK LU through numpy, in
float64, cast back to the input type)."""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.arrays import contiguous


@op("Det", since=11)
def Det(x: np.ndarray) -> np.ndarray:
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise InvalidArgument(f"Det: input must be [..., M, M], got {list(x.shape)}")
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
        raise InvalidArgument(f"Det: input must be a float tensor, got {x.dtype}")
    return contiguous(np.asarray(np.linalg.det(x.astype(np.float64))).astype(x.dtype))
