"""Col2Im (18): sums column blocks [N, C * prod(block), L] back into an N-D image, the inverse of
im2col (overlapping blocks add up)."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit

from jitort import memory
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.registry import op

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def _col2im(x, idx, out):  # type: ignore[no-untyped-def]
    """x: [N, C, K, L] -> out: [N, C, S]; out[n, c, idx[k, l]] += x[n, c, k, l] where idx >= 0."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(out.shape[2]):
                out[n, c, i] = 0
            for k in range(x.shape[2]):
                for l in range(x.shape[3]):
                    j = idx[k, l]
                    if j >= 0:
                        out[n, c, j] += x[n, c, k, l]


@lru_cache(maxsize=64)
def _col2im_table(image: tuple[int, ...], block: tuple[int, ...], dil: tuple[int, ...], pads: tuple[int, ...],
                  strides: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Flat image index of every (kernel offset, block position), -1 where it falls in the padding."""
    k = len(image)
    nblocks = [(image[d] + pads[d] + pads[k + d] - dil[d] * (block[d] - 1) - 1) // strides[d] + 1 for d in range(k)]
    if any(b < 1 for b in nblocks):
        raise InvalidArgument(f"Col2Im: image_shape {list(image)} with block_shape {list(block)}, pads {list(pads)}, "
                              f"dilations {list(dil)} and strides {list(strides)} leaves no sliding block")
    kk = np.meshgrid(*[np.arange(b) for b in block], indexing="ij")
    ll = np.meshgrid(*[np.arange(b) for b in nblocks], indexing="ij")
    flat = np.zeros((int(np.prod(block)), int(np.prod(nblocks))), np.int64)
    valid = np.ones(flat.shape, bool)
    for d in range(k):
        pos = ll[d].reshape(1, -1) * strides[d] - pads[d] + kk[d].reshape(-1, 1) * dil[d]
        valid &= (pos >= 0) & (pos < image[d])
        flat = flat * image[d] + pos
    return np.where(valid, flat, -1), int(np.prod(nblocks))


@op("Col2Im", since=18)
def Col2Im(x: np.ndarray, image_shape: np.ndarray, block_shape: np.ndarray, *, dilations: list[int] | None = None,
           pads: list[int] | None = None, strides: list[int] | None = None) -> np.ndarray:
    """Sum column blocks [N, C * prod(block), L] back into an image [N, C, *image_shape] (N-D)."""
    image = tuple(int(v) for v in np.asarray(image_shape).reshape(-1))
    block = tuple(int(v) for v in np.asarray(block_shape).reshape(-1))
    k = len(image)
    if len(block) != k or k == 0:
        raise InvalidArgument(f"Col2Im: image_shape {list(image)} and block_shape {list(block)} must have the "
                              "same non-zero length")
    dil = tuple(dilations) if dilations else (1,) * k
    pad = tuple(pads) if pads else (0,) * (2 * k)
    st = tuple(strides) if strides else (1,) * k
    if len(dil) != k or len(pad) != 2 * k or len(st) != k:
        raise InvalidArgument(f"Col2Im: dilations/strides need {k} values and pads {2 * k}")
    if x.ndim != 3:
        raise InvalidArgument(f"Col2Im: input must be [N, C * prod(block_shape), L], got shape {x.shape}")
    table, L = _col2im_table(image, block, dil, pad, st)
    K = table.shape[0]
    if x.shape[1] % K or x.shape[2] != L:
        raise InvalidArgument(f"Col2Im: input shape {x.shape} does not match block_shape {list(block)} "
                              f"(dimension 1 divisible by {K}) and {L} sliding blocks (dimension 2)")
    if x.dtype.kind not in "iuf" and x.dtype.name != "bfloat16":
        raise OrtNotImplemented(f"Col2Im: dtype {x.dtype} is not supported by jitort")
    cdt = x.dtype if x.dtype.kind in "iu" or x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    N, C = x.shape[0], x.shape[1] // K
    out = np.empty(memory.check("Col2Im", (N, C, math.prod(image)), cdt), cdt)
    _col2im(x.astype(cdt, copy=False).reshape(N, C, K, L), table, out)
    return out.reshape((N, C) + image).astype(x.dtype, copy=False)
