"""Map-typed inputs: jitort.feeds.map_feed (a dict fed as onnxruntime's Python API takes it, its errors
included), CastMap and DictVectorizer (ai.onnx.ml opset 1), against onnxruntime; the map types
onnxruntime's Python API cannot feed (its float getter takes every value) against the C++ semantics
written out here (std::stof / std::stoll / std::to_string)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

import jitort
from jitort.errors import Fail, InvalidArgument
from jitort.feeds import is_map_type, map_feed
from ml_compare import assert_same, ort_session

ML = "ai.onnx.ml"


def _map_type(kt: int, vt: int) -> onnx.TypeProto:
    return helper.make_map_type_proto(kt, helper.make_tensor_type_proto(vt, None))


def _model(op: str, kt: int, vt: int, out: int, **attrs: Any) -> onnx.ModelProto:
    node = helper.make_node(op, ["X"], ["Y"], domain=ML, name=f"the_{op}", **attrs)
    g = helper.make_graph([node], "g", [helper.make_value_info("X", _map_type(kt, vt))],
                          [helper.make_tensor_value_info("Y", out, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])
    m.ir_version = 10
    return m


def _outcome(run: Any) -> Any:
    try:
        return run()
    except Exception as e:  # noqa: BLE001 - the class and message are what is compared
        return e


def _same_outcome(got: Any, want: Any, what: str) -> None:
    if isinstance(want, Exception):
        assert isinstance(got, Exception), f"{what}: jitort returned {got!r}, onnxruntime raised {want!r}"
        assert type(got).__name__ == type(want).__name__, f"{what}: {got!r} vs onnxruntime's {want!r}"
        if type(want) is RuntimeError:  # the feed errors: onnxruntime's exact words
            assert str(got) == str(want), what
        return
    assert not isinstance(got, Exception), f"{what}: jitort raised {got!r}"
    assert_same(got, want, what, 0, 0)


# onnxruntime builds map(int64, float) or map(string, float) from the first key; each feed below is
# accepted or refused the same way by both
FEEDS = [{3: 1.5, 1: 2, 0: -1.0}, {np.int64(2): np.float32(0.5), 1: np.float64(1e300)}, {True: 1.0, 5: 2.0},
         {1.0: 2.0}, {1: 2.0, 2.5: 3.0}, {"a": 2.0}, {1: "x"}, {1: None}, {1: b"x"}, {2 ** 63: 1.0},
         {-(2 ** 63): 1.0}, {(1,): 1.0}, {}, {"b": 1.0, "a": 2, "c": np.float32(3)}, {"a": 1.0, 7: 2.0},
         {"a": "1.0"}, {1: float("nan"), 2: float("-inf")}]


@pytest.mark.parametrize("key", ["int64", "string"])
def test_map_feed_matches_onnxruntime(key: str) -> None:
    kt = TP.INT64 if key == "int64" else TP.STRING
    attrs = {"int64_vocabulary": [0, 1, 2, 3, 5, 7]} if key == "int64" else {"string_vocabulary": ["a", "b", "c"]}
    m = _model("DictVectorizer", kt, TP.FLOAT, TP.FLOAT, **attrs)
    ort, sess = ort_session(m), jitort.InferenceSession(m.SerializeToString())
    for k, feed in enumerate(FEEDS):
        want = _outcome(lambda: ort.run(None, {"X": feed})[0])
        got = _outcome(lambda: sess.run(None, {"X": feed})[0])
        _same_outcome(got, want, f"feed {k} {feed!r}")
    for bad in (np.array([1.0], np.float32), 3.0):
        with pytest.raises(InvalidArgument, match="for input 'X'"):
            sess.run(None, {"X": bad})


def test_map_feed_direct() -> None:
    tp = _map_type(TP.INT64, TP.FLOAT)
    got = map_feed({5: 1, np.int32(-2): np.float64(0.1)}, tp, "X")
    assert list(got.items()) == [(-2, float(np.float32(0.1))), (5, 1.0)]
    assert all(type(k) is int and type(v) is float for k, v in got.items())
    with pytest.raises(RuntimeError, match=r"^Unexpected key type  <class 'float'>, it cannot be linked to C type "
                                           r"int64_t for input 'X'\.$"):
        map_feed({1: 1.0, 2.5: 2.0}, tp, "X")
    with pytest.raises(InvalidArgument, match=r"Actual: \(\(map\(string,tensor\(float\)\)\)\) , expected: "
                                              r"\(\(map\(int64,tensor\(float\)\)\)\)"):
        map_feed({"a": 1.0}, tp, "X")
    # the map types onnxruntime's Python API cannot feed: jitort takes values of the declared type
    assert map_feed({2: "b", 1: "a"}, _map_type(TP.INT64, TP.STRING), "X") == {1: "a", 2: "b"}
    assert map_feed({"z": 2 ** 40, "a": np.int64(-3)}, _map_type(TP.STRING, TP.INT64), "X") == {"a": -3, "z": 2 ** 40}
    assert map_feed({1: 0.1}, _map_type(TP.INT64, TP.DOUBLE), "X") == {1: 0.1}
    with pytest.raises(InvalidArgument, match=r"Actual: \(\(map\(int64,tensor\(float\)\)\)\) , expected: "
                                              r"\(\(map\(int64,tensor\(string\)\)\)\)"):
        map_feed({1: 1.0, 2: 2}, _map_type(TP.INT64, TP.STRING), "X")
    with pytest.raises(RuntimeError, match="Unexpected value type  <class 'NoneType'>"):
        map_feed({1: None}, _map_type(TP.INT64, TP.DOUBLE), "X")
    assert is_map_type(helper.make_sequence_type_proto(tp)) and not is_map_type(
        helper.make_tensor_type_proto(TP.FLOAT, None))


CAST_FEED = {1: 2.5, 0: -1.0, 4: 3.25, 2: float("nan"), 3: -float("nan"), 6: float("inf"), 7: 1e30, 8: -2.7,
             9: -0.0, 11: 1e-30, 12: 2.0 ** 70}


@pytest.mark.parametrize("cast_to", ["TO_FLOAT", "TO_STRING", "TO_INT64", None])
@pytest.mark.parametrize("form", [dict(), dict(map_form="SPARSE", max_map=10), dict(map_form="SPARSE", max_map=20),
                                  dict(map_form="DENSE", max_map=3)])
def test_cast_map_float_values(cast_to: str | None, form: dict) -> None:
    out = {"TO_STRING": TP.STRING, "TO_INT64": TP.INT64}.get(cast_to or "", TP.FLOAT)
    attrs = dict(form, **({"cast_to": cast_to} if cast_to else {}))
    m = _model("CastMap", TP.INT64, TP.FLOAT, out, **attrs)
    ort, sess = ort_session(m), jitort.InferenceSession(m.SerializeToString())
    assert sess.get_outputs()[0].type == ort.get_outputs()[0].type
    for feed in (CAST_FEED, {5: 1.0}, {0: 7.0, 30: 1.0}):
        _same_outcome(_outcome(lambda: sess.run(None, {"X": feed})[0]), ort.run(None, {"X": feed})[0], f"{feed}")


def test_cast_map_errors_match_onnxruntime() -> None:
    for attrs in (dict(map_form="SPARSE", max_map=0), dict(map_form="BAD"), dict(cast_to="TO_BAD")):
        m = _model("CastMap", TP.INT64, TP.FLOAT, TP.FLOAT, **attrs)
        want = _outcome(lambda: ort_session(m))
        assert isinstance(want, Exception)
        with pytest.raises(Fail):
            jitort.InferenceSession(m.SerializeToString())
    m = _model("CastMap", TP.INT64, TP.FLOAT, TP.FLOAT, map_form="SPARSE", max_map=3)
    feed = {-1: 1.0, 2: 3.0}
    want = _outcome(lambda: ort_session(m).run(None, {"X": feed}))
    got = _outcome(lambda: jitort.InferenceSession(m.SerializeToString()).run(None, {"X": feed}))
    _same_outcome(got, want, "negative sparse key")
    assert "Negative index values are not permitted" in str(got)


def _stof(s: str) -> float:  # the C library's reading of these strings, written out
    return {"2.5": 2.5, " -1e3xyz": -1000.0, "0x1p3": 8.0, "INF": math.inf, "7": 7.0, ".5": 0.5, "1e-2": 0.01}[s]


STRINGS = {1: "2.5", 2: " -1e3xyz", 3: "0x1p3", 4: "INF", 5: "7", 6: ".5", 8: "1e-2"}


def test_cast_map_string_values() -> None:
    """map(int64, string), which onnxruntime's Python API cannot feed."""
    want_f = np.array([[np.float32(_stof(v)) for v in STRINGS.values()]], np.float32)
    s = jitort.InferenceSession(_model("CastMap", TP.INT64, TP.STRING, TP.FLOAT, cast_to="TO_FLOAT").SerializeToString())
    np.testing.assert_array_equal(s.run(None, {"X": STRINGS})[0], want_f)
    s = jitort.InferenceSession(_model("CastMap", TP.INT64, TP.STRING, TP.INT64, cast_to="TO_INT64",
                                       map_form="SPARSE", max_map=8).SerializeToString())
    got = s.run(None, {"X": {1: "12", 3: "  -4.9", 9: "5"}})[0]
    np.testing.assert_array_equal(got, np.array([[0, 12, 0, -4, 0, 0, 0, 0]], np.int64))
    s = jitort.InferenceSession(_model("CastMap", TP.INT64, TP.STRING, TP.STRING, cast_to="TO_STRING",
                                       map_form="SPARSE", max_map=3).SerializeToString())
    got = s.run(None, {"X": {2: "x"}})[0]
    assert got.dtype == object and got.tolist() == [["0.f", "0.f", "x"]]
    s = jitort.InferenceSession(_model("CastMap", TP.INT64, TP.STRING, TP.FLOAT, cast_to="TO_FLOAT").SerializeToString())
    for bad in ("abc", "1e60", ""):
        with pytest.raises(Fail, match="stof"):
            s.run(None, {"X": {1: bad}})


