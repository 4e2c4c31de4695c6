"""SVMClassifier and SVMRegressor (ai.onnx.ml opset 1) against onnxruntime: scikit-learn SVC / SVR / NuSVR /
OneClassSVM / LinearSVC / LinearSVR trained here on seeded synthetic data and converted with skl2onnx, and
onnx.helper-built models for what the converters do not emit (SVM_LINEAR mode, post-transforms, prob_a/prob_b
by hand, int/double inputs)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

import jitort
from jitort.errors import NotImplemented as OrtNotImplemented
from ml_compare import compare

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")
# skl2onnx reads SVC.probA_/probB_, which scikit-learn 1.9 deprecates with SVC(probability=True)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

from sklearn import svm  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402

ML = "ai.onnx.ml"
F = 5
BATCHES = (1, 64)
RTOL, ATOL = 1e-4, 1e-5
OPSETS = {"": 17, ML: 3}


def _data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, F)).astype(np.float32)


def _target(x: np.ndarray, kind: str) -> np.ndarray:
    s = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3]
    if kind == "regression":
        return s
    if kind == "binary":
        return (s > 0).astype(np.int64)
    if kind == "binary_strings":
        return np.array(["no", "yes"])[(s > 0).astype(np.int64)]
    cls = np.digitize(s, [-1.0, 0.0, 1.0])
    return np.array(["ant", "bee", "cat", "dog"])[cls] if kind == "strings" else cls.astype(np.int64)


TRAIN = _data(150, seed=0)


def _feeds(n: int) -> dict[str, np.ndarray]:
    return {"X": _data(n, seed=11 + n)}


def _fit(model: Any, kind: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LinearSVC's convergence warning
        return model.fit(TRAIN) if kind == "none" else model.fit(TRAIN, _target(TRAIN, kind))


KERNELS = ["linear", "poly", "rbf", "sigmoid"]


@pytest.mark.parametrize("labels", ["binary", "binary_strings", "multiclass", "strings"])
@pytest.mark.parametrize("proba", [False, True])
@pytest.mark.parametrize("kernel", KERNELS)
def test_svc(kernel: str, proba: bool, labels: str) -> None:
    model = _fit(svm.SVC(kernel=kernel, probability=proba, gamma=0.3, coef0=0.5 if kernel != "rbf" else 0.0,
                         random_state=0), labels)
    onx = to_onnx(model, TRAIN[:1], options={"zipmap": False}, target_opset=OPSETS)
    assert [n.op_type for n in onx.graph.node][0] == "SVMClassifier"
    compare(onx, _feeds, BATCHES, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("labels", ["multiclass", "strings"])
def test_svc_zipmap_and_poly_degrees(labels: str) -> None:
    for degree in (2, 4):
        model = _fit(svm.SVC(kernel="poly", degree=degree, probability=True, gamma=0.2, coef0=1.0, random_state=0),
                     labels)
        compare(to_onnx(model, TRAIN[:1], target_opset=OPSETS), _feeds, BATCHES, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kernel", KERNELS)
def test_svr(kernel: str) -> None:
    model = _fit(svm.SVR(kernel=kernel, gamma=0.3, coef0=0.5 if kernel != "rbf" else 0.0), "regression")
    compare(to_onnx(model, TRAIN[:1], target_opset=OPSETS), _feeds, BATCHES, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["nusvr", "oneclass_rbf", "oneclass_linear", "linear_svr"])
def test_other_regressors(name: str) -> None:
    model, kind = {"nusvr": (svm.NuSVR(gamma=0.3), "regression"),
                   "oneclass_rbf": (svm.OneClassSVM(gamma=0.3, nu=0.2), "none"),
                   "oneclass_linear": (svm.OneClassSVM(kernel="linear", nu=0.2), "none"),
                   "linear_svr": (svm.LinearSVR(random_state=0), "regression")}[name]
    compare(to_onnx(_fit(model, kind), TRAIN[:1], target_opset=OPSETS), _feeds, BATCHES, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("labels", ["binary", "multiclass", "strings"])
def test_linear_svc(labels: str) -> None:
    model = _fit(svm.LinearSVC(random_state=0), labels)
    compare(to_onnx(model, TRAIN[:1], target_opset=OPSETS), _feeds, BATCHES, rtol=RTOL, atol=ATOL)


# -- onnx.helper-built models -------------------------------------------------------------------------------------

def _model(op: str, out_types: tuple[int, ...], in_type: int = TP.FLOAT, **attrs: Any) -> onnx.ModelProto:
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in zip(("Y", "Z"), out_types)]
    node = helper.make_node(op, ["X"], [o.name for o in outs], domain=ML, name=f"the_{op}", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", in_type, [None, F])], outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])
    m.ir_version = 10
    return m


def _svc3(rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    counts = [2, 3, 2]
    v = sum(counts)
    return dict(kernel_type="RBF", kernel_params=[0.4, 0.0, 3.0], vectors_per_class=counts,
                support_vectors=rng.normal(size=v * F).astype(np.float32).tolist(),
                coefficients=rng.normal(size=2 * v).astype(np.float32).tolist(),
                rho=rng.normal(size=3).astype(np.float32).tolist(), **extra)


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
def test_helper_svc_three_classes_with_prob_a_b(post: str) -> None:
    rng = np.random.default_rng(3)
    attrs = _svc3(rng, prob_a=[-1.5, -0.7, -2.0], prob_b=[0.1, -0.2, 0.05], classlabels_ints=[7, 3, 5],
                  post_transform=post)
    compare(_model("SVMClassifier", (TP.INT64, TP.FLOAT), **attrs), _feeds, BATCHES, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"])
def test_helper_svc_three_classes_scores(post: str) -> None:
    attrs = _svc3(np.random.default_rng(4), classlabels_strings=["a", "b", "c"], post_transform=post)
    compare(_model("SVMClassifier", (TP.STRING, TP.FLOAT), **attrs), _feeds, BATCHES, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("kernel", ["LINEAR", "POLY", "SIGMOID"])
def test_helper_svc_binary_post(kernel: str, post: str) -> None:
    rng = np.random.default_rng(5)
    attrs = dict(kernel_type=kernel, kernel_params=[0.3, 0.2, 2.0], vectors_per_class=[3, 2],
                 support_vectors=rng.normal(size=5 * F).tolist(), coefficients=rng.normal(size=5).tolist(),
                 rho=[0.1], classlabels_ints=[4, 9], post_transform=post)
    compare(_model("SVMClassifier", (TP.INT64, TP.FLOAT), **attrs), _feeds, BATCHES, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("post", ["NONE", "SOFTMAX", "LOGISTIC", "PROBIT"])
@pytest.mark.parametrize("n_class", [2, 3])
@pytest.mark.parametrize("positive", [False, True])
def test_helper_svm_linear_mode(n_class: int, positive: bool, post: str) -> None:
    rng = np.random.default_rng(6)
    coef = rng.normal(size=n_class * F) * 0.3
    if positive:
        coef = np.abs(coef)
    attrs = dict(kernel_type="RBF", kernel_params=[0.3, 0.2, 2.0], coefficients=coef.tolist(), rho=[0.25],
                 classlabels_ints=list(range(10, 10 + n_class)), post_transform=post)
    compare(_model("SVMClassifier", (TP.INT64, TP.FLOAT), **attrs), _feeds, BATCHES, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("in_type", [TP.DOUBLE, TP.INT64, TP.INT32])
def test_helper_svc_casts_inputs_to_float(in_type: int) -> None:
    attrs = _svc3(np.random.default_rng(7), classlabels_ints=[0, 1, 2])
    dt = onnx.helper.tensor_dtype_to_np_dtype(in_type)
    compare(_model("SVMClassifier", (TP.INT64, TP.FLOAT), in_type=in_type, **attrs),
            lambda n: {"X": (np.round(_data(n, seed=n) * 3)).astype(dt)}, BATCHES, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("one_class", [0, 1])
@pytest.mark.parametrize("kernel", ["LINEAR", "POLY", "RBF", "SIGMOID", "none"])
def test_helper_svm_regressor(kernel: str, one_class: int) -> None:
    rng = np.random.default_rng(8)
    if kernel == "none":  # SVM_LINEAR mode
        attrs = dict(kernel_type="POLY", kernel_params=[0.5, 0.1, 3.0], n_supports=0,
                     coefficients=rng.normal(size=F).tolist(), rho=[-0.2])
    else:
        attrs = dict(kernel_type=kernel, kernel_params=[0.5, 0.1, 3.0], n_supports=4,
                     support_vectors=rng.normal(size=4 * F).tolist(), coefficients=rng.normal(size=4).tolist(),
                     rho=[-0.2])
    compare(_model("SVMRegressor", (TP.FLOAT,), one_class=one_class, post_transform="LOGISTIC", **attrs), _feeds,
            BATCHES, rtol=RTOL, atol=ATOL)


def test_binary_probit_without_probabilities_is_refused() -> None:
    rng = np.random.default_rng(9)
    attrs = dict(kernel_type="LINEAR", kernel_params=[0.3, 0.2, 2.0], vectors_per_class=[1, 1],
                 support_vectors=rng.normal(size=2 * F).tolist(), coefficients=[1.0, -1.0], rho=[0.0],
                 classlabels_ints=[0, 1], post_transform="PROBIT")
    with pytest.raises(OrtNotImplemented, match="SVMClassifier.*ai.onnx.ml, opset 1.*PROBIT"):
        jitort.InferenceSession(_model("SVMClassifier", (TP.INT64, TP.FLOAT), **attrs).SerializeToString())


def test_svm_kernels_keep_each_rows_arithmetic() -> None:
    """The vectorised kernels (kernel values transposed, rows summed side by side) give, bit for bit, the
    row-at-a-time arithmetic the module doc states; 300 rows span two blocks of ``ROWS``; the two GEMM
    orientations of the dot products agree bit for bit (one fma chain per value either way)."""
    from jitort.kernels import ml_svm
    rng = np.random.default_rng(12)
    n, v, f = 300, 7, F
    x, sv = rng.normal(size=(n, f)).astype(np.float32), rng.normal(size=(v, f)).astype(np.float32)
    vecs = ml_svm.SupportVectors(sv)
    g = np.float32(0.3)
    kt = ml_svm.kernel_t(x, vecs, ml_svm.RBF, g, np.float32(0), np.float32(0))
    want = np.empty((v, n), np.float32)
    for r in range(n):
        for m in range(v):
            s = np.float32(0)
            for k in range(f):
                d = x[r, k] - sv[m, k]
                s = np.float32(s + d * d)
            want[m, r] = np.float32(np.exp(-g * s))
    np.testing.assert_allclose(kt, want, rtol=2e-7)  # numpy's float32 exp vs libm's expf: within an ulp
    counts, starts = np.array([3, 4]), np.array([0, 3])
    coef, rho = rng.normal(size=(1, v)).astype(np.float32), np.array([0.1], np.float32)
    scores, votes = ml_svm._ovo(kt, coef, rho, starts, counts, 2)
    for r in range(n):
        s = 0.0
        for m in range(v):
            s += float(np.float32(coef[0, m] * kt[m, r]))
        s += float(rho[0])
        assert scores[r, 0] == np.float32(s) and votes[r, 0 if s > 0 else 1] == 1
    y = ml_svm._weighted_t(kt, coef[0], np.float32(0.5))
    for r in range(n):
        s = np.float32(0)
        for m in range(v):
            s = np.float32(s + np.float32(coef[0, m] * kt[m, r]))
        assert y[r, 0] == np.float32(s + np.float32(0.5))
    few, many = ml_svm.dots_t(x[:5], vecs), ml_svm.dots_t(x, vecs)
    np.testing.assert_array_equal(few, many[:, :5])
    np.testing.assert_allclose(many, sv.astype(np.float64) @ x.T.astype(np.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("outputs", [1, 3, 5, 8, 9, 20])
def test_linear_product_paths(outputs: int) -> None:
    """ml_linear.Packed: dot products (<= 8 outputs) or the packed GEMM (more) against float64, and the
    same bits whether the rows run in one part or split across threads."""
    from jitort.kernels import ml_linear
    rng = np.random.default_rng(13)
    w, b = rng.normal(size=(100, outputs)).astype(np.float32), rng.normal(size=outputs).astype(np.float32)
    p = ml_linear.Packed(w, b)
    x = rng.normal(size=(20000, 100)).astype(np.float32)
    got = p.product(x)
    np.testing.assert_allclose(got, x.astype(np.float64) @ w + b, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got[:7], p.product(x[:7]))
    if outputs <= ml_linear.DOT_OUTPUTS:  # the AVX2 hosts' vector width, on any host
        out = np.empty((300, outputs), np.float32)
        for f in (100, 37, 5):
            xf = np.ascontiguousarray(x[:300, :f])
            wf = np.ascontiguousarray(w[:f].T)
            ml_linear.dots_avx2(xf, wf, b, out, 0, 300)
            np.testing.assert_allclose(out, xf.astype(np.float64) @ w[:f] + b, rtol=1e-4, atol=1e-4)
