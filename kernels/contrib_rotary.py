"""onnxruntime's RotaryEmbedding (com.microsoft): rotate the first ``rotary_embedding_dim`` features of
each head by the angle of its position (cos/sin caches [max_position, rotary_dim / 2]).

Non-interleaved (GPT-NeoX): halves ``x1 = x[:r/2]``, ``x2 = x[r/2:r]`` become ``x1 cos - x2 sin``,
``x2 cos + x1 sin``; interleaved (GPT-J): pairs ``(x[2i], x[2i+1])`` likewise. Features past the
rotary dim pass through. Input [B, S, N*H] or [B, N, S, H]; position_ids [B, S], or one start
offset (shape [1]) for positions ``offset + s``. One ``@njit`` kernel rotates every head row, with
numpy's float32 roundings (no contraction into FMAs): each product rounded, then the sum.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.contrib_infer import same_as_input
from jitort.kernels.registry import op

MS = "com.microsoft"


@njit(cache=True, nogil=True, error_model="numpy")
def _rotary(x, pos, cos, sin, interleaved, bnsh, out):  # type: ignore[no-untyped-def]
    """out = x rotated: x, out [B, S, N, H] ([B, N, S, H] when bnsh), pos [B or 1, S] rows of cos/sin
    [M, r/2]. -> 0, or 1 when a position is outside [0, M) (nothing written)."""
    B, d1, d2, H = x.shape
    S, N = (d2, d1) if bnsh else (d1, d2)
    half = cos.shape[1]
    for b in range(pos.shape[0]):
        for s in range(S):
            if pos[b, s] < 0 or pos[b, s] >= cos.shape[0]:
                return 1
    for b in range(B):
        pb = b if pos.shape[0] > 1 else 0
        for s in range(S):
            c, sn = cos[pos[pb, s]], sin[pos[pb, s]]
            for n in range(N):
                xr = x[b, n, s] if bnsh else x[b, s, n]
                yr = out[b, n, s] if bnsh else out[b, s, n]
                if interleaved:
                    for i in range(half):
                        u, v = xr[2 * i], xr[2 * i + 1]
                        yr[2 * i] = u * c[i] - v * sn[i]
                        yr[2 * i + 1] = v * c[i] + u * sn[i]
                else:
                    for i in range(half):
                        u, v = xr[i], xr[i + half]
                        yr[i] = u * c[i] - v * sn[i]
                        yr[i + half] = v * c[i] + u * sn[i]
                for i in range(2 * half, H):
                    yr[i] = xr[i]
    return 0


@op("RotaryEmbedding", since=1, domain=MS, infer=same_as_input)
def RotaryEmbedding(input: np.ndarray, position_ids: np.ndarray, cos_cache: np.ndarray, sin_cache: np.ndarray, *,
                    interleaved: int = 0, num_heads: int = 0, rotary_embedding_dim: int = 0,
                    is_packed_batching: int = 0, scale: float = 1.0) -> np.ndarray:
    name = "RotaryEmbedding"
    if is_packed_batching:
        raise OrtNotImplemented(f"jitort has no implementation for op '{name}' in domain '{MS}' at opset 1 with "
                                "is_packed_batching=1")
    if input.ndim not in (3, 4) or cos_cache.ndim != 2 or sin_cache.shape != cos_cache.shape:
        raise InvalidArgument(f"{name}: input {list(input.shape)} must be 3-D or 4-D and cos/sin caches "
                              f"{list(cos_cache.shape)}, {list(sin_cache.shape)} 2-D of one shape")
    half = cos_cache.shape[1]
    if input.ndim == 4:
        B, N, S, H = input.shape
    else:
        B, S, D = input.shape
        if num_heads <= 0 and rotary_embedding_dim:
            raise InvalidArgument(f"{name}: num_heads is needed with rotary_embedding_dim for a 3-D input")
        H = D // num_heads if num_heads > 0 else 2 * half
        N = D // H if H else 0
        if N * H != D:
            raise InvalidArgument(f"{name}: hidden size {D} is not num_heads x head size ({num_heads} x {H})")
    r = rotary_embedding_dim or H
    if r > H or r != 2 * half:
        raise InvalidArgument(f"{name}: rotary dim {r} must be twice the caches' {half} columns and at most the "
                              f"head size {H}")
    pid = position_ids.astype(np.int64, copy=False)
    if pid.size == 1 and pid.ndim <= 1:
        pos = (int(pid.reshape(-1)[0]) + np.arange(S, dtype=np.int64)).reshape(1, S)
    elif pid.shape == (B, S):
        pos = np.ascontiguousarray(pid)
    else:
        raise InvalidArgument(f"{name}: position_ids of shape {list(position_ids.shape)} must be [1] or [{B}, {S}]")
    dt = np.dtype(np.float32) if input.dtype == np.float16 else input.dtype
    x = np.ascontiguousarray(input, dt)
    x = x.reshape(B, S, N, H) if input.ndim == 3 else x
    out = np.empty(x.shape, dt)
    bad = _rotary(x, pos, np.ascontiguousarray(cos_cache, dt), np.ascontiguousarray(sin_cache, dt),
                  bool(interleaved), input.ndim == 4, out)
    if bad:
        raise InvalidArgument(f"{name}: position ids must be in [0, {cos_cache.shape[0]}), got "
                              f"[{int(pos.min())}, {int(pos.max())}]")
    return out.reshape(input.shape).astype(input.dtype, copy=False)
