"""The ONNX ``Attention`` op (opset 23 on) run by the attention kernel (kernels/attention.py) instead of
onnx's function body: one streaming pass per (batch, head, block of query rows), no [S, T] score
tensor, the head split of 3-D inputs read through strides.

The importer moves a node here (domain ``jitort``, ``jitort.frontend.rewrites.direct_attention``)
when this kernel computes everything it asks for: float16/32/64 inputs, no ``softcap``, no
``qk_matmul_output`` output, no ``nonpad_kv_seqlen``, no sliding window, a softmax in float32 or the
input type. Any other Attention node expands into the function body, as before.

Semantics (onnx's reference and onnxruntime 1.32 agree on each, checked by tests/test_attention_op.py):

* Q, K, V are [B, N, S|T, H] or, with ``q_num_heads``/``kv_num_heads``, [B, S|T, heads * H]; the
  output Y has Q's layout; K/V heads serve ``N / NK`` query heads each (GQA);
* ``past_key``/``past_value`` [B, NK, P, H] come before K/V along the sequence; ``present_key``
  and ``present_value`` are the concatenations, [B, NK, P + T, H];
* ``attn_mask``: boolean (true = attend) or added to the scores, broadcast to [B, N, S, P + T]; a mask
  shorter than P + T keys is padded with false / -inf;
* ``is_causal``: query s sees keys t <= s + P (bottom-right aligned when there is a past);
* ``scale`` defaults to 1 / sqrt(H); a query row that sees no key at all is 0.
"""
from __future__ import annotations

import math

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.attention import attend
from jitort.kernels.registry import op

_BSNH = (0, 2, 1, 3)
_BNSH = (0, 1, 2, 3)


def _heads(x: np.ndarray, heads: int, what: str) -> np.ndarray:
    """[B, L, heads * H] as its [B, L, heads, H] view."""
    if heads <= 0 or x.shape[2] % heads:
        raise InvalidArgument(f"Attention: {what} of shape {list(x.shape)}: its last dimension does not split into "
                              f"{heads} heads")
    return x.reshape(x.shape[0], x.shape[1], heads, x.shape[2] // heads)


def _pad_keys(mask: np.ndarray, total: int) -> np.ndarray:
    """The mask padded to ``total`` keys with false / -inf (a mask may cover only the first keys)."""
    short = total - mask.shape[-1]
    if short <= 0:
        return mask
    fill = False if mask.dtype == np.bool_ else -np.inf
    return np.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, short)], constant_values=fill)


@op("Attention", since=1, domain="jitort")
def Attention(Q: np.ndarray, K: np.ndarray, V: np.ndarray, attn_mask: np.ndarray | None = None,
              past_key: np.ndarray | None = None, past_value: np.ndarray | None = None, *,
              is_causal: int = 0, q_num_heads: int = 0, kv_num_heads: int = 0, scale: float | None = None,
              _nout: int = 1) -> np.ndarray | tuple[np.ndarray, ...]:
    """ONNX Attention as the module docstring states it; returns Y (and present_key, present_value)."""
    rank = Q.ndim
    if rank not in (3, 4) or K.ndim != rank or V.ndim != rank:
        raise InvalidArgument(f"Attention: Q, K and V must all be 3-D or all 4-D, got shapes {list(Q.shape)}, "
                              f"{list(K.shape)}, {list(V.shape)}")
    if (past_key is None) != (past_value is None):
        raise InvalidArgument("Attention: past_key and past_value must be given together")
    if rank == 3:
        q = _heads(Q, q_num_heads, "Q")
        k, v = _heads(K, kv_num_heads, "K"), _heads(V, kv_num_heads, "V")
        perm = _BSNH
    else:
        q, k, v, perm = Q, K, V, _BNSH
    past = 0
    kperm = vperm = perm
    if past_key is not None:
        assert past_value is not None
        if past_key.ndim != 4 or past_value.ndim != 4:
            raise InvalidArgument(f"Attention: past_key {list(past_key.shape)} and past_value "
                                  f"{list(past_value.shape)} must be 4-D [B, kv_heads, past, H]")
        past = past_key.shape[2]
        try:
            k = np.concatenate((past_key, k.transpose(perm)), axis=2)
            v = np.concatenate((past_value, v.transpose(perm)), axis=2)
        except ValueError:
            raise InvalidArgument(f"Attention: past_key {list(past_key.shape)} / past_value "
                                  f"{list(past_value.shape)} do not match K {list(K.shape)} / V {list(V.shape)}"
                                  ) from None
        kperm = vperm = _BNSH
    elif _nout > 1:  # present_key/value are K/V as [B, NK, T, H], in buffers of their own
        k, v = k.transpose(perm).copy(), v.transpose(perm).copy()
        kperm = vperm = _BNSH
    head = q.shape[3]
    if scale is None:
        scale = 1.0 / math.sqrt(head)
    # onnx's function body scales Q and K by sqrt(scale) each, rounded to the input type
    root = float(Q.dtype.type(math.sqrt(scale))) if Q.dtype.kind == "f" else math.sqrt(scale)
    total = k.shape[2] if kperm == _BNSH else k.shape[1]
    add = keep = None
    if attn_mask is not None:
        m = _pad_keys(attn_mask, total)
        if m.dtype == np.bool_:
            keep = m
        else:
            add = m
    y = attend(q, k, v, add, keep, q_perm=perm, k_perm=kperm, v_perm=vperm, out_bsnh=int(rank == 3),
               scale=root * root, keep_is=1, fill=-np.inf, where_first=1, causal=int(bool(is_causal)),
               causal_offset=past, empty_zero=1, op_name="Attention")
    if rank == 3:
        y = y.reshape(y.shape[0], y.shape[1], -1)
    if _nout == 1:
        return y
    return (y, k, v)[:_nout]
