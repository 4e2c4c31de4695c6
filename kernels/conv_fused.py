"""jitort's fused convolution: ``FusedConv`` in jitort's private domain ("jitort", version 1).

    Y = activation(Conv(X, W, B) + Z)

The conv epilogue pass (jitort/passes/conv_epilogue.py) makes one of a Conv (with a folded
BatchNormalization) and the nodes after it: a residual Add/Sum (Z, its other operand, of Y's shape)
and one activation. Inputs are Conv's X, W, B (B may be omitted) and the optional residual Z;
attributes are Conv's (auto_pad, dilations, group, kernel_shape, pads, strides) plus the
epilogue's:

* ``activation``: "" (none), Relu, Clip, LeakyRelu, HardSigmoid, HardSwish, Sigmoid or SiLU
  (kernels/conv.py ``ACTIVATIONS``); any other name is NotImplemented;
* ``alpha``, ``beta``: its parameters (Clip: min and max; LeakyRelu: alpha; HardSigmoid: alpha,
  beta), 0.0 when unused.

The residual is the input Z rather than an attribute: it is a value, read by the step that runs
the node (liveness, memory planning and the profile see it as an input). Bias, residual and
activation are applied while the output block is in cache (kernels/conv.py's epilogues).
onnxruntime's own com.microsoft FusedConv (kernels/contrib_fused.py) lowers onto this.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jitort.ir import Graph, Node, TensorType
from jitort.kernels.contrib_infer import infer_as
from jitort.kernels.conv import conv_eager, lower_conv
from jitort.kernels.registry import Call, op

DOMAIN = "jitort"
FUSED_CONV = "FusedConv"
CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
_CONV_OPSET = 11  # the Conv whose type inference FusedConv's output follows


def is_fused_conv(node: Node) -> bool:
    return node.op_type == FUSED_CONV and node.domain == DOMAIN


def epilogue(node: Node) -> tuple[str, float, float]:
    """(activation, alpha, beta) of a FusedConv node; ("", 0, 0) for a plain Conv."""
    if not is_fused_conv(node):
        return "", 0.0, 0.0
    a = node.attrs
    return str(a.get("activation", "")), float(a.get("alpha", 0.0)), float(a.get("beta", 0.0))


def residual(node: Node) -> str:
    """The name of a FusedConv's residual input Z; "" when none."""
    return node.inputs[3] if is_fused_conv(node) and len(node.inputs) > 3 else ""


def make_fused(conv: Node, activation: str = "", alpha: float = 0.0, beta: float = 0.0, z: str = "") -> None:
    """Turn a Conv node (domain "", any opset) into a FusedConv in place, or update a FusedConv's
    epilogue: activation (alpha, beta) and, when z is given, the residual input."""
    if not is_fused_conv(conv):
        conv.attrs = {k: v for k, v in conv.attrs.items() if k in CONV_ATTRS or k.startswith("_")}
        conv.op_type, conv.domain, conv.version = FUSED_CONV, DOMAIN, 1
        conv.attrs.update(activation="", alpha=0.0, beta=0.0)
    if activation:
        conv.attrs.update(activation=activation, alpha=float(alpha), beta=float(beta))
    if z:
        ins = list(conv.inputs) + [""] * (3 - len(conv.inputs))
        conv.inputs = ins[:3] + [z]


def _infer(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    return infer_as("Conv", _CONV_OPSET, {k: node.attrs.get(k) for k in CONV_ATTRS}, ins[:3])


def _lower(node: Node, g: Graph) -> Call:
    act, alpha, beta = epilogue(node)
    return lower_conv(node, g, act, alpha, beta, residual(node))


@op(FUSED_CONV, since=1, domain=DOMAIN, lower=_lower, infer=_infer)
def FusedConv(X: np.ndarray, W: np.ndarray, B: np.ndarray | None = None, Z: np.ndarray | None = None, *,
              auto_pad: str = "NOTSET", dilations: Sequence[int] | None = None, group: int = 1,
              kernel_shape: Sequence[int] | None = None, pads: Sequence[int] | None = None,
              strides: Sequence[int] | None = None, activation: str = "", alpha: float = 0.0,
              beta: float = 0.0) -> np.ndarray:
    """activation(Conv(X, W, B) + Z) (see the module docstring)."""
    kw: dict[str, Any] = dict(auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                              pads=pads, strides=strides)
    return conv_eager(X, W, B, Z, **kw, activation=activation, alpha=alpha, beta=beta, op_name=FUSED_CONV)
