"""DeformConv (kernels/deform.py) against onnxruntime (2-D) and the spec's formula in numpy.

The numpy oracle is written from the spec, independently of the kernel: every output element is a
sum over taps of W times the bilinear sample of X at the offset position, in which each of the four
corners outside the input reads zero (GridSample, align_corners=1, zero padding), times the mask.
onnxruntime only has 2-D DeformConv; 1-D runs against the oracle.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import jitort
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from oracle import assert_close, check, node_model, run_jitort


def bilinear_zero_pad(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """img [H, W] sampled at (y, x) (any equal shapes); corners outside read 0; NaN positions give 0."""
    H, W = img.shape
    ok = np.isfinite(y) & np.isfinite(x)
    y = np.where(ok, y, -10.0)
    x = np.where(ok, x, -10.0)
    y0, x0 = np.floor(y), np.floor(x)
    out = np.zeros(y.shape)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            wgt = (1 - np.abs(y - yy)) * (1 - np.abs(x - xx))
            inside = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            v = img[np.clip(yy, 0, H - 1).astype(int), np.clip(xx, 0, W - 1).astype(int)]
            out += np.where(inside, wgt * v, 0.0)
    return out


def deform_ref(X: np.ndarray, W: np.ndarray, off: np.ndarray, B: np.ndarray | None = None,
               mask: np.ndarray | None = None, strides: Any = (1, 1), pads: Any = (0, 0, 0, 0),
               dilations: Any = (1, 1), group: int = 1, offset_group: int = 1) -> np.ndarray:
    """2-D DeformConv in float64, straight from the spec."""
    X, W, off = X.astype(np.float64), W.astype(np.float64), off.astype(np.float64)
    N, C, H, Wd = X.shape
    M, Cg, kh, kw = W.shape
    OH, OW = off.shape[2:]
    off = off.reshape(N, offset_group, kh, kw, 2, OH, OW)
    mk = np.ones((N, offset_group, kh, kw, OH, OW)) if mask is None else \
        mask.astype(np.float64).reshape(N, offset_group, kh, kw, OH, OW)
    Mg, Cog = M // group, C // offset_group
    oy = np.arange(OH)[:, None] * strides[0] - pads[0]
    ox = np.arange(OW)[None, :] * strides[1] - pads[1]
    out = np.zeros((N, M, OH, OW))
    for n in range(N):
        for c in range(C):
            g, o = c // Cg, c // Cog
            for i in range(kh):
                for j in range(kw):
                    y = oy + i * dilations[0] + off[n, o, i, j, 0]
                    x = ox + j * dilations[1] + off[n, o, i, j, 1]
                    s = bilinear_zero_pad(X[n, c], y, x) * mk[n, o, i, j]
                    out[n, g * Mg:(g + 1) * Mg] += W[g * Mg:(g + 1) * Mg, c - g * Cg, i, j][:, None, None] * s
    if B is not None:
        out += B.astype(np.float64).reshape(1, M, 1, 1)
    return out


def make_case(N: int, C: int, H: int, Wd: int, M: int, k: tuple[int, int], group: int = 1, og: int = 1,
              pads: Any = (0, 0, 0, 0), strides: Any = (1, 1), dil: Any = (1, 1), mask: bool = False,
              bias: bool = False, dt: Any = np.float32, spread: float = 2.0, seed: int = 0
              ) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    kh, kw = k
    OH = (H + pads[0] + pads[2] - (dil[0] * (kh - 1) + 1)) // strides[0] + 1
    OW = (Wd + pads[1] + pads[3] - (dil[1] * (kw - 1) + 1)) // strides[1] + 1
    feeds = {"X": rng.standard_normal((N, C, H, Wd)).astype(dt),
             "W": rng.standard_normal((M, C // group, kh, kw)).astype(dt),
             "offset": (rng.standard_normal((N, og * kh * kw * 2, OH, OW)) * spread).astype(dt)}
    names = ["X", "W", "offset"]
    if bias or mask:
        if bias:
            feeds["B"] = rng.standard_normal(M).astype(dt)
        names.append("B" if bias else "")
    if mask:
        feeds["mask"] = rng.random((N, og * kh * kw, OH, OW)).astype(dt)
        names.append("mask")
    attrs = dict(group=group, offset_group=og, pads=list(pads), strides=list(strides), dilations=list(dil))
    return feeds, names, attrs


def ref_of(feeds: dict[str, np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    return deform_ref(feeds["X"], feeds["W"], feeds["offset"], feeds.get("B"), feeds.get("mask"), attrs["strides"],
                      attrs["pads"], attrs["dilations"], attrs["group"], attrs["offset_group"])


CASES = [  # N, C, H, W, M, kernel, group, offset_group, pads, strides, dilations, mask, bias
    (1, 1, 3, 3, 1, (2, 2), 1, 1, (0, 0, 0, 0), (1, 1), (1, 1), False, False),
    (2, 4, 7, 6, 6, (3, 3), 2, 2, (1, 0, 2, 1), (2, 1), (1, 2), True, True),
    (2, 6, 9, 8, 4, (3, 2), 2, 3, (1, 1, 1, 1), (1, 2), (2, 1), True, False),
    (1, 6, 9, 8, 4, (3, 2), 1, 3, (1, 1, 1, 1), (1, 2), (2, 1), False, True),
    (1, 8, 12, 11, 16, (3, 3), 4, 2, (1, 1, 1, 1), (1, 1), (1, 1), True, True),
    (2, 3, 5, 5, 3, (1, 1), 1, 1, (0, 0, 0, 0), (1, 1), (1, 1), False, False),
    (1, 4, 6, 6, 4, (3, 3), 4, 4, (1, 1, 1, 1), (1, 1), (1, 1), True, True),  # depthwise
    (3, 2, 5, 7, 2, (2, 3), 1, 2, (0, 2, 1, 0), (3, 2), (2, 1), False, True),
]


@pytest.mark.parametrize("spread", [0.0, 0.6, 4.0])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_deform_conv(case, spread):
    N, C, H, Wd, M, k, g, og, pads, strides, dil, mask, bias = CASES[case]
    feeds, names, attrs = make_case(N, C, H, Wd, M, k, g, og, pads, strides, dil, mask, bias, spread=spread, seed=case)
    m = node_model("DeformConv", feeds, input_names=names, opset=19, kernel_shape=list(k), **attrs)
    got = check(m, feeds, rtol=1e-5, atol=1e-5)
    assert_close(got, [ref_of(feeds, attrs).astype(np.float32)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dt,opset", [(np.float64, 19), (np.float64, 22), (np.float16, 19), (np.float32, 22)])
def test_deform_conv_dtypes(dt, opset):
    feeds, names, attrs = make_case(2, 4, 7, 6, 6, (3, 3), 2, 2, (1, 0, 2, 1), (2, 1), (1, 2), True, True, dt=dt)
    m = node_model("DeformConv", feeds, input_names=names, opset=opset, **attrs)
    tol = dict(rtol=1e-10, atol=1e-10) if dt == np.float64 else dict(rtol=5e-3, atol=5e-3)
    if dt != np.float16:
        check(m, feeds, **tol)
    got = run_jitort(m, feeds)
    ref = ref_of({k: v.astype(np.float64) for k, v in feeds.items()}, attrs)
    assert_close(got, [ref.astype(dt)], **(tol if dt != np.float16 else dict(rtol=1e-2, atol=2e-2)))


def test_deform_conv_bfloat16():
    import ml_dtypes
    feeds, names, attrs = make_case(1, 2, 5, 5, 2, (2, 2), mask=True, bias=True)
    bf = {k: v.astype(ml_dtypes.bfloat16) for k, v in feeds.items()}
    got = run_jitort(node_model("DeformConv", bf, input_names=names, opset=22, **attrs), bf)[0]
    assert got.dtype == ml_dtypes.bfloat16
    ref = ref_of({k: v.astype(np.float64) for k, v in bf.items()}, attrs)
    np.testing.assert_allclose(got.astype(np.float64), ref, rtol=3e-2, atol=5e-2)


def test_deform_conv_integer_offsets_and_edges():
    """Whole-pixel offsets reproduce a shifted plain convolution; positions exactly on the last row or
    column, or beyond the input, read zeros where the spec says so."""
    X = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    W = np.ones((1, 1, 2, 2), np.float32)
    off = np.zeros((1, 8, 5, 5), np.float32)
    off[0, 0::2] = 1.0  # every tap one row down
    off[0, 1, 0, 0] = -1.0  # tap (0,0) at output (0,0): column -1 -> zero
    off[0, 7, 4, 4] = 0.999  # tap (1,1) at (4,4): column 5.999 -> mostly the last column
    off[0, 6, 2, 2] = 30.0  # far outside
    off[0, 3, 1, 1] = np.nan  # NaN position reads zero
    feeds = {"X": X, "W": W, "offset": off}
    m = node_model("DeformConv", feeds, opset=19)
    got = check(m, feeds)
    assert_close(got, [deform_ref(X, W, off).astype(np.float32)], 1e-5, 1e-5)


def test_deform_conv_mask_without_bias():
    feeds, names, attrs = make_case(2, 4, 6, 6, 2, (3, 3), 1, 2, (1, 1, 1, 1), mask=True, bias=False)
    assert names[3] == ""
    got = check(node_model("DeformConv", feeds, input_names=names, opset=19, **attrs), feeds, rtol=1e-5, atol=1e-5)
    assert_close(got, [ref_of(feeds, attrs).astype(np.float32)], rtol=1e-5, atol=1e-5)


def test_deform_conv_large_blocks():
    """Enough channels x taps x positions that the column matrix is processed in several blocks."""
    feeds, names, attrs = make_case(1, 64, 24, 20, 8, (3, 3), 2, 4, (1, 1, 1, 1), mask=True, bias=True, seed=3)
    check(node_model("DeformConv", feeds, input_names=names, opset=19, **attrs), feeds, rtol=1e-4, atol=1e-4)


def test_deform_conv_batch_change():
    feeds, names, attrs = make_case(1, 2, 5, 5, 3, (3, 3), pads=(1, 1, 1, 1))
    m = node_model("DeformConv", feeds, input_names=names, opset=19, **attrs)
    for vi in m.graph.input:
        if vi.name in ("X", "offset"):
            vi.type.tensor_type.shape.dim[0].dim_param = "N"
    sess = jitort.InferenceSession(m.SerializeToString())
    for n in (1, 3):
        f, _, _ = make_case(n, 2, 5, 5, 3, (3, 3), pads=(1, 1, 1, 1), seed=n)
        f["W"] = feeds["W"]
        assert_close(sess.run(None, f), [ref_of(f, attrs).astype(np.float32)], 1e-5, 1e-5)


@pytest.mark.parametrize("mask", [False, True])
def test_deform_conv_1d(mask):
    """1-D: linear interpolation along W; onnxruntime has no 1-D kernel, the 2-D oracle with H = 1 is used."""
    rng = np.random.default_rng(7)
    N, C, L, M, k, og = 2, 4, 11, 3, 3, 2
    pads, stride, dil = [2, 1], 2, 2
    OL = (L + 3 - (dil * (k - 1) + 1)) // stride + 1
    X = rng.standard_normal((N, C, L)).astype(np.float32)
    W = rng.standard_normal((M, C, k)).astype(np.float32)
    off = (rng.standard_normal((N, og * k, OL)) * 2).astype(np.float32)
    mk = rng.random((N, og * k, OL)).astype(np.float32)
    feeds = {"X": X, "W": W, "offset": off}
    names = ["X", "W", "offset"]
    if mask:
        feeds["mask"] = mk
        names += ["", "mask"]
    m = node_model("DeformConv", feeds, input_names=names, opset=19, offset_group=og, pads=pads, strides=[stride],
                   dilations=[dil])
    off2 = np.zeros((N, og * k, 2, OL), np.float32)
    off2[:, :, 1] = off
    ref = deform_ref(X[:, :, None], W[:, :, None], off2.reshape(N, -1, 1, OL), None,
                     mk[:, :, None] if mask else None, (1, stride), (0, pads[0], 0, pads[1]), (1, dil), 1, og)
    assert_close(run_jitort(m, feeds), [ref[:, :, 0].astype(np.float32)], 1e-5, 1e-5)


def _raises(m: Any, feeds: dict[str, np.ndarray], exc: type) -> None:
    with pytest.raises(exc):
        jitort.InferenceSession(m.SerializeToString()).run(None, feeds)


def test_deform_conv_errors():
    feeds, names, attrs = make_case(1, 4, 5, 5, 2, (3, 3), 1, 2)
    bad = dict(feeds, offset=feeds["offset"][:, :-2])
    _raises(node_model("DeformConv", bad, input_names=names, opset=19, **attrs), bad, InvalidArgument)
    bad = dict(attrs, offset_group=3)
    _raises(node_model("DeformConv", feeds, input_names=names, opset=19, **bad), feeds, InvalidArgument)
    f3 = {"X": np.ones((1, 1, 3, 3, 3), np.float32), "W": np.ones((1, 1, 2, 2, 2), np.float32),
          "offset": np.zeros((1, 24, 2, 2, 2), np.float32)}
    _raises(node_model("DeformConv", f3, opset=19), f3, OrtNotImplemented)
