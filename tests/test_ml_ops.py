"""ai.onnx.ml operators one at a time, built with onnx.helper over their attribute grids (node modes,
missing-value tracking with NaN inputs, aggregate functions, post-transforms, base values, int64 and
string labels, double inputs with ``_as_tensor`` attributes), against onnxruntime."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import jitort
from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from ml_compare import compare, ort_session

ML = "ai.onnx.ml"
F = 5  # features
GRID_BATCHES = (1, 7, 64, 300)  # 7: groups of walks over several rows; 300: blocks of 64 and a tail of 44
POSTS = ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"]


def _model(op: str, inputs: dict[str, tuple[int, list]], outputs: dict[str, Any], ml_opset: int = 3,
           **attrs: Any) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info(k, t, s) for k, (t, s) in inputs.items()]
    outs = [v if isinstance(v, onnx.ValueInfoProto) else helper.make_tensor_value_info(k, v, None)
            for k, v in outputs.items()]
    node = helper.make_node(op, list(inputs), list(outputs), domain=ML, name=f"the_{op}", **attrs)
    g = helper.make_graph([node], "g", ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, ml_opset)])
    m.ir_version = 10
    return m


def _x(n: int, seed: int, dtype: Any = np.float32, nan: bool = False) -> np.ndarray:
    # values on a 0.25 grid so EQ/NEQ splits and thresholds are hit exactly
    x = np.round(np.random.default_rng(seed).normal(size=(n, F)) * 4) / 4
    if nan:
        x[np.random.default_rng(seed + 1).random(x.shape) < 0.2] = np.nan
    return x.astype(dtype)


def _trees(n_trees: int, depth: int, n_targets: int, modes: list[str], seed: int, missing: bool,
           lo: float = -1.0, hi: float = 1.0, all_targets: bool = True, one_target: bool = False
           ) -> dict[str, list]:
    """Random complete-ish trees in the opset-3 attribute form (nodes listed breadth-first, leaves
    carrying weights for all targets, a random subset, or (``one_target``) one random target, as
    gradient boosting's trees do)."""
    rng = np.random.default_rng(seed)
    a: dict[str, list] = {k: [] for k in ("treeids", "nodeids", "featureids", "modes", "values", "true", "false",
                                          "missing", "w_tree", "w_node", "w_id", "w_val")}
    for t in range(n_trees):
        next_id = 1
        queue = [(0, 0)]
        while queue:
            nid, d = queue.pop(0)
            a["treeids"].append(t)
            a["nodeids"].append(nid)
            if d == depth or (d > 1 and rng.random() < 0.2):
                a["featureids"].append(0)
                a["modes"].append("LEAF")
                a["values"].append(0.0)
                a["true"].append(0)
                a["false"].append(0)
                a["missing"].append(0)
                targets = [int(rng.integers(n_targets))] if one_target else range(n_targets) if all_targets else sorted(
                    rng.choice(n_targets, size=rng.integers(1, n_targets + 1), replace=False))
                for k in targets:
                    a["w_tree"].append(t)
                    a["w_node"].append(nid)
                    a["w_id"].append(int(k))
                    a["w_val"].append(float(rng.uniform(lo, hi)))
                continue
            a["featureids"].append(int(rng.integers(0, F)))
            a["modes"].append(modes[int(rng.integers(0, len(modes)))])
            a["values"].append(float(np.round(rng.normal() * 4) / 4))
            a["true"].append(next_id)
            a["false"].append(next_id + 1)
            a["missing"].append(int(missing and rng.random() < 0.5))
            queue += [(next_id, d + 1), (next_id + 1, d + 1)]
            next_id += 2
    return a


def _attrs(t: dict[str, list], pre: str, double: bool = False) -> dict[str, Any]:
    out = dict(nodes_treeids=t["treeids"], nodes_nodeids=t["nodeids"], nodes_featureids=t["featureids"],
               nodes_modes=t["modes"], nodes_truenodeids=t["true"], nodes_falsenodeids=t["false"],
               nodes_missing_value_tracks_true=t["missing"], **{f"{pre}_treeids": t["w_tree"],
                                                                f"{pre}_nodeids": t["w_node"],
                                                                f"{pre}_ids": t["w_id"]})
    if double:
        out["nodes_values_as_tensor"] = numpy_helper.from_array(np.array(t["values"], np.float64))
        out[f"{pre}_weights_as_tensor"] = numpy_helper.from_array(np.array(t["w_val"], np.float64))
    else:
        out["nodes_values"] = t["values"]
        out[f"{pre}_weights"] = t["w_val"]
    return out


MODE_SETS = {"leq": ["BRANCH_LEQ"], "lt": ["BRANCH_LT"], "gte_gt": ["BRANCH_GTE", "BRANCH_GT"],
             "all": ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]}


