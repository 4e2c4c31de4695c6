"""onnxruntime's com.microsoft activations as scalar expressions, so they fuse with their neighbours
like any elementwise op (docs/ContribOperators.md in onnxruntime's repository).

Gelu is the exact GELU (erf); BiasGelu adds its bias first; FastGelu is the tanh approximation with
an optional bias; QuickGelu is ``x * sigmoid(alpha * x)``; BiasAdd is ``X + bias + skip``. The
GELU expression itself is ``elementwise.gelu``, shared with the standard Gelu (opset 20).
"""
from __future__ import annotations

from jitort.kernels.elementwise import gelu
from jitort.kernels.registry import Scalar, elementwise

MS = "com.microsoft"

# Attribute defaults onnxruntime's schemas declare (onnx ships no com.microsoft schemas);
# tests/test_contrib_activation.py checks them against onnxruntime's.
QUICKGELU_ALPHA = 1.702


@elementwise("Gelu", since=1, domain=MS)
def Gelu(c: Scalar, x: str) -> str:
    return gelu(c, x, "none")


@elementwise("BiasGelu", since=1, domain=MS)
def BiasGelu(c: Scalar, a: str, b: str) -> str:
    return gelu(c, f"({a} + {b})", "none")


@elementwise("FastGelu", since=1, domain=MS)
def FastGelu(c: Scalar, x: str, bias: str | None = None) -> str:
    return gelu(c, x if bias is None else f"({x} + {bias})", "tanh")


@elementwise("QuickGelu", since=1, domain=MS)
def QuickGelu(c: Scalar, x: str) -> str:
    alpha = c.const(float(c.attrs.get("alpha", QUICKGELU_ALPHA)))
    return f"{x} * {c.math('sigmoid', f'{alpha} * {x}')}"


@elementwise("BiasAdd", since=1, domain=MS)
def BiasAdd(c: Scalar, x: str, bias: str, skip: str) -> str:
    return f"{x} + {bias} + {skip}"
