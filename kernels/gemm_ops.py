"""MatMul and Gemm on jitort's packed GEMM (gemm.py) when the weights are constant.

The ``lower`` hooks of MatMul and Gemm (matmul.py) call ``lower_packed``: a float32 product whose B is
a 2-D initializer (Gemm's transB applied, alpha 1) gets B packed once, at lowering, into a constant
of the plan (``gemm.pack_b``), so the cache entry and the AOT artifact store the packed panels and a
run never re-packs them (OpenBLAS packs B on every call). Everything else keeps the BLAS path.

The epilogue pass (``jitort.passes.gemm_epilogue``) rewrites MatMul/Gemm + bias Add [+ residual Add]
[+ activation] into one node of domain ``jitort`` with the same op type, registered here: inputs
``A, B, bias, R`` (bias and R may be ""), attributes ``transA``, ``transB`` (Gemm) and the epilogue's
``_activation``, ``_alpha``, ``_beta``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jitort.errors import InvalidArgument
from jitort.ir import Graph, Node
from jitort.kernels import gemm
from jitort.kernels.registry import Call, Ref, op

_F32 = np.dtype(np.float32)


def act_params(activation: str, alpha: float, beta: float) -> tuple[int, float, float]:
    """(code, lo, hi) for the kernels: Clip's bounds, LeakyRelu's and HardSigmoid's alpha (and beta)."""
    code = gemm.ACTIVATIONS[activation]
    if activation == "Clip":
        return code, alpha, beta
    if activation in ("LeakyRelu", "HardSigmoid"):
        return code, alpha, beta
    return code, 0.0, 0.0


def matmul_packed(a: np.ndarray, bp: np.ndarray, bias: np.ndarray, res: np.ndarray | None = None, *, k: int,
                  n: int, hasb: int, transA: int, act: int, lo: float, hi: float) -> np.ndarray:
    """act(op(a) @ B + bias [+ res]) with B packed (``gemm.pack_b``, [k, n]): a [..., k] (MatMul; a
    1-D a drops its row again) or 2-D (Gemm; transA transposes it). res: the residual, any shape that
    broadcasts to the output (added by numpy before the activation when it is not the output's)."""
    shape = a.shape
    if res is None and not transA and shape and shape[-1] == k > 0 and a.dtype == _F32:
        # the common case (a MatMul without residual) on its lean path: see gemm.gemm_small
        out = np.empty(shape[:-1] + (n,), _F32)
        f = a.flags
        if not out.size or (f.c_contiguous and f.aligned and gemm.gemm_small(a, bp, n, bias, hasb, act, lo, hi, out)):
            return out
    if a.dtype != _F32:
        raise InvalidArgument(f"MatMul: A has element type {a.dtype}, the weights float32")
    if transA:
        if a.ndim != 2:
            raise InvalidArgument(f"Gemm: A must be 2-D, got shape {a.shape}")
        a = np.ascontiguousarray(a.T)
    if a.ndim == 0 or a.shape[-1] != k:
        raise InvalidArgument(f"MatMul: inner dimensions differ: left operand {a.shape}, right operand {(k, n)}")
    out_shape = a.shape[:-1] + (n,)
    a2 = a.reshape(-1, k)
    r2 = None
    if res is not None:
        if res.shape == out_shape and res.dtype == _F32:
            r2 = np.ascontiguousarray(res).reshape(-1, n)
        else:
            try:
                shape = np.broadcast_shapes(res.shape, out_shape)
            except ValueError:
                raise InvalidArgument(f"Gemm: C of shape {res.shape} does not broadcast to the output shape "
                                      f"{out_shape}") from None
            if shape != out_shape:
                raise InvalidArgument(f"Add: shapes {out_shape} and {res.shape} broadcast to {shape}, "
                                      f"not the product's shape")
            r2 = np.ascontiguousarray(np.broadcast_to(res, out_shape), _F32).reshape(-1, n)
    y = gemm.gemm(a2, bp, n, bias, bool(hasb), r2, act, lo, hi)
    return y.reshape(out_shape)


matmul_packed.own_threads = True  # type: ignore[attr-defined]  # jitort.compiled.Artifact.own_threads


