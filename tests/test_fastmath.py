"""Accuracy and special values of jitort.kernels.fastmath (float32 math) and jitort.kernels.fp16 (conversions).

Each scalar function is compiled once per flag set, inside a 1-D loop like the generated kernels, and checked against a
float64 reference on a grid that covers every float32 binade (bit patterns at a fixed stride) plus a dense linear grid
where the function changes.  The bounds asserted are the ones measured exhaustively over all 2^32 inputs (docstring of
kernels/fastmath.py), rounded up.  The functions are inlined as Numba IR, so the caller's flags reach them: both flag
sets kernels may use are tested ("ieee": KERNEL_FLAGS; "contract": FMA fusion allowed, on a sparser grid).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import scipy.special
from numba import njit
from numba.core.errors import TypingError

from jitort.kernels import fastmath as fm
from jitort.kernels import fp16

F32_FUNCS = ["exp_f32", "log_f32", "tanh_f32", "sigmoid_f32", "erf_f32", "gelu_erf_f32", "gelu_tanh_f32"]
CONVERSIONS = {  # name: (input dtype, output dtype)
    "f16_to_f32": (np.uint16, np.float32),
    "bf16_to_f32": (np.uint16, np.float32),
    "f32_to_f16": (np.float32, np.uint16),
    "f32_to_bf16": (np.float32, np.uint16),
}
MODES = {"ieee": fm.KERNEL_FLAGS, "contract": {**fm.KERNEL_FLAGS, "fastmath": {"contract"}}}
_KERNELS: dict[tuple[str, str], object] = {}


def _kernel(name: str, mode: str = "ieee"):  # type: ignore[no-untyped-def]
    """A 1-D map kernel around one scalar function, compiled once per test session (as the code generator emits)."""
    if (name, mode) not in _KERNELS:
        fn = getattr(fm, name, None) or getattr(fp16, name)

        @njit(**MODES[mode])
        def kernel(a, out):  # type: ignore[no-untyped-def]
            for i in range(a.shape[0]):
                out[i] = fn(a[i])

        _KERNELS[name, mode] = kernel
    return _KERNELS[name, mode]


def run(name: str, x: np.ndarray, mode: str = "ieee") -> np.ndarray:
    out_dtype = CONVERSIONS[name][1] if name in CONVERSIONS else np.float32
    out = np.empty(x.shape, out_dtype)
    _kernel(name, mode)(np.ascontiguousarray(x), out)
    return out


def f32_from_bits(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, np.uint32).view(np.float32)


def all_binades(mode: str) -> np.ndarray:
    """Finite float32 values of both signs at a fixed bit stride (~1M values for "ieee"; every exponent, varied
    mantissas)."""
    bits = np.arange(0, 0x7F800000, 8191 if mode == "ieee" else 40009, dtype=np.uint32)
    x = f32_from_bits(bits)
    return np.concatenate([x, -x])


def dense(lo: float, hi: float, mode: str) -> np.ndarray:
    return np.linspace(lo, hi, 500_001 if mode == "ieee" else 100_001, dtype=np.float64).astype(np.float32)


def ulp_error(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|y - ref| in units of the float32 ulp at ref (2^-149 in the subnormal range); y float32, ref float64."""
    _, e = np.frexp(np.abs(ref))
    ulp = np.maximum(np.ldexp(1.0, e - 24), 2.0**-149)
    return np.abs(y.astype(np.float64) - ref) / ulp