@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("modes", sorted(MODE_SETS))
def test_tree_regressor_modes_and_missing_values(modes: str, missing: bool) -> None:
    t = _trees(6, 4, 2, MODE_SETS[modes], seed=len(modes), missing=missing)
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=2,
               **_attrs(t, "target"))
    compare(m, lambda n: {"X": _x(n, n, nan=True)}, GRID_BATCHES)


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("n_targets,base", [(1, None), (1, [0.25]), (3, None), (3, [0.1, -0.2, 0.3])])
def test_tree_regressor_aggregates(aggregate: str, post: str, n_targets: int, base: Any) -> None:
    # small positive leaf values keep PROBIT's argument inside (0, 1); some leaves miss some targets
    t = _trees(4, 3, n_targets, MODE_SETS["leq"], seed=3, missing=False, lo=0.0, hi=0.2, all_targets=False)
    extra = {} if base is None else {"base_values": base}
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=n_targets,
               aggregate_function=aggregate, post_transform=post, **extra, **_attrs(t, "target"))
    compare(m, lambda n: {"X": _x(n, n)}, GRID_BATCHES)


def _classifier(t: dict[str, list], labels: str, n_classes: int, **extra: Any) -> onnx.ModelProto:
    lab = ({"classlabels_strings": [f"c{k}" for k in range(n_classes)]} if labels == "strings"
           else {"classlabels_int64s": [10 * k + 3 for k in range(n_classes)]})
    return _model("TreeEnsembleClassifier", {"X": (TP.FLOAT, [None, F])},
                  {"Y": TP.STRING if labels == "strings" else TP.INT64, "Z": TP.FLOAT}, **lab, **extra,
                  **_attrs(t, "class"))


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("case", ["binary_positive", "binary_mixed", "two_class_ids", "three_classes"])
@pytest.mark.parametrize("base", [0, 1, 2])
def test_tree_classifier_cases(case: str, post: str, base: int) -> None:
    """onnxruntime's binary special cases: one class id with positive or mixed weights, both class ids,
    and a multiclass model; base_values of every length it treats differently."""
    n_classes = 3 if case == "three_classes" else 2
    ids = 1 if case.startswith("binary") else n_classes
    lo = 0.0 if case == "binary_positive" else -0.5
    t = _trees(5, 3, ids, MODE_SETS["leq"], seed=11, missing=False, lo=lo, hi=0.3, all_targets=case != "two_class_ids")
    extra: dict[str, Any] = {"post_transform": post}
    if base:
        extra["base_values"] = [0.1, -0.05, 0.2][:base if n_classes == 2 else n_classes]
    m = _classifier(t, "ints", n_classes, **extra)
    if case.startswith("binary") and post == "PROBIT" and base != 2:
        # onnxruntime writes one score and leaves the second column uninitialised: refused
        with pytest.raises(OrtNotImplemented, match="the_TreeEnsembleClassifier.*PROBIT"):
            jitort.InferenceSession(m.SerializeToString())
        return
    compare(m, lambda n: {"X": _x(n, 5 + n)}, GRID_BATCHES)


@pytest.mark.parametrize("labels", ["ints", "strings"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_tree_classifier_input_types(dtype: Any, labels: str) -> None:
    t = _trees(5, 4, 3, MODE_SETS["all"], seed=2, missing=True)
    m = _classifier(t, labels, 3, post_transform="SOFTMAX")
    m.graph.input[0].type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    compare(m, lambda n: {"X": _x(n, 9 + n, dtype=np.float64, nan=np.dtype(dtype).kind == "f").astype(dtype)},
            GRID_BATCHES)


def test_tree_regressor_double_as_tensor() -> None:
    """Double inputs: thresholds, weights and sums in double, from the ``_as_tensor`` attributes."""
    t = _trees(6, 4, 2, MODE_SETS["lt"], seed=4, missing=True)
    m = _model("TreeEnsembleRegressor", {"X": (TP.DOUBLE, [None, F])}, {"Y": TP.FLOAT}, n_targets=2,
               base_values_as_tensor=numpy_helper.from_array(np.array([0.5, -0.5])), **_attrs(t, "target", True))
    compare(m, lambda n: {"X": _x(n, n, dtype=np.float64, nan=True) + 1e-12}, GRID_BATCHES)


def test_tree_ensemble_errors() -> None:
    t = _trees(2, 2, 1, MODE_SETS["leq"], seed=1, missing=False)
    bad = _attrs(t, "target")
    bad["nodes_nodeids"] = list(bad["nodes_nodeids"])
    bad["nodes_nodeids"][1] = bad["nodes_nodeids"][0]
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=1, **bad)
    with pytest.raises(Fail, match="the_TreeEnsembleRegressor"):
        jitort.InferenceSession(m.SerializeToString())
    t = _trees(2, 2, 1, MODE_SETS["leq"], seed=1, missing=False)
    f32 = _attrs(t, "target", double=True)
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=1, **f32)
    with pytest.raises(Fail, match="as_tensor"):
        jitort.InferenceSession(m.SerializeToString())
    one = _classifier(t, "ints", 1)
    with pytest.raises(OrtNotImplemented, match="TreeEnsembleClassifier.*ai.onnx.ml"):
        jitort.InferenceSession(one.SerializeToString())


