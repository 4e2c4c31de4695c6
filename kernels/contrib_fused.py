"""onnxruntime's fused linear ops (com.microsoft), written by its offline optimiser: FusedConv
(Conv [+ Z] + activation), FusedGemm (Gemm + activation), FusedMatMul (MatMul with transposes and a
scale). Each lowers onto jitort's standard kernel: FusedConv onto jitort's own FusedConv
(kernels/conv_fused.py: the activation and Z in the conv's epilogue) when the epilogue has the
activation,
FusedGemm and FusedMatMul onto kernels/batched_gemm.py's batched GEMM.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, TensorType
from jitort.kernels import conv as conv_mod
from jitort.kernels.batched_gemm import as_dtype, bmm, gemm_compute_dtype
from jitort.kernels.contrib_infer import infer_as
from jitort.kernels.matmul import Gemm, matmul_to
from jitort.kernels.registry import Call, Ref, default_call, lookup, op
from jitort.protos import fill_defaults

MS = "com.microsoft"
_CONV_OPSET = 11  # the Conv FusedConv extends (its attributes and defaults)
_GEMM_OPSET = 13


def _unsupported(op_type: str, version: int, what: str) -> OrtNotImplemented:
    return OrtNotImplemented(f"jitort has no implementation for op '{op_type}' in domain '{MS}' at opset "
                             f"{version} with {what}")


def _activation(op_type: str, version: int, name: str, params: Sequence[float]) -> tuple[str, float, float]:
    """(activation, alpha, beta) in kernels/conv.py's epilogue terms; Tanh too (applied here)."""
    p = list(params)
    if name in ("", "Relu", "Sigmoid", "Tanh"):
        return name, 0.0, 0.0
    if name == "LeakyRelu":
        return name, p[0] if p else 0.01, 0.0
    if name == "HardSigmoid":
        return name, p[0] if p else 0.2, p[1] if len(p) > 1 else 0.5
    if name == "Clip":
        return name, p[0] if p else -np.inf, p[1] if len(p) > 1 else np.inf
    raise _unsupported(op_type, version, f"activation '{name}'")


def activate(y: np.ndarray, activation: str, alpha: float, beta: float, gamma: float = 0.0) -> np.ndarray:
    """``activation`` applied to y in place (y is a fresh float array owned by the caller)."""
    t = y.dtype.type
    if activation == "Relu":
        np.maximum(y, t(0), out=y)
    elif activation == "Tanh":
        np.tanh(y, out=y)
    elif activation == "Sigmoid":
        np.negative(y, out=y)
        np.exp(y, out=y)
        y += t(1)
        np.reciprocal(y, out=y)
    elif activation == "LeakyRelu":
        np.multiply(y, np.where(y < 0, t(alpha), t(1)), out=y)
    elif activation == "HardSigmoid":
        y *= t(alpha)
        y += t(beta)
        np.clip(y, t(0), t(1), out=y)
    elif activation == "Clip":
        np.clip(y, t(alpha), t(beta), out=y)
    elif activation == "Elu":
        y[...] = np.where(y < 0, t(alpha) * np.expm1(y), y)
    elif activation == "Selu":
        y[...] = t(gamma) * np.where(y <= 0, t(alpha) * np.expm1(y), y)
    elif activation == "Softplus":
        y[...] = np.logaddexp(t(0), y)
    elif activation == "Softsign":
        y /= t(1) + np.abs(y)
    elif activation == "ThresholdedRelu":
        y[y <= t(alpha)] = t(0)
    elif activation == "ScaledTanh":
        y[...] = t(alpha) * np.tanh(t(beta) * y)
    elif activation == "ParametricSoftplus":
        y[...] = t(alpha) * np.logaddexp(t(0), t(beta) * y)
    return y