def finite_mask(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Where ref is representable: elsewhere y must equal ref's float32 rounding exactly (checked by the caller)."""
    return np.isfinite(ref) & (np.abs(ref) <= float(np.finfo(np.float32).max))


# ---------------------------------------------------------------------------------------------------------------------
# float32 math: accuracy

def _sigmoid64(x: np.ndarray) -> np.ndarray:
    return scipy.special.expit(x)


def _gelu_erf64(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + scipy.special.erf(x / math.sqrt(2.0)))


def _gelu_tanh64(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _check_overflow_agrees(y: np.ndarray, ref: np.ndarray) -> None:
    """Outside float32's range the result must be what rounding ref to float32 gives (inf / 0 / NaN)."""
    with np.errstate(over="ignore"):
        ref32 = ref.astype(np.float32)
    bad = ~finite_mask(y, ref)
    np.testing.assert_array_equal(y[bad], ref32[bad])


@pytest.mark.parametrize("mode", MODES)
def test_exp_accuracy(mode: str) -> None:
    x = np.concatenate([all_binades(mode), dense(-104.0, 89.0, mode)])
    y = run("exp_f32", x, mode)
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(np.float64))
    _check_overflow_agrees(y, ref)
    ok = finite_mask(y, ref)
    assert ulp_error(y[ok], ref[ok]).max() <= 1.0  # exhaustive: 0.99 ulp, subnormal results included
    # the overflow threshold is exactly float32's: exp(88.72283) finite, exp(88.72284) = inf
    edge = np.array([88.72283, 88.72284], np.float32)
    assert np.isfinite(run("exp_f32", edge, mode)[0]) and run("exp_f32", edge, mode)[1] == np.inf


@pytest.mark.parametrize("mode", MODES)
def test_log_accuracy(mode: str) -> None:
    x = np.concatenate([all_binades(mode), dense(0.5, 2.0, mode), dense(1.0 - 1e-3, 1.0 + 1e-3, mode)])
    y = run("log_f32", x, mode)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.log(x.astype(np.float64))
    _check_overflow_agrees(y, ref)
    ok = finite_mask(y, ref)
    assert ulp_error(y[ok], ref[ok]).max() <= 1.0  # exhaustive: 0.83 ulp, subnormal inputs included


@pytest.mark.parametrize("mode", MODES)
def test_tanh_accuracy(mode: str) -> None:
    x = np.concatenate([all_binades(mode), dense(-10.0, 10.0, mode)])
    y = run("tanh_f32", x, mode)
    ref = np.tanh(x.astype(np.float64))
    nz = ref != 0
    rel = np.abs(y[nz] - ref[nz]) / np.abs(ref[nz])
    assert rel.max() <= 4.2e-7  # exhaustive: 4.10e-7 (6.9 ulp just below 1; ~1 ulp near 0)
    assert np.all(np.abs(y) <= 1.0)
    assert run("tanh_f32", np.array([fm._TANH_CLAMP], np.float32), mode)[0] == 1.0


@pytest.mark.parametrize("mode", MODES)
def test_sigmoid_accuracy(mode: str) -> None:
    x = np.concatenate([all_binades(mode), dense(-110.0, 30.0, mode)])
    y = run("sigmoid_f32", x, mode)
    ref = _sigmoid64(x.astype(np.float64))
    # relative to the result, also in the far negative tail (subnormal results: absolute 2^-149 * 1.5)
    assert ulp_error(y, ref).max() <= 2.5
    assert np.all((y >= 0.0) & (y <= 1.0))


@pytest.mark.parametrize("mode", MODES)
def test_erf_accuracy(mode: str) -> None:
    x = np.concatenate([all_binades(mode), dense(-5.0, 5.0, mode)])
    y = run("erf_f32", x, mode)
    ref = scipy.special.erf(x.astype(np.float64))
    assert np.abs(y - ref).max() <= 4.8e-7  # exhaustive: 4.74e-7 absolute
    small = np.abs(x) < 0.5
    assert ulp_error(y[small], ref[small]).max() <= 4.1  # exhaustive: 4.01 ulp for |x| < 0.5, subnormal x included
    assert np.all(np.abs(y) <= 1.0)


@pytest.mark.parametrize("mode", MODES)
def test_gelu_accuracy(mode: str) -> None:
    x = np.concatenate([all_binades(mode), dense(-12.0, 12.0, mode)])
    x64 = x.astype(np.float64)
    big = np.abs(x64) > 1e30  # x^3 overflows in the float64 reference as it does in float32: compare finite parts
    for name, ref_fn, abs_bound in [("gelu_erf_f32", _gelu_erf64, 1.4e-6), ("gelu_tanh_f32", _gelu_tanh64, 1.2e-6)]:
        y = run(name, x, mode)
        with np.errstate(over="ignore", invalid="ignore"):
            ref = ref_fn(x64)
        ok = ~big & np.isfinite(ref)
        # absolute error, scaled by max(1, |x|) for large x; the negative tail (1 + erf -> 0) only has absolute accuracy
        err = np.abs(y[ok] - ref[ok]) / np.maximum(1.0, np.abs(x64[ok]))
        assert err.max() <= abs_bound, name
        pos = ok & (x64 > 1e-30)
        assert (np.abs(y[pos] - ref[pos]) / ref[pos]).max() <= 1e-6, name


# ---------------------------------------------------------------------------------------------------------------------
# float32 math: special values

INF, NAN = np.inf, np.nan
TINY = float(f32_from_bits(np.array([1]))[0])  # smallest subnormal
SPECIALS = np.array([0.0, -0.0, INF, -INF, NAN, -NAN, TINY, -TINY, 1e-38, -1e-38, 3.4e38, -3.4e38], np.float32)


@pytest.mark.parametrize("name, expected", [
    ("exp_f32", [1, 1, INF, 0, NAN, NAN, 1, 1, 1, 1, INF, 0]),
    ("log_f32", [-INF, -INF, INF, NAN, NAN, NAN, -103.27893, NAN, -87.49823, NAN, 88.72201, NAN]),
    ("tanh_f32", [0, -0.0, 1, -1, NAN, NAN, TINY, -TINY, 1e-38, -1e-38, 1, -1]),
    ("sigmoid_f32", [0.5, 0.5, 1, 0, NAN, NAN, 0.5, 0.5, 0.5, 0.5, 1, 0]),
    ("erf_f32", [0, -0.0, 1, -1, NAN, NAN, 1.1283791670955126 * TINY, -1.1283791670955126 * TINY,
                 1.1283791670955126e-38, -1.1283791670955126e-38, 1, -1]),
    # gelu(-inf) is NaN, as the formula and onnxruntime give; gelu(-3.4e38) is -0
    ("gelu_erf_f32", [0, -0.0, INF, NAN, NAN, NAN, 0, -0.0, 5e-39, -5e-39, 3.4e38, -0.0]),
    ("gelu_tanh_f32", [0, -0.0, INF, NAN, NAN, NAN, 0, -0.0, 5e-39, -5e-39, 3.4e38, -0.0]),
])
@pytest.mark.parametrize("mode", MODES)
def test_special_values(name: str, expected: list[float], mode: str) -> None:
    y = run(name, SPECIALS, mode)
    exp = np.array(expected, np.float32)
    np.testing.assert_allclose(y, exp, rtol=2e-7, atol=0)
    # signs of zero matter where the function is odd
    zeros = exp == 0
    np.testing.assert_array_equal(np.signbit(y[zeros]), np.signbit(exp[zeros]))


def test_float32_only() -> None:
    """A float64 argument is a typing error, not silent float64 arithmetic."""

    @njit(**fm.KERNEL_FLAGS)
    def call(x):  # type: ignore[no-untyped-def]
        return fm.exp_f32(x)

    with pytest.raises(TypingError):
        call(1.0)


@pytest.mark.parametrize("name", F32_FUNCS + list(CONVERSIONS))
def test_vectorises_without_float64(name: str) -> None:
    """The loop compiles to SIMD float code with no libm call and no float64 arithmetic (a stray Python literal)."""
    k = _kernel(name)
    if not k.signatures:
        run(name, np.zeros(4, CONVERSIONS[name][0] if name in CONVERSIONS else np.float32))
    llvm = "\n".join(k.inspect_llvm().values())
    assert "x float>" in llvm or "x i32>" in llvm, "loop was not vectorised"
    assert " double" not in llvm.replace("double*", ""), "float64 arithmetic in a float32 kernel"
    for libm in ("@expf", "@logf", "@tanhf", "@erff", "@llvm.exp.", "@llvm.log."):
        assert libm not in llvm


def test_tables_name_real_functions() -> None:
    for table in (fm.FLOAT32_FUNCS, fm.FLOAT64_FUNCS):
        for fn_name in table.values():
            assert callable(getattr(fm, fn_name))


def test_float64_counterparts() -> None:
    @njit(**fm.KERNEL_FLAGS)
    def both(x):  # type: ignore[no-untyped-def]
        return (fm.exp_f64(x), fm.log_f64(x), fm.tanh_f64(x), fm.sigmoid_f64(x), fm.erf_f64(x),
                fm.gelu_erf_f64(x), fm.gelu_tanh_f64(x))

    for x in (-800.0, -2.0, 0.5, 3.0, 800.0):
        got = both(x)
        with np.errstate(all="ignore"):
            ref = (np.exp(x), np.log(x), np.tanh(x), scipy.special.expit(x), math.erf(x),
                   _gelu_erf64(np.float64(x)), _gelu_tanh64(np.float64(x)))
        np.testing.assert_allclose(got, ref, rtol=1e-14)


# ---------------------------------------------------------------------------------------------------------------------
# float16 / bfloat16 conversions

def test_f16_to_f32_exhaustive() -> None:
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    np.testing.assert_array_equal(run("f16_to_f32", h).view(np.uint32),
                                  h.view(np.float16).astype(np.float32).view(np.uint32))


def test_bf16_to_f32_exhaustive() -> None:
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    np.testing.assert_array_equal(run("bf16_to_f32", h).view(np.uint32),
                                  h.view(ml_dtypes.bfloat16).astype(np.float32).view(np.uint32))


def _rounding_probes(grid_bits: np.ndarray, drop_bits: int) -> np.ndarray:
    """float32 bit patterns around every value of a narrower format: the value, the exact tie with its successor,
    and one float32 ulp either side of each (every rounding boundary, both directions, both tie parities)."""
    v = grid_bits.astype(np.int64) << drop_bits
    half = 1 << (drop_bits - 1)
    probes = [v, v + half - 1, v + half, v + half + 1, v + 1, v - 1]
    bits = np.concatenate(probes)
    bits = bits[(bits >= 0) & (bits <= 0x7FFFFFFF)].astype(np.uint32)
    return np.concatenate([bits, bits | np.uint32(0x80000000)])


def _f32_sample() -> np.ndarray:
    """~1M float32 bit patterns over all exponents, plus NaN payloads of both kinds."""
    rng = np.random.default_rng(1234)
    strided = np.arange(0, 1 << 32, 4999, dtype=np.uint64).astype(np.uint32)
    nans = (np.uint32(0x7F800000) | rng.integers(1, 1 << 23, 20000, dtype=np.uint32)).astype(np.uint32)
    return np.concatenate([strided, nans, nans | np.uint32(0x80000000)])


def test_f32_to_f16_matches_numpy() -> None:
    """Every float16 value, every exact tie between neighbours (subnormal ones and the overflow tie 65520
    included), one float32 ulp either side of each tie, both signs; plus a strided sample and NaN payloads."""
    h = np.arange(0x7C00, dtype=np.uint32).astype(np.uint16)  # every finite non-negative float16
    f = h.view(np.float16).astype(np.float32)
    nxt = np.append(f[1:], np.float32(65536.0))  # successor; 65536 stands in for the overflow boundary
    mid = ((f.astype(np.float64) + nxt.astype(np.float64)) / 2).astype(np.float32)  # exact ties
    ties = np.concatenate([f, mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(np.inf))])
    ties = np.concatenate([ties, -ties]).view(np.uint32)
    x = f32_from_bits(np.concatenate([ties, _f32_sample()]))
    with np.errstate(invalid="ignore", over="ignore"):
        ref = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(run("f32_to_f16", x), ref)


