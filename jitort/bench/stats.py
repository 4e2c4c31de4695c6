"""Statistics of latency samples: percentiles, summaries, ratios and their geometric mean.

Percentiles interpolate linearly between order statistics (numpy's default ``method="linear"``,
Hyndman & Fan type 7): the q-th percentile of n sorted samples sits at position ``(n - 1) * q / 100``.
With n samples a percentile above ``100 * (n - 1) / n`` is the maximum, so a p99 means something only
from about a hundred samples on; every summary carries its ``n``.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

__all__ = ["cv", "geomean", "percentile", "percentiles", "ratio", "summary"]


def percentile(samples: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, linear interpolation between order statistics."""
    return percentiles(samples, [q])[0]


def percentiles(samples: Iterable[float], qs: Sequence[float]) -> list[float]:
    """:func:`percentile` at each of ``qs``, sorting once."""
    xs = sorted(float(x) for x in samples)
    if not xs:
        raise ValueError("percentile of no samples")
    out = []
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile q must be in [0, 100], got {q}")
        pos = (len(xs) - 1) * q / 100.0
        lo = math.floor(pos)
        hi = min(lo + 1, len(xs) - 1)
        out.append(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))
    return out


def summary(samples: Sequence[float]) -> dict[str, float | int]:
    """``min``, ``p50``, ``p90``, ``p99``, ``max``, ``mean`` and the sample count ``n``."""
    if not samples:
        raise ValueError("summary of no samples")
    p50, p90, p99 = percentiles(samples, (50, 90, 99))
    return {"min": float(min(samples)), "p50": p50, "p90": p90, "p99": p99, "max": float(max(samples)),
            "mean": math.fsum(samples) / len(samples), "n": len(samples)}


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``; None when either is missing or ``b`` is not positive."""
    if a is None or b is None or not b > 0:
        return None
    return a / b


def geomean(values: Iterable[float]) -> float | None:
    """Geometric mean of positive values (the right mean for ratios: the geomean of ``a_i / b_i`` is
    the ratio of the geomeans, and a 2x win and a 2x loss cancel); None for no values."""
    xs = [float(v) for v in values]
    if not xs:
        return None
    if any(not x > 0 for x in xs):
        raise ValueError(f"geometric mean needs positive values, got {xs}")
    return math.exp(math.fsum(math.log(x) for x in xs) / len(xs))


def cv(values: Sequence[float]) -> float | None:
    """Coefficient of variation (sample standard deviation / mean); None for fewer than two values."""
    if len(values) < 2:
        return None
    m = math.fsum(values) / len(values)
    if m == 0:
        return None
    var = math.fsum((v - m) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(var) / m