# onnxruntime's FusedGemm activations (its element-wise functors) and the parameters each requires,
# from activation_alpha / _beta / _gamma (onnxruntime has no defaults for them: it refuses the node).
_GEMM_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "Relu": (), "Tanh": (), "Sigmoid": (), "Softsign": (), "Softplus": (), "LeakyRelu": ("alpha",),
    "HardSigmoid": ("alpha", "beta"), "Elu": ("alpha",), "ThresholdedRelu": ("alpha",), "Selu": ("alpha", "gamma"),
    "ScaledTanh": ("alpha", "beta"), "ParametricSoftplus": ("alpha", "beta")}


# --- FusedConv ------------------------------------------------------------------------------------

def conv_then(z: np.ndarray | None, *args: Any, conv_fn: Callable[..., np.ndarray], activation: str,
              alpha: float, beta: float, **kwargs: Any) -> np.ndarray:
    """Conv through its lowered call, then + Z and the activation (what the epilogue cannot take)."""
    y = conv_fn(*args, **kwargs)
    if z is not None:
        try:
            y = y + z
        except ValueError:
            raise InvalidArgument(f"FusedConv: Z of shape {list(z.shape)} does not match the output "
                                  f"{list(y.shape)}") from None
    elif not y.flags.writeable:
        y = y.copy()
    return activate(y, activation, alpha, beta)


def _conv_node(node: Node) -> Node:
    attrs = {k: v for k, v in node.attrs.items() if k not in ("activation", "activation_params")}
    fill_defaults("Conv", "", _CONV_OPSET, attrs)
    return Node("Conv", node.inputs[:3], node.outputs[:1], attrs, node.name, "", _CONV_OPSET)


def _lower_fused_conv(node: Node, g: Graph) -> Call:
    act = _activation("FusedConv", node.version, node.attrs.get("activation", ""),
                      node.attrs.get("activation_params") or [])
    z = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3] else ""
    dt = g.type_of(node.inputs[0]).dtype
    zt = g.type_of(z) if z else None
    z_ok = zt is None or (zt.dtype is not None and np.dtype(zt.dtype) == np.dtype(dt))
    if act[0] in conv_mod.ACTIVATIONS and dt is not None and np.dtype(dt).kind == "f" and z_ok:
        return conv_mod.lower_conv(_conv_node(node), g, *act, residual=z)
    inner = conv_mod.lower_conv(_conv_node(node), g)
    return Call(conv_then, [Ref(z) if z else None, *inner.args],
                {**inner.kwargs, "conv_fn": inner.fn, "activation": act[0], "alpha": act[1], "beta": act[2]})


