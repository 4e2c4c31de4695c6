"""Explicit LLVM vector IR for the convolution intrinsics (convgemm.py, convdirect.py).

Numba's loop vectoriser keeps a register tile's accumulators in memory and gives up on loops with
many source arrays, so the hot loops of convolution are written as ``@intrinsic`` functions that
emit vector IR directly: ``<VL x float>`` values, ``llvm.fma``, masked loads and stores. The
intrinsics are inlined into the calling ``@njit`` kernel, whose on-disk cache stores them; nothing
is compiled at import. ``Vec`` holds what every such codegen needs for one element type.

The vector width is the host's (AVX-512: 64 bytes, else 32); cached code is CPU-specific anyway.
Nothing that outlives a process (the packed weight layout) depends on it.
"""
from __future__ import annotations

from typing import Any, Callable

import llvmlite.binding as ll
import numba
from llvmlite import ir
from numba.core import cgutils


def _vector_bytes() -> int:
    feats = numba.config.CPU_FEATURES or ll.get_host_cpu_features().flatten()
    return 64 if "+avx512f" in feats.split(",") else 32


VB = _vector_bytes()  # bytes per vector register


def lanes(itemsize: int) -> int:
    """Elements per vector register."""
    return VB // itemsize


class Vec:
    """Vector IR helpers for one codegen: VL lanes of the element type ``dt`` (float32/64)."""

    def __init__(self, context: Any, builder: ir.IRBuilder, dt: Any, vbytes: int | None = None) -> None:
        """vbytes: the vector width in bytes; default the host's (``VB``). A kernel that picks its
        width itself (gemm.py's AVX2 path on an AVX-512 host) passes it."""
        self.context, self.b = context, builder
        self.isz = dt.bitwidth // 8
        self.VL = VL = (vbytes or VB) // self.isz
        self.fty = context.get_value_type(dt)
        self.vty = ir.VectorType(self.fty, VL)
        self.vpty = self.vty.as_pointer()
        self.i64, self.i32 = ir.IntType(64), ir.IntType(32)
        self.ivty = ir.VectorType(self.i64, VL)
        self.mty = ir.VectorType(ir.IntType(1), VL)
        self.zero = ir.Constant(self.vty, [0.0] * VL)
        self.lane_ids = ir.Constant(self.ivty, list(range(VL)))
        self.align = ir.Constant(self.i32, self.isz)
        sfx = f"v{VL}f{dt.bitwidth}"
        vty, vpty, mty, i32 = self.vty, self.vpty, self.mty, self.i32
        self._fma = self._fn(f"llvm.fma.{sfx}", vty, [vty, vty, vty])
        self._mload = self._fn(f"llvm.masked.load.{sfx}.p0", vty, [vpty, i32, mty, vty])
        self._mstore = self._fn(f"llvm.masked.store.{sfx}.p0", ir.VoidType(), [vty, vpty, i32, mty])
        pvty = ir.VectorType(self.fty.as_pointer(), VL)
        self._pvty = pvty
        self._gather = self._fn(f"llvm.masked.gather.{sfx}.v{VL}p0", vty, [pvty, i32, mty, vty])

    def _fn(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        return cgutils.get_or_insert_function(self.b.module, ir.FunctionType(ret, args), name)

    # --- scalars, pointers, splats -------------------------------------------------------------
    def c(self, v: int) -> ir.Constant:
        return ir.Constant(self.i64, v)

    def data(self, sig_type: Any, value: Any, offset: Any = None) -> ir.Value:
        """Element pointer to an array argument's data (+ offset elements)."""
        p = self.context.make_array(sig_type)(self.context, self.b, value).data
        return p if offset is None else self.b.gep(p, [offset])

    def address(self, addr: ir.Value) -> ir.Value:
        """Element pointer from an integer address."""
        return self.b.inttoptr(addr, self.fty.as_pointer())

    def at(self, p: ir.Value, off: Any) -> ir.Value:
        return self.b.gep(p, [self.c(off) if isinstance(off, int) else off])

    def splat(self, s: ir.Value) -> ir.Value:
        u = ir.Constant(self.vty, ir.Undefined)
        z = ir.Constant(ir.VectorType(self.i32, self.VL), [0] * self.VL)
        return self.b.shuffle_vector(self.b.insert_element(u, s, ir.Constant(self.i32, 0)), u, z)

    def isplat(self, s: ir.Value) -> ir.Value:
        u = ir.Constant(self.ivty, ir.Undefined)
        z = ir.Constant(ir.VectorType(self.i32, self.VL), [0] * self.VL)
        return self.b.shuffle_vector(self.b.insert_element(u, s, ir.Constant(self.i32, 0)), u, z)

    def below(self, n: ir.Value, first: int = 0) -> ir.Value:
        """Lane mask: first + lane < n."""
        ids = self.lane_ids if not first else self.b.add(self.lane_ids, self.isplat(self.c(first)))
        return self.b.icmp_signed("<", ids, self.isplat(n))

    # --- memory ------------------------------------------------------------------------------
    def load(self, p: ir.Value) -> ir.Value:
        return self.b.load(self.b.bitcast(p, self.vpty), align=self.isz)

    def store(self, v: ir.Value, p: ir.Value) -> None:
        self.b.store(v, self.b.bitcast(p, self.vpty), align=self.isz)

    def mload(self, p: ir.Value, mask: ir.Value) -> ir.Value:
        """Masked load (zero in the other lanes; nothing outside the mask is read)."""
        return self.b.call(self._mload, [self.b.bitcast(p, self.vpty), self.align, mask, self.zero])

    def mstore(self, v: ir.Value, p: ir.Value, mask: ir.Value) -> None:
        self.b.call(self._mstore, [v, self.b.bitcast(p, self.vpty), self.align, mask])

    def read(self, p: ir.Value, sw: int, sx: ir.Value) -> ir.Value:
        """Lanes p[0], p[sx], p[2 sx], ...: sw 1 a plain load (sx = 1), 2 two loads and an
        even-lane shuffle (sx = 2; reads one element past the last lane), 0 a gather (any sx)."""
        b, VL = self.b, self.VL
        if sw == 1:
            return self.load(p)
        if sw == 2:
            evens = ir.Constant(ir.VectorType(self.i32, VL), list(range(0, 2 * VL, 2)))
            return b.shuffle_vector(self.load(p), self.load(self.at(p, VL)), evens)
        step = self.isplat(b.mul(sx, self.c(self.isz)))
        addr = b.add(self.isplat(b.ptrtoint(p, self.i64)), b.mul(self.lane_ids, step))
        everything = ir.Constant(self.mty, [1] * VL)
        return b.call(self._gather, [b.inttoptr(addr, self._pvty), self.align, everything, self.zero])

    def prefetch_write(self, p: ir.Value) -> None:
        """Hint that the cache line at element pointer p is about to be written (``prefetchw``)."""
        i8p = ir.IntType(8).as_pointer()
        fn = self._fn("llvm.prefetch.p0", ir.VoidType(), [i8p, self.i32, self.i32, self.i32])
        self.b.call(fn, [self.b.bitcast(p, i8p), ir.Constant(self.i32, 1), ir.Constant(self.i32, 3),
                         ir.Constant(self.i32, 1)])

    # --- arithmetic ----------------------------------------------------------------------------
    def fma(self, a: ir.Value, x: ir.Value, acc: ir.Value) -> ir.Value:
        return self.b.call(self._fma, [a, x, acc])

    def epilogue(self, fin: ir.Value, lo: ir.Value, hi: ir.Value) -> Callable[[ir.Value, ir.Value], ir.Value]:
        """finish(x, bias_vec[, z_vec]) for the run-time epilogue code fin: 0 x; 1 x + bias (+ z);
        2 Relu of it; 3 Clip(lo, hi) of it; written as the elementwise ops' selects (NaN passes
        through)."""
        b = self.b
        zs, los, his = self.splat(ir.Constant(self.fty, 0.0)), self.splat(lo), self.splat(hi)
        is_relu = b.icmp_signed("==", fin, self.c(2))
        is_clip = b.icmp_signed("==", fin, self.c(3))
        has_fin = b.icmp_signed("!=", fin, self.c(0))

        def finish(x: ir.Value, bias: ir.Value, z: ir.Value | None = None) -> ir.Value:
            y = b.fadd(x, bias)
            if z is not None:  # a residual, added after the bias and before the activation
                y = b.fadd(y, z)
            yr = b.select(b.fcmp_ordered("<", y, zs), zs, y)
            yc = b.select(b.fcmp_ordered("<", y, los), los, y)
            yc = b.select(b.fcmp_ordered(">", yc, his), his, yc)
            y = b.select(is_relu, yr, b.select(is_clip, yc, y))
            return b.select(has_fin, y, x)
        return finish


def fma_tile(v: Vec, rows: int, nvec: int, K: ir.Value, a_row: Callable[[ir.Value], ir.Value],
             b_vecs: Callable[[ir.Value], list[ir.Value]], start: list[list[ir.Value]]) -> list[list[ir.Value]]:
    """The register tile's k loop: acc[r][j] = fma(a[k, r], b[k, j], acc[r][j]) for k < K, in k
    order, from ``start``; a_row(k) points at the rows' k-th weights (rows consecutive),
    b_vecs(k) gives the nvec B vectors of step k. Returns the final accumulators (phis)."""
    return fma_rows(v, rows, nvec, K, lambda k, r: v.b.load(v.at(a_row(k), r)), b_vecs, start)


def fma_rows(v: Vec, rows: int, nvec: int, K: ir.Value, a_elem: Callable[[ir.Value, int], ir.Value],
             b_vecs: Callable[[ir.Value], list[ir.Value]], start: list[list[ir.Value]]) -> list[list[ir.Value]]:
    """``fma_tile`` with A given per element: a_elem(k, r) is the scalar A[r, k] (any layout)."""
    b = v.b
    pre = b.block
    loop = b.append_basic_block("tile.k")
    done = b.append_basic_block("tile.done")
    b.cbranch(b.icmp_signed(">", K, v.c(0)), loop, done)
    b.position_at_end(loop)
    k = b.phi(v.i64)
    k.add_incoming(v.c(0), pre)
    acc = [[b.phi(v.vty) for _ in range(nvec)] for _ in range(rows)]
    for r in range(rows):
        for j in range(nvec):
            acc[r][j].add_incoming(start[r][j], pre)
    bv = b_vecs(k)
    new = []
    for r in range(rows):
        s = v.splat(a_elem(k, r))
        new.append([v.fma(s, bv[j], acc[r][j]) for j in range(nvec)])
    k1 = b.add(k, v.c(1))
    end = b.block
    k.add_incoming(k1, end)
    for r in range(rows):
        for j in range(nvec):
            acc[r][j].add_incoming(new[r][j], end)
    b.cbranch(b.icmp_signed("<", k1, K), loop, done)
    b.position_at_end(done)
    out = []
    for r in range(rows):
        row = []
        for j in range(nvec):
            p = b.phi(v.vty)
            p.add_incoming(start[r][j], pre)
            p.add_incoming(new[r][j], end)
            row.append(p)
        out.append(row)
    return out
