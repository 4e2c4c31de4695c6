"""The session: bad input gets onnxruntime's exception and a message naming the culprit; the
session stays usable; run() is thread-safe; an elementwise chain becomes one kernel."""
from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import jitort as ort
from jitort.capi.onnxruntime_pybind11_state import (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf,
                                                    NoSuchFile, NotImplemented as OrtNotImplemented)
from oracle import check, make_model, rand


def _add_model(shape=("B", 4)):
    return make_model([helper.make_node("Add", ["x", "y"], ["z"])],
                      {"x": (np.float32, list(shape)), "y": (np.float32, list(shape))},
                      {"z": (np.float32, list(shape))})


@pytest.fixture(scope="module")
def add_session():
    return ort.InferenceSession(_add_model().SerializeToString())


def _good(sess):
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x, "y": x})[0], x + x)


BAD_FEEDS = {
    "wrong name": ({"x": 0, "q": 0}, ValueError, ["y"]),
    "missing": ({"x": 0}, ValueError, ["y", "missing"]),
    "extra": ({"x": 0, "y": 0, "q": 0}, InvalidArgument, ["q"]),
    "dtype": ({"x": 0, "y": np.ones((2, 4), np.float64)}, InvalidArgument, ["tensor(double)", "tensor(float)"]),
    "rank": ({"x": 0, "y": np.ones((1, 2, 4), np.float32)}, InvalidArgument, ["y", "Got: 3", "Expected: 2"]),
    "static dim": ({"x": 0, "y": np.ones((2, 5), np.float32)}, InvalidArgument, ["y", "index: 1", "Got: 5", "Expected: 4"]),
    # a shared dim name is not a constraint (onnxruntime): the Add fails to broadcast, naming the node
    "symbolic dim": ({"x": 0, "y": np.ones((3, 4), np.float32)}, Fail, ["Add", "(2, 4)", "(3, 4)"]),
    "scalar object": ({"x": 0, "y": 1.5}, RuntimeError, ["float"]),
}


@pytest.mark.parametrize("case", list(BAD_FEEDS))
def test_bad_feed(add_session, case):
    feeds, exc, words = BAD_FEEDS[case]
    x = np.ones((2, 4), np.float32)
    feeds = {k: (x if isinstance(v, int) and v == 0 else v) for k, v in feeds.items()}
    with pytest.raises(exc) as info:
        add_session.run(None, feeds)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    _good(add_session)  # the session stays usable


def test_bad_output_name(add_session):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(InvalidArgument, match="nope"):
        add_session.run(["nope"], {"x": x, "y": x})
    _good(add_session)


def test_list_feeds_and_output_selection(add_session):
    out = add_session.run(["z"], {"x": [[1, 2, 3, 4]], "y": [[1, 1, 1, 1]]})
    np.testing.assert_array_equal(out[0], np.array([[2, 3, 4, 5]], np.float32))


def test_noncontiguous_and_readonly_feeds(add_session):
    x = np.arange(16, dtype=np.float32).reshape(4, 4)[:, ::2].T  # (2, 4), not contiguous
    y = np.frombuffer(np.ones(8, np.float32).tobytes(), np.float32).reshape(2, 4)  # read-only
    np.testing.assert_array_equal(add_session.run(None, {"x": x, "y": y})[0], x + 1)


def test_missing_file(tmp_path):
    with pytest.raises(NoSuchFile, match="nothere.onnx"):
        ort.InferenceSession(str(tmp_path / "nothere.onnx"))


def test_truncated_and_non_onnx_files(tmp_path):
    data = _add_model().SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidProtobuf, match="trunc.onnx"):
        ort.InferenceSession(str(p))
    q = tmp_path / "text.onnx"
    q.write_bytes(b"this is not a model at all \xff\xfe")
    with pytest.raises(InvalidProtobuf):
        ort.InferenceSession(str(q))
    with pytest.raises(InvalidProtobuf):
        ort.InferenceSession(b"\x00\x01garbage")


def test_cycle():
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second")]
    m = make_model(nodes, {"x": (np.float32, [3])}, ["b"])
    with pytest.raises(InvalidGraph, match="cycle") as info:
        ort.InferenceSession(m.SerializeToString())
    assert "first" in str(info.value) or "second" in str(info.value)


def test_out_of_order_nodes_are_sorted():
    nodes = [helper.make_node("Relu", ["a"], ["z"]), helper.make_node("Neg", ["x"], ["a"])]
    m = make_model(nodes, {"x": (np.float32, [5])}, ["z"])
    x = rand((5,), np.float32)
    check(m, {"x": x})


def test_undefined_input_and_missing_initializer():
    m = make_model([helper.make_node("Add", ["x", "w"], ["z"], name="add_w")], {"x": (np.float32, [3])}, ["z"])
    with pytest.raises(InvalidGraph) as info:
        ort.InferenceSession(m.SerializeToString())
    assert "'w'" in str(info.value) and "add_w" in str(info.value)


