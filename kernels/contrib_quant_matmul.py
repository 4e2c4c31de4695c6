"""onnxruntime's blockwise-quantised matrix product (com.microsoft): MatMulNBits (2/4/8-bit blockwise
weights, packed zero points or float ones; g_idx only as the identity block assignment). Its 8-bit
integer products, MatMulIntegerToFloat and DynamicQuantizeMatMul, are in kernels/qmatmul.py.

MatMulNBits' constant weights are re-packed once, when the node is lowered, into the layout of
kernels/nbits.py's kernels, which read the 2/4/8-bit values themselves (a GEMV for a few rows of A,
float tiles through BLAS for more): no float copy of the weight is kept (float64 A, outside
onnxruntime's types, still gets one). Weights that arrive at run time are dequantised per call.
"""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, TensorType
from jitort.kernels import nbits
from jitort.kernels.registry import Call, Ref, default_call, lookup, op

MS = "com.microsoft"


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """uint8 [..., bytes] -> the first ``count`` ``bits``-bit values of each row, lowest bits first."""
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    vals = (packed[..., :, None] >> shifts) & np.uint8((1 << bits) - 1)
    return vals.reshape(packed.shape[:-1] + (-1,))[..., :count]


def quantized_nbits(B: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, g_idx: np.ndarray | None,
                   K: int, N: int, bits: int, block_size: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """MatMulNBits' packed B [N, blocks, block_size * bits / 8], checked, as (q uint8 [N, blocks *
    block_size] (values past K as stored), scales float32 [N, blocks], zero points float32 [N, blocks]
    or None, the zero point when absent: 2^(bits-1))."""
    name = "MatMulNBits"
    if bits not in (2, 4, 8):
        raise OrtNotImplemented(f"jitort has no implementation for op '{name}' in domain '{MS}' at opset 1 with "
                                f"bits={bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise InvalidArgument(f"{name}: block_size must be a power of 2 and >= 16, got {block_size}")
    blocks = -(-K // block_size)
    blob = block_size * bits // 8
    if B.dtype != np.uint8 or B.size != N * blocks * blob:
        raise InvalidArgument(f"{name}: B must be uint8 [{N}, {blocks}, {blob}], got {B.dtype}{list(B.shape)}")
    if scales.size != N * blocks:
        raise InvalidArgument(f"{name}: scales must have {N} x {blocks} elements, got {list(scales.shape)}")
    q = _unpack(B.reshape(N, blocks, blob), bits, block_size).reshape(N, blocks * block_size)
    if g_idx is not None:
        # Only the identity assignment (row k in block k // block_size): onnxruntime's act-order
        # results with a permuted g_idx were not reproduced from its documentation.
        if g_idx.size != K or not np.array_equal(g_idx.astype(np.int64).reshape(-1), np.arange(K) // block_size):
            raise OrtNotImplemented(f"jitort has no implementation for op '{name}' in domain '{MS}' at opset 1 "
                                    "with a g_idx other than k // block_size")
    s = scales.astype(np.float32).reshape(N, blocks)
    zp: np.ndarray | None = None
    if zero_points is None:
        pass
    elif zero_points.dtype == np.uint8:
        zbytes = -(-blocks * bits // 8)
        if zero_points.size != N * zbytes:
            raise InvalidArgument(f"{name}: packed zero_points must be uint8 [{N}, {zbytes}], got "
                                  f"{list(zero_points.shape)}")
        zp = _unpack(zero_points.reshape(N, zbytes), bits, blocks).astype(np.float32)
    else:  # float zero points: w = (q - zp) * scale with zp in the scales' type
        if zero_points.size != N * blocks:
            raise InvalidArgument(f"{name}: zero_points must have {N} x {blocks} elements")
        zp = zero_points.astype(np.float32).reshape(N, blocks)
    return q, s, zp, float(1 << (bits - 1))


def dequantize_nbits(B: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, g_idx: np.ndarray | None,
                     K: int, N: int, bits: int, block_size: int, dt: np.dtype) -> np.ndarray:
    """The float weight [K, N] of MatMulNBits' packed B [N, blocks, block_size * bits / 8]."""
    q, s, zp, zdef = quantized_nbits(B, scales, zero_points, g_idx, K, N, bits, block_size)
    block_of = np.arange(K) // block_size
    z = zdef if zp is None else zp.astype(dt)[:, block_of]
    w = (q[:, :K].astype(dt) - z) * s.astype(dt)[:, block_of]
    return np.ascontiguousarray(w.T)


def _matmul_float(A: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    dt = w.dtype
    K, N = w.shape
    if A.shape[-1] != K:
        raise InvalidArgument(f"MatMulNBits: A's last dimension {A.shape[-1]} is not K={K}")
    y = np.matmul(A.reshape(-1, K).astype(dt, copy=False), w)
    if bias is not None:
        if bias.size != N:
            raise InvalidArgument(f"MatMulNBits: bias must have N={N} elements, got {list(bias.shape)}")
        y += bias.astype(dt, copy=False).reshape(N)
    return y.reshape(A.shape[:-1] + (N,)).astype(A.dtype, copy=False)


def matmul_packed(A: np.ndarray, w: np.ndarray, s: np.ndarray, z: np.ndarray | None, bias: np.ndarray | None, *,
                  zdef: float, bits: int, block: int, K: int, N: int) -> np.ndarray:
    """MatMulNBits on weights packed for kernels/nbits.py when the node was lowered (float32 or
    float16 A; computed in float32)."""
    if A.shape[-1] != K:
        raise InvalidArgument(f"MatMulNBits: A's last dimension {A.shape[-1]} is not K={K}")
    if bias is not None and bias.size != N:
        raise InvalidArgument(f"MatMulNBits: bias must have N={N} elements, got {list(bias.shape)}")
    pk = nbits.Packed(w, s, z, zdef, bits, block, K, N)
    y = nbits.matmul(A.reshape(-1, K), pk, bias)
    return y.reshape(A.shape[:-1] + (N,)).astype(A.dtype, copy=False)


# jitort.compiled.Artifact.own_threads, as gemm_ops.matmul_packed: the kernels split their work over
# jitort's threads, so the session keeps BLAS single-threaded (no spinning OpenBLAS worker competing
# with them; see kernels/threads.py)
matmul_packed.own_threads = True  # type: ignore[attr-defined]


def _compute(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if np.dtype(dt) == np.float16 else np.dtype(dt)


def _lower_nbits(node: Node, g: Graph) -> Call:
    ins = list(node.inputs) + [""] * (6 - len(node.inputs))
    B, scales = g.const(ins[1]), g.const(ins[2])
    zp, gi = g.const(ins[3]), g.const(ins[4])
    at = g.type_of(ins[0]).dtype
    if B is None or scales is None or (ins[3] and zp is None) or (ins[4] and gi is None) or at is None:
        return default_call(lookup("MatMulNBits", MS, node.version), node, g)
    a = node.attrs
    if a.get("weight_prepacked", 0):
        raise OrtNotImplemented(f"jitort has no implementation for op 'MatMulNBits' in domain '{MS}' at opset 1 "
                                "with weight_prepacked=1")
    K, N, bits, block = int(a["K"]), int(a["N"]), int(a.get("bits", 4)), int(a["block_size"])
    q, s, z, zdef = quantized_nbits(B, scales, zp, gi, K, N, bits, block)
    if _compute(at) != np.float32:
        w = dequantize_nbits(B, scales, zp, gi, K, N, bits, block, _compute(at))
        return Call(_matmul_float, [Ref(ins[0]), w, Ref(ins[5]) if ins[5] else None])
    pk = nbits.pack(q, s, z, zdef, bits, block, K)
    return Call(matmul_packed, [Ref(ins[0]), pk.w, pk.s, pk.z, Ref(ins[5]) if ins[5] else None],
                dict(zdef=zdef, bits=bits, block=block, K=K, N=N))


def _infer_nbits(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    a = ins[0]
    if a is None or a.shape is None or "N" not in node.attrs:
        return []
    return [TensorType(a.dtype, tuple(a.shape[:-1]) + (int(node.attrs["N"]),))]


@op("MatMulNBits", since=1, domain=MS, lower=_lower_nbits, infer=_infer_nbits)
def MatMulNBits(A: np.ndarray, B: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None = None,
                g_idx: np.ndarray | None = None, bias: np.ndarray | None = None, *, K: int, N: int, bits: int = 4,
                block_size: int, accuracy_level: int = 0, weight_prepacked: int = 0) -> np.ndarray:
    """Y = A @ dequantize(B)^T + bias; weight w[n, k] = (q[n, k] - zp) * scale[n, block(k)], zp
    2^(bits-1) when absent. accuracy_level only lets onnxruntime compute A in lower precision."""
    if weight_prepacked:
        raise OrtNotImplemented(f"jitort has no implementation for op 'MatMulNBits' in domain '{MS}' at opset 1 "
                                "with weight_prepacked=1")
    w = dequantize_nbits(B, scales, zero_points, g_idx, K, N, bits, block_size, _compute(A.dtype))
    return _matmul_float(A, w, bias)
