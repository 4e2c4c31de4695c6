"""jitort.allocator's aligned arrays, and the buffers GEMM kernels load whole vectors from."""
from __future__ import annotations

import numpy as np
import pytest

from jitort import allocator
from jitort.kernels import convgemm, gemm, threads


@pytest.mark.parametrize("shape", [0, 1, 7, (3, 5), (2, 3, 17)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.uint16])
def test_aligned_arrays(shape, dtype):
    for make in (allocator.aligned_empty, allocator.aligned_zeros):
        a = make(shape, dtype)
        assert (a.size == 0 or a.ctypes.data % allocator.ALIGN == 0) and a.flags.c_contiguous and a.dtype == dtype
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
    assert not allocator.aligned_zeros(shape, dtype).any()


def test_aligned_copies_only_when_needed():
    a = allocator.aligned_empty(64, np.float32)
    assert allocator.aligned(a) is a
    b = np.arange(65, dtype=np.float32)[1:]  # 4 bytes past an allocation's start: never aligned
    c = allocator.aligned(b)
    assert c is not b and allocator.is_aligned(c) and np.array_equal(c, b)
    t = np.arange(12, dtype=np.float32).reshape(3, 4).T
    assert np.array_equal(allocator.aligned(t), t) and allocator.aligned(t).flags.c_contiguous


def test_packed_weights_and_scratch_are_aligned():
    w = np.random.default_rng(0).standard_normal((37, 29)).astype(np.float32)
    assert allocator.is_aligned(gemm.pack_b(w))
    assert allocator.is_aligned(convgemm.pack_weights(w, 1))
    for n in (1, 1000, 100_000):
        assert allocator.is_aligned(threads.scratch(n, np.dtype(np.float32)))


def test_conv_gemm_on_a_misaligned_scratch_matches_numpy():
    """gemm_packed aligns its panels inside whatever scratch it gets (conv kernels pass sub-slices)."""
    rng = np.random.default_rng(1)
    M, K, N = 13, 300, 100
    w = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    ap = convgemm.pack_weights(w)[0]
    bias = np.zeros(M, np.float32)
    ga = convgemm.gemm_address(np.dtype(np.float32))
    want = w.astype(np.float64) @ b
    for skew in range(0, 16, 3):
        raw = np.empty(convgemm.BBLOCK + 16, np.float32)
        c = np.empty((M, N), np.float32)
        convgemm.gemm_at(ga, ap, 0, M, K, b, c, bias, 0, 1, np.float32(0), np.float32(0),
                         raw[skew:skew + convgemm.BBLOCK], None)
        np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4)
