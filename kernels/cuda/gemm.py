"""MatMul and Gemm: one tiled shared-memory kernel, batched over grid.z, operands addressed by strides.

Each 16x16 block (8x8 in the simulator) computes a tile of C: it walks K a tile at a time, staging
a tile of A and of B in shared memory (zero-padded at the edges), and accumulates in the operands' dtype (float32 stays
float32, as in the CPU BLAS path). A and B are flat arrays with explicit element strides — row,
column and batch — so transposed Gemm operands, broadcast batch dims (stride 0) and a 2-D right
operand all run through the same code without copies. The epilogue is Gemm's
``alpha * A@B + beta * C`` with C broadcast through its own strides.

Batch dims that broadcast in a pattern one stride cannot express (A [2, 1, ...] with B [1, 3, ...])
launch once per output batch, with base offsets.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda, int64, void

from jitort.errors import InvalidArgument
from jitort.kernels.cuda.runtime import FLOATS, SIMULATOR, A, cdiv, compiled, flat, signatures

TILE = 8 if SIMULATOR else 16  # the simulator runs each thread as a Python thread: smaller blocks there
_MAX_Z = 65535


@signatures(FLOATS, lambda T: void(A(T), A(T), A(T), A(T), int64, int64, int64,
                                   int64, int64, int64, int64, int64, int64, int64, int64,
                                   int64, int64, int64, int64, T, T))
def gemm_tiled(a, b, c, bias, M, N, K, aoff, sab, sam, sak, boff, sbb, sbk, sbn,
               coff, scb, scm, scn, alpha, beta):  # type: ignore[no-untyped-def]
    """c[z, m, n] = alpha * sum_k a[z, m, k] b[z, k, n] + beta * bias[z, m, n] (bias read when beta != 0).

    a[z, m, k] = a[aoff + z*sab + m*sam + k*sak], likewise b; c is dense [Z, M, N] from offset
    z*M*N (z = blockIdx.z; the launcher offsets the flat views for batches beyond grid.z's limit).
    """
    sa = cuda.shared.array((TILE, TILE), a.dtype)
    sb = cuda.shared.array((TILE, TILE), a.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    z = cuda.blockIdx.z
    abase = aoff + z * sab + row * sam
    bbase = boff + z * sbb + col * sbn
    acc = a.dtype.type(0)
    for k0 in range(0, K, TILE):
        ka = k0 + tx
        if row < M and ka < K:
            sa[ty, tx] = a[abase + ka * sak]
        else:
            sa[ty, tx] = 0
        kb = k0 + ty
        if kb < K and col < N:
            sb[ty, tx] = b[bbase + kb * sbk]
        else:
            sb[ty, tx] = 0
        cuda.syncthreads()
        for kk in range(TILE):
            acc += sa[ty, kk] * sb[kk, tx]
        cuda.syncthreads()
    if row < M and col < N:
        v = alpha * acc
        if beta != 0:
            v += beta * bias[coff + z * scb + row * scm + col * scn]
        c[(z * M + row) * N + col] = v


def _launch(ctx: Any, a: Any, b: Any, c: Any, bias: Any, M: int, N: int, K: int, Z: int,
            sa: tuple[int, int, int, int], sb: tuple[int, int, int, int], sc: tuple[int, int, int, int],
            alpha: Any, beta: Any) -> None:
    """sa = (offset, batch, row, col strides) of A in elements; likewise B and the bias."""
    if M == 0 or N == 0 or Z == 0:
        return
    k = compiled(gemm_tiled, np.dtype(c.dtype).name)
    cf = flat(c)
    for z0 in range(0, Z, _MAX_Z):
        nz = min(_MAX_Z, Z - z0)
        grid = (cdiv(N, TILE), cdiv(M, TILE), nz)
        k[grid, (TILE, TILE), ctx.stream](
            a, b, cf[z0 * M * N:] if z0 else cf, bias, M, N, K,
            sa[0] + z0 * sa[1], sa[1], sa[2], sa[3], sb[0] + z0 * sb[1], sb[1], sb[2], sb[3],
            sc[0] + z0 * sc[1], sc[1], sc[2], sc[3], alpha, beta)


def _batch_strides(batch: tuple[int, ...], out_batch: tuple[int, ...], step: int) -> list[int]:
    """Element strides of each output batch dim for an operand with leading dims ``batch``."""
    pad = (1,) * (len(out_batch) - len(batch)) + batch
    strides, s = [], step
    for d in reversed(pad):
        strides.append(s if d != 1 else 0)
        s *= d
    return strides[::-1]


def matmul(ctx: Any, slots: tuple, a: Any, b: Any) -> Any:
    """numpy matmul semantics: 1-D operands promoted and their dim dropped, batch dims broadcast."""
    ra, rb = a.ndim, b.ndim
    a_shape = (1,) + tuple(a.shape) if ra == 1 else tuple(a.shape)
    b_shape = tuple(b.shape) + (1,) if rb == 1 else tuple(b.shape)
    M, K = a_shape[-2:]
    K2, N = b_shape[-2:]
    if K != K2:
        raise InvalidArgument(f"MatMul: the inner dims differ: A {list(a.shape)} @ B {list(b.shape)}")
    try:
        out_batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    except ValueError:
        raise InvalidArgument(f"MatMul: batch dims of A {list(a.shape)} and B {list(b.shape)} do not "
                              "broadcast") from None
    out_shape = out_batch + ((M,) if ra > 1 else ()) + ((N,) if rb > 1 else ())
    dt = np.dtype(a.dtype)
    c = ctx.alloc(slots[0], out_shape, dt)
    if c.size == 0:
        return c
    af, bf = flat(a), flat(b)
    one, zero = dt.type(1), dt.type(0)
    a_batch, b_batch = a_shape[:-2], b_shape[:-2]
    Z = math.prod(out_batch)
    if math.prod(b_batch) == 1 and tuple((1,) * (len(out_batch) - len(a_batch)) + a_batch) == out_batch:
        # B is one matrix: fold A's batch into its rows — one GEMM of (Z*M) x N.
        _launch(ctx, af, bf, c, af, Z * M, N, K, 1, (0, 0, K, 1), (0, 0, N, 1), (0, 0, 0, 0), one, zero)
        return c
    sa = _batch_strides(a_batch, out_batch, M * K)
    sb = _batch_strides(b_batch, out_batch, K * N)
    # One stride per operand suffices when every output batch dim advances it uniformly.
    za = _uniform(sa, out_batch, M * K)
    zb = _uniform(sb, out_batch, K * N)
    if za is not None and zb is not None:
        _launch(ctx, af, bf, c, af, M, N, K, Z, (0, za, K, 1), (0, zb, N, 1), (0, 0, 0, 0), one, zero)
        return c
    cf = flat(c)
    for z, idx in enumerate(np.ndindex(*out_batch)):
        oa = sum(i * s for i, s in zip(idx, sa))
        ob = sum(i * s for i, s in zip(idx, sb))
        _launch(ctx, af, bf, cf[z * M * N:(z + 1) * M * N], af, M, N, K, 1, (oa, 0, K, 1), (ob, 0, N, 1),
                (0, 0, 0, 0), one, zero)
    return c


def _uniform(strides: list[int], out_batch: tuple[int, ...], step: int) -> int | None:
    """The single batch stride equivalent to ``strides`` over the flattened batch, if there is one."""
    if all(s == 0 for s in strides):
        return 0
    dense, s = [], step
    for d in reversed(out_batch):
        dense.append(s)
        s *= d
    dense = dense[::-1]
    if all(x == y or d == 1 for x, y, d in zip(strides, dense, out_batch)):
        return step
    return None


def gemm(ctx: Any, slots: tuple, a: Any, b: Any, c: Any = None, *, alpha: float, beta: float,
         transA: int, transB: int) -> Any:
    """Gemm (opset 7+ semantics: C optional, unidirectionally broadcast to [M, N])."""
    if a.ndim != 2 or b.ndim != 2:
        raise InvalidArgument(f"Gemm: A and B must be 2-D, got {list(a.shape)} and {list(b.shape)}")
    M, K = (a.shape[1], a.shape[0]) if transA else tuple(a.shape)
    Kb, N = (b.shape[1], b.shape[0]) if transB else tuple(b.shape)
    if K != Kb:
        raise InvalidArgument(f"Gemm: inner dims differ: A {list(a.shape)} (transA={transA}) and "
                              f"B {list(b.shape)} (transB={transB})")
    dt = np.dtype(a.dtype)
    y = ctx.alloc(slots[0], (M, N), dt)
    if y.size == 0:
        return y
    sa = (0, 0, 1, M) if transA else (0, 0, K, 1)
    sb = (0, 0, 1, K) if transB else (0, 0, N, 1)
    bias, sc, bt = flat(a), (0, 0, 0, 0), dt.type(0)
    if c is not None and beta != 0:
        cs = tuple(c.shape)
        if len(cs) > 2 or any(d not in (1, t) for d, t in zip(cs[::-1], (N, M))):
            raise InvalidArgument(f"Gemm: C of shape {list(cs)} does not broadcast to [{M}, {N}]")
        full = (1,) * (2 - len(cs)) + cs
        sc = (0, 0, full[1] if full[0] != 1 else 0, 1 if full[1] != 1 else 0)
        bias, bt = flat(c), dt.type(beta)
    _launch(ctx, flat(a), flat(b), y, bias, M, N, K, 1, sa, sb, sc, dt.type(alpha), bt)
    return y


KERNELS = (gemm_tiled,)
