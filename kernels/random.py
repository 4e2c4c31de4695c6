"""Random generators: RandomNormal, RandomUniform, RandomNormalLike, RandomUniformLike, Bernoulli,
Multinomial.

A node with a ``seed`` attribute owns a generator seeded with it, created at compile time (so a
session's successive runs draw successive values, and a new session repeats them); a node without
one draws from jitort's process generator (``jitort.runtime_info.rng()``, reproducible after
``jitort.set_seed``). Their registrations say ``random=True``: constant folding never folds them,
warm-up runs never execute them (``registry.is_random``).
Draws are made in float64 and cast to the output type.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jitort import memory
from jitort.arrays import contiguous
from jitort.errors import InvalidArgument
from jitort.ir import Graph, Node
from jitort.kernels.registry import Call, default_call, lookup, op
from jitort.runtime_info import rng


def _generator(seed: float | None) -> np.random.Generator | None:
    if seed is None:
        return None
    return np.random.default_rng(np.frombuffer(np.float32(seed).tobytes(), np.uint32)[0])


def _lower(node: Node, g: Graph) -> Call:
    call = default_call(lookup(node.op_type, node.domain, node.version), node, g)
    call.kwargs.pop("seed", None)
    call.kwargs["gen"] = _generator(node.attrs.get("seed"))
    return call


def _rng(gen: np.random.Generator | None) -> np.random.Generator:
    if gen is not None:
        return gen
    return rng()


def _dtype(dtype: int | None, like: np.ndarray | None, op_name: str) -> np.dtype:
    if dtype is None or dtype == 0:
        if like is None:
            return np.dtype(np.float32)
        return like.dtype
    from onnx import helper  # not at the top: onnx imports ml_dtypes (~0.7 s), for models that need it only
    dt = np.dtype(helper.tensor_dtype_to_np_dtype(dtype))
    if dt.kind != "f" and dt.name != "bfloat16" and op_name != "Bernoulli":
        raise InvalidArgument(f"{op_name}: dtype must be a float type, got {dt}")
    return dt


@op("RandomNormal", since=1, lower=_lower, random=True)
def RandomNormal(*, shape: list, dtype: int = 1, mean: float = 0.0, scale: float = 1.0, gen: Any = None) -> np.ndarray:
    size = memory.check("RandomNormal", shape, np.float64)
    return contiguous(_rng(gen).normal(mean, scale, size=size).astype(_dtype(dtype, None, "RandomNormal")))


@op("RandomUniform", since=1, lower=_lower, random=True)
def RandomUniform(*, shape: list, dtype: int = 1, low: float = 0.0, high: float = 1.0, gen: Any = None) -> np.ndarray:
    size = memory.check("RandomUniform", shape, np.float64)
    return contiguous(_rng(gen).uniform(low, high, size=size).astype(_dtype(dtype, None, "RandomUniform")))


@op("RandomNormalLike", since=1, lower=_lower, random=True)
def RandomNormalLike(x: np.ndarray, *, dtype: int | None = None, mean: float = 0.0, scale: float = 1.0,
                     gen: Any = None) -> np.ndarray:
    return contiguous(_rng(gen).normal(mean, scale, size=x.shape).astype(_dtype(dtype, x, "RandomNormalLike")))


@op("RandomUniformLike", since=1, lower=_lower, random=True)
def RandomUniformLike(x: np.ndarray, *, dtype: int | None = None, low: float = 0.0, high: float = 1.0,
                      gen: Any = None) -> np.ndarray:
    return contiguous(_rng(gen).uniform(low, high, size=x.shape).astype(_dtype(dtype, x, "RandomUniformLike")))


@op("Bernoulli", since=15, lower=_lower, random=True)
def Bernoulli(x: np.ndarray, *, dtype: int | None = None, gen: Any = None) -> np.ndarray:
    """1 with probability x, else 0, per element."""
    out = _dtype(dtype, x, "Bernoulli")
    return contiguous((_rng(gen).random(x.shape) < x.astype(np.float64)).astype(out))


@op("Multinomial", since=7, lower=_lower, random=True)
def Multinomial(x: np.ndarray, *, dtype: int = 6, sample_size: int = 1, gen: Any = None) -> np.ndarray:
    """[batch, classes] unnormalised log-probabilities -> [batch, sample_size] class indices."""
    if x.ndim != 2:
        raise InvalidArgument(f"Multinomial: input must be [batch_size, class_size], got {list(x.shape)}")
    from onnx import helper  # not at the top: onnx imports ml_dtypes (~0.7 s), for models that need it only
    out = np.dtype(helper.tensor_dtype_to_np_dtype(dtype))
    if out not in (np.int32, np.int64):
        raise InvalidArgument(f"Multinomial: dtype must be int32 or int64, got {out}")
    memory.check("Multinomial", (x.shape[0], sample_size), np.float64)
    logits = x.astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    u = _rng(gen).random((x.shape[0], sample_size))
    idx = np.empty((x.shape[0], sample_size), np.int64)
    for b in range(x.shape[0]):
        idx[b] = np.minimum(np.searchsorted(cdf[b], u[b], side="right"), x.shape[1] - 1)
    return contiguous(idx.astype(out))
