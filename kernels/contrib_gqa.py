"""onnxruntime's GroupQueryAttention (com.microsoft), as its CPU provider computes it (1.32).

Q [B, S, N*H] (or packed QKV [B, S, (N + 2 Nkv) * H]), K and V [B, S, Nkv*H]; query head ``h``
reads key/value head ``h // (N / Nkv)``. The KV cache is BNSH: ``past_key`` / ``past_value``
[B, Nkv, P, H] in, ``present_key`` / ``present_value`` [B, Nkv, max(total_sequence_length, P), H]
out, past rows first and the new rows after them, zeros after that. ``seqlens_k[b] + 1`` is batch
b's total length T_b; on the first prompt (``sequence_length == total_sequence_length``) its new
rows start at 0 and the causal offset is 0 (a right-padded prompt), afterwards its past length is
``T_b - S``. onnxruntime's shared past/present buffer (one max-length OrtValue bound as past_key
and present_key through IOBinding) is the same arithmetic: the present keeps the buffer's length
and its valid rows; the rows after them, unspecified, are zeros here (onnxruntime leaves old ones).

Scores ``q.k * scale`` (default 1/sqrt(H)), then ``softcap * tanh(x / softcap)``, then
``attention_bias`` [B|1, N|1, S, total_sequence_length]; softmax over keys ``[start, end)`` with
``end = min(past_b + s + 1, T_b)`` (``T_b`` when causal=0) and, with ``local_window_size`` W >= 0,
``start = end - W`` (when positive); ``smooth_softmax`` or ``head_sink`` add ``exp(sink - max)`` to the denominator
(sink 0, or ``head_sink[h]``). ``do_rotary`` rotates Q and K (cos/sin caches [M, r/2], r <= H,
interleaved or not) at positions ``s`` on the first prompt and ``past_b + s`` after, or at
``position_ids``. float16 computes in float32.

One kernel writes Q (rotated, BNSH) and the caches; one kernel per (batch, KV head) unit streams keys
in blocks with an online softmax (running max and sum, the accumulator rescaled once per block), so
nothing of size S x T is materialised and the compiled code does not depend on any length: one
compile serves every prompt and every decode step. Work splits over (batch, KV head)
units across the session's threads. (The kernels are in ``kernels/gqa_kernels.py``.) A prompt of
``TILE_ROWS`` query rows or more and ``TILE_FLOPS`` of work runs its attention on score tiles from
GEMMs instead (``kernels/gqa_prefill.py``): the same semantics, rounding differently.

A model's plain step (float32, past caches given, no bias, sink, position_ids or later inputs,
valid attributes: checked once, when the plan is lowered) calls ``GroupQueryAttention_step``:
``gqa_kernels.decode_step`` checks the shapes and lengths and runs both kernels in one call, so a
decode step costs a few us of Python instead of tens; whatever it declines (a bad length, work worth
several threads, a strided input) runs the general function below, which raises or computes it.

``sliding_window_cache=1`` (a window-sized cache of capacity C = past_key's length, evicting
internally): attention runs on a staging cache of the resident rows and the new ones (the masks
depend on distances only; rotary uses absolute positions), and the present holds the last L(T)
positions at rows [0, L(T)), L as the schema defines it.

``query_seqlens`` (right-padded chunks): entry b's Q_b valid rows follow its T_b - Q_b cached ones
(written there with the padding rows after them, which, like output rows past Q_b, are unspecified).

Refused (NotImplemented): quantised KV caches (k_scale/v_scale, kv_cache_bit_width), q/k_norm_weight,
the qk output, attention_bias or query_seqlens with the windowed cache.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from jitort import memory
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, TensorType
from jitort.kernels import gqa_prefill
from jitort.kernels.attention_gemm import cblas_address, run_tasks
from jitort.kernels.gqa_kernels import attend as _attend
from jitort.kernels.gqa_kernels import decode_step
from jitort.kernels.gqa_kernels import prepare as _prepare
from jitort.kernels.gqa_kernels import prepare_attend as _prepare_attend
from jitort.kernels.registry import Call, Ref, default_call, lookup, op
from jitort.kernels.threads import get_num_threads, run_parts, usable_cpus
from jitort.protos import unknown_dim

MS = "com.microsoft"
OP = "GroupQueryAttention"
# a prompt of TILE_ROWS query rows or more and TILE_FLOPS of attention work runs on GEMM tiles
# (gqa_prefill): their fixed cost (the general path's Python, BLAS calls per head) is ~35 us more. On
# the Intel Ice Lake VM, 1 thread, the tiles vs the row kernel: 12/4 heads of 64, S = 16: 84 vs 59 us,
# S = 32: 145 vs 143, S = 64: 345 vs 462; 4/2 heads of 16, S = 32: 67 vs 41, S = 64: 103 vs 101.
TILE_ROWS = 16
TILE_FLOPS = 4e6


def _tiles(B: int, N: int, S: int, L: int, H: int) -> bool:
    return S >= TILE_ROWS and 4.0 * S * L * H * B * N >= TILE_FLOPS


_FLOPS_PER_PART = 4e6  # below this much work per thread, a pool hand-off costs more than it saves


def _run_parts(args: tuple[Any, ...], nparts: int) -> None:
    """``_attend(*args, part, nparts)`` for every part on jitort's pool (threads.run_parts; the kernel
    releases the GIL). Units are split, never shared: results do not depend on nparts."""
    if nparts <= 1:
        _attend(*args, 0, 1)
        return
    run_parts(lambda p: _attend(*args, p, nparts), nparts, nparts)


def _unsupported(what: str) -> OrtNotImplemented:
    return OrtNotImplemented(f"jitort has no implementation for op '{OP}' in domain '{MS}' at opset 1 with {what}")


_NO_CACHE = np.zeros((1, 1), np.float32)
_NO_PAST = np.zeros((1, 1, 0, 1), np.float32)
_NO_BIAS = np.zeros((1, 1, 1, 0), np.float32)


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.float32)


def _positions(position_ids: np.ndarray | None, first: bool, past: np.ndarray, B: int, S: int) -> np.ndarray:
    """[B, S] rotary positions, as onnxruntime derives them."""
    if position_ids is not None:
        if position_ids.ndim != 2 or position_ids.shape[0] != B or position_ids.shape[1] < S:
            raise InvalidArgument(f"{OP}: position_ids of shape {list(position_ids.shape)} must be [{B}, >= {S}]")
        pid = position_ids.astype(np.int64)
        if first:  # onnxruntime reads only the first element on the first prompt
            return np.broadcast_to(pid.reshape(-1)[0] + np.arange(S), (B, S))
        return pid[:, :S]
    if first:
        return np.broadcast_to(np.arange(S, dtype=np.int64), (B, S))
    return past.reshape(B, 1) + np.arange(S, dtype=np.int64)


def _rotary_caches(cos_cache: np.ndarray | None, sin_cache: np.ndarray | None, span: tuple[int, int],
                   H: int) -> tuple[np.ndarray, np.ndarray]:
    """The caches as float32, checked against onnxruntime's rules and the positions' range ``span``."""
    if cos_cache is None or sin_cache is None:
        raise InvalidArgument(f"{OP}: do_rotary=1 needs cos_cache and sin_cache")
    if cos_cache.ndim != 2 or sin_cache.shape != cos_cache.shape:
        raise InvalidArgument(f"{OP}: cos_cache {list(cos_cache.shape)} and sin_cache {list(sin_cache.shape)} must "
                              "be 2-D of one shape")
    half = cos_cache.shape[1]
    if H % 16 or half % 8 or half > (H // 16) * 8:
        raise InvalidArgument(f"{OP}: head_size {H} must be a multiple of 16 and the caches' {half} columns a "
                              "multiple of 8, at most head_size / 2")
    if span[0] < 0 or span[1] >= cos_cache.shape[0]:
        raise InvalidArgument(f"{OP}: rotary positions [{span[0]}, {span[1]}] are outside the "
                              f"caches' {cos_cache.shape[0]} rows")
    return np.ascontiguousarray(cos_cache, np.float32), np.ascontiguousarray(sin_cache, np.float32)


def _resident(T: int, C: int, W: int) -> int:
    """Rows a windowed cache of capacity C holds after T positions, window W (the schema's L(T)):
    eviction reclaims G = C - W + 1 rows at once."""
    if T <= C:
        return T
    G = C - W + 1
    return T - G * (-(-(T - C) // G))


def _window_present(staged: np.ndarray, lens: list[int], resident: list[int], S: int, C: int,
                    W: int) -> np.ndarray:
    """The windowed present [B, Nkv, C, H]: batch b's last L(T_b) staged rows at rows [0, L(T_b)),
    zeros after them (unspecified rows: onnxruntime leaves what its compaction left there)."""
    B, K, _, H = staged.shape
    out = np.zeros((B, K, C, H), np.float32)
    for b in range(B):
        end = resident[b] + S
        n = _resident(lens[b], C, W)
        out[b, :, :n] = staged[b, :, end - n:end]
    return out


def _check_cache(past: np.ndarray, what: str, B: int, kvN: int, H: int) -> None:
    if past.ndim != 4 or past.shape[0] != B or past.shape[1] != kvN or past.shape[3] != H:
        raise InvalidArgument(f"{OP}: {what} of shape {list(past.shape)} must be [{B}, {kvN}, P, {H}] (BNSH)")


def _nparts(B: int, K: int, N: int, S: int, L: int, H: int) -> int:
    n = min(get_num_threads() or usable_cpus(), B * K)
    return max(1, min(n, int(4.0 * S * L * H * B * N / _FLOPS_PER_PART)))


def _infer(node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    q = ins[0]
    if q is None or q.shape is None or len(q.shape) != 3:
        return []
    N, kvN = int(node.attrs.get("num_heads", 0)), int(node.attrs.get("kv_num_heads", 0))
    key = ins[1] if len(ins) > 1 else None
    D = q.shape[2]
    if not isinstance(D, int) or N <= 0 or kvN <= 0:
        return []
    H = D // N if key is not None else D // (N + 2 * kvN)
    B, S = q.shape[0], q.shape[1]
    present = TensorType(q.dtype, (B, kvN, unknown_dim(), H))
    present_v = TensorType(q.dtype, (B, kvN, present.shape[2], H))  # type: ignore[index]
    return [TensorType(q.dtype, (B, S, N * H)), present, present_v]


_F32, _I32 = np.dtype(np.float32), np.dtype(np.int32)
# the fast step leaves work worth splitting over threads (_nparts > 1) to the general path
_STEP_MAX_WORK = 2 * _FLOPS_PER_PART
_STEP_ATTRS = ("num_heads", "kv_num_heads", "scale", "softcap", "do_rotary", "rotary_interleaved", "local_window_size",
               "causal")


def GroupQueryAttention_step(query: np.ndarray, key: np.ndarray | None, value: np.ndarray | None,
                             past_key: np.ndarray, past_value: np.ndarray, seqlens_k: np.ndarray,
                             total_sequence_length: np.ndarray, cos_cache: np.ndarray | None,
                             sin_cache: np.ndarray | None, step: tuple[Any, ...], attrs: dict[str, Any]) -> Any:
    """A lowered GroupQueryAttention whose dtypes, ranks and attributes ``_lower`` checked when the
    plan was built (``step``: num_heads, kv_num_heads, scale, softcap, do_rotary, rotary_interleaved,
    local_window_size, causal, output count): ``decode_step`` checks the shapes and lengths and runs
    it; anything it leaves (a wrong shape, work for several threads, a strided input) goes to
    ``GroupQueryAttention(..., **attrs)``, whose results are the same bitwise, or whose error. A
    prompt for the tiles (``_tiles``) goes there directly."""
    N, K, scale, softcap, rotary, interleaved, window, causal, nout = step
    packed = key is None
    B, S, D = query.shape
    if total_sequence_length.size == 1 and query.flags.c_contiguous and past_key.flags.c_contiguous \
            and past_value.flags.c_contiguous and (packed or (key.flags.c_contiguous  # type: ignore[union-attr]
                                                             and value.flags.c_contiguous)) \
            and (S < TILE_ROWS or not _tiles(B, N, S, max(int(total_sequence_length.item()), past_key.shape[2]),
                                             D // (N + 2 * K if packed else N))):  # type: ignore[union-attr]
        ks = query if packed else key
        vs = query if packed else value
        status, out, kc, vc = decode_step(
            query, ks, vs, past_key, past_value, seqlens_k, total_sequence_length.item(),
            _NO_CACHE if cos_cache is None else cos_cache, _NO_CACHE if sin_cache is None else sin_cache, N, K,
            packed, scale, softcap, rotary, interleaved, window, causal, memory.limit(), _STEP_MAX_WORK)
        if status == 0:
            return out if nout == 1 else (out, kc, vc)[:nout]
    return GroupQueryAttention(query, key, value, past_key, past_value, seqlens_k, total_sequence_length,
                               cos_cache, sin_cache, **attrs)


def _lower(node: Node, g: Graph) -> Call:
    """``GroupQueryAttention_step`` where the node is a model's plain step (float32, past caches
    given, seqlens_k int32 [B], no bias, sink, position_ids or extra inputs, valid attributes);
    otherwise the general call."""
    call = default_call(lookup(node.op_type, node.domain, node.version, node.name), node, g)
    ins = list(node.inputs) + [""] * (9 - len(node.inputs))
    a = call.kwargs

    def typed(name: str, dtype: np.dtype, rank: int) -> bool:
        t = g.type_of(name) if name else None
        return t is not None and t.dtype == dtype and t.rank == rank

    N, K = int(a.get("num_heads", 0)), int(a.get("kv_num_heads", 0))
    packed = not ins[1]
    plain = (len(node.inputs) <= 9 and len(node.outputs) <= 3 and N > 0 and K > 0 and N % K == 0
             and typed(ins[0], _F32, 3)
             and ((packed and not ins[2]) or (typed(ins[1], _F32, 3) and typed(ins[2], _F32, 3)))
             and typed(ins[3], _F32, 4) and typed(ins[4], _F32, 4) and typed(ins[5], _I32, 1)
             and ins[6] != "" and g.type_of(ins[6]).dtype == _I32
             and a.get("causal", 1) in (0, 1) and (a.get("causal", 1) == 1 or a.get("local_window_size", -1) == -1)
             and a.get("smooth_softmax", -1) != 1 and not a.get("qk_output", 0) and not a.get("sliding_window_cache", 0)
             and not a.get("kv_cache_bit_width", 0) and a.get("k_quant_type", "NONE") == "NONE"
             and a.get("v_quant_type", "NONE") == "NONE")
    rotary = bool(a.get("do_rotary", 0))
    if plain and rotary:
        plain = typed(ins[7], _F32, 2) and typed(ins[8], _F32, 2)
    if not plain:
        return call
    kw = dict(a, _nout=len(node.outputs))
    step = (N, K, float(a.get("scale", 0.0)), float(a.get("softcap", 0.0)), rotary,
            bool(a.get("rotary_interleaved", 0)), int(a.get("local_window_size", -1)), bool(a.get("causal", 1)),
            len(node.outputs))
    args = [Ref(i) if i else None for i in ins[:9]]
    return Call(GroupQueryAttention_step, args + [step, kw])


@op(OP, since=1, domain=MS, infer=_infer, lower=_lower)
def GroupQueryAttention(query: np.ndarray, key: np.ndarray | None = None, value: np.ndarray | None = None,
                        past_key: np.ndarray | None = None, past_value: np.ndarray | None = None,
                        seqlens_k: np.ndarray | None = None, total_sequence_length: np.ndarray | None = None,
                        cos_cache: np.ndarray | None = None, sin_cache: np.ndarray | None = None,
                        position_ids: np.ndarray | None = None, attention_bias: np.ndarray | None = None,
                        head_sink: np.ndarray | None = None, *rest: np.ndarray | None, num_heads: int,
                        kv_num_heads: int, scale: float = 0.0, softcap: float = 0.0, do_rotary: int = 0,
                        rotary_interleaved: int = 0, local_window_size: int = -1, smooth_softmax: int = -1,
                        causal: int = 1, qk_output: int = 0, sliding_window_cache: int = 0,
                        kv_cache_bit_width: int = 0, k_quant_type: str = "NONE", v_quant_type: str = "NONE",
                        _nout: int = 1) -> Any:
    names = ("k_scale", "v_scale", "q_norm_weight", "k_norm_weight")
    given = [n for n, a in zip(names, rest) if a is not None]
    if given:
        raise _unsupported(f"input(s) {given}")
    query_seqlens = rest[4] if len(rest) > 4 else None
    if k_quant_type != "NONE" or v_quant_type != "NONE" or kv_cache_bit_width:
        raise _unsupported("a quantised KV cache")
    if qk_output or _nout > 3:
        raise _unsupported("the output_qk output")
    if causal not in (0, 1) or (causal == 0 and local_window_size != -1):
        raise InvalidArgument(f"{OP}: causal must be 0 or 1, and local_window_size -1 when causal is 0")
    N, kvN = num_heads, kv_num_heads
    if N <= 0 or kvN <= 0 or N % kvN:
        raise InvalidArgument(f"{OP}: num_heads {N} must be a positive multiple of kv_num_heads {kvN}")
    if query.dtype not in (np.float32, np.float16):
        raise _unsupported(f"element type {query.dtype}")
    if query.ndim != 3:
        raise InvalidArgument(f"{OP}: query of shape {list(query.shape)} must be [B, S, D]")
    if seqlens_k is None or total_sequence_length is None:
        raise InvalidArgument(f"{OP}: seqlens_k and total_sequence_length are required")
    B, S, D = query.shape
    if key is None:  # packed QKV: the heads of Q, then K, then V in each row
        if value is not None or D % (N + 2 * kvN):
            raise InvalidArgument(f"{OP}: packed QKV of width {D} is not (num_heads + 2 kv_num_heads) x head_size")
        H = D // (N + 2 * kvN)
        qs = ks = vs = _f32(query).reshape(B, S, N + 2 * kvN, H)
        heads = (0, N, N + kvN)
    else:
        if value is None or D % N or key.ndim != 3 or value.shape != key.shape or key.shape[:2] != (B, S) \
                or key.shape[2] != kvN * (D // N):
            vs = None if value is None else list(value.shape)
            raise InvalidArgument(f"{OP}: key {list(key.shape)} and value {vs}"
                                  f" must be [{B}, {S}, kv_num_heads x head_size] for query {list(query.shape)}")
        H = D // N
        qs, ks, vs = _f32(query).reshape(B, S, N, H), _f32(key).reshape(B, S, kvN, H), _f32(value).reshape(B, S, kvN, H)
        heads = (0, 0, 0)
    if (past_key is None) != (past_value is None):
        raise InvalidArgument(f"{OP}: past_key and past_value must both be given or both be absent")
    P = 0
    if past_key is not None and past_value is not None:
        _check_cache(past_key, "past_key", B, kvN, H)
        _check_cache(past_value, "past_value", B, kvN, H)
        if past_value.shape != past_key.shape:
            raise InvalidArgument(f"{OP}: past_value {list(past_value.shape)} differs from past_key "
                                  f"{list(past_key.shape)}")
        P = past_key.shape[2]
    if seqlens_k.size != B:
        raise InvalidArgument(f"{OP}: seqlens_k of shape {list(seqlens_k.shape)} must be [{B}]")
    if total_sequence_length.size != 1:
        raise InvalidArgument(f"{OP}: total_sequence_length must have one element")
    total_len = int(total_sequence_length.reshape(-1)[0])
    L = max(total_len, P)
    first = S == total_len
    if S > 1 and not first and B != 1 and query_seqlens is None:
        raise InvalidArgument(f"{OP}: batch_size must be 1 when sequence_length > 1 and past context is given")
    lens = [int(t) + 1 for t in seqlens_k.reshape(-1).tolist()]  # B is small: Python, not numpy reductions
    if sliding_window_cache:
        if local_window_size <= 0 or past_key is None or P < local_window_size:
            raise InvalidArgument(f"{OP}: sliding_window_cache=1 needs local_window_size > 0 and past_key/value "
                                  f"of a capacity >= it (local_window_size {local_window_size}, capacity {P})")
        if attention_bias is not None or query_seqlens is not None:
            raise _unsupported("attention_bias or query_seqlens with sliding_window_cache=1")
        if min(lens) < S:
            raise InvalidArgument(f"{OP}: seqlens_k {seqlens_k.reshape(-1).tolist()} is too small for "
                                  f"sequence_length {S}")
        # run against a staging cache: the resident rows, then the new ones (cache-relative positions:
        # the causal and window masks depend on distances only); the present keeps its last L(T) rows
        resident = [_resident(t - S, P, local_window_size) for t in lens]
        L = max(resident) + S
        absolute = np.array(lens, np.int64) - S
        tot = np.array([r + S for r in resident], np.int64)
        past = np.array(resident, np.int64)
        span = (min(lens) - S, max(lens) - 1)
    elif query_seqlens is not None:  # right-padded chunks: Q_b valid rows, appended after T_b - Q_b
        if past_key is None or causal != 1:
            raise InvalidArgument(f"{OP}: query_seqlens needs past_key/past_value and causal=1")
        qlen = [int(x) for x in query_seqlens.reshape(-1).tolist()]
        if len(qlen) != B or min(lens) < 1 or any(not 0 <= q <= min(S, t) for q, t in zip(qlen, lens)):
            raise InvalidArgument(f"{OP}: query_seqlens {qlen} must be [{B}] counts in [0, min({S}, seqlens_k + 1)]")
        past = np.array([t - q for t, q in zip(lens, qlen)], np.int64)
        if int(past.max()) > P or int(past.max()) + S > L:
            raise InvalidArgument(f"{OP}: the cache must hold the {int(past.max())} cached rows and room for the "
                                  f"{S}-row chunk (past_key {P} rows, present {L})")
        tot = np.array(lens, np.int64)
        absolute = past
        first = False  # positions from each entry's cached count, not the first-prompt rule
        span = (int(past.min()), int(past.max()) + S - 1)
    else:
        if min(lens) < 1 or max(lens) > L:
            raise InvalidArgument(f"{OP}: seqlens_k {seqlens_k.reshape(-1).tolist()} is out of range [0, {L})")
        tot = np.array(lens, np.int64)
        if first:
            past = np.zeros(B, np.int64)
            span = (0, S - 1)
        else:
            past = tot - S
            if min(lens) - S < 0:
                raise InvalidArgument(f"{OP}: seqlens_k {seqlens_k.reshape(-1).tolist()} is too small for "
                                      f"sequence_length {S}")
            if max(lens) - S > P:
                raise InvalidArgument(f"{OP}: seqlens_k needs {max(lens) - S} past rows; past_key has {P}")
            span = (min(lens) - S, max(lens) - 1)
        absolute = past
    if do_rotary:
        pos = np.ascontiguousarray(_positions(position_ids, first, absolute, B, S))
        if position_ids is not None and pos.size:
            span = (int(pos.min()), int(pos.max()))
        cos, sin = _rotary_caches(cos_cache, sin_cache, span if S else (0, 0), H)
    else:
        pos, cos, sin = np.zeros((B, S), np.int64), _NO_CACHE, _NO_CACHE
    # the caches: past rows, then the new ones (onnxruntime writes all S new rows, padding included);
    # their length comes from a model input: bounded before allocating
    memory.check(OP, (B, kvN, L, H), np.float32)
    tiles = _tiles(B, N, S, L, H)  # a prompt: score tiles from GEMMs (gqa_prefill), which rotate Q themselves
    q = np.empty((B, N, 0 if tiles else S, H), np.float32)
    kc = np.empty((B, kvN, L, H), np.float32)
    vc = np.empty((B, kvN, L, H), np.float32)
    npast = np.zeros(B, np.int64) if first else past
    pk = _NO_PAST if past_key is None else _f32(past_key)
    pv = _NO_PAST if past_value is None else _f32(past_value)
    if attention_bias is not None:
        ab = attention_bias
        if ab.ndim != 4 or ab.shape[0] not in (1, B) or ab.shape[1] not in (1, N) or ab.shape[2] != S \
                or ab.shape[3] != total_len:
            raise InvalidArgument(f"{OP}: attention_bias of shape {list(ab.shape)} must be [{B} or 1, {N} or 1, "
                                  f"{S}, {total_len}]")
        bias = np.ascontiguousarray(ab, np.float32)
    else:
        bias = _NO_BIAS
    use_sink = head_sink is not None or smooth_softmax == 1
    if head_sink is not None:
        if smooth_softmax == 1:
            raise InvalidArgument(f"{OP}: head_sink should not be provided when smooth_softmax is 1")
        if head_sink.shape != (N,):
            raise InvalidArgument(f"{OP}: head_sink of shape {list(head_sink.shape)} must be [{N}]")
        sink = np.ascontiguousarray(head_sink, np.float32)
    else:
        sink = np.zeros(N, np.float32)
    out = np.empty((B, S, N * H), np.float32)
    sc = float(scale if scale != 0.0 else 1.0 / math.sqrt(H))
    prep = (qs, ks, vs, *heads, pk, pv, npast, pos, cos, sin, bool(do_rotary), bool(rotary_interleaved), q, kc, vc)
    att = (tot, past, bool(causal), int(local_window_size), sc, float(softcap), bias, sink, use_sink, out)
    nparts = _nparts(B, kvN, N, S, L, H)
    if tiles:
        _prepare(*prep)
        tasks = B * kvN * (-(-S // gqa_prefill.SB))
        rot = (qs, heads[0], pos, cos, sin, bool(do_rotary), bool(rotary_interleaved))
        run_tasks(gqa_prefill.attend_tiles, (cblas_address(_F32),) + rot + (kc, vc) + att,
                  gqa_prefill.SB * gqa_prefill.TB, _F32, min(nparts, tasks))
    elif nparts == 1:
        _prepare_attend(*prep, *att)  # one dispatch from Python: each costs ~1 us per argument
    else:
        _prepare(*prep)
        _run_parts((q, kc, vc) + att, nparts)
    if sliding_window_cache:
        kc, vc = (_window_present(c, lens, resident, S, P, local_window_size) for c in (kc, vc))
    dt = query.dtype
    outs = (out.astype(dt, copy=False), kc.astype(dt, copy=False), vc.astype(dt, copy=False))
    return outs[0] if _nout == 1 else outs[:_nout]