@pytest.mark.parametrize("post", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("aggregate", [0, 1, 2, 3])
def test_tree_ensemble_v5(aggregate: int, post: int) -> None:
    """Opset 5: leaves apart from nodes, set membership, missing values; same engine."""
    rng = np.random.default_rng(aggregate * 7 + post)
    n_nodes, n_leaves = 7, 8
    # tree 0: a complete depth-3 tree over nodes 0..6 (leaves 0..7); tree 1: one leaf
    feats = rng.integers(0, F, n_nodes).tolist()
    modes = [0, 6, 1, 2, 3, 4, 5]
    splits = np.round(rng.normal(size=n_nodes) * 4) / 4
    members = [0.0, 1.0, -1.0, float("nan")]  # onnxruntime implements integer sets only
    true_ids = [1, 3, 5, 0, 2, 4, 6]
    false_ids = [2, 4, 6, 1, 3, 5, 7]
    true_leaf = [0, 0, 0, 1, 1, 1, 1]
    attrs = dict(nodes_featureids=feats + [0], nodes_modes=helper.make_tensor("m", TP.UINT8, [8], modes + [0]),
                 nodes_splits=helper.make_tensor("s", TP.FLOAT, [8], splits.tolist() + [0.0]),
                 nodes_truenodeids=true_ids + [8], nodes_falsenodeids=false_ids + [8],
                 nodes_trueleafs=true_leaf + [1], nodes_falseleafs=true_leaf + [1],
                 nodes_missing_value_tracks_true=[1, 0, 1, 0, 0, 1, 0, 0],
                 leaf_targetids=rng.integers(0, 2, n_leaves + 1).tolist(),
                 leaf_weights=helper.make_tensor("w", TP.FLOAT, [9], rng.uniform(0, 0.4, n_leaves + 1).tolist()),
                 membership_values=helper.make_tensor("mv", TP.FLOAT, [4], members),
                 tree_roots=[0, 7], n_targets=2, aggregate_function=aggregate, post_transform=post)
    m = _model("TreeEnsemble", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, ml_opset=5, **attrs)
    # integer features: onnxruntime 1.32 tests membership on the value cast to int32 (jitort: the value)
    compare(m, lambda n: {"X": np.round(_x(n, n, nan=True))}, GRID_BATCHES)


# --- linear models and preprocessing ------------------------------------------------------------

@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("classes", [1, 3, 6])
@pytest.mark.parametrize("labels", ["ints", "strings"])
def test_linear_classifier(classes: int, post: str, labels: str) -> None:
    rng = np.random.default_rng(classes)
    n_labels = 2 if classes == 1 else classes
    lab = ({"classlabels_strings": [f"k{k}" for k in range(n_labels)]} if labels == "strings"
           else {"classlabels_ints": list(range(5, 5 + n_labels))})
    m = _model("LinearClassifier", {"X": (TP.FLOAT, [None, F])},
               {"Y": TP.STRING if labels == "strings" else TP.INT64, "Z": TP.FLOAT},
               coefficients=rng.normal(size=classes * F).tolist(), intercepts=rng.normal(size=classes).tolist(),
               post_transform=post, **lab)
    compare(m, lambda n: {"X": _x(n, n)}, GRID_BATCHES)


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
@pytest.mark.parametrize("classes", [2, 5, 8, 12])
def test_linear_classifier_wide_rows_and_split_batches(classes: int, post: str) -> None:
    """37 features (whole vectors and a masked tail on either vector width), 2-8 classes on the
    dot-product pass (4 or 8 chains) and 12 on the GEMM, a batch that splits across threads, NaN rows."""
    rng = np.random.default_rng(40 + classes)
    f = 37
    m = _model("LinearClassifier", {"X": (TP.FLOAT, [None, f])}, {"Y": TP.INT64, "Z": TP.FLOAT},
               coefficients=(rng.normal(size=classes * f) * 0.3).tolist(), intercepts=rng.normal(size=classes).tolist(),
               post_transform=post, classlabels_ints=list(range(classes)))

    def feeds(n: int) -> dict[str, np.ndarray]:
        x = np.random.default_rng(n).normal(size=(n, f)).astype(np.float32)
        x[n // 2, 3] = np.nan
        return {"X": x}
    compare(m, feeds, (1, 13, 20000), rtol=1e-5, atol=2e-6)


def test_softmax_zero_of_a_row_with_nothing_to_sum_is_nan_not_an_error() -> None:
    """All scores 0 (or NaN) under SOFTMAX_ZERO: onnxruntime divides 0 by 0 (NaN); jitort raised
    ZeroDivisionError (the float division's Python error model)."""
    m = _model("LinearClassifier", {"X": (TP.FLOAT, [None, 2])}, {"Y": TP.INT64, "Z": TP.FLOAT},
               coefficients=[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], intercepts=[0.0, 0.0, 0.0], post_transform="SOFTMAX_ZERO",
               classlabels_ints=[0, 1, 2])
    compare(m, lambda n: {"X": np.zeros((n, 2), np.float32)}, (1, 3))


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "PROBIT"])
@pytest.mark.parametrize("targets", [1, 3])
def test_linear_regressor(targets: int, post: str) -> None:
    rng = np.random.default_rng(targets)
    scale = 0.05 if post == "PROBIT" else 1.0
    m = _model("LinearRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, targets=targets,
               coefficients=(rng.normal(size=targets * F) * scale).tolist(),
               intercepts=(0.5 + rng.normal(size=targets) * scale).tolist(), post_transform=post)
    # onnxruntime's float32 erfinv (which jitort's PROBIT reproduces) is a staircase with ~4.2e-6 steps
    # around 0.45: a score an ulp or two apart (a GEMM summing in another order, as MLAS does on Intel
    # AVX-512 hosts for some rows) lands a step or a few away (seen: 3 steps, 1.25e-5)
    compare(m, lambda n: {"X": _x(n, n) * np.float32(0.1)}, GRID_BATCHES, atol=3e-5 if post == "PROBIT" else 1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_scaler_normalizer(dtype: Any) -> None:
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    m = _model("Scaler", {"X": (t, [None, F])}, {"Y": TP.FLOAT}, offset=[0.5, -1, 2, 0, 1], scale=[2.0, 1, 0.5, -1, 3])
    compare(m, lambda n: {"X": (_x(n, n) * 3).astype(dtype)}, GRID_BATCHES)
    for norm in ("MAX", "L1", "L2"):
        m = _model("Normalizer", {"X": (t, [None, F])}, {"Y": TP.FLOAT}, norm=norm)
        compare(m, lambda n: {"X": (_x(n, n) * 3).astype(dtype)}, GRID_BATCHES)


def test_imputer_one_hot_category_mapper_feature_vectorizer() -> None:
    m = _model("Imputer", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT},
               imputed_value_floats=[1.0, 2, 3, 4, 5], replaced_value_float=float("nan"))
    compare(m, lambda n: {"X": _x(n, n, nan=True)}, GRID_BATCHES)
    m = _model("Imputer", {"X": (TP.INT64, [None, F])}, {"Y": TP.INT64}, imputed_value_int64s=[-7],
               replaced_value_int64=0)
    compare(m, lambda n: {"X": _x(n, n, dtype=np.int64)}, GRID_BATCHES)
    m = _model("OneHotEncoder", {"X": (TP.INT64, [None, 2])}, {"Y": TP.FLOAT}, cats_int64s=[0, 1, 2, -1], zeros=1)
    compare(m, lambda n: {"X": _x(n, n, dtype=np.int64)[:, :2]}, GRID_BATCHES)
    words = np.array(["a", "b", "c", "zz"], object)
    m = _model("OneHotEncoder", {"X": (TP.STRING, [None, 1])}, {"Y": TP.FLOAT}, cats_strings=["c", "a", "b"])
    compare(m, lambda n: {"X": words[np.arange(n) % 4].reshape(n, 1)}, GRID_BATCHES)
    m = _model("CategoryMapper", {"X": (TP.STRING, [None])}, {"Y": TP.INT64}, cats_strings=["a", "b"],
               cats_int64s=[4, 9], default_int64=-3)
    compare(m, lambda n: {"X": words[np.arange(n) % 4]}, GRID_BATCHES)
    m = _model("CategoryMapper", {"X": (TP.INT64, [None])}, {"Y": TP.STRING}, cats_strings=["a", "b"],
               cats_int64s=[4, 9], default_string="none")
    compare(m, lambda n: {"X": (np.arange(n) % 11).astype(np.int64)}, GRID_BATCHES)
    m = _model("FeatureVectorizer", {"A": (TP.FLOAT, [None, 3]), "B": (TP.FLOAT, [None, 2])}, {"Y": TP.FLOAT},
               inputdimensions=[2, 4])
    compare(m, lambda n: {"A": _x(n, n)[:, :3], "B": _x(n, n + 1)[:, :2]}, GRID_BATCHES)


