"""onnxruntime's Attention and MultiHeadAttention (com.microsoft), as its CPU provider computes them.

Both reduce to one core (``attend``): scores ``Q K^T * scale`` [B, N, S, T], plus an additive mask
(``mask_filter_value`` where a mask says a key is hidden, and after the query's position when
unidirectional), plus ``attention_bias``; softmax over the keys (kernels/softmax.py's row kernel);
times V; heads concatenated back to [B, S, N * Hv]. The GEMMs are numpy's batched matmul (BLAS per
head). Attention projects Q, K, V from one input with one packed weight (``qkv_hidden_sizes`` may
make them differ) and takes its KV cache as ``past`` [2, B, N, P, H]; MultiHeadAttention takes Q,
K, V projected (separately, K/V already per head, packed QKV or packed KV) with ``past_key`` /
``past_value``. Options onnxruntime's CPU provider has but this file does not (rotary inside
Attention, a shared past/present buffer, the qk output, cache indirection) raise NotImplemented.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Node, TensorType
from jitort.kernels.registry import op
from jitort.kernels.softmax import softmax
from jitort.protos import unknown_dim

MS = "com.microsoft"
MASK_FILTER_VALUE = -10000.0  # onnxruntime's default for mask_filter_value


def _unsupported(op_type: str, what: str) -> OrtNotImplemented:
    return OrtNotImplemented(f"jitort has no implementation for op '{op_type}' in domain '{MS}' at opset 1 "
                             f"with {what}")


def _fresh() -> str:
    return unknown_dim()


def additive_mask(op_type: str, mask: np.ndarray | None, B: int, S: int, T: int, P: int, causal: bool,
                  filter_value: float, dt: np.dtype) -> np.ndarray | None:
    """[B, 1, S, T] of 0 and ``filter_value`` (None: nothing hidden). ``mask`` is one of onnxruntime's
    forms: key lengths [B]; ends then starts [2B]; raw 0/1 [B, T] or [B, S, T]; Megatron's
    [B, 1, M, M] (rows P..P+S). Raw masks hide where they are 0."""
    hidden = None
    if mask is not None:
        j = np.arange(T)
        if mask.ndim == 1 and mask.shape[0] in (B, 2 * B):
            end = mask[:B].astype(np.int64).reshape(B, 1, 1, 1)
            hidden = np.broadcast_to(j >= end, (B, 1, S, T))
            if mask.shape[0] == 2 * B:
                hidden = hidden | (j < mask[B:].astype(np.int64).reshape(B, 1, 1, 1))
        elif mask.ndim == 2 and mask.shape == (B, T):
            hidden = np.broadcast_to((mask == 0).reshape(B, 1, 1, T), (B, 1, S, T))
        elif mask.ndim == 3 and mask.shape == (B, S, T):
            hidden = (mask == 0).reshape(B, 1, S, T)
        elif mask.ndim == 4 and mask.shape[0] == B and mask.shape[1] == 1 and mask.shape[2] >= P + S \
                and mask.shape[3] >= T:
            hidden = (mask[:, :, P:P + S, :T] == 0)
        else:
            raise InvalidArgument(f"{op_type}: mask of shape {list(mask.shape)} is none of the forms [B], [2B], "
                                  f"[B, T], [B, S, T], [B, 1, M, M] for B={B}, S={S}, T={T}")
    if causal:
        future = (np.arange(T).reshape(1, T) > (P + np.arange(S)).reshape(S, 1)).reshape(1, 1, S, T)
        hidden = future if hidden is None else hidden | future
    if hidden is None:
        return None
    return np.where(hidden, dt.type(filter_value), dt.type(0))


def attend(op_type: str, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask_add: np.ndarray | None,
           bias: np.ndarray | None) -> np.ndarray:
    """softmax(q k^T * scale + mask_add + bias) v for q [B, N, S, H], k [B, N, T, H], v [B, N, T, Hv]
    -> [B, S, N * Hv]."""
    B, N, S, _ = q.shape
    scores = np.matmul(q, np.swapaxes(k, -1, -2))
    scores *= scores.dtype.type(scale)
    if mask_add is not None:
        scores += mask_add
    if bias is not None:
        try:
            scores += bias.astype(scores.dtype, copy=False)
        except ValueError:
            raise InvalidArgument(f"{op_type}: attention_bias of shape {list(bias.shape)} does not broadcast to "
                                  f"the scores {list(scores.shape)}") from None
    probs = softmax("Softmax", np.ascontiguousarray(scores), -1, False)
    out = np.matmul(probs, v)  # [B, N, S, Hv]
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(B, S, N * v.shape[-1])


def _heads(x: np.ndarray, N: int) -> np.ndarray:
    """[B, L, N * H] -> [B, N, L, H]."""
    B, L, D = x.shape
    return x.reshape(B, L, N, D // N).transpose(0, 2, 1, 3)


def _float(op_type: str, x: np.ndarray) -> np.ndarray:
    if x.dtype in (np.float32, np.float64):
        return x
    if x.dtype == np.float16:
        return x.astype(np.float32)
    raise _unsupported(op_type, f"element type {x.dtype}")


# --- Attention -------------------------------------------------------------------------------------

def _qkv_sizes(op_type: str, W: int, qkv_hidden_sizes: list[int] | None) -> tuple[int, int, int]:
    if qkv_hidden_sizes:
        if len(qkv_hidden_sizes) != 3 or sum(qkv_hidden_sizes) != W or qkv_hidden_sizes[0] != qkv_hidden_sizes[1]:
            raise InvalidArgument(f"{op_type}: qkv_hidden_sizes {list(qkv_hidden_sizes)} must be three sizes, Q's "
                                  f"equal to K's, summing to the weights' {W} columns")
        return qkv_hidden_sizes[0], qkv_hidden_sizes[1], qkv_hidden_sizes[2]
    if W % 3:
        raise InvalidArgument(f"{op_type}: weights have {W} columns, not three equal parts")
    return W // 3, W // 3, W // 3


def _infer_attention(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    if x is None or x.shape is None or len(x.shape) != 3 or w is None or w.shape is None or \
            not isinstance(w.shape[1], int):
        return []
    q, _, vh = _qkv_sizes("Attention", w.shape[1], node.attrs.get("qkv_hidden_sizes"))
    N = int(node.attrs.get("num_heads", 1))
    past = ins[4] if len(ins) > 4 else None
    total: Any = x.shape[1]
    if past is not None:
        p = past.shape[3] if past.shape is not None and len(past.shape) == 5 else None
        total = p + total if isinstance(p, int) and isinstance(total, int) else _fresh()
    return [TensorType(x.dtype, (x.shape[0], x.shape[1], vh)),
            TensorType(x.dtype, (2, x.shape[0], N, total, q // N))]


@op("Attention", since=1, domain=MS, infer=_infer_attention)
def Attention(input: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None,
              mask_index: np.ndarray | None = None, past: np.ndarray | None = None,
              attention_bias: np.ndarray | None = None, past_sequence_length: np.ndarray | None = None, *,
              num_heads: int, qkv_hidden_sizes: list[int] | None = None, unidirectional: int = 0,
              scale: float = 0.0, mask_filter_value: float = MASK_FILTER_VALUE, do_rotary: int = 0,
              rotary_embedding_dim: int = 0, past_present_share_buffer: int = 0, _nout: int = 1) -> Any:
    op_type = "Attention"
    if do_rotary:
        raise _unsupported(op_type, "do_rotary=1")
    if past_present_share_buffer:
        raise _unsupported(op_type, "past_present_share_buffer=1")
    if input.ndim != 3 or weights.ndim != 2 or weights.shape[0] != input.shape[2]:
        raise InvalidArgument(f"{op_type}: input {list(input.shape)} must be [B, S, D] and weights "
                              f"{list(weights.shape)} [D, W]")
    qh, kh, vh = _qkv_sizes(op_type, weights.shape[1], qkv_hidden_sizes)
    N = num_heads
    if N <= 0 or qh % N or vh % N:
        raise InvalidArgument(f"{op_type}: hidden sizes {qh}, {vh} are not divisible by num_heads {N}")
    x = _float(op_type, input)
    B, S, _ = x.shape
    qkv = np.matmul(x.reshape(B * S, -1), weights.astype(x.dtype, copy=False))
    if bias is not None:
        if bias.shape != (weights.shape[1],):
            raise InvalidArgument(f"{op_type}: bias of shape {list(bias.shape)} must be [{weights.shape[1]}]")
        qkv += bias.astype(x.dtype, copy=False)
    qkv = qkv.reshape(B, S, -1)
    q, k, v = _heads(qkv[..., :qh], N), _heads(qkv[..., qh:qh + kh], N), _heads(qkv[..., qh + kh:], N)
    P = 0
    if past is not None:
        if past.ndim != 5 or past.shape[:3] != (2, B, N) or past.shape[4] != qh // N or qh != vh:
            raise InvalidArgument(f"{op_type}: past of shape {list(past.shape)} must be [2, {B}, {N}, P, {qh // N}]")
        P = past.shape[3]
        pc = past.astype(x.dtype, copy=False)
        k = np.concatenate([pc[0], k], axis=2)
        v = np.concatenate([pc[1], v], axis=2)
    T = P + S
    mask = additive_mask(op_type, mask_index, B, S, T, P, bool(unidirectional), mask_filter_value, x.dtype)
    y = attend(op_type, q, k, v, scale or 1.0 / math.sqrt(qh // N), mask, attention_bias)
    y = y.astype(input.dtype, copy=False)
    if _nout == 1:
        return y
    present = np.stack([k, v]).astype(input.dtype, copy=False)
    return y, np.ascontiguousarray(present)


# --- MultiHeadAttention ----------------------------------------------------------------------------

def _infer_mha(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    q = ins[0]
    if q is None or q.shape is None or len(q.shape) not in (3, 5):
        return []
    N = int(node.attrs.get("num_heads", 1))
    B, S = q.shape[0], q.shape[1]
    key = ins[1] if len(ins) > 1 else None
    val = ins[2] if len(ins) > 2 else None
    if len(q.shape) == 5:
        hv = q.shape[4]
        out_d: Any = N * hv if isinstance(hv, int) else _fresh()
    elif val is not None and val.shape is not None:
        d = val.shape[-1]
        out_d = d if len(val.shape) == 3 else (N * d if isinstance(d, int) else _fresh())
    elif key is not None and key.shape is not None and len(key.shape) == 5:
        d = key.shape[4]
        out_d = N * d if isinstance(d, int) else _fresh()
    else:
        return []
    return [TensorType(q.dtype, (B, S, out_d)), TensorType(q.dtype, (B, N, _fresh(), _fresh())),
            TensorType(q.dtype, (B, N, _fresh(), _fresh()))]


def _mha_qkv(op_type: str, query: np.ndarray, key: np.ndarray | None, value: np.ndarray | None,
             bias: np.ndarray | None, N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q [B, N, S, H], K [B, N, L, H], V [B, N, L, Hv] from MultiHeadAttention's input forms."""
    if query.ndim == 5:  # packed QKV [B, S, N, 3, H]
        if key is not None or value is not None or query.shape[2] != N or query.shape[3] != 3:
            raise InvalidArgument(f"{op_type}: packed QKV query {list(query.shape)} must be [B, S, {N}, 3, H] "
                                  "with no key or value")
        H = query.shape[4]
        if bias is not None:
            query = query + bias.reshape(3, N, H).transpose(1, 0, 2)
        parts = query.transpose(3, 0, 2, 1, 4)  # [3, B, N, S, H]
        return parts[0], parts[1], parts[2]
    if query.ndim != 3 or key is None:
        raise InvalidArgument(f"{op_type}: query {list(query.shape)} must be [B, S, D] with a key, or packed QKV")
    B, S, D = query.shape
    if D % N:
        raise InvalidArgument(f"{op_type}: query hidden size {D} is not divisible by num_heads {N}")
    if key.ndim == 5:  # packed KV [B, L, N, 2, H]
        if value is not None or key.shape[2] != N or key.shape[3] != 2:
            raise InvalidArgument(f"{op_type}: packed KV key {list(key.shape)} must be [B, L, {N}, 2, H], no value")
        H = key.shape[4]
        if bias is not None:
            query = query + bias[:D]
            key = key + bias[D:].reshape(2, N, H).transpose(1, 0, 2)
        kv = key.transpose(3, 0, 2, 1, 4)
        return _heads(query, N), kv[0], kv[1]
    if value is None or value.ndim != key.ndim:
        raise InvalidArgument(f"{op_type}: value must be given with the same rank as key {list(key.shape)}")
    if key.ndim == 4:  # K, V already per head [B, N, L, H]: the bias is Q's only
        if bias is not None:
            query = query + bias[:D]
        return _heads(query, N), key, value
    if key.ndim != 3:
        raise InvalidArgument(f"{op_type}: key {list(key.shape)} must be [B, L, D], [B, N, L, H] or packed KV")
    if bias is not None:
        dk = key.shape[2]
        query, key, value = query + bias[:D], key + bias[D:D + dk], value + bias[D + dk:]
    return _heads(query, N), _heads(key, N), _heads(value, N)