@pytest.mark.parametrize("key", ["string", "int64"])
def test_dict_vectorizer_float_maps(key: str) -> None:
    vocab = dict(string_vocabulary=["b", "a", "zz", "a"]) if key == "string" else dict(int64_vocabulary=[3, -1, 7, 3])
    m = _model("DictVectorizer", TP.STRING if key == "string" else TP.INT64, TP.FLOAT, TP.FLOAT, **vocab)
    ort, sess = ort_session(m), jitort.InferenceSession(m.SerializeToString())
    feeds = [{"a": 1.5, "b": 2, "c": 3.0}, {"q": 1.0}] if key == "string" else [{3: 1.5, -1: 2}, {9: 1.0}]
    for feed in feeds:
        assert_same(sess.run(None, {"X": feed})[0], ort.run(None, {"X": feed})[0], f"{feed}", 0, 0)


@pytest.mark.parametrize("kt,vt,vocab,feed,want", [
    (TP.STRING, TP.DOUBLE, dict(string_vocabulary=["a", "b"]), {"b": 0.1}, np.array([[0.0, 0.1]])),
    (TP.STRING, TP.INT64, dict(string_vocabulary=["a", "b"]), {"a": 2 ** 40}, np.array([[2 ** 40, 0]])),
    (TP.INT64, TP.STRING, dict(int64_vocabulary=[2, 1]), {1: "x"}, np.array([["", "x"]], object)),
    (TP.INT64, TP.DOUBLE, dict(int64_vocabulary=[2, 1]), {2: 1e300}, np.array([[1e300, 0.0]])),
])
def test_dict_vectorizer_other_maps(kt: int, vt: int, vocab: dict, feed: dict, want: np.ndarray) -> None:
    """The DictVectorizer types onnxruntime registers but its Python API cannot feed."""
    s = jitort.InferenceSession(_model("DictVectorizer", kt, vt, vt, **vocab).SerializeToString())
    got = s.run(None, {"X": feed})[0]
    assert got.dtype == want.dtype and got.tolist() == want.tolist()