@pytest.mark.parametrize("keys", ["ints", "strings"])
def test_zipmap(keys: str) -> None:
    key_type = TP.INT64 if keys == "ints" else TP.STRING
    out = helper.make_value_info("Z", helper.make_sequence_type_proto(
        helper.make_map_type_proto(key_type, helper.make_tensor_type_proto(TP.FLOAT, None))))
    labels = ({"classlabels_int64s": [3, 1, 2]} if keys == "ints" else {"classlabels_strings": ["x", "y", "z"]})
    m = _model("ZipMap", {"X": (TP.FLOAT, [None, 3])}, {"Z": out}, **labels)
    compare(m, lambda n: {"X": _x(n, n)[:, :3]}, GRID_BATCHES)


def test_unknown_ml_op_names_op_domain_and_opset() -> None:
    # an op name no opset defines (SVMRegressor, the op used here before, is implemented in kernels/ml_svm.py)
    m = _model("SVMRanker", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, coefficients=[1.0])
    with pytest.raises(OrtNotImplemented, match="'SVMRanker' in domain 'ai.onnx.ml' at opset 3"):
        jitort.InferenceSession(m.SerializeToString())


def test_unknown_post_transform_is_refused() -> None:
    t = _trees(2, 2, 1, MODE_SETS["leq"], seed=1, missing=False)
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=1,
               post_transform="CUBE", **_attrs(t, "target"))
    with pytest.raises(InvalidArgument, match="the_TreeEnsembleRegressor.*CUBE"):
        jitort.InferenceSession(m.SerializeToString())


