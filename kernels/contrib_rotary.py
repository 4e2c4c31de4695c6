"""onnxruntime's RotaryEmbedding (com.microsoft): rotate the first ``rotary_embedding_dim`` features of
each head by the angle of its position (cos/sin caches [max_position, rotary_dim / 2]).

Non-interleaved (GPT-NeoX): halves ``x1 = x[:r/2]``, ``x2 = x[r/2:r]`` become ``x1 cos - x2 sin``,
``x2 cos + x1 sin``; interleaved (GPT-J): pairs ``(x[2i], x[2i+1])`` likewise. Features past the
rotary dim pass through. Input [B, S, N*H] or [B, N, S, H]; position_ids [B, S], or one start
offset (shape [1]) for positions ``offset + s``.
"""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.contrib_infer import same_as_input
from jitort.kernels.registry import op

MS = "com.microsoft"


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool) -> np.ndarray:
    """x [..., S, H] rotated by cos/sin [..., S, r/2] (broadcast over the leading dims)."""
    half = cos.shape[-1]
    out = x.copy()
    if interleaved:
        a, b = x[..., 0:2 * half:2], x[..., 1:2 * half:2]
        out[..., 0:2 * half:2] = a * cos - b * sin
        out[..., 1:2 * half:2] = b * cos + a * sin
    else:
        a, b = x[..., :half], x[..., half:2 * half]
        out[..., :half] = a * cos - b * sin
        out[..., half:2 * half] = b * cos + a * sin
    return out


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
        x = input
    else:
        B, S, D = input.shape
        if num_heads <= 0 and rotary_embedding_dim:
            raise InvalidArgument(f"{name}: num_heads is needed with rotary_embedding_dim for a 3-D input")
        H = D // num_heads if num_heads > 0 else 2 * half
        N = D // H if H else 0
        if N * H != D:
            raise InvalidArgument(f"{name}: hidden size {D} is not num_heads x head size ({num_heads} x {H})")
        x = input.reshape(B, S, N, H).transpose(0, 2, 1, 3)
    r = rotary_embedding_dim or H
    if r > H or r != 2 * half:
        raise InvalidArgument(f"{name}: rotary dim {r} must be twice the caches' {half} columns and at most the "
                              f"head size {H}")
    pid = position_ids.astype(np.int64)
    if pid.size == 1 and pid.ndim <= 1:
        pos = int(pid.reshape(-1)[0]) + np.arange(S).reshape(1, S)
    elif pid.shape == (B, S):
        pos = pid
    else:
        raise InvalidArgument(f"{name}: position_ids of shape {list(position_ids.shape)} must be [1] or [{B}, {S}]")
    if pos.size and (pos.min() < 0 or pos.max() >= cos_cache.shape[0]):
        raise InvalidArgument(f"{name}: position ids must be in [0, {cos_cache.shape[0]}), got "
                              f"[{int(pos.min())}, {int(pos.max())}]")
    dt = np.float32 if input.dtype == np.float16 else input.dtype
    cos = cos_cache.astype(dt)[pos][:, None]  # [B or 1, 1, S, half]
    sin = sin_cache.astype(dt)[pos][:, None]
    y = rotate(x.astype(dt, copy=False), cos, sin, bool(interleaved)).astype(input.dtype, copy=False)
    if input.ndim == 3:
        y = y.transpose(0, 2, 1, 3).reshape(B, S, N * H)
    return np.ascontiguousarray(y)
