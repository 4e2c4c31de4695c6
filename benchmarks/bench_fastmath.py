"""Time jitort.kernels.fastmath / fp16 against numpy and against ``math.*`` in an @njit loop.

    python benchmarks/bench_fastmath.py [--n 4194304] [--repeat 7]

Each row: one elementwise pass over n float32 values, median of ``repeat`` runs, output preallocated.  ``njit+fastmath``
is ``out[i] = exp_f32(a[i])``; ``njit+math`` is ``out[i] = math.exp(a[i])`` (a scalar libm call per element);
``numpy`` is the closest numpy/scipy spelling (several passes where numpy has no single ufunc).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import numpy as np
import scipy.special
from numba import njit

from jitort.kernels.fastmath import (
    KERNEL_FLAGS, erf_f32, exp_f32, gelu_erf_f32, gelu_tanh_f32, log_f32, sigmoid_f32, tanh_f32,
)
from jitort.kernels.fp16 import bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16

_F = np.float32


def _loop(fn: Callable) -> Callable:  # type: ignore[type-arg]
    # a fresh kernel per scalar function, as the code generator emits them
    @njit(**KERNEL_FLAGS)
    def kernel(a, out):  # type: ignore[no-untyped-def]
        for i in range(a.shape[0]):
            out[i] = fn(a[i])
    return kernel


@njit(**KERNEL_FLAGS)
def _m_sigmoid(x):  # type: ignore[no-untyped-def]
    return _F(1.0) / (_F(1.0) + math.exp(-x))


@njit(**KERNEL_FLAGS)
def _m_gelu_erf(x):  # type: ignore[no-untyped-def]
    return _F(0.5) * x * (_F(1.0) + math.erf(x * _F(0.70710677)))


@njit(**KERNEL_FLAGS)
def _m_gelu_tanh(x):  # type: ignore[no-untyped-def]
    return _F(0.5) * x * (_F(1.0) + math.tanh(_F(0.7978846) * (x + _F(0.044715) * x * x * x)))


def _np_sigmoid(a: np.ndarray, out: np.ndarray) -> None:
    np.negative(a, out=out)
    np.exp(out, out=out)
    out += _F(1.0)
    np.reciprocal(out, out=out)


def _np_gelu_erf(a: np.ndarray, out: np.ndarray) -> None:
    np.multiply(a, _F(0.70710677), out=out)
    scipy.special.erf(out, out=out)
    out += _F(1.0)
    out *= a
    out *= _F(0.5)


def _np_gelu_tanh(a: np.ndarray, out: np.ndarray) -> None:
    np.multiply(a, a, out=out)
    out *= a
    out *= _F(0.044715)
    out += a
    out *= _F(0.7978846)
    np.tanh(out, out=out)
    out += _F(1.0)
    out *= a
    out *= _F(0.5)


# name, input range, fastmath fn, math fn (None: no libm spelling), numpy spelling
CASES = [
    ("exp", (-10.0, 10.0), exp_f32, njit(lambda x: math.exp(x)), lambda a, o: np.exp(a, out=o)),
    ("log", (1e-3, 1e3), log_f32, njit(lambda x: math.log(x)), lambda a, o: np.log(a, out=o)),
    ("tanh", (-5.0, 5.0), tanh_f32, njit(lambda x: math.tanh(x)), lambda a, o: np.tanh(a, out=o)),
    ("sigmoid", (-10.0, 10.0), sigmoid_f32, _m_sigmoid, _np_sigmoid),
    ("erf", (-3.0, 3.0), erf_f32, njit(lambda x: math.erf(x)), lambda a, o: scipy.special.erf(a, out=o)),
    ("gelu_erf", (-5.0, 5.0), gelu_erf_f32, _m_gelu_erf, _np_gelu_erf),
    ("gelu_tanh", (-5.0, 5.0), gelu_tanh_f32, _m_gelu_tanh, _np_gelu_tanh),
]


def _median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # compile / warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    print(f"n = {args.n} float32, median of {args.repeat} runs, ms")
    print(f"{'function':<12}{'fastmath':>10}{'numpy':>10}{'njit+math':>11}{'vs numpy':>10}{'vs math':>9}")
    for name, (lo, hi), fast, slow, numpy_fn in CASES:
        a = rng.uniform(lo, hi, args.n).astype(np.float32)
        out = np.empty_like(a)
        fast_k, slow_k = _loop(fast), _loop(slow)
        t_fast = _median_ms(lambda: fast_k(a, out), args.repeat)
        t_np = _median_ms(lambda: numpy_fn(a, out), args.repeat)
        t_math = _median_ms(lambda: slow_k(a, out), args.repeat)
        print(f"{name:<12}{t_fast:>10.2f}{t_np:>10.2f}{t_math:>11.2f}{t_np / t_fast:>9.2f}x{t_math / t_fast:>8.2f}x")

    print(f"\n{'conversion':<12}{'njit':>10}{'numpy':>10}")
    import ml_dtypes

    x = rng.standard_normal(args.n).astype(np.float32)
    h = x.astype(np.float16)
    b = x.astype(ml_dtypes.bfloat16)
    convs = [
        ("f16->f32", f16_to_f32, h.view(np.uint16), np.empty(args.n, np.float32), lambda: h.astype(np.float32)),
        ("f32->f16", f32_to_f16, x, np.empty(args.n, np.uint16), lambda: x.astype(np.float16)),
        ("bf16->f32", bf16_to_f32, b.view(np.uint16), np.empty(args.n, np.float32), lambda: b.astype(np.float32)),
        ("f32->bf16", f32_to_bf16, x, np.empty(args.n, np.uint16), lambda: x.astype(ml_dtypes.bfloat16)),
    ]
    for name, fn, src, dst, ref in convs:
        k = _loop(fn)
        t_k = _median_ms(lambda: k(src, dst), args.repeat)
        t_ref = _median_ms(ref, args.repeat)
        print(f"{name:<12}{t_k:>10.2f}{t_ref:>10.2f}")


if __name__ == "__main__":
    main()
