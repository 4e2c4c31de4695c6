"""The nine full-size CNNs shipped in the onnx wheel load, run and match their shipped expected
outputs (rtol 1e-3, atol 1e-5), and onnxruntime on the same input."""
from __future__ import annotations

import numpy as np
import pytest

import jitort
from jitort.models import expected_output, light_models, reference_inputs, resolve_model

pytestmark = pytest.mark.slow


# squeezenet's shipped weights are constants, equal across output channels, and its input drives
# every logit to ~9.48e9 (1 ulp = 1024): the expected uniform 0.001 Softmax needs all 1000 logits
# bitwise equal, i.e. a conv whose rounding does not depend on the output channel (kernels/convgemm).
@pytest.mark.parametrize("name", light_models())
def test_light_model_matches_expected_output(name):
    sess = jitort.InferenceSession(str(resolve_model(name)))
    feeds = reference_inputs(name)
    (out,) = sess.run(None, feeds)
    np.testing.assert_allclose(out, expected_output(name), rtol=1e-3, atol=1e-5)
    # and a second, different input agrees with onnxruntime
    from oracle import run_ort
    import onnx
    rng = np.random.default_rng(0)
    feeds2 = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in feeds.items()}
    want = run_ort(onnx.load(str(resolve_model(name))), feeds2)[0]
    np.testing.assert_allclose(sess.run(None, feeds2)[0], want, rtol=1e-3, atol=1e-5)
