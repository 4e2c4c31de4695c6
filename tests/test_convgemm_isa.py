"""The conv GEMM (kernels/convgemm.py) and the implicit-GEMM conv (conv.py's ``_conv_implicit``) at both
vector widths: every output element is one fma chain in k order, so the AVX2 build (6 x 2-vector tiles of 8
lanes) and the AVX-512 build (6 x 4-vector tiles of 16 lanes; 12 x 2 on rows of <= 2 vectors) give bitwise
the same products, on every panel or row remainder (1 to 4 vectors) and K block.

Numba reads its target once per process, so each width runs in a subprocess with ``NUMBA_CPU_NAME`` /
``NUMBA_CPU_FEATURES`` set; the AVX-512 one only where the host has AVX-512."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from llvmlite import binding as ll

_AVX2 = "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sse,+sse2," \
        "+sse3,+sse4.1,+sse4.2,+ssse3,+xsave"

# (M, K, N): N covers whole 64-column panels plus remainders of 1 to 4 AVX-512 vectors (and of one or two
# AVX2 vectors); K = 300 crosses a K block (256); M = 13 leaves a partial row tile.
SHAPES = [(13, 300, 100), (6, 64, 1), (7, 17, 49), (12, 33, 64), (5, 256, 130), (18, 9, 196), (1, 1, 15)]
# Convs on the implicit path: (x shape, w shape, stride, pad). Rows of 100 (a 64-column tile and 3
# vectors), 73 (64 + one vector), 27 (two row tiles of 2 vectors), 55 with K = 360 (two K blocks).
CONVS = [((1, 5, 6, 100), (9, 5, 3, 3), 1, 1), ((1, 3, 9, 147), (13, 3, 3, 3), 2, 0),
         ((1, 8, 5, 27), (14, 8, 3, 3), 1, 1), ((1, 40, 4, 55), (7, 40, 3, 3), 1, 1)]

_SCRIPT = r"""
import sys
import numpy as np
from jitort.kernels import convgemm, vecir
shapes = eval(sys.argv[2])
out = {"vb": np.array(vecir.VB)}
ga = convgemm.gemm_address(np.dtype(np.float32))
rng = np.random.default_rng(7)
for i, (M, K, N) in enumerate(shapes):
    w = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    z = rng.standard_normal((M, N)).astype(np.float32)
    ap = convgemm.pack_weights(w)[0]
    bp = np.empty(convgemm.BBLOCK, np.float32)
    for fin, res in ((1, None), (2, z)):  # + bias; + bias + residual, Relu
        c = np.empty((M, N), np.float32)
        convgemm.gemm_at(ga, ap, 0, M, K, b, c, bias, 0, fin, np.float32(0), np.float32(0), bp, res)
        out[f"c{i}_{fin}"] = c
from jitort.kernels import conv, conv_setup
for i, (xs, ws, st, pd) in enumerate(eval(sys.argv[3])):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    bias = rng.standard_normal(ws[0]).astype(np.float32)
    plan = conv_setup.conv_plan(xs, ws, 1, (st, st), (1, 1), (pd,) * 4, "NOTSET", False)
    assert plan[1] == conv_setup.IMPLICIT, (xs, ws, plan[1])
    out[f"v{i}"] = conv.conv_eager(x, w, bias, None, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                                   pads=[pd] * 4, strides=[st, st], activation="", alpha=0.0, beta=0.0)
np.savez(sys.argv[1], **out)
"""


def _run(tmp_path, name: str, env: dict[str, str]) -> dict[str, np.ndarray]:
    path = tmp_path / f"{name}.npz"
    e = dict(os.environ, **env)
    r = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), repr(SHAPES), repr(CONVS)], env=e,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with np.load(path) as f:
        return dict(f)


def test_both_widths_match_numpy_and_each_other(tmp_path) -> None:
    runs = {"avx2": _run(tmp_path, "avx2", {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": _AVX2})}
    assert int(runs["avx2"]["vb"]) == 32
    if "+avx512f" in ll.get_host_cpu_features().flatten().split(","):
        runs["avx512"] = _run(tmp_path, "avx512", {})
        assert int(runs["avx512"]["vb"]) == 64
    rng = np.random.default_rng(7)
    for i, (M, K, N) in enumerate(SHAPES):
        w = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        bias = rng.standard_normal(M).astype(np.float32)
        z = rng.standard_normal((M, N)).astype(np.float32)
        ref = w.astype(np.float64) @ b + bias[:, None]
        for fin, want in ((1, ref), (2, np.maximum(ref + z, 0))):
            got = {k: r[f"c{i}_{fin}"] for k, r in runs.items()}
            for c in got.values():
                np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4 * max(1.0, np.sqrt(K)))
            if len(got) == 2:
                np.testing.assert_array_equal(got["avx2"], got["avx512"], err_msg=f"{(M, K, N)} fin {fin}")
    for i, (xs, ws, st, pd) in enumerate(CONVS):
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        bias = rng.standard_normal(ws[0]).astype(np.float32)
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pd, pd), (pd, pd)))
        win = np.lib.stride_tricks.sliding_window_view(xp, ws[2:], axis=(2, 3))[:, :, ::st, ::st]
        want = np.einsum("nchwij,mcij->nmhw", win, w) + bias[None, :, None, None]
        got = {k: r[f"v{i}"] for k, r in runs.items()}
        for c in got.values():
            np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4 * np.sqrt(np.prod(ws[1:])))
        if len(got) == 2:
            np.testing.assert_array_equal(got["avx2"], got["avx512"], err_msg=f"conv {xs} {ws}")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