@op("MultiHeadAttention", since=1, domain=MS, infer=_infer_mha)
def MultiHeadAttention(query: np.ndarray, key: np.ndarray | None = None, value: np.ndarray | None = None,
                       bias: np.ndarray | None = None, key_padding_mask: np.ndarray | None = None,
                       attention_bias: np.ndarray | None = None, past_key: np.ndarray | None = None,
                       past_value: np.ndarray | None = None, past_sequence_length: np.ndarray | None = None,
                       cache_indirection: np.ndarray | None = None, *, num_heads: int, unidirectional: int = 0,
                       scale: float = 0.0, mask_filter_value: float = MASK_FILTER_VALUE, _nout: int = 1) -> Any:
    op_type = "MultiHeadAttention"
    if cache_indirection is not None or past_sequence_length is not None:
        raise _unsupported(op_type, "cache_indirection / past_sequence_length (beam-search buffers)")
    if _nout > 3:
        raise _unsupported(op_type, "the qk output")
    N = num_heads
    dt = _float(op_type, query).dtype
    cast = [None if a is None else a.astype(dt, copy=False) for a in (query, key, value, bias)]
    q, k, v = _mha_qkv(op_type, cast[0], cast[1], cast[2], cast[3], N)  # type: ignore[arg-type]
    if (past_key is None) != (past_value is None):
        raise InvalidArgument(f"{op_type}: past_key and past_value must be given together")
    if past_key is not None and key is not None and key.ndim == 4:
        raise InvalidArgument(f"{op_type}: past_key/past_value cannot extend a key already per head")
    P = 0
    if past_key is not None:
        assert past_value is not None
        P = past_key.shape[2]
        k = np.concatenate([past_key.astype(dt, copy=False), k], axis=2)
        v = np.concatenate([past_value.astype(dt, copy=False), v], axis=2)
    B, _, S, H = q.shape
    T = k.shape[2]
    if k.shape[:2] != (B, N) or k.shape[3] != H or v.shape[:3] != k.shape[:3]:
        raise InvalidArgument(f"{op_type}: key/value heads {list(k.shape)}, {list(v.shape)} do not match the "
                              f"query's {list(q.shape)}")
    mask = additive_mask(op_type, key_padding_mask, B, S, T, P if unidirectional else 0, bool(unidirectional),
                         mask_filter_value, dt)
    y = attend(op_type, q, k, v, scale or 1.0 / math.sqrt(H), mask, attention_bias).astype(query.dtype, copy=False)
    outs = [y, np.ascontiguousarray(k).astype(query.dtype, copy=False),
            np.ascontiguousarray(v).astype(query.dtype, copy=False)]
    return y if _nout == 1 else tuple(outs[:_nout])
