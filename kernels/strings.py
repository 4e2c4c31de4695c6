"""String ops: StringNormalizer, StringConcat, StringSplit, RegexFullMatch.

Strings are numpy object arrays of Python ``str`` (as onnx's numpy_helper gives them); the work is
Python string handling, element by element.
"""
from __future__ import annotations

import operator
import re

import numpy as np

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op
from jitort.arrays import contiguous


def _strings(x: np.ndarray, op_name: str) -> np.ndarray:
    if x.dtype != object and x.dtype.kind not in "US":
        raise InvalidArgument(f"{op_name}: expected a string tensor, got {x.dtype}")
    return x


def _text(v: object) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


@op("StringNormalizer", since=10)
def StringNormalizer(x: np.ndarray, *, case_change_action: str = "NONE", is_case_sensitive: int = 0,
                     locale: str = "", stopwords: list | None = None) -> np.ndarray:
    """Drop elements equal to a stopword (case-insensitively unless ``is_case_sensitive``), then
    change case. Input [C] or [1, C]; if every element is dropped the output is [""] ([1] / [1, 1])."""
    _strings(x, "StringNormalizer")
    if case_change_action not in ("NONE", "LOWER", "UPPER"):
        raise InvalidArgument(f"StringNormalizer: unknown case_change_action {case_change_action!r}")
    if x.ndim == 2 and x.shape[0] == 1:
        items, two_d = x[0], True
    elif x.ndim == 1:
        items, two_d = x, False
    else:
        raise InvalidArgument(f"StringNormalizer: input must have shape [C] or [1, C], got {list(x.shape)}")
    stops = set(stopwords or ())
    if not is_case_sensitive:
        stops = {s.lower() for s in stops}
    out: list[str] = []
    for v in items:
        s = _text(v)
        key = s if is_case_sensitive else s.lower()
        if key in stops:
            continue
        if case_change_action == "LOWER":
            s = s.lower()
        elif case_change_action == "UPPER":
            s = s.upper()
        out.append(s)
    if not out:
        out = [""]
    res = np.array(out, dtype=object)
    return contiguous(res.reshape(1, -1) if two_d else res)


_concat = np.frompyfunc(operator.add, 2, 1)


@op("StringConcat", since=20)
def StringConcat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    _strings(x, "StringConcat")
    _strings(y, "StringConcat")
    xs = np.frompyfunc(_text, 1, 1)(x) if x.size else x
    ys = np.frompyfunc(_text, 1, 1)(y) if y.size else y
    out = _concat(xs, ys)
    return contiguous(np.asarray(out, dtype=object).reshape(np.broadcast_shapes(x.shape, y.shape)))


@op("StringSplit", since=20)
def StringSplit(x: np.ndarray, *, delimiter: str | None = None, maxsplit: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Split each string on ``delimiter`` (runs of whitespace when absent or empty), at most
    ``maxsplit`` times; Y pads every row with "" to the longest split, Z counts the parts."""
    _strings(x, "StringSplit")
    sep = delimiter if delimiter else None
    n = -1 if maxsplit is None else int(maxsplit)
    parts = [_text(v).split(sep, n) for v in x.reshape(-1)]
    counts = np.array([len(p) for p in parts], np.int64).reshape(x.shape)
    width = max((len(p) for p in parts), default=0)
    y = np.empty((len(parts), width), dtype=object)
    y[...] = ""
    for k, p in enumerate(parts):
        y[k, :len(p)] = p
    return contiguous(y.reshape(*x.shape, width)), contiguous(counts)


@op("RegexFullMatch", since=20)
def RegexFullMatch(x: np.ndarray, *, pattern: str) -> np.ndarray:
    """Whether each string matches ``pattern`` entirely (Python ``re``, which accepts RE2's syntax
    except for a few escapes)."""
    _strings(x, "RegexFullMatch")
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise InvalidArgument(f"RegexFullMatch: invalid pattern {pattern!r}: {e}") from None
    flat = [rx.fullmatch(_text(v)) is not None for v in x.reshape(-1)]
    return contiguous(np.array(flat, dtype=np.bool_).reshape(x.shape))
