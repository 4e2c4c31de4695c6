"""TfIdfVectorizer: n-gram (with skips) counts of int or string tokens over a pool of n-grams,
weighted as TF, IDF or TF-IDF.

The pool is parsed once per call into a dict of n-gram -> output column (and the set of their
prefixes, which bounds the search as the spec's trie does); counting is Python over the rows.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.arrays import contiguous


def _pool(ngram_counts: list, ngram_indexes: list, pool: list, lo: int, hi: int
          ) -> tuple[dict[tuple, int], set[tuple]]:
    grams: dict[tuple, int] = {}
    gid = 0
    for i, start in enumerate(ngram_counts):
        end = ngram_counts[i + 1] if i + 1 < len(ngram_counts) else len(pool)
        n = i + 1
        for s in range(start, start + (end - start) // n * n, n):
            if lo <= n <= hi:
                if gid >= len(ngram_indexes):
                    raise InvalidArgument(f"TfIdfVectorizer: {gid + 1} n-grams but {len(ngram_indexes)} ngram_indexes")
                grams[tuple(pool[s:s + n])] = int(ngram_indexes[gid])
            gid += 1
    prefixes = {g[:k] for g in grams for k in range(1, len(g) + 1)}
    return grams, prefixes


@op("TfIdfVectorizer", since=9)
def TfIdfVectorizer(x: np.ndarray, *, mode: str, min_gram_length: int, max_gram_length: int,
                    max_skip_count: int, ngram_counts: list, ngram_indexes: list, pool_int64s: list | None = None,
                    pool_strings: list | None = None, weights: list | None = None) -> np.ndarray:
    if mode not in ("TF", "IDF", "TFIDF"):
        raise InvalidArgument(f"TfIdfVectorizer: mode must be TF, IDF or TFIDF, got {mode!r}")
    if x.ndim > 2 or (x.ndim == 2 and x.shape[0] < 1):
        raise InvalidArgument(f"TfIdfVectorizer: input must be [C] or [B, C] with B > 0, got {list(x.shape)}")
    pool: list[Any] = list(pool_int64s) if pool_int64s else list(pool_strings or [])
    grams, prefixes = _pool(list(ngram_counts), list(ngram_indexes), pool, min_gram_length, max_gram_length)
    width = max(ngram_indexes) + 1 if len(ngram_indexes) else 0
    rows = x.reshape(1, -1) if x.ndim < 2 else x
    counts = np.zeros((rows.shape[0], width), np.int64)
    for r, row in enumerate(rows):
        tokens = [str(t) for t in row] if pool_strings else [int(t) for t in row]
        c = len(tokens)
        first = min_gram_length
        for skip in range(1, max_skip_count + 2):
            for start in range(c):
                if start + skip * (first - 1) >= c:
                    break
                for n in range(1, max_gram_length + 1):
                    last = start + (n - 1) * skip
                    if last >= c:
                        break
                    g = tuple(tokens[start:last + 1:skip])
                    if g not in prefixes:
                        break
                    if n >= first and g in grams:
                        counts[r, grams[g]] += 1
            if first == 1:  # unigrams do not depend on the skip: count them once
                first = 2
                if first > max_gram_length:
                    break
    w = np.asarray(weights, np.float32) if weights else None
    if mode == "TF":
        y = counts.astype(np.float32)
    elif mode == "IDF":
        y = np.where(counts > 0, w if w is not None else np.float32(1), np.float32(0)).astype(np.float32)
    else:
        y = (counts * w).astype(np.float32) if w is not None else counts.astype(np.float32)
    return contiguous(y.reshape(width) if x.ndim < 2 else y)
