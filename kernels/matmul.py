"""MatMul and Gemm (ai.onnx): float32 products with constant weights lower to jitort's packed GEMM
(``kernels/gemm_ops.py``); everything else runs ``bmm``, the batched BLAS core
(``kernels/batched_gemm.py``). Constant float16/bfloat16 weights are converted to float32 once at
compile time (``MatMul_prepared``/``Gemm_prepared``).
"""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.ir import Graph, Node
from jitort.kernels.batched_gemm import as_dtype, bmm, gemm_compute_dtype, same_dtype
from jitort.kernels.gemm_ops import lower_packed
from jitort.kernels.registry import BFLOAT16, Call, Ref, default_call, lookup, op

# --- MatMul ---------------------------------------------------------------------------------------

def matmul_to(a: np.ndarray, b: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """``a @ b`` with numpy's rank rules (1-D operands promoted, then dropped), computed in the
    GEMM compute dtype of ``out_dtype`` and returned as ``out_dtype``."""
    if a.ndim == 0 or b.ndim == 0:
        raise InvalidArgument(f"MatMul: operands must have rank >= 1, got shapes {a.shape} and {b.shape}")
    cd = gemm_compute_dtype(out_dtype, "MatMul")
    a2 = as_dtype(a, cd).reshape(1, -1) if a.ndim == 1 else as_dtype(a, cd)
    b2 = as_dtype(b, cd).reshape(-1, 1) if b.ndim == 1 else as_dtype(b, cd)
    out = bmm(a2, b2, 0, 0, "MatMul")
    if a.ndim == 1 or b.ndim == 1:  # numpy: the prepended / appended 1 is dropped again
        m, n = out.shape[-2:]
        out = out.reshape(out.shape[:-2] + ((m,) if a.ndim > 1 else ()) + ((n,) if b.ndim > 1 else ()))
    return as_dtype(out, out_dtype)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@op("MatMul", since=1, lower=lambda n, g: _lower_matmul(n, g))
def MatMul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if (b.ndim == 2 and a.ndim >= 2 and a.dtype == b.dtype and a.dtype in _FLOATS and a.size
            and a.shape[-1] == b.shape[0] > 0):
        # The transformer/MLP case, [..., k] @ [k, n]: one BLAS call through numpy's matmul
        # (gemm, or gemv for a single row), a few hundred ns of Python around it.
        return np.matmul(a.reshape(-1, b.shape[0]), b).reshape(a.shape[:-1] + (b.shape[1],))
    return matmul_to(a, b, same_dtype("MatMul", a, b))


def MatMul_prepared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MatMul with a constant float16/bfloat16 right operand already converted to float32."""
    return matmul_to(a, b, a.dtype)


def _lower_matmul(node: Node, g: Graph) -> Call:
    packed = lower_packed(node, g)  # float32 with constant weights: jitort's packed GEMM
    if packed is not None:
        return packed
    w = g.const(node.inputs[1])
    a_t = g.type_of(node.inputs[0])
    if w is not None and (w.dtype == np.float16 or w.dtype == BFLOAT16) and a_t.dtype == w.dtype:
        return Call(MatMul_prepared, [Ref(node.inputs[0]), w.astype(np.float32)])
    return default_call(lookup("MatMul", "", node.version), node, g)


# --- Gemm -----------------------------------------------------------------------------------------

def _gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None, alpha: float, beta: float, transA: int,
          transB: int, broadcast: int, out_dtype: np.dtype) -> np.ndarray:
    if a.ndim != 2 or b.ndim != 2:
        raise InvalidArgument(f"Gemm: A and B must be 2-D, got shapes {a.shape} and {b.shape}")
    cd = gemm_compute_dtype(out_dtype, "Gemm")
    a, b = as_dtype(a, cd), as_dtype(b, cd)
    m = a.shape[1] if transA else a.shape[0]
    n = b.shape[0] if transB else b.shape[1]
    if c is not None:
        if c.ndim > 2 or (not broadcast and c.shape != (m, n)):
            raise InvalidArgument(f"Gemm: C of shape {c.shape} does not {'broadcast to' if broadcast else 'match'} "
                                  f"the output shape {(m, n)}")
        c = as_dtype(c, cd) if beta != 0 else None
    if cd.kind in "iu" and (alpha != 1 or (c is not None and beta != 1)):
        # the spec's formula with float attributes: alpha * A @ B + beta * C, cast back
        y = bmm(a, b, transA, transB, "Gemm").astype(np.float64) * alpha
        if c is not None:
            y = y + c.astype(np.float64) * beta
        return y.astype(out_dtype)
    y = bmm(a, b, transA, transB, "Gemm", alpha, c, beta if c is not None else 0.0)
    return as_dtype(y, out_dtype)


@op("Gemm", since=1, lower=lambda n, g: _lower_gemm(n, g))
def Gemm_1(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float, beta: float,
           transA: int, transB: int, broadcast: int) -> np.ndarray:
    """Gemm-1/6: C is broadcast only when ``broadcast`` is set, otherwise it must be (M, N)."""
    return _gemm(a, b, c, alpha, beta, transA, transB, broadcast, same_dtype("Gemm", a, b, c))


@op("Gemm", since=7, lower=lambda n, g: _lower_gemm(n, g))
def Gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float, beta: float,
         transA: int, transB: int) -> np.ndarray:
    return _gemm(a, b, c, alpha, beta, transA, transB, 1, same_dtype("Gemm", a, b, c))


def Gemm_prepared(a: np.ndarray, b: np.ndarray, c: np.ndarray | None, *, alpha: float, beta: float,
                  transA: int, transB: int, broadcast: int) -> np.ndarray:
    """Gemm whose constant B (and C) were prepared at compile time: float16 weights already in float32."""
    return _gemm(a, b, c, alpha, beta, transA, transB, broadcast, a.dtype)


def _lower_gemm(node: Node, g: Graph) -> Call:
    packed = lower_packed(node, g)
    if packed is not None:
        return packed
    d = lookup("Gemm", "", node.version)
    call = default_call(d, node, g)
    b = g.const(node.inputs[1])
    a_t = g.type_of(node.inputs[0])
    if b is None or a_t.dtype is None or b.dtype != a_t.dtype or b.ndim != 2:
        return call
    kw = dict(call.kwargs)
    kw.setdefault("broadcast", 1)
    changed = False
    if b.dtype == np.float16 or b.dtype == BFLOAT16:
        b, changed = b.astype(np.float32), True
        cn = node.inputs[2] if len(node.inputs) > 2 else ""
        cc = g.const(cn)
        if cc is not None and cc.dtype == a_t.dtype:
            call.args[2] = cc.astype(np.float32)
    if PRETRANSPOSE_B and kw["transB"]:
        b, kw["transB"], changed = np.ascontiguousarray(b.T), 0, True
    if not changed:
        return call
    args = [call.args[0], b, call.args[2] if len(call.args) > 2 else None]
    return Call(Gemm_prepared, args, kw)


# BLAS could read a transposed B in place, but the plain layout measured faster (1 thread, numpy's
# OpenBLAS): [64,1024]x[1024,1024] 2.2 vs 5.8 ms, [8,768]x[768,3072] 1.2 vs 1.7 ms, [256,512]x[512,512]
# 1.7 vs 2.1 ms. So a constant B with transB=1 is transposed once at compile time.
PRETRANSPOSE_B = True
