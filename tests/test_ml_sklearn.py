"""End-to-end classic ML: scikit-learn, LightGBM and XGBoost models trained here on seeded synthetic
data (a fraction of a second each), converted with skl2onnx / onnxmltools, run by jitort and by
onnxruntime at batch 1, 64 and 2000.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ml_compare import compare

pytest.importorskip("sklearn")  # the test extra installs these; a bare install skips the module
pytest.importorskip("skl2onnx")

from sklearn import ensemble, linear_model, tree  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402

N_FEATURES = 6


def _data(n: int, seed: int = 0, nan: bool = False) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)
    if nan:
        x[np.random.default_rng(seed + 1).random(x.shape) < 0.15] = np.nan
    return x


def _target(x: np.ndarray, kind: str) -> np.ndarray:
    x = np.nan_to_num(x)
    s = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3]
    if kind == "regression":
        return s
    if kind == "binary":
        return (s > 0).astype(np.int64)
    cls = np.digitize(s, [-1.0, 0.0, 1.0])
    return np.array(["ant", "bee", "cat", "dog"])[cls] if kind == "strings" else cls.astype(np.int64)


TRAIN = _data(400, seed=0)
TRAIN_NAN = _data(400, seed=0, nan=True)

CLASSIFIERS = {
    "decision_tree": lambda: tree.DecisionTreeClassifier(max_depth=6, random_state=0),
    "random_forest": lambda: ensemble.RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0),
    "extra_trees": lambda: ensemble.ExtraTreesClassifier(n_estimators=10, max_depth=6, random_state=0),
    "gradient_boosting": lambda: ensemble.GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0),
    "logistic_regression": lambda: linear_model.LogisticRegression(max_iter=200),
}
REGRESSORS = {
    "decision_tree": lambda: tree.DecisionTreeRegressor(max_depth=6, random_state=0),
    "random_forest": lambda: ensemble.RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0),
    "extra_trees": lambda: ensemble.ExtraTreesRegressor(n_estimators=10, max_depth=6, random_state=0),
    "gradient_boosting": lambda: ensemble.GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0),
    "linear_regression": lambda: linear_model.LinearRegression(),
}


def _feeds(nan: bool = False, name: str = "X") -> Any:
    return lambda n: {name: _data(n, seed=7 + n, nan=nan)}


@pytest.mark.parametrize("labels", ["binary", "multiclass", "strings"])
@pytest.mark.parametrize("zipmap", [False, True])
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_sklearn_classifier(name: str, zipmap: bool, labels: str) -> None:
    model = CLASSIFIERS[name]().fit(TRAIN, _target(TRAIN, labels))
    onx = to_onnx(model, TRAIN[:1], options={"zipmap": zipmap}, target_opset={"": 17, "ai.onnx.ml": 3})
    compare(onx, _feeds())


@pytest.mark.parametrize("name", sorted(REGRESSORS))
def test_sklearn_regressor(name: str) -> None:
    model = REGRESSORS[name]().fit(TRAIN, _target(TRAIN, "regression"))
    compare(to_onnx(model, TRAIN[:1], target_opset={"": 17, "ai.onnx.ml": 3}), _feeds())


def test_sklearn_preprocessing_pipeline() -> None:
    """Imputer -> scaler -> normaliser -> logistic regression, and a ColumnTransformer with a one-hot
    encoded string column."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, OneHotEncoder, StandardScaler
    pipe = make_pipeline(SimpleImputer(), StandardScaler(), Normalizer(), linear_model.LogisticRegression())
    pipe.fit(TRAIN_NAN, _target(TRAIN_NAN, "multiclass"))
    compare(to_onnx(pipe, TRAIN_NAN[:1], target_opset={"": 17, "ai.onnx.ml": 3}), _feeds(nan=True))

    words = np.array(["red", "green", "blue"], object)

    def table(n: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {"num": _data(n, seed), "color": words[rng.integers(0, 3, size=(n, 1))]}
    train = table(400, 0)
    ct = ColumnTransformer([("num", StandardScaler(), [0, 1, 2, 3, 4, 5]),
                            ("cat", OneHotEncoder(handle_unknown="ignore"), [6])])
    frame = np.concatenate([train["num"].astype(object), train["color"]], axis=1)
    y = (train["num"][:, 0] > 0) ^ (train["color"][:, 0] == "red")
    model = make_pipeline(ct, linear_model.LogisticRegression()).fit(frame, y.astype(np.int64))
    onx = to_onnx(model, initial_types=[("num", FloatTensorType([None, 6])), ("color", StringTensorType([None, 1]))],
                  target_opset={"": 17, "ai.onnx.ml": 3})
    compare(onx, lambda n: table(n, 11 + n))


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_lightgbm(kind: str) -> None:
    lgb = pytest.importorskip("lightgbm")
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType
    cls = lgb.LGBMRegressor if kind == "regression" else lgb.LGBMClassifier
    model = cls(n_estimators=20, num_leaves=15, min_child_samples=5, verbose=-1, random_state=0)
    model.fit(TRAIN_NAN, _target(TRAIN_NAN, kind))
    onx = convert_lightgbm(model, initial_types=[("X", FloatTensorType([None, N_FEATURES]))], target_opset=15,
                           zipmap=False)
    compare(onx, _feeds(nan=True))


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_xgboost(kind: str) -> None:
    xgb = pytest.importorskip("xgboost")
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    cls = xgb.XGBRegressor if kind == "regression" else xgb.XGBClassifier
    model = cls(n_estimators=15, max_depth=4, random_state=0, n_jobs=1)
    model.fit(TRAIN_NAN, _target(TRAIN_NAN, kind))
    onx = convert_xgboost(model, initial_types=[("X", FloatTensorType([None, N_FEATURES]))], target_opset=15)
    compare(onx, _feeds(nan=True))
