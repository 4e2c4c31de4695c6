"""Pooling geometry shared by the CPU and CUDA pooling kernels and RoiPool: attribute checks
(``pool_attrs``), output size and padding (``pool_geometry``, onnxruntime's rules), the geometry
array the kernels read (``geometry_array``), the compute dtype and the max identity (``lowest``).

Output sizes follow onnxruntime 1.31, measured against it: with ceil_mode, a last window that
would start inside the end padding is dropped (onnx's shape inference does not do that, so its
static shape can be one larger than the run-time one). auto_pad SAME_* computes the padding from
the undilated kernel, as onnxruntime does.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented

MAX, AVG, LP = 0, 1, 2  # the pooling kinds the kernels take


def trunc_div(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero), as onnxruntime's conv/pool attribute code divides
    (shared with kernels/conv_setup.py)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


@lru_cache(maxsize=1024)
def pool_geometry(op_name: str, in_sp: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                  dilations: tuple[int, ...], pads: tuple[int, ...], auto_pad: str, ceil_mode: int
                  ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(output dims, begin pads, end pads) of a windowed pooling."""
    r = len(in_sp)
    out, begin, end = [], [], []
    for d in range(r):
        i, k, s, dl = in_sp[d], kernel[d], strides[d], dilations[d]
        ph, pt = pads[d], pads[d + r]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            need = (trunc_div(i + s - 1, s) - 1) * s + k - i
            ph = trunc_div(need + 1, 2) if auto_pad == "SAME_LOWER" else trunc_div(need, 2)
            pt = need - ph
        elif auto_pad == "VALID":
            ph = pt = 0
        elif auto_pad not in ("NOTSET", ""):
            raise InvalidArgument(f"{op_name}: auto_pad '{auto_pad}' is not one of NOTSET, SAME_UPPER, "
                                  "SAME_LOWER, VALID")
        num = np.float32(i + ph + pt - dl * (k - 1) - 1) / np.float32(s)
        o = int(np.ceil(num) if ceil_mode else num) + 1
        if ceil_mode and (o - 1) * s >= i + ph:
            o -= 1
        if o <= 0:
            raise InvalidArgument(f"{op_name}: input spatial shape {list(in_sp)} is too small for kernel "
                                  f"{list(kernel)} with strides {list(strides)}, dilations {list(dilations)} and "
                                  f"pads {list(pads)}")
        out.append(o)
        begin.append(ph)
        end.append(pt)
    return tuple(out), tuple(begin), tuple(end)


def _pad3(v: Sequence[int], fill: int) -> tuple[int, ...]:
    v = tuple(int(t) for t in v)
    return (fill,) * (3 - len(v)) + v


def as_planes4(x: np.ndarray) -> np.ndarray:
    """[N, C, *sp] -> [N*C, D, H, W] (a view)."""
    sp = x.shape[2:]
    return x.reshape((x.shape[0] * x.shape[1],) + (1,) * (3 - len(sp)) + sp)


def pool_attrs(op_name: str, x: np.ndarray, kernel_shape: Sequence[int] | None, strides: Sequence[int] | None,
          dilations: Sequence[int] | None, pads: Sequence[int] | None, check_pads: bool = True
          ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    r = x.ndim - 2
    if x.ndim < 3:
        raise InvalidArgument(f"{op_name}: input must have rank >= 3, got shape {list(x.shape)}")
    if r > 3:
        raise OrtNotImplemented(f"{op_name}: jitort supports 1-D, 2-D and 3-D pooling, got input rank {x.ndim}")
    if not kernel_shape or len(kernel_shape) != r:
        raise InvalidArgument(f"{op_name}: kernel_shape {kernel_shape} does not match the input's {r} spatial dims")
    k = tuple(int(v) for v in kernel_shape)
    s = tuple(int(v) for v in strides) if strides else (1,) * r
    dl = tuple(int(v) for v in dilations) if dilations else (1,) * r
    p = tuple(int(v) for v in pads) if pads else (0,) * (2 * r)
    if len(s) != r or len(dl) != r or len(p) != 2 * r:
        raise InvalidArgument(f"{op_name}: strides {list(s)}, dilations {list(dl)} or pads {list(p)} do not match "
                              f"kernel_shape {list(k)}")
    if any(v <= 0 for v in k + s + dl):
        raise InvalidArgument(f"{op_name}: kernel_shape, strides and dilations must be positive")
    if check_pads and any(p[d] >= k[d] or p[d + r] >= k[d] for d in range(r)):
        raise InvalidArgument(f"{op_name}: Pad should be smaller than kernel (pads {list(p)}, kernel {list(k)})")
    return k, s, dl, p


def geometry_array(k: tuple[int, ...], s: tuple[int, ...], dl: tuple[int, ...], begin: tuple[int, ...],
         end: tuple[int, ...]) -> np.ndarray:
    return np.array(_pad3(k, 1) + _pad3(s, 1) + _pad3(dl, 1) + _pad3(begin, 0) + _pad3(end, 0), np.int64)


_FLOAT_CD = {np.dtype(np.float32): np.dtype(np.float32), np.dtype(np.float64): np.dtype(np.float64),
             np.dtype(np.float16): np.dtype(np.float32)}


def pool_compute_dtype(op_name: str, dt: np.dtype, ints: bool = False) -> np.dtype:
    dt = np.dtype(dt)
    if dt in _FLOAT_CD:
        return _FLOAT_CD[dt]
    if dt.name == "bfloat16":
        return np.dtype(np.float32)
    if ints and dt in (np.int8, np.uint8):
        return dt
    raise OrtNotImplemented(f"{op_name}: jitort does not support input dtype {dt}")


def lowest(dt: np.dtype) -> Any:
    return np.finfo(dt).min if dt.kind == "f" else np.iinfo(dt).min
