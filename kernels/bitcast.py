"""BitCast: reinterpret each element's bits as another type of the same width."""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.arrays import contiguous


@op("BitCast", since=26)
def BitCast(x: np.ndarray, *, to: int) -> np.ndarray:
    from onnx import helper  # not at the top: onnx imports ml_dtypes (~0.7 s), for models that need it only
    out = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    if x.dtype == object or out == object:
        raise InvalidArgument("BitCast: strings have no fixed bit width")
    if x.dtype.itemsize != out.itemsize:
        raise InvalidArgument(f"BitCast: {x.dtype} ({x.dtype.itemsize * 8} bits) and {out} "
                              f"({out.itemsize * 8} bits) differ in width")
    return contiguous(contiguous(x).view(out).copy())