# --- LabelEncoder: every key/value form onnxruntime 1.32 registers, per opset -------------------------

LE_NP = {TP.STRING: object, TP.INT64: np.int64, TP.FLOAT: np.float32, TP.DOUBLE: np.float64, TP.INT16: np.int16,
         TP.INT32: np.int32}
LE_LIST = {TP.STRING: "strings", TP.INT64: "int64s", TP.FLOAT: "floats"}
LE_V2 = [(k, v) for k in LE_LIST for v in LE_LIST]  # opsets 2-3: float/int64/string both sides
LE_V4 = LE_V2 + [(TP.DOUBLE, TP.DOUBLE), (TP.DOUBLE, TP.INT64), (TP.DOUBLE, TP.STRING), (TP.INT64, TP.DOUBLE),
                 (TP.STRING, TP.DOUBLE), (TP.STRING, TP.INT16)]


def _le_values(t: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if t == TP.STRING:
        return np.array([f"s{i}" for i in rng.permutation(n)], object)
    v = rng.permutation(n) - n // 3
    return (v * 0.1 + 0.05).astype(LE_NP[t]) if t in (TP.FLOAT, TP.DOUBLE) else v.astype(LE_NP[t])


def _le_model(kt: int, vt: int, opset: int, **attrs: Any) -> onnx.ModelProto:
    return _model("LabelEncoder", {"X": (kt, [None])}, {"Y": vt}, ml_opset=opset, **attrs)


def _le_input(kt: int, keys: np.ndarray, n: int) -> np.ndarray:
    x = np.concatenate([keys, _le_values(kt, 12, 7)])[np.random.default_rng(n).integers(0, len(keys) + 12, n)]
    if kt in (TP.FLOAT, TP.DOUBLE):
        x[::5] = np.nan
        x[1::7] = -0.0
    return x.astype(LE_NP[kt]) if kt != TP.STRING else x


LE_FORMS = [(2, "lists"), (2, "lists, no default"), (4, "lists"), (4, "lists, no default"),
            (4, "lists, default_tensor"), (4, "tensors"), (4, "tensors, no default"), (4, "tensors, default_tensor")]


@pytest.mark.parametrize("opset,form", LE_FORMS)
def test_label_encoder_forms(opset: int, form: str) -> None:
    """Every key/value type pair onnxruntime registers for the opset; keys with a NaN, a 0.0 (-0.0
    inputs match it) and a duplicate (the first wins); NaN matches NaN only from opset 4; the default
    from default_tensor, else the default_* attribute of the values' type, else the schema's."""
    tensors = form.startswith("tensors")
    for kt, vt in LE_V4 if tensors else LE_V2:
        keys, vals = _le_values(kt, 8, 1), _le_values(vt, 9, 2)
        keys = np.concatenate([keys, keys[:1]])  # a duplicate key
        if kt in (TP.FLOAT, TP.DOUBLE):
            keys[2], keys[3] = np.nan, 0.0
        attrs: dict[str, Any] = {}
        if tensors:
            attrs["keys_tensor"] = numpy_helper.from_array(keys, "k")
            attrs["values_tensor"] = numpy_helper.from_array(vals, "v")
        else:
            attrs["keys_" + LE_LIST[kt]] = keys.tolist()
            attrs["values_" + LE_LIST[vt]] = vals.tolist()
        others = _le_values(vt, 12, 3)[-2:]
        if form.endswith("default_tensor"):
            attrs["default_tensor"] = numpy_helper.from_array(others[:1], "d")
        if not form.endswith("no default") and vt in LE_LIST:  # loses to default_tensor where both are set
            attrs["default_" + {"strings": "string", "int64s": "int64", "floats": "float"}[LE_LIST[vt]]] = \
                others.tolist()[1]
        compare(_le_model(kt, vt, opset, **attrs), lambda n: {"X": _le_input(kt, keys, n)}, (1, 40))


def test_label_encoder_opset1() -> None:
    """classes_strings: a repeated class maps to its last index (onnxruntime assigns in order)."""
    classes = ["a", "b", "c", "a"]
    m = _le_model(TP.STRING, TP.INT64, 1, classes_strings=classes, default_int64=-7)
    compare(m, lambda n: {"X": np.array(["a", "c", "zz", "b"] * n, object)}, (1, 3))
    m = _le_model(TP.INT64, TP.STRING, 1, classes_strings=classes)
    compare(m, lambda n: {"X": np.array([0, 3, 9, -1] * n, np.int64)}, (1, 3))


@pytest.mark.parametrize("kt,vt", [(TP.INT32, TP.INT32), (TP.FLOAT, TP.DOUBLE), (TP.INT16, TP.STRING),
                                   (TP.DOUBLE, TP.FLOAT)])
def test_label_encoder_types_onnxruntime_lacks(kt: int, vt: int) -> None:
    """Type pairs opset 4 allows but onnxruntime 1.32 registers no kernel for: the spec's lookup,
    written out, with its default (-1 integral, -0.0 float, "_Unused")."""
    keys, vals = _le_values(kt, 6, 1), _le_values(vt, 6, 2)
    m = _le_model(kt, vt, 4, keys_tensor=numpy_helper.from_array(keys, "k"),
                  values_tensor=numpy_helper.from_array(vals, "v"))
    x = _le_input(kt, keys, 30)
    table = dict(zip(keys.tolist(), vals.tolist()))
    default = "_Unused" if vt == TP.STRING else (-0.0 if vt in (TP.FLOAT, TP.DOUBLE) else -1)
    want = np.array([table.get(e, default) for e in x.tolist()], LE_NP[vt])
    got = jitort.InferenceSession(m.SerializeToString()).run(None, {"X": x})[0]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", ["both_key_forms", "default_wrong_type", "default_two_values", "default_scalar",
                                  "length_mismatch", "no_values"])
