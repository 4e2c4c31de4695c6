"""onnx's own backend test runner (``onnx.backend.test.BackendTest``) driving ``jitort.backend``.

The full node suite is what ``tests/test_conformance.py`` sweeps (isolated, sharded); here onnx's
runner checks the backend API end to end on a modest, fast subset: a spread of node cases (one or
two per op family, control flow, sequences, quantisation, functions) and the ``simple`` and
``pytorch-operator`` model suites. Node cases are read from the on-disk copies
``jitort.conformance`` writes, so collecting this module does not regenerate onnx's ~1,900 cases.
"""
from __future__ import annotations

import onnx.backend.test
import onnx.backend.test.runner as onnx_runner
import pytest
from onnx.backend.test.case.test_case import TestCase

import jitort.backend
from jitort.conformance import node_cases_dir, materialize_node_cases

pytestmark = pytest.mark.conformance

NODE_CASES = [
    "test_abs", "test_add_bcast", "test_relu", "test_matmul_2d", "test_gemm_default_no_bias",
    "test_conv_with_strides_padding", "test_maxpool_2d_default", "test_softmax_axis_1", "test_reduce_mean_keepdims_example",
    "test_reshape_reordered_all_dims", "test_transpose_all_permutations_0", "test_concat_3d_axis_1", "test_gather_0",
    "test_slice", "test_where_example", "test_lstm_defaults", "test_batchnorm_example",
    # control flow, sequences, optionals
    "test_if", "test_if_seq", "test_if_opt", "test_loop11", "test_loop13_seq", "test_scan9_sum", "test_scan_sum",
    "test_sequence_insert_at_back", "test_sequence_map_add_2_sequences", "test_split_to_sequence_1",
    "test_optional_has_element_empty_optional_input", "test_optional_get_element_sequence",
    # function expansion
    "test_layer_normalization_2d_axis0", "test_rms_normalization_2d_axis0", "test_attention_3d", "test_rotary_embedding",
    "test_range_float_type_positive_delta_expanded", "test_softsign_example", "test_mish", "test_hannwindow",
    "test_nllloss_NCd1_mean_weight_negative_ii", "test_center_crop_pad_crop",
    # quantisation, low-bit casts, strings, misc
    "test_quantizelinear", "test_dequantizelinear_axis", "test_dynamicquantizelinear", "test_matmulinteger",
    "test_qlinearmatmul_2D_uint8_float32", "test_cast_FLOAT_to_FLOAT8E4M3FN", "test_cast_INT4_to_FLOAT",
    "test_castlike_FLOAT_to_DOUBLE", "test_string_split_basic", "test_strnormalizer_export_monday_casesensintive_lower",
    "test_unique_sorted_with_axis", "test_nonmaxsuppression_two_classes", "test_det_2d", "test_dft", "test_stft",
]


def _load_model_tests(data_dir: str | None = None, kind: str | None = None) -> list[TestCase]:
    """onnx's loader, narrowed: the listed node cases (from disk) and two small model suites."""
    if kind == "node":
        root = node_cases_dir()
        return [TestCase(name=n, model_name=n, url=None, model_dir=str(root / n), model=None, data_sets=None,
                         kind="node", rtol=1e-3, atol=1e-7) for n in NODE_CASES]
    if kind in ("simple", "pytorch-operator"):
        return _original_load(kind=kind)
    return []


_original_load = onnx_runner.load_model_tests
onnx_runner.load_model_tests = _load_model_tests
try:
    backend_test = onnx.backend.test.BackendTest(jitort.backend, __name__)
finally:
    onnx_runner.load_model_tests = _original_load
# ai.onnx.preview.training's Gradient: training is out of scope (NotImplemented naming the op).
backend_test.exclude(r"^test_gradient_of_add")
globals().update(backend_test.test_cases)


@pytest.fixture(autouse=True, scope="module")
def _node_cases_on_disk() -> None:
    """The node cases' model directories (written once per cache root, shared with the sweep)."""
    materialize_node_cases()