def test_unsupported_op_names_op_domain_opset():
    node = helper.make_node("FancyOp", ["x"], ["z"], name="fancy", domain="com.example")
    m = make_model([node], {"x": (np.float32, [3])}, ["z"], extra_opsets={"com.example": 3})
    with pytest.raises(OrtNotImplemented) as info:
        ort.InferenceSession(m.SerializeToString())
    msg = str(info.value)
    assert "FancyOp" in msg and "com.example" in msg and "3" in msg and "fancy" in msg


def test_unsupported_opset_of_known_op():
    # Gelu exists from opset 20: at opset 18 jitort has no implementation (and no function to expand)
    node = helper.make_node("Gelu", ["x"], ["z"], name="early_gelu")
    m = make_model([node], {"x": (np.float32, [3])}, ["z"], opset=18)
    with pytest.raises(OrtNotImplemented) as info:
        ort.InferenceSession(m.SerializeToString())
    assert "Gelu" in str(info.value) and "opset 18" in str(info.value) and "early_gelu" in str(info.value)


def test_terminate_flag(add_session):
    ro = ort.RunOptions()
    ro.terminate = True
    x = np.ones((2, 4), np.float32)
    with pytest.raises(Fail):
        add_session.run(None, {"x": x, "y": x}, ro)
    _good(add_session)


def _chain_model():
    """20 elementwise ops over four broadcast shapes: [2,3,8,16], [16], [8,1], [3,1,16]."""
    names = iter(f"v{k}" for k in range(100))
    nodes, cur = [], "x"
    ops = [("Add", "b1"), ("Mul", "b2"), ("Relu", None), ("Sub", "b3"), ("Tanh", None), ("Mul", "b1"),
           ("Add", "b2"), ("Sigmoid", None), ("Div", "b4"), ("Exp", None), ("Neg", None), ("Add", "b3"),
           ("Abs", None), ("Sqrt", None), ("Mul", "b3"), ("Erf", None), ("Add", "b1"), ("Max", "b2"),
           ("Clip", None), ("Sub", "b4")]
    for op, other in ops:
        out = next(names)
        nodes.append(helper.make_node(op, [cur] + ([other] if other else []), [out], name=f"{op}_{out}"))
        cur = out
    inits = {"b1": rand((16,), np.float32, 1), "b2": rand((8, 1), np.float32, 2),
             "b3": rand((3, 1, 16), np.float32, 3), "b4": rand((16,), np.float32, 4, 1, 2)}
    return make_model(nodes, {"x": (np.float32, ["N", 3, 8, 16])}, [cur], inits), len(ops)


def test_twenty_op_chain_is_one_kernel():
    m, n_ops = _chain_model()
    assert n_ops == 20
    sess = ort.InferenceSession(m.SerializeToString())
    g = sess.artifact.ir()
    assert [n.op_type for n in g.nodes] == ["FusedElementwise"]
    assert len(g.nodes[0].attrs["body"]) == 20
    assert len(sess.artifact.kernel_sources) == 1
    assert "fused" in sess.artifact.plan_source and "(flat)" in next(iter(sess.artifact.kernel_sources.values()))
    for batch in (1, 2, 5):
        x = rand((batch, 3, 8, 16), np.float32, 10 + batch)
        check(m, {"x": x}, rtol=2e-5, atol=1e-6)


def test_threads_match_serial():
    m, _ = _chain_model()
    sess = ort.InferenceSession(m.SerializeToString())
    feeds = [rand((k % 3 + 1, 3, 8, 16), np.float32, k) for k in range(8)]
    serial = [sess.run(None, {"x": f})[0] for f in feeds]
    errors: list[str] = []

    def worker(k: int) -> None:
        for _ in range(50):
            out = sess.run(None, {"x": feeds[k]})[0]
            if not np.array_equal(out, serial[k]):
                errors.append(f"thread {k} differs")
                return

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_constant_folding_and_identity_removal():
    nodes = [helper.make_node("Sqrt", ["c"], ["c2"]), helper.make_node("Identity", ["x"], ["xi"]),
             helper.make_node("Mul", ["xi", "c2"], ["z"])]
    m = make_model(nodes, {"x": (np.float32, [4])}, ["z"], {"c": np.array([4, 9, 16, 25], np.float32)})
    sess = ort.InferenceSession(m.SerializeToString())
    ops = [n.op_type for n in sess.artifact.ir().nodes]
    assert ops == ["FusedElementwise"] and len(sess.artifact.ir().nodes[0].attrs["body"]) == 1
    check(m, {"x": rand((4,), np.float32)})