def test_dict_vectorizer_without_vocabulary_is_refused() -> None:
    m = _model("DictVectorizer", TP.STRING, TP.FLOAT, TP.FLOAT)
    assert isinstance(_outcome(lambda: ort_session(m)), Exception)
    with pytest.raises(Fail):
        jitort.InferenceSession(m.SerializeToString())


def test_map_passes_through_to_an_output() -> None:
    tp = _map_type(TP.INT64, TP.FLOAT)
    g = helper.make_graph([], "g", [helper.make_value_info("X", tp)], [helper.make_value_info("X", tp)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])
    m.ir_version = 10
    feed = {5: 1, 2: 2.5, np.int64(-1): np.float64(0.1)}
    want = ort_session(m).run(None, {"X": feed})[0]
    got = jitort.InferenceSession(m.SerializeToString()).run(None, {"X": feed})[0]
    assert got == want and list(got) == list(want)


def test_sklearn_dict_vectorizer_pipeline() -> None:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DictionaryType, FloatTensorType, StringTensorType
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    rows = [{str(w): float(rng.normal()) for w in rng.choice(words, size=int(rng.integers(1, 4)), replace=False)}
            for _ in range(200)]
    y = np.array([int(d.get("alpha", 0) + d.get("beta", 0) > 0) for d in rows])
    p = make_pipeline(DictVectorizer(sparse=False), LogisticRegression()).fit(rows, y)
    m = convert_sklearn(p, initial_types=[("X", DictionaryType(StringTensorType([1]), FloatTensorType([1])))],
                        target_opset={"": 17, ML: 3})
    assert "DictVectorizer" in [n.op_type for n in m.graph.node]
    ort, sess = ort_session(m), jitort.InferenceSession(m.SerializeToString())
    for d in rows[:20] + [{"unseen": 1.0}]:
        for g, w in zip(sess.run(None, {"X": d}), ort.run(None, {"X": d})):
            assert_same(g, w, f"{d}", 1e-5, 1e-6)
