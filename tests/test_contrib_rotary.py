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