def test_metadata_and_nodeargs():
    m = _add_model()
    m.producer_name = "unit"
    m.model_version = 7
    helper.set_model_props(m, {"k": "v"})
    sess = ort.InferenceSession(m.SerializeToString())
    import onnxruntime
    ref = onnxruntime.InferenceSession(m.SerializeToString())
    assert str(sess.get_inputs()[0]) == str(ref.get_inputs()[0])
    assert [o.shape for o in sess.get_outputs()] == [o.shape for o in ref.get_outputs()]
    meta, rmeta = sess.get_modelmeta(), ref.get_modelmeta()
    assert (meta.producer_name, meta.version, meta.custom_metadata_map) == \
        (rmeta.producer_name, rmeta.version, rmeta.custom_metadata_map)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert sess.get_provider_options() == ref.get_provider_options()


def test_cuda_request_falls_back_with_warning():
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        sess = ort.InferenceSession(_add_model().SerializeToString(),
                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    _good(sess)


def test_free_dimension_override_and_add_initializer():
    so = ort.SessionOptions()
    so.add_free_dimension_override_by_name("B", 2)
    sess = ort.InferenceSession(_add_model().SerializeToString(), so)
    assert sess.get_inputs()[0].shape == [2, 4]
    with pytest.raises(InvalidArgument):
        sess.run(None, {"x": np.ones((3, 4), np.float32), "y": np.ones((3, 4), np.float32)})


def test_run_with_ort_values_and_iobinding(add_session):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    vals = add_session.run_with_ort_values(None, {"x": ort.OrtValue.ortvalue_from_numpy(x),
                                                  "y": ort.OrtValue.ortvalue_from_numpy(x)})
    np.testing.assert_array_equal(vals[0].numpy(), x + x)
    io = add_session.io_binding()
    io.bind_cpu_input("x", x)
    io.bind_cpu_input("y", x)
    io.bind_output("z")
    add_session.run_with_iobinding(io)
    np.testing.assert_array_equal(io.copy_outputs_to_cpu()[0], x + x)


def test_model_from_path_and_modelproto(tmp_path):
    m = _add_model()
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    for src in (str(p), p, m):
        _good(ort.InferenceSession(src))


def test_external_data(tmp_path):
    w = rand((64, 64), np.float32)
    m = make_model([helper.make_node("Add", ["x", "w"], ["z"])], {"x": (np.float32, [64, 64])}, ["z"], {"w": w})
    p = tmp_path / "ext.onnx"
    onnx.save(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin",
              size_threshold=0)
    assert (tmp_path / "ext.bin").exists()
    sess = ort.InferenceSession(str(p))
    x = rand((64, 64), np.float32, 5)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x + w)


def test_sequence_and_optional_graph_inputs():
    """Sequence inputs take lists of arrays, optional inputs None or a value, as in onnxruntime."""
    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    opt = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    g = helper.make_graph([helper.make_node("SequenceLength", ["s"], ["n"]),
                           helper.make_node("ConcatFromSequence", ["s"], ["cat"], axis=0),
                           helper.make_node("OptionalHasElement", ["o"], ["has"])], "g",
                          [helper.make_value_info("s", seq), helper.make_value_info("o", opt)],
                          [helper.make_tensor_value_info("n", TensorProto.INT64, []),
                           helper.make_tensor_value_info("cat", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("has", TensorProto.BOOL, [])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    sess = ort.InferenceSession(m.SerializeToString())
    a, b = np.ones((2, 2), np.float32), np.zeros((1, 2), np.float32)
    n, cat, has = sess.run(None, {"s": [a, b], "o": np.ones(2, np.float32)})
    assert n == 2 and has and cat.shape == (3, 2)
    np.testing.assert_array_equal(cat, np.concatenate([a, b]))
    assert not sess.run(None, {"s": [a], "o": None})[2]
    with pytest.raises(InvalidArgument, match="'s'"):
        sess.run(None, {"s": a, "o": None})
    with pytest.raises(InvalidArgument, match="'s'"):
        sess.run(None, {"s": [a.astype(np.float64)], "o": None})
    assert sess.run(None, {"s": [a, b], "o": None})[0] == 2  # still usable


def test_intermediate_buffers_are_not_refaulted_each_run():
    """After the first session, freed intermediates stay in the heap: a run of a model with 40 MiB
    intermediates page-faults (almost) nothing, like onnxruntime with its arena."""
    import resource
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1]),
             helper.make_node("Sigmoid", ["b"], ["c"]), helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 1])]
    m = make_model(nodes, {"x": (np.float32, [10, 1024, 1024])}, ["y"])  # 40 MiB: above glibc's mmap threshold
    sess = ort.InferenceSession(m.SerializeToString())
    x = rand((10, 1024, 1024), np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        sess.run(None, {"x": x})
    per_run = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    assert per_run < 500, f"{per_run:.0f} page faults per run (40 MiB buffers re-faulted: ~10,000 each)"