def _const_bias(c: np.ndarray | None, n: int, beta: float = 1.0) -> np.ndarray | None:
    """A constant addend as the padded row vector the kernels take, if it is one (shape [n], [1, n],
    a scalar, or any all-ones-but-last shape of rank <= 2); None otherwise."""
    if c is None or c.ndim > 2 or c.dtype != _F32 or any(d != 1 for d in c.shape[:-1]):
        return None
    if c.ndim and c.shape[-1] not in (1, n):
        return None
    v = np.broadcast_to(c.reshape(-1), (n,)).astype(np.float32)
    if beta != 1.0:
        v = v * np.float32(beta)
    return gemm.pad_bias(v, n)


def lower_packed(node: Node, g: Graph, bias: str = "", res: str = "", pack: bool = True) -> Call | None:
    """The packed-GEMM call for a MatMul/Gemm node (or its fused form: ``bias`` names MatMul's bias
    Add operand, ``res`` the residual), or None where it does not apply (B not a float32 2-D constant,
    A not float32, Gemm's alpha != 1, a C the kernels cannot take). ``pack`` False: only the decision
    (the Call's B is then the unpacked constant)."""
    B = g.const(node.inputs[1])
    a_t = g.type_of(node.inputs[0])
    if B is None or B.ndim != 2 or B.dtype != _F32 or a_t.dtype is None or np.dtype(a_t.dtype) != _F32:
        return None
    is_gemm = node.op_type == "Gemm"
    at = node.attrs
    transA = int(at.get("transA", 0)) if is_gemm else 0
    if is_gemm:
        if float(at.get("alpha", 1.0)) != 1.0 or (at.get("broadcast", 1) == 0 and node.version < 7):
            return None
        if a_t.rank is not None and a_t.rank != 2:
            return None
    transB = is_gemm and int(at.get("transB", 0))
    K, N = B.shape[::-1] if transB else B.shape
    if K == 0 or N == 0:
        return None
    c_name = node.inputs[2] if is_gemm and len(node.inputs) > 2 else ""
    beta = float(at.get("beta", 1.0)) if is_gemm else 1.0
    padded = None
    r_arg: Any = Ref(res) if res else None
    if c_name and beta != 0.0:
        C = g.const(c_name)
        padded = _const_bias(C, N, beta)
        if padded is None:
            if r_arg is not None:
                return None  # the fused form never has both (gemm_epilogue)
            if C is None or beta != 1.0 or C.dtype != _F32:
                return None  # a run-time or scaled matrix C: BLAS takes beta
            r_arg = C
    if bias:
        if padded is not None:
            return None
        padded = _const_bias(g.const(bias), N)
        if padded is None:
            return None
    act, lo, hi = act_params(at.get("_activation", ""), float(at.get("_alpha", 0.0)), float(at.get("_beta", 0.0)))
    hasb = int(padded is not None)
    if padded is None:
        padded = gemm.pad_bias(None, N)
    kw = dict(k=K, n=N, hasb=hasb, transA=transA, act=act, lo=lo, hi=hi)
    if pack:
        B = gemm.pack_b(np.ascontiguousarray(B.T) if transB else B)
    return Call(matmul_packed, [Ref(node.inputs[0]), B, padded, r_arg], kw)


def fused_inputs(node: Node) -> tuple[str, str]:
    """(bias, residual) of a fused node: MatMul's bias is its third input; Gemm's third input is its
    own C (with beta), so its bias is ""."""
    bias = node.inputs[2] if len(node.inputs) > 2 and node.op_type == "MatMul" else ""
    res = node.inputs[3] if len(node.inputs) > 3 else ""
    return bias, res


def _lower_fused(node: Node, g: Graph) -> Call:
    call = lower_packed(node, g, *fused_inputs(node))
    if call is None:
        raise AssertionError(f"{node.describe()}: the epilogue pass fused a product the packed GEMM cannot take")
    return call


@op("MatMul", since=1, domain="jitort", lower=_lower_fused)
def MatMul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, res: np.ndarray | None = None
           ) -> np.ndarray:
    """jitort's MatMul + epilogue (always lowered through ``lower_packed``; never called directly)."""
    raise AssertionError("jitort.MatMul is lowered to the packed GEMM")


@op("Gemm", since=1, domain="jitort", lower=_lower_fused)
def Gemm(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, res: np.ndarray | None = None
         ) -> np.ndarray:
    """jitort's Gemm + epilogue (always lowered through ``lower_packed``; never called directly)."""
    raise AssertionError("jitort.Gemm is lowered to the packed GEMM")