def test_label_encoder_invalid_attributes_fail_like_onnxruntime(case: str) -> None:
    t = numpy_helper.from_array
    attrs: dict[str, Any] = dict(keys_int64s=[1, 2], values_int64s=[10, 11])
    if case == "both_key_forms":
        attrs["keys_tensor"] = t(np.array([2, 1]))
    elif case == "default_wrong_type":
        attrs["default_tensor"] = t(np.array([4.5], np.float32))
    elif case == "default_two_values":
        attrs["default_tensor"] = t(np.array([4, 5]))
    elif case == "default_scalar":
        attrs["default_tensor"] = t(np.array(4))
    elif case == "length_mismatch":
        attrs["values_int64s"] = [10]
    else:
        del attrs["values_int64s"]
    for opset in (2, 4) if case in ("length_mismatch", "no_values") else (4,):
        m = _le_model(TP.INT64, TP.INT64, opset, **attrs)
        with pytest.raises(Exception) as want:
            ort_session(m)
        assert type(want.value).__name__ == "Fail"
        with pytest.raises(Fail):
            jitort.InferenceSession(m.SerializeToString())


def test_tree_rows_split_over_threads_keep_one_threads_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    # 128 rows x 200 trees is two parts' work: 2 threads take 64-row parts (rows are independent and
    # each row sums its trees in order, so the bits cannot depend on the split)
    from jitort.kernels import ml_trees
    split: list[int] = []
    real = ml_trees.run_parts
    monkeypatch.setattr(ml_trees, "run_parts", lambda fn, n: (split.append(n), real(fn, n))[1])
    t = _trees(200, 5, 2, MODE_SETS["all"], seed=11, missing=True)
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=2,
               **_attrs(t, "target")).SerializeToString()
    x = {"X": _x(128, 5, nan=True)}
    outs = []
    for threads in (1, 2):
        so = jitort.SessionOptions()
        so.intra_op_num_threads = threads
        outs.append(jitort.InferenceSession(m, so).run(None, x)[0])
    assert split and split[-1] == 2
    assert outs[0].tobytes() == outs[1].tobytes()
    np.testing.assert_allclose(outs[1], ort_session(onnx.load_from_string(m)).run(None, x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN"])
def test_tree_regressor_one_weight_per_leaf(aggregate: str) -> None:
    # every leaf scores one of 3 targets (gradient boosting's shape): SUM and AVERAGE take the
    # kernel's one-weight scoring loop, MIN the general one
    t = _trees(9, 4, 3, MODE_SETS["leq"], seed=21, missing=False, one_target=True)
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=3,
               aggregate_function=aggregate, base_values=[0.5, -0.5, 0.25], **_attrs(t, "target"))
    compare(m, lambda n: {"X": _x(n, n)}, GRID_BATCHES)


@pytest.mark.parametrize("batch", [1, 7, 40])  # groups of walks (1, 7), one tree at a time (40)
@pytest.mark.parametrize("op", ["TreeEnsembleRegressor", "TreeEnsembleClassifier"])
def test_tree_trees_split_over_threads_keep_one_threads_bits(monkeypatch: pytest.MonkeyPatch, op: str,
                                                             batch: int) -> None:
    # fewer rows than two row parts: 2 threads walk halves of the trees into one leaf table, scored
    # in tree order afterwards, so the bits equal one thread's (the threshold forced down so small
    # models split)
    from jitort.kernels import ml_trees
    split: list[int] = []
    real = ml_trees.run_parts
    monkeypatch.setattr(ml_trees, "run_parts", lambda fn, n: (split.append(n), real(fn, n))[1])
    monkeypatch.setattr(ml_trees, "_PARALLEL_WORK", 1)
    t = _trees(31, 5, 3, MODE_SETS["gte_gt"], seed=12, missing=True, one_target=op.endswith("Classifier"))
    if op.endswith("Classifier"):
        m = _classifier(t, "int64s", 3, post_transform="SOFTMAX")
    else:
        m = _model(op, {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=3, **_attrs(t, "target"))
    x = {"X": _x(batch, 6, nan=True)}
    outs = []
    for threads in (1, 2):
        so = jitort.SessionOptions()
        so.intra_op_num_threads = threads
        outs.append(jitort.InferenceSession(m.SerializeToString(), so).run(None, x))
    assert split and split[-1] == 2
    for a, b in zip(*outs):
        assert a.tobytes() == b.tobytes()
    want = ort_session(m).run(None, x)
    for a, w in zip(outs[1], want):
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6) if w.dtype.kind == "f" else np.testing.assert_array_equal(a, w)


def test_tree_general_walk_is_not_split_over_trees(monkeypatch: pytest.MonkeyPatch) -> None:
    # EQ/NEQ splits take the general row-by-row walk, which the tree split does not serve
    from jitort.kernels import ml_trees
    split: list[int] = []
    monkeypatch.setattr(ml_trees, "run_parts", lambda fn, n: split.append(n))
    monkeypatch.setattr(ml_trees, "_PARALLEL_WORK", 1)
    t = _trees(20, 4, 2, MODE_SETS["all"], seed=13, missing=True)
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=2,
               **_attrs(t, "target"))
    so = jitort.SessionOptions()
    so.intra_op_num_threads = 2
    x = {"X": _x(5, 7, nan=True)}
    got = jitort.InferenceSession(m.SerializeToString(), so).run(None, x)[0]
    assert not split
    np.testing.assert_allclose(got, ort_session(m).run(None, x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", ["balanced", "unbalanced"])
def test_tree_groups_and_lockstep_blocks(shape: str) -> None:
    # blocks of fewer than GROUP_ROWS rows walk in depth-ordered groups of (tree, row) walks, larger
    # ones a tree at a time (70 rows: a 64-row block, then a 6-row one), on balanced trees and on
    # unbalanced ones (a leaf at every level down to depth 12; trees of different depths, so the
    # depth order differs from the tree order): both agree with onnxruntime
    from jitort.kernels.ml_trees import GROUP_ROWS
    assert 8 < GROUP_ROWS <= 64
    if shape == "balanced":
        t = _trees(6, 4, 1, MODE_SETS["leq"], seed=31, missing=False)
    else:
        t = {k: [] for k in ("treeids", "nodeids", "featureids", "modes", "values", "true", "false", "missing",
                             "w_tree", "w_node", "w_id", "w_val")}
        rng = np.random.default_rng(32)
        for tree in range(40):  # a spine: node 2d splits into leaf 2d+1 and node 2d+2
            depth = 12 - tree % 7
            for d in range(depth):
                for nid, leaf in ((2 * d, False), (2 * d + 1, True)) + (((2 * d + 2, True),) if d == depth - 1 else ()):
                    t["treeids"].append(tree)
                    t["nodeids"].append(nid)
                    t["featureids"].append(0 if leaf else int(rng.integers(0, F)))
                    t["modes"].append("LEAF" if leaf else "BRANCH_LEQ")
                    t["values"].append(0.0 if leaf else float(np.round(rng.normal() * 4) / 4))
                    t["true"].append(0 if leaf else nid + 1)
                    t["false"].append(0 if leaf else nid + 2)
                    t["missing"].append(0)
                    if leaf:
                        t["w_tree"].append(tree)
                        t["w_node"].append(nid)
                        t["w_id"].append(0)
                        t["w_val"].append(float(rng.uniform(-1, 1)))
    attrs = dict(n_targets=1, **_attrs(t, "target"))
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, **attrs)
    compare(m, lambda n: {"X": _x(n, n)}, (1, 5, GROUP_ROWS - 1, GROUP_ROWS, 40, 70))


def test_tree_ensemble_pickled_keeps_the_fast_path() -> None:
    # a session loaded from the cache unpickles its Ensemble: the dtypes come back as NumPy's builtin
    # singletons (the per-call check compares them by identity), the process's compiled entry is
    # not pickled, and the unpickled ensemble gives the same bits; unaligned and strided inputs are
    # copied before the compiled entry reads them
    import pickle

    from jitort.kernels import ml_trees
    from jitort.kernels.ml_tree_layout import build_v3
    t = _trees(12, 5, 2, MODE_SETS["leq"], seed=41, missing=True)
    e = build_v3(dict(n_targets=2, **_attrs(t, "target")), "TreeEnsembleRegressor", "n", np.dtype(np.float32))
    x = _x(3, 42, nan=True)
    want = ml_trees.run(x, e)
    assert e.entry is not None
    e2 = pickle.loads(pickle.dumps(e))
    assert e2.entry is None and e2.tdt is np.dtype(np.float32) and e2.out_dtype is np.dtype(np.float32)
    assert ml_trees.run(x, e2).tobytes() == want.tobytes()
    raw = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned
    assert ml_trees.run(unaligned, e2).tobytes() == want.tobytes()
    wide = np.zeros((3, 2 * F), np.float32)
    wide[:, ::2] = x
    assert ml_trees.run(wide[:, ::2], e2).tobytes() == want.tobytes()
    m = _model("TreeEnsembleRegressor", {"X": (TP.FLOAT, [None, F])}, {"Y": TP.FLOAT}, n_targets=2,
               **_attrs(t, "target"))
    np.testing.assert_allclose(want, ort_session(m).run(None, {"X": x})[0], rtol=1e-5, atol=1e-6)
