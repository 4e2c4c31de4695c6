"""RotaryEmbedding (com.microsoft) vs onnxruntime: interleaved or not, 3-D and 4-D inputs, partial
rotary dims, position ids per token or one start offset, float16."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from oracle import assert_close, make_model, rand, run_ort

B, S, N, H, MAXPOS = 2, 5, 2, 8, 16
GRID = [
    # (rank, interleaved, rotary_dim, position form, dtype)
    (3, 0, 0, "per_token", np.float32),
    (3, 1, 0, "per_token", np.float32),
    (4, 0, 0, "offset", np.float32),
    (4, 1, 0, "per_token", np.float32),
    (3, 0, 4, "offset", np.float32),
    (3, 1, 4, "per_token", np.float32),
    (3, 0, 0, "per_token", np.float16),
]


@pytest.mark.parametrize("rank,interleaved,rdim,pos,dtype", GRID)
def test_rotary_embedding(rank, interleaved, rdim, pos, dtype):
    r = rdim or H
    x = rand((B, S, N * H) if rank == 3 else (B, N, S, H), dtype, seed=1)
    ang = np.arange(MAXPOS)[:, None] * (1.0 / 10000 ** (np.arange(r // 2) / (r // 2)))[None]
    inits = {"cos": np.cos(ang).astype(dtype), "sin": np.sin(ang).astype(dtype)}
    p = np.array([3], np.int64) if pos == "offset" else np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]], np.int64)
    attrs = {"interleaved": interleaved}
    if rank == 3:
        attrs["num_heads"] = N
    if rdim:
        attrs["rotary_embedding_dim"] = rdim
    node = helper.make_node("RotaryEmbedding", ["x", "p", "cos", "sin"], ["y"], domain="com.microsoft", **attrs)
    feeds = {"x": x, "p": p}
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y"], inits,
                   extra_opsets={"com.microsoft": 1})
    tol = 2e-3 if dtype == np.float16 else 1e-5
    assert_close(ort.InferenceSession(m.SerializeToString()).run(None, feeds), run_ort(m, feeds), tol, tol)


def test_rotary_positions_and_bits():
    """Positions outside the caches are onnxruntime's InvalidArgument; the kernel's float32 results
    are numpy's formula bit for bit (each product rounded, then the sum: no FMA), batch-broadcast
    offset and 4-D input included."""
    from jitort.capi.onnxruntime_pybind11_state import InvalidArgument
    from jitort.kernels.contrib_rotary import RotaryEmbedding
    ang = np.arange(MAXPOS)[:, None] * (1.0 / 10000 ** (np.arange(H // 2) / (H // 2)))[None]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    x = rand((B, N, S, H), np.float32, seed=2)
    for interleaved in (0, 1):
        got = RotaryEmbedding(x, np.array([2], np.int64), cos, sin, interleaved=interleaved)
        c, s = cos[2:2 + S][None, None], sin[2:2 + S][None, None]
        a, b = (x[..., 0::2], x[..., 1::2]) if interleaved else (x[..., :H // 2], x[..., H // 2:])
        want = np.empty_like(x)
        lo, hi = (want[..., 0::2], want[..., 1::2]) if interleaved else (want[..., :H // 2], want[..., H // 2:])
        lo[...], hi[...] = a * c - b * s, b * c + a * s
        np.testing.assert_array_equal(got, want)
    for p in (np.array([MAXPOS - S + 1], np.int64), np.array([[0, 1, 2, 3, 4], [-1, 0, 1, 2, 3]], np.int64)):
        with pytest.raises(InvalidArgument, match="position ids"):
            RotaryEmbedding(x, p, cos, sin)