def test_f32_to_f16_edges() -> None:
    x = np.array([65504.0, 65519.996, 65520.0, 3e38, np.inf, -np.inf, 2.0**-25, 2.0**-25 * 1.0000001, 2.0**-24 * 1.5,
                  6.097555e-05, -0.0, np.nan], np.float32)
    expected = [0x7BFF, 0x7BFF, 0x7C00, 0x7C00, 0x7C00, 0xFC00, 0x0000, 0x0001, 0x0002, 0x03FF, 0x8000, 0x7E00]
    np.testing.assert_array_equal(run("f32_to_f16", x), np.array(expected, np.uint16))


def test_f32_to_bf16_matches_ml_dtypes() -> None:
    grid = np.arange(0x7F81, dtype=np.uint32)  # every finite bfloat16 magnitude and inf
    x = f32_from_bits(np.concatenate([_rounding_probes(grid, 16), _f32_sample()]))
    with np.errstate(invalid="ignore"):
        ref = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    np.testing.assert_array_equal(run("f32_to_bf16", x), ref)


def test_roundtrips() -> None:
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    finite16 = ~np.isnan(h.view(np.float16))
    np.testing.assert_array_equal(run("f32_to_f16", run("f16_to_f32", h))[finite16], h[finite16])
    finite_b = ~np.isnan(h.view(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(run("f32_to_bf16", run("bf16_to_f32", h))[finite_b], h[finite_b])


# ---------------------------------------------------------------------------------------------------------------------
# The polynomials' multiply-adds (``_fmuladd``) fuse where the target has FMA: both paths keep the bounds above

_NO_FMA_ENV = {"NUMBA_CPU_NAME": "x86-64", "NUMBA_CPU_FEATURES": "+64bit,+cmov,+cx8,+fxsr,+mmx,+sse,+sse2"}


def test_host_fuses_the_polynomials_where_it_has_fma() -> None:
    import re

    from llvmlite import binding as ll
    run("exp_f32", np.ones(64, np.float32))
    asm = next(iter(_kernel("exp_f32").inspect_asm().values()))
    has_fma = "+fma" in ll.get_host_cpu_features().flatten().split(",")
    assert bool(re.search(r"vfmadd\w+ps", asm)) == has_fma


def test_accuracy_without_fma() -> None:
    """The accuracy tests' sparse grid on a baseline x86-64 target (SSE2, no FMA), in a subprocess (Numba reads its
    target once per process)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = ("import re, numpy as np, test_fastmath as t\n"
            "t.run('exp_f32', np.ones(64, np.float32))\n"
            "asm = next(iter(t._kernel('exp_f32').inspect_asm().values()))\n"
            "assert not re.search('vfmadd|fmaf', asm) and 'mulps' in asm, 'not the no-FMA path'\n"
            "for f in ('exp', 'log', 'tanh', 'sigmoid', 'erf', 'gelu'):\n"
            "    getattr(t, f'test_{f}_accuracy')('contract')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env={**os.environ, **_NO_FMA_ENV},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