def _infer_conv(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    attrs = {k: v for k, v in node.attrs.items() if k not in ("activation", "activation_params")}
    return infer_as("Conv", _CONV_OPSET, attrs, ins[:3])


@op("FusedConv", since=1, domain=MS, lower=_lower_fused_conv, infer=_infer_conv)
def FusedConv(X: np.ndarray, W: np.ndarray, B: np.ndarray | None = None, Z: np.ndarray | None = None,
              **attrs: Any) -> np.ndarray:
    """Reached only through ``_lower_fused_conv`` (its lower hook)."""
    raise AssertionError("FusedConv is lowered by _lower_fused_conv")


# --- FusedGemm ------------------------------------------------------------------------------------

def _infer_gemm(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    return infer_as("Gemm", _GEMM_OPSET, {k: node.attrs.get(k) for k in ("transA", "transB")}, ins[:3])


def _gemm_activation(node_name: str, activation: str, alpha: float | None, beta: float | None,
                     gamma: float | None) -> tuple[str, float, float, float]:
    need = _GEMM_ACTIVATIONS.get(activation)
    if need is None:  # onnxruntime refuses the node at session creation
        raise Fail(f"FusedGemm node '{node_name}': activation '{activation}': unknown kernel type")
    given = {"alpha": alpha, "beta": beta, "gamma": gamma}
    for p in need:
        if given[p] is None:
            raise Fail(f"FusedGemm node '{node_name}': activation '{activation}' needs activation_{p}: "
                       f"No attribute with name:'{p}'is defined.")
    return activation, alpha or 0.0, beta or 0.0, gamma or 0.0


def _lower_fused_gemm(node: Node, g: Graph) -> Call:
    """Checks the activation at compile time, as onnxruntime does at session creation."""
    a = node.attrs
    _gemm_activation(node.name, a.get("activation", ""), a.get("activation_alpha"), a.get("activation_beta"),
                     a.get("activation_gamma"))
    return default_call(lookup("FusedGemm", MS, node.version), node, g)


@op("FusedGemm", since=1, domain=MS, lower=_lower_fused_gemm, infer=_infer_gemm)
def FusedGemm(A: np.ndarray, B: np.ndarray, C: np.ndarray | None = None, *, alpha: float = 1.0, beta: float = 1.0,
              transA: int = 0, transB: int = 0, activation: str = "", activation_alpha: float | None = None,
              activation_beta: float | None = None, activation_gamma: float | None = None) -> np.ndarray:
    """activation(alpha * A' @ B' + beta * C): Gemm (kernels/matmul.py), then the activation with
    activation_alpha/beta/gamma as its parameters."""
    act = _gemm_activation("FusedGemm", activation, activation_alpha, activation_beta, activation_gamma)
    y = Gemm(A, B, C, alpha=alpha, beta=beta, transA=transA, transB=transB)
    if y.dtype.kind != "f":
        raise _unsupported("FusedGemm", 1, f"element type {y.dtype}")
    return activate(y, *act)


# --- FusedMatMul ----------------------------------------------------------------------------------

def _arrange(x: Any, trans_batch: int, trans: int) -> Any:
    """The operand as it is multiplied: the first dim moved after the batch dims (transBatch), then
    the last two swapped (trans). Works on shapes (tuples) and arrays alike."""
    if isinstance(x, tuple):
        if len(x) >= 3 and trans_batch:
            x = x[1:-1] + (x[0], x[-1])
        if len(x) >= 2 and trans:
            x = x[:-2] + (x[-1], x[-2])
        return x
    if x.ndim >= 3 and trans_batch:
        x = np.moveaxis(x, 0, -2)
    return x


def _infer_matmul(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    a = node.attrs
    arranged = [None if t is None or t.shape is None else
                TensorType(t.dtype, _arrange(tuple(t.shape), int(a.get(f"transBatch{n}", 0)), int(a.get(f"trans{n}", 0))))
                for t, n in zip(ins[:2], "AB")]
    return infer_as("MatMul", 13, {}, arranged)


@op("FusedMatMul", since=1, domain=MS, infer=_infer_matmul)
def FusedMatMul(A: np.ndarray, B: np.ndarray, *, alpha: float = 1.0, transA: int = 0, transB: int = 0,
                transBatchA: int = 0, transBatchB: int = 0) -> np.ndarray:
    """alpha * op(A) @ op(B); op moves the first dim after the batch dims (transBatch) and swaps the
    last two (trans); 1-D operands are vectors, as in MatMul."""
    if A.dtype != B.dtype:
        raise InvalidArgument(f"FusedMatMul: A and B must share one element type, got {A.dtype} and {B.dtype}")
    if A.ndim >= 2 and B.ndim >= 2:
        cd = gemm_compute_dtype(A.dtype, "FusedMatMul")
        a = np.ascontiguousarray(as_dtype(_arrange(A, transBatchA, 0), cd))
        b = np.ascontiguousarray(as_dtype(_arrange(B, transBatchB, 0), cd))
        return as_dtype(bmm(a, b, transA, transB, "FusedMatMul", alpha), A.dtype)
    y = matmul_to(A, B, A.dtype)
    if alpha != 1:
        y = (y * y.dtype.type(alpha)).astype(A.dtype, copy=False)
    return y
