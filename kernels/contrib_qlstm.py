"""onnxruntime's DynamicQuantizeLSTM (com.microsoft), what ``quantize_dynamic`` writes for an LSTM:
LSTM with int8/uint8 weights W [D, input, 4H] and R [D, H, 4H] (transposed against ONNX LSTM's) and
their scales and zero points, per direction [D] or per gate column [D, 4H].

jitort dequantises the weights exactly, ``(W - zero_point) * scale`` in float32 (at compile time
when they are constants, as they are in a quantised model), and runs the float LSTM
(kernels/rnn.py) on float activations. onnxruntime instead quantises X and each step's hidden state
to uint8 on the fly (DynamicQuantizeLinear) before its integer GEMMs, so its outputs carry that
activation rounding: the two agree to within it (about 1e-2 on unit-scale data), jitort being the
closer to the float LSTM the weights stand for.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jitort.errors import InvalidArgument
from jitort.ir import Graph, Node, TensorType
from jitort.kernels.contrib_infer import infer_as
from jitort.kernels.registry import Call, Ref, op
from jitort.kernels.rnn import LSTM

MS = "com.microsoft"
_LSTM_ATTRS = ("activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size",
               "input_forget")


def dequantize_gates(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, what: str) -> np.ndarray:
    """[D, K, 4H] quantised weights -> ONNX LSTM's float32 [D, 4H, K]."""
    if q.ndim != 3 or q.dtype not in (np.int8, np.uint8):
        raise InvalidArgument(f"DynamicQuantizeLSTM: {what} must be int8/uint8 [D, K, 4H], got "
                              f"{q.dtype}{list(q.shape)}")
    D, _, G = q.shape
    if scale.size not in (D, D * G) or zero_point.size != scale.size:
        raise InvalidArgument(f"DynamicQuantizeLSTM: {what}_scale {list(scale.shape)} and {what}_zero_point "
                              f"{list(zero_point.shape)} must both be [{D}] or [{D}, {G}]")
    s = scale.astype(np.float32).reshape(D, 1, -1)
    z = zero_point.astype(np.float32).reshape(D, 1, -1)
    return np.ascontiguousarray(((q.astype(np.float32) - z) * s).transpose(0, 2, 1))


def _lstm_attrs(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if k in _LSTM_ATTRS and v is not None}


def _infer(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    if len(ins) < 3 or ins[1] is None or ins[1].shape is None or ins[0] is None:
        return []
    W = TensorType(ins[0].dtype, tuple(ins[1].shape[i] for i in (0, 2, 1)))
    R = TensorType(ins[0].dtype, tuple(ins[2].shape[i] for i in (0, 2, 1))) if ins[2] and ins[2].shape else None
    attrs = {k: v for k, v in node.attrs.items() if k in _LSTM_ATTRS}
    return infer_as("LSTM", 14, attrs, [ins[0], W, R] + list(ins[3:8]))


def _run_dequantized(X: np.ndarray, W: np.ndarray, R: np.ndarray, B: np.ndarray | None,
                     sequence_lens: np.ndarray | None, initial_h: np.ndarray | None, initial_c: np.ndarray | None,
                     P: np.ndarray | None, nout: int, attrs: dict[str, Any]) -> Any:
    return LSTM(X, W, R, B, sequence_lens, initial_h, initial_c, P, _nout=nout, **attrs)


def _lower(node: Node, g: Graph) -> Call:
    ins = list(node.inputs) + [""] * (12 - len(node.inputs))
    consts = [g.const(n) if n else None for n in ins[1:3] + ins[8:12]]
    args: list[Any] = [Ref(n) if n else None for n in ins]
    attrs = _lstm_attrs(dict(node.attrs))
    if all(c is not None for c in consts):  # the usual case: dequantise once, here
        W, R, ws, wz, rs, rz = consts
        return Call(_run_dequantized, [args[0], dequantize_gates(W, ws, wz, "W"), dequantize_gates(R, rs, rz, "R"),
                                       *args[3:8], len(node.outputs), attrs])
    return Call(DynamicQuantizeLSTM, args, {**attrs, "_nout": len(node.outputs)})


@op("DynamicQuantizeLSTM", since=1, domain=MS, lower=_lower, infer=_infer)
def DynamicQuantizeLSTM(X: np.ndarray, W: np.ndarray, R: np.ndarray, B: np.ndarray | None = None,
                        sequence_lens: np.ndarray | None = None, initial_h: np.ndarray | None = None,
                        initial_c: np.ndarray | None = None, P: np.ndarray | None = None,
                        W_scale: np.ndarray | None = None, W_zero_point: np.ndarray | None = None,
                        R_scale: np.ndarray | None = None, R_zero_point: np.ndarray | None = None, *,
                        activation_alpha: Sequence[float] | None = None,
                        activation_beta: Sequence[float] | None = None, activations: Sequence[str] | None = None,
                        clip: float | None = None, direction: str = "forward", hidden_size: int | None = None,
                        input_forget: int = 0, _nout: int = 3) -> Any:
    if W_scale is None or W_zero_point is None or R_scale is None or R_zero_point is None:
        raise InvalidArgument("DynamicQuantizeLSTM: W_scale, W_zero_point, R_scale and R_zero_point are required")
    attrs = _lstm_attrs(dict(activation_alpha=activation_alpha, activation_beta=activation_beta,
                             activations=activations, clip=clip, direction=direction, hidden_size=hidden_size,
                             input_forget=input_forget))
    return _run_dequantized(X, dequantize_gates(W, W_scale, W_zero_point, "W"),
                            dequantize_gates(R, R_scale, R_zero_point, "R"), B, sequence_lens, initial_h, initial_c,
                            P, _nout, attrs)
