"""Strings, Unique, NonMaxSuppression, Det, DFT/STFT/MelWeightMatrix, BitCast, CumProd, TensorScatter,
the random generators and ImageDecoder: against onnxruntime, or the spec's formula where
onnxruntime has no kernel (random values are checked by shape, dtype, range and seeding)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

import jitort
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from oracle import check, make_model, node_model, rand, run_jitort


def _strings(*vals: str) -> np.ndarray:
    return np.array(vals, dtype=object)


# --- strings -------------------------------------------------------------------------------------

@pytest.mark.parametrize("action,sensitive,stops", [("LOWER", 0, ["monday"]), ("UPPER", 1, ["Monday"]),
                                                    ("NONE", 0, []), ("LOWER", 1, ["monday", "tuesday"])])
@pytest.mark.parametrize("two_d", [False, True])
def test_string_normalizer(action: str, sensitive: int, stops: list, two_d: bool) -> None:
    x = _strings("Monday", "tuesday", "WEDNESDAY", "monday")
    if two_d:
        x = x.reshape(1, -1)
    attrs: dict[str, Any] = {"stopwords": stops} if stops else {}
    m = node_model("StringNormalizer", {"x": x}, opset=10, case_change_action=action, is_case_sensitive=sensitive,
                   **attrs)
    got = run_jitort(m, {"x": x})[0]
    flat = [s for s in x.reshape(-1) if (s if sensitive else s.lower()) not in
            ({w for w in stops} if sensitive else {w.lower() for w in stops})]
    flat = [s.lower() if action == "LOWER" else s.upper() if action == "UPPER" else s for s in flat] or [""]
    np.testing.assert_array_equal(got, np.array(flat, object).reshape(1, -1) if two_d else np.array(flat, object))


def test_string_normalizer_all_removed() -> None:
    x = _strings("a", "A")
    got = run_jitort(node_model("StringNormalizer", {"x": x}, opset=10, stopwords=["a"]), {"x": x})[0]
    assert got.shape == (1,) and got[0] == ""


def test_string_concat_broadcast_and_utf8() -> None:
    a, b = _strings("ab", "çé", ""), _strings("-x")
    check(node_model("StringConcat", {"a": a, "b": b}, opset=20), {"a": a, "b": b})


@pytest.mark.parametrize("delimiter,maxsplit", [(None, None), (" ", None), ("-", 1), ("", 2)])
def test_string_split(delimiter: Any, maxsplit: Any) -> None:
    # "" with an explicit delimiter is left out: onnxruntime counts 0 parts, onnx's reference (and
    # jitort, as Python's str.split) one empty part; the spec does not say.
    x = _strings("a b  c", "d-e-f", "" if not delimiter else "h", "g").reshape(2, 2)
    attrs = {k: v for k, v in (("delimiter", delimiter), ("maxsplit", maxsplit)) if v is not None}
    check(node_model("StringSplit", {"x": x}, n_outputs=2, opset=20, **attrs), {"x": x})


@pytest.mark.parametrize("pattern", [r"\w+@\w+\.com", r"^a.*", r"[0-9]{3}"])
def test_regex_full_match(pattern: str) -> None:
    x = _strings("me@site.com", "abc", "123", "x@y.org")
    check(node_model("RegexFullMatch", {"x": x}, opset=20, pattern=pattern), {"x": x})


# --- Unique, NMS, Det ----------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("sorted_", [1, 0])
def test_unique(axis: Any, sorted_: int) -> None:
    x = np.array([[2, 1, 2, 0], [3, 1, 3, 0], [2, 1, 2, 0]], np.float32)
    attrs: dict[str, Any] = {"sorted": sorted_}
    if axis is not None:
        attrs["axis"] = axis
    check(node_model("Unique", {"x": x}, n_outputs=4, opset=11, **attrs), {"x": x})


@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("max_out,iou,score", [(3, 0.5, None), (10, 0.3, 0.2), (1, 0.0, 0.0), (0, 0.5, None)])
def test_non_max_suppression(center: int, max_out: int, iou: float, score: Any) -> None:
    boxes = rand([2, 6, 4], seed=1, low=0, high=1)
    if center:
        boxes[..., 2:] = np.abs(boxes[..., 2:]) * 0.5
    scores = rand([2, 3, 6], seed=2, low=0, high=1)
    scores[0, 0, 1] = scores[0, 0, 2]  # a tie
    inits = {"m": np.array([max_out], np.int64), "i": np.array([iou], np.float32)}
    names = ["boxes", "scores", "m", "i"]
    if score is not None:
        inits["s"] = np.array([score], np.float32)
        names.append("s")
    m = node_model("NonMaxSuppression", {"boxes": boxes, "scores": scores}, opset=11, initializers=inits,
                   input_names=names, center_point_box=center)
    check(m, {"boxes": boxes, "scores": scores})


@pytest.mark.parametrize("shape", [[3, 3], [2, 4, 4], [1, 1]])
def test_det(shape: list) -> None:
    x = rand(shape, np.float32, seed=3)
    check(node_model("Det", {"x": x}, opset=11), {"x": x}, rtol=1e-4, atol=1e-5)
    x64 = x.astype(np.float64)  # onnxruntime has no float64 kernel
    np.testing.assert_allclose(run_jitort(node_model("Det", {"x": x64}, opset=22), {"x": x64})[0],
                               np.linalg.det(x64), rtol=1e-12)


# --- signal --------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("complex_in,onesided,inverse", [(False, 0, 0), (False, 1, 0), (True, 0, 0), (True, 0, 1)])
@pytest.mark.parametrize("length", [None, 6, 12])
def test_dft(opset: int, complex_in: bool, onesided: int, inverse: int, length: Any) -> None:
    x = rand([2, 8, 2 if complex_in else 1], seed=4)
    inits = {}
    names = ["x"]
    if length is not None or opset >= 20:
        inits["n"] = np.array(length if length is not None else 8, np.int64)
        names.append("n")
    attrs: dict[str, Any] = {"onesided": onesided, "inverse": inverse}
    if opset >= 20:
        inits["axis"] = np.array(1, np.int64)
        names.append("axis")
    else:
        attrs["axis"] = 1
    m = node_model("DFT", {"x": x}, opset=opset, initializers=inits, input_names=names, **attrs)
    check(m, {"x": x}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("with_window,onesided", [(True, 1), (False, 1), (True, 0)])
def test_stft(with_window: bool, onesided: int) -> None:
    x = rand([2, 32, 1], seed=5)
    inits = {"step": np.array(4, np.int64)}
    names = ["x", "step"]
    if with_window:
        inits["w"] = np.hanning(8).astype(np.float32)
        names.append("w")
    else:
        inits["len"] = np.array(8, np.int64)
        names += ["", "len"]
    m = node_model("STFT", {"x": x}, opset=17, initializers=inits, input_names=names, onesided=onesided)
    check(m, {"x": x}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bins,n,rate,lo,hi", [(8, 16, 8192, 0.0, 4096.0), (5, 32, 16000, 100.0, 7000.0)])
def test_mel_weight_matrix(bins: int, n: int, rate: int, lo: float, hi: float) -> None:
    inits = {"b": np.array(bins, np.int64), "n": np.array(n, np.int64), "r": np.array(rate, np.int64),
             "lo": np.array(lo, np.float32), "hi": np.array(hi, np.float32)}
    check(node_model("MelWeightMatrix", {}, opset=17, initializers=inits), {}, rtol=1e-5, atol=1e-6)


# --- BitCast, CumProd, TensorScatter -------------------------------------------------------------

@pytest.mark.parametrize("src,to", [(np.float32, TP.INT32), (np.int64, TP.DOUBLE), (np.uint16, TP.FLOAT16),
                                    (np.bool_, TP.UINT8)])
def test_bitcast(src: Any, to: int) -> None:
    x = rand([2, 3], src, seed=6)
    got = run_jitort(node_model("BitCast", {"x": x}, opset=26, to=to), {"x": x})[0]
    np.testing.assert_array_equal(got, x.view(helper.tensor_dtype_to_np_dtype(to)))
    scalar = np.array(1.5, np.float32)
    assert run_jitort(node_model("BitCast", {"x": scalar}, opset=26, to=TP.INT32), {"x": scalar})[0].shape == ()


def test_bitcast_width_mismatch() -> None:
    x = rand([2], np.float32)
    with pytest.raises(InvalidArgument, match="BitCast"):
        run_jitort(node_model("BitCast", {"x": x}, opset=26, to=TP.DOUBLE), {"x": x})


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("dt,axis", [(np.float32, 1), (np.int32, 0), (np.float64, -1)])
def test_cumprod(exclusive: int, reverse: int, dt: Any, axis: int) -> None:
    x = rand([3, 4], dt, seed=7, low=-2, high=2)
    got = run_jitort(node_model("CumProd", {"x": x}, opset=26, initializers={"a": np.array(axis, np.int64)},
                                exclusive=exclusive, reverse=reverse), {"x": x})[0]
    w = np.flip(x, axis) if reverse else x
    y = np.cumprod(w, axis=axis, dtype=dt)
    if exclusive:
        y = np.concatenate([np.ones_like(np.take(y, [0], axis=axis)), np.delete(y, -1, axis=axis)], axis=axis)
    if reverse:
        y = np.flip(y, axis)
    np.testing.assert_allclose(got, y, rtol=1e-6)


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode: str) -> None:
    cache = rand([2, 3, 5, 4], seed=8)
    upd = rand([2, 3, 2, 4], seed=9)
    idx = np.array([1, 4 if mode == "circular" else 3], np.int64)
    got = run_jitort(node_model("TensorScatter", {"c": cache, "u": upd, "i": idx}, opset=24, mode=mode),
                     {"c": cache, "u": upd, "i": idx})[0]
    want = cache.copy()
    for b in range(2):
        for s in range(2):
            want[b, :, (idx[b] + s) % 5] = upd[b, :, s]
    np.testing.assert_array_equal(got, want)


# --- random ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,attrs", [("RandomNormal", {"mean": 2.0, "scale": 0.5}),
                                      ("RandomUniform", {"low": -1.0, "high": 3.0})])
@pytest.mark.parametrize("dtype", [TP.FLOAT, TP.DOUBLE, TP.FLOAT16])
def test_random_generators(op: str, attrs: dict, dtype: int) -> None:
    m = make_model([helper.make_node(op, [], ["y"], shape=[200, 50], dtype=dtype, seed=3.0, **attrs)], {},
                   ["y"], opset=17)
    sess = jitort.InferenceSession(m.SerializeToString())
    a, b = sess.run(None, {})[0], sess.run(None, {})[0]
    assert a.shape == (200, 50) and a.dtype == helper.tensor_dtype_to_np_dtype(dtype)
    assert not np.array_equal(a, b)  # successive runs draw anew
    again = jitort.InferenceSession(m.SerializeToString()).run(None, {})[0]
    np.testing.assert_array_equal(a, again)  # the same seed repeats in a new session
    v = a.astype(np.float64)
    if op == "RandomNormal":
        assert abs(v.mean() - 2.0) < 0.05 and abs(v.std() - 0.5) < 0.05
    else:
        assert v.min() >= -1.0 and v.max() <= 3.0 and abs(v.mean() - 1.0) < 0.05


def test_random_like_and_bernoulli_and_multinomial() -> None:
    x = np.full((100, 40), 0.3, np.float64)
    jitort.set_seed(7)
    y = run_jitort(node_model("RandomUniformLike", {"x": x}, opset=17, dtype=TP.FLOAT), {"x": x})[0]
    assert y.dtype == np.float32 and y.shape == x.shape
    b = run_jitort(node_model("Bernoulli", {"x": x}, opset=15), {"x": x})[0]
    assert b.dtype == np.float64 and set(np.unique(b)) <= {0.0, 1.0} and abs(b.mean() - 0.3) < 0.03
    logits = np.log(np.array([[0.1, 0.6, 0.3]], np.float32))
    s = run_jitort(node_model("Multinomial", {"x": logits}, opset=7, sample_size=3000, dtype=TP.INT64),
                   {"x": logits})[0]
    assert s.shape == (1, 3000) and s.dtype == np.int64
    freq = np.bincount(s[0], minlength=3) / 3000
    np.testing.assert_allclose(freq, [0.1, 0.6, 0.3], atol=0.03)


def test_random_normal_like() -> None:
    """RandomNormalLike: the input's shape, its dtype unless ``dtype`` says otherwise, the moments asked
    for; a seeded node repeats its draws in a new session and draws anew on each run."""
    x = np.zeros((200, 50), np.float64)
    m = node_model("RandomNormalLike", {"x": x}, opset=17, mean=-1.0, scale=2.0, seed=5.0)
    sess = jitort.InferenceSession(m.SerializeToString())
    a, b = sess.run(None, {"x": x})[0], sess.run(None, {"x": x})[0]
    assert a.shape == x.shape and a.dtype == np.float64
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, jitort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0])
    assert abs(a.mean() + 1.0) < 0.1 and abs(a.std() - 2.0) < 0.1
    y = run_jitort(node_model("RandomNormalLike", {"x": x}, opset=17, dtype=TP.FLOAT16), {"x": x})[0]
    assert y.dtype == np.float16 and y.shape == x.shape


def test_image_decoder_is_not_implemented() -> None:
    x = np.zeros(16, np.uint8)
    with pytest.raises(OrtNotImplemented, match="ImageDecoder.*opset 20"):
        run_jitort(node_model("ImageDecoder", {"x": x}, opset=20), {"x": x})


# --- TfIdfVectorizer and ai.onnx.ml --------------------------------------------------------------

@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("min_n,max_n,skip", [(1, 1, 0), (2, 2, 0), (1, 2, 3), (2, 2, 5)])
@pytest.mark.parametrize("batched", [False, True])
def test_tfidf_vectorizer(mode: str, min_n: int, max_n: int, skip: int, batched: bool) -> None:
    x = np.array([[1, 1, 3, 3, 3, 7], [8, 6, 7, 5, 6, 8]], np.int32)
    if not batched:
        x = x.reshape(-1)
    attrs = dict(mode=mode, min_gram_length=min_n, max_gram_length=max_n, max_skip_count=skip,
                 ngram_counts=[0, 4], ngram_indexes=[0, 1, 2, 3, 4, 5, 6], pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 6, 7],
                 weights=[0.5, 1.0, 2.0, 1.0, 3.0, 1.5, 1.0])
    check(node_model("TfIdfVectorizer", {"x": x}, opset=9, **attrs), {"x": x})


def test_tfidf_vectorizer_strings() -> None:
    x = _strings("a", "b", "a", "c", "b", "a")
    attrs = dict(mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=1, ngram_counts=[0, 2],
                 ngram_indexes=[0, 1, 2, 3], pool_strings=["a", "b", "a", "b", "b", "a"])
    check(node_model("TfIdfVectorizer", {"x": x}, opset=9, **attrs), {"x": x})


def _ml_model(op: str, feeds: dict, **attrs: Any) -> Any:
    return make_model(
        [helper.make_node(op, list(feeds), ["y"], domain="ai.onnx.ml", **attrs)],
        {k: (v.dtype, v.shape) for k, v in feeds.items()}, ["y"], opset=17, extra_opsets={"ai.onnx.ml": 4})


def test_label_encoder() -> None:
    x = _strings("a", "b", "zz", "c")
    check(_ml_model("LabelEncoder", {"x": x}, keys_strings=["a", "b", "c"], values_int64s=[5, 6, 7],
                    default_int64=-9), {"x": x})
    xi = np.array([[1, 2], [3, 4]], np.int64)
    check(_ml_model("LabelEncoder", {"x": xi}, keys_int64s=[1, 3], values_floats=[0.5, 1.5], default_float=-1.0),
          {"x": xi})
    xf = np.array([0.5, np.nan, 2.0], np.float32)
    check(_ml_model("LabelEncoder", {"x": xf}, keys_floats=[0.5, float("nan")], values_strings=["h", "nan"]),
          {"x": xf})


def test_binarizer_and_array_feature_extractor() -> None:
    x = rand([3, 5], seed=10)
    check(_ml_model("Binarizer", {"x": x}, threshold=0.5), {"x": x})
    idx = np.array([4, 0, 2], np.int64)
    check(_ml_model("ArrayFeatureExtractor", {"x": x, "i": idx}), {"x": x, "i": idx})
    v = rand([5], seed=11)
    check(_ml_model("ArrayFeatureExtractor", {"x": v, "i": idx}), {"x": v, "i": idx})


@pytest.mark.parametrize("aggregate", [0, 1, 2, 3])
def test_tree_ensemble(aggregate: int) -> None:
    # tree 0: x0 <= 0.5 ? leaf0 (t0, 1.0) : (x1 in {1, 3} ? leaf1 (t1, 2.0) : leaf2 (t0, -1.0)); tree 1: leaf3
    attrs = dict(nodes_featureids=[0, 1, 0], nodes_modes=helper.make_tensor("m", TP.UINT8, [3], [0, 6, 0]),
                 nodes_splits=helper.make_tensor("s", TP.FLOAT, [3], [0.5, 0.0, 0.0]),
                 nodes_truenodeids=[0, 1, 3], nodes_falsenodeids=[1, 2, 3], nodes_trueleafs=[1, 1, 1],
                 nodes_falseleafs=[0, 1, 1], leaf_targetids=[0, 1, 0, 1],
                 leaf_weights=helper.make_tensor("w", TP.FLOAT, [4], [1.0, 2.0, -1.0, 4.0]),
                 membership_values=helper.make_tensor("mv", TP.FLOAT, [3], [1.0, 3.0, float("nan")]),
                 tree_roots=[0, 2], n_targets=2, aggregate_function=aggregate)
    x = np.array([[0.2, 9.0], [0.9, 3.0], [0.9, 2.0]], np.float32)
    m = make_model([helper.make_node("TreeEnsemble", ["x"], ["y"], domain="ai.onnx.ml", **attrs)],
                   {"x": (np.float32, [3, 2])}, ["y"], opset=21, extra_opsets={"ai.onnx.ml": 5})
    got = run_jitort(m, {"x": x})[0]
    leaves = [[(0, 1.0), (1, 4.0)], [(1, 2.0), (1, 4.0)], [(0, -1.0), (1, 4.0)]]
    want = np.zeros((3, 2), np.float32)
    for r, ls in enumerate(leaves):
        for t in (0, 1):
            ws = [w for tt, w in ls if tt == t]
            if ws:
                want[r, t] = [np.mean(ws) * len(ws) / 2, sum(ws), min(ws), max(ws)][aggregate]
    np.testing.assert_allclose(got, want, rtol=1e-6)
