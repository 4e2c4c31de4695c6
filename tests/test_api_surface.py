"""jitort's onnxruntime-shaped API checked against onnxruntime itself as the oracle.

Covers options and their defaults/type checks, enums, exception classes, OrtValue, NodeArg,
ModelMetadata, dtype tables, runtime functions and IOBinding (driven through a small session
stand-in whose ``_run_bound`` delegates to a real onnxruntime session).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import jitort
import jitort.capi.onnxruntime_pybind11_state as jcapi
from jitort import dtypes, errors, runtime_info
from jitort.options import RunOptions, SessionOptions
from jitort.values import IOBinding, ModelMetadata, NodeArg, OrtValue

ort = pytest.importorskip("onnxruntime")
import onnxruntime.capi.onnxruntime_pybind11_state as ocapi  # noqa: E402

ml_dtypes = pytest.importorskip("ml_dtypes")


def _model(graph: onnx.GraphProto, opset: int = 21, **kw: object) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kw)
    m.ir_version = 10  # the newest IR onnxruntime 1.31 loads
    return m


def _ort_session(m: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def _public_data_attrs(obj: object) -> dict[str, object]:
    return {n: getattr(obj, n) for n in dir(obj) if not n.startswith("_") and not callable(getattr(obj, n))}


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["SessionOptions", "RunOptions"])
def test_option_defaults_equal_onnxruntime(cls: str) -> None:
    ours, theirs = _public_data_attrs(getattr(jitort, cls)()), _public_data_attrs(getattr(ort, cls)())
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        mine = ours[name]
        if hasattr(value, "name"):  # an enum: same member
            assert (mine.name, int(mine)) == (value.name, int(value)), name
        else:
            assert type(mine) is type(value) and mine == value, name


@pytest.mark.parametrize("cls", ["SessionOptions", "RunOptions"])
def test_option_methods_are_onnxruntime_methods(cls: str) -> None:
    ours = {n for n in dir(getattr(jitort, cls)) if not n.startswith("_")}
    assert ours <= set(dir(getattr(ort, cls))), "jitort invented public option names"


_ASSIGNMENTS = [
    ("intra_op_num_threads", 2), ("intra_op_num_threads", "2"), ("intra_op_num_threads", 2.0),
    ("intra_op_num_threads", True), ("intra_op_num_threads", -1), ("intra_op_num_threads", np.int64(3)),
    ("intra_op_num_threads", 2**40), ("inter_op_num_threads", None),
    ("graph_optimization_level", 1), ("graph_optimization_level", "ORT_ENABLE_ALL"),
    ("execution_mode", 1), ("execution_order", 0),
    ("enable_profiling", 1), ("enable_profiling", "yes"), ("enable_profiling", np.bool_(True)),
    ("enable_profiling", 0.5), ("enable_mem_pattern", None),
    ("logid", 3), ("logid", b"abc"), ("optimized_model_filepath", None), ("profile_file_prefix", "p_"),
    ("log_severity_level", 7), ("log_severity_level", "1"), ("use_deterministic_compute", 0),
]


@pytest.mark.parametrize(("attr", "value"), _ASSIGNMENTS)
def test_session_option_assignment_checks_like_onnxruntime(attr: str, value: object) -> None:
    so_ort, so_jit = ort.SessionOptions(), jitort.SessionOptions()
    try:
        setattr(so_ort, attr, value)
    except TypeError:
        with pytest.raises(TypeError):
            setattr(so_jit, attr, value)
        return
    setattr(so_jit, attr, value)
    assert getattr(so_jit, attr) == getattr(so_ort, attr)


def test_enum_assignment_and_unknown_attribute() -> None:
    so = SessionOptions()
    so.graph_optimization_level = jitort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.execution_mode = jitort.ExecutionMode.ORT_PARALLEL
    assert so.graph_optimization_level == 0 and so.execution_mode.name == "ORT_PARALLEL"
    for obj, ort_obj in ((so, ort.SessionOptions()), (RunOptions(), ort.RunOptions())):
        with pytest.raises(AttributeError):
            ort_obj.intra_op_num_thread = 1  # typo
        with pytest.raises(AttributeError):
            obj.intra_op_num_thread = 1


@pytest.mark.parametrize(("cls", "add", "get"), [
    ("SessionOptions", "add_session_config_entry", "get_session_config_entry"),
    ("RunOptions", "add_run_config_entry", "get_run_config_entry"),
])
def test_config_entries_match_onnxruntime(cls: str, add: str, get: str) -> None:
    ours, theirs = getattr(jitort, cls)(), getattr(ort, cls)()
    for o in (ours, theirs):
        getattr(o, add)("session.intra_op.allow_spinning", "0")
        assert getattr(o, get)("session.intra_op.allow_spinning") == "0"
    with pytest.raises(Exception) as theirs_err:
        getattr(theirs, get)("missing.key")
    with pytest.raises(Exception) as ours_err:
        getattr(ours, get)("missing.key")
    assert type(ours_err.value) is type(theirs_err.value)  # a plain RuntimeError in both
    assert str(ours_err.value) == str(theirs_err.value)
    with pytest.raises(TypeError):
        getattr(theirs, add)("k", 3)
    with pytest.raises(TypeError):
        getattr(ours, add)("k", 3)


def test_session_option_stores_the_session_reads() -> None:
    so = SessionOptions()
    so.add_free_dimension_override_by_name("batch", 4)
    so.add_free_dimension_override_by_denotation("DATA_BATCH", 2)
    w = OrtValue.ortvalue_from_numpy(np.ones(3, np.float32))
    so.add_initializer("w", w)
    so.add_external_initializers(["e"], [w])
    so.add_external_initializers_from_files_in_memory(["w.bin"], [b"abcdef"], [4])
    so.add_provider("CPUExecutionProvider", {})
    so.set_load_cancellation_flag(True)
    assert so._free_dim_overrides_by_name == {"batch": 4}
    assert so._free_dim_overrides_by_denotation == {"DATA_BATCH": 2}
    assert so._initializers["w"] is w and so._external_initializers["e"] is w
    assert bytes(so._external_files_in_memory["w.bin"]) == b"abcd"
    assert so.has_providers() and so._load_cancelled
    with pytest.raises(RuntimeError):  # onnxruntime: "The provided Python object must be an OrtValue"
        so.add_initializer("w", np.ones(3, np.float32))
    with pytest.raises(TypeError):
        so.add_free_dimension_override_by_name("batch", "4")
    with pytest.raises(errors.NotImplemented, match="custom-op"):
        so.register_custom_ops_library("/nonexistent/libcustom.so")


# --- enums -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["GraphOptimizationLevel", "ExecutionMode", "ExecutionOrder",
                                  "OrtAllocatorType", "OrtMemType"])
def test_enums_match_onnxruntime(name: str) -> None:
    ours, theirs = getattr(jitort, name), getattr(ort, name)
    members = {k: int(v) for k, v in theirs.__members__.items()}
    assert {k: int(v) for k, v in ours.__members__.items()} == members
    for key, t in theirs.__members__.items():
        o = ours.__members__[key]
        assert (o.name, o.value, int(o), str(o), repr(o), f"{o}", hash(o)) == \
            (t.name, t.value, int(t), str(t), repr(t), f"{t}", hash(t))
        assert o == int(t) and getattr(jcapi, name) is ours


# --- errors ----------------------------------------------------------------------------------

_ORT_ERRORS = sorted(n for n in dir(ocapi) if isinstance(getattr(ocapi, n), type)
                     and issubclass(getattr(ocapi, n), BaseException))


@pytest.mark.parametrize("name", _ORT_ERRORS)
def test_error_classes_match_onnxruntime(name: str) -> None:
    ours = getattr(jcapi, name)
    assert ours is getattr(errors, name) and ours in errors.ALL_ERRORS
    assert [c.__name__ for c in ours.__mro__] == [c.__name__ for c in getattr(ocapi, name).__mro__]


def test_error_message_format_matches_onnxruntime() -> None:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ocapi.InvalidArgument) as ei:
        _ort_session(_model(g)).run(None, {"x": np.ones(1, np.float64)})  # wrong dtype
    theirs = str(ei.value)
    msg = theirs.split(" : ", 3)[3]
    assert str(errors.InvalidArgument(msg)) == theirs
    with pytest.raises(ocapi.NoSuchFile) as ei2:
        ort.InferenceSession("/nonexistent/model.onnx")
    assert str(ei2.value).startswith(str(errors.NoSuchFile("")))
    assert errors.InvalidArgument("plain").args == ("plain",)


# --- dtypes ----------------------------------------------------------------------------------


def test_type_strings_match_onnxruntime_nodeargs() -> None:
    # Every element type both sides can hold, as one Identity per type in a single model.
    elems = [e for e in dtypes.NP_FROM_ONNX if e not in (TensorProto.COMPLEX64, TensorProto.COMPLEX128)]
    nodes = [helper.make_node("Identity", [f"x{e}"], [f"y{e}"]) for e in elems]
    ins = [helper.make_tensor_value_info(f"x{e}", e, [2]) for e in elems]
    outs = [helper.make_tensor_value_info(f"y{e}", e, [2]) for e in elems]
    sess = _ort_session(_model(helper.make_graph(nodes, "g", ins, outs)))
    for e, arg in zip(elems, sess.get_inputs()):
        assert dtypes.type_string(dtypes.np_dtype(e)) == arg.type
        assert dtypes.dtype_from_type_string(arg.type) == dtypes.np_dtype(e)
        assert dtypes.onnx_elem_type(dtypes.np_dtype(e)) == e


def test_dtype_helpers() -> None:
    assert dtypes.np_dtype(TensorProto.BFLOAT16) == np.dtype(ml_dtypes.bfloat16)
    assert dtypes.onnx_elem_type(np.dtype("<U3")) == TensorProto.STRING
    assert dtypes.onnx_elem_type(np.dtype(">f4")) == TensorProto.FLOAT
    assert dtypes.resolve_element_type(TensorProto.INT64) == np.int64
    assert dtypes.resolve_element_type("float32") == np.float32
    with pytest.raises(errors.NotImplemented, match="int4"):
        dtypes.np_dtype(TensorProto.INT4)
    with pytest.raises(errors.NotImplemented):
        dtypes.onnx_elem_type(np.dtype("datetime64[s]"))


# --- OrtValue --------------------------------------------------------------------------------

_DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8,
           np.uint16, np.uint32, np.uint64, np.bool_]


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: np.dtype(d).name)
def test_ortvalue_from_numpy_matches_onnxruntime(dtype: type) -> None:
    a = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    ours, theirs = OrtValue.ortvalue_from_numpy(a), ort.OrtValue.ortvalue_from_numpy(a)
    for method in ("shape", "data_type", "element_type", "device_name", "is_tensor", "has_value",
                   "tensor_size_in_bytes", "data_ptr"):
        assert getattr(ours, method)() == getattr(theirs, method)(), method
    out = ours.numpy()
    assert out.dtype == a.dtype and np.array_equal(out, a)
    assert np.shares_memory(out, a) and ours._numpy_obj is a  # zero-copy, and keeps `a` alive
    np.testing.assert_array_equal(np.asarray(ours), a)


def test_ortvalue_memory_semantics() -> None:
    a = np.zeros((2, 3), np.float32)
    v = OrtValue.ortvalue_from_numpy(a)
    a[0, 0] = 42
    v.numpy()[0, 1] = 7
    assert v.numpy()[0, 0] == 42 and a[0, 1] == 7
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    for cls in (OrtValue, ort.OrtValue):  # both copy non-contiguous input
        w = cls.ortvalue_from_numpy(strided)
        assert w.data_ptr() != strided.ctypes.data and np.array_equal(w.numpy(), strided)
    scalar = OrtValue.ortvalue_from_numpy(np.array(3.0, np.float32))
    assert scalar.shape() == ort.OrtValue.ortvalue_from_numpy(np.array(3.0, np.float32)).shape() == []
    s = OrtValue.ortvalue_from_numpy(np.array(["a", "bc"]))
    assert s.data_type() == "tensor(string)" and s.numpy().dtype == object


@pytest.mark.parametrize("element_type", [np.float32, np.dtype("int64"), "float16", np.bool_,
                                          TensorProto.FLOAT, TensorProto.UINT8])
def test_ortvalue_from_shape_and_type_matches_onnxruntime(element_type: object) -> None:
    ours = OrtValue.ortvalue_from_shape_and_type([2, 3], element_type)
    theirs = ort.OrtValue.ortvalue_from_shape_and_type([2, 3], element_type)
    assert (ours.shape(), ours.data_type(), ours.numpy().dtype) == \
        (theirs.shape(), theirs.data_type(), theirs.numpy().dtype)


def test_ortvalue_extras_and_errors() -> None:
    bf = OrtValue.ortvalue_from_shape_and_type((4,), TensorProto.BFLOAT16)  # onnxruntime lacks this
    assert bf.data_type() == "tensor(bfloat16)" and bf.element_type() == TensorProto.BFLOAT16
    bits = np.array([0x3F80], np.uint16)
    v = OrtValue.ortvalue_from_numpy_with_onnx_type(bits, TensorProto.BFLOAT16)
    assert float(v.numpy()[0]) == 1.0 and np.shares_memory(v.numpy(), bits)
    a = np.ones((2, 3), np.float32)
    for cls in (OrtValue, ort.OrtValue):
        for device in ("cuda", "gpu"):  # a device this build lacks: RuntimeError in both
            with pytest.raises(RuntimeError):
                cls.ortvalue_from_numpy(a, device, 0)
            with pytest.raises(RuntimeError):
                cls.ortvalue_from_shape_and_type([2], np.float32, device, 0)
        with pytest.raises(Exception, match="Unsupported device type"):
            cls.ortvalue_from_numpy(a, "foo", 0)
        with pytest.raises(RuntimeError):
            cls.ortvalue_from_shape_and_type([-1], np.float32)
        with pytest.raises(RuntimeError):
            cls.ortvalue_from_numpy([1.0, 2.0])
    w = OrtValue.ortvalue_from_numpy(np.zeros((2, 3), np.float32))
    ptr = w.data_ptr()
    w.update_inplace(np.arange(6, dtype=np.float32).reshape(3, 2))
    w.update_inplace(OrtValue.ortvalue_from_numpy(w.numpy() * 2))
    assert w.data_ptr() == ptr and w.numpy()[1, 2] == 10
    with pytest.raises(TypeError):
        w.update_inplace(np.ones((2, 3), np.float64))
    with pytest.raises(TypeError):
        w.update_inplace([1.0])
    d = OrtValue.from_dlpack(np.arange(3, dtype=np.int32))
    assert d.data_type() == "tensor(int32)" and np.from_dlpack(d).tolist() == [0, 1, 2]


# --- NodeArg, ModelMetadata ------------------------------------------------------------------


def test_nodearg_matches_onnxruntime() -> None:
    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, [2]))
    opt = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [3]))
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
           helper.make_tensor_value_info("u", TensorProto.FLOAT, [None, "n", 0]),
           helper.make_tensor_value_info("r", TensorProto.BOOL, None),
           helper.make_tensor_value_info("s", TensorProto.STRING, []),
           helper.make_value_info("q", seq), helper.make_value_info("o", opt)]
    nodes = [helper.make_node("Identity", [vi.name], [vi.name + "_out"]) for vi in ins]
    outs = [helper.make_value_info(vi.name + "_out", vi.type) for vi in ins]
    sess = _ort_session(_model(helper.make_graph(nodes, "g", ins, outs)))
    for vi, theirs in zip(ins, sess.get_inputs()):
        ours = NodeArg.from_value_info(vi)
        assert (ours.name, ours.type, ours.shape, str(ours)) == \
            (theirs.name, theirs.type, theirs.shape, str(theirs))
        assert repr(ours) == str(theirs)
    arg = NodeArg("x", "tensor(float)", ["batch", 3])
    arg.shape.append(1)  # a fresh list each time, as onnxruntime returns
    assert arg.shape == ["batch", 3]
    with pytest.raises(AttributeError):
        arg.name = "y"  # type: ignore[misc]


@pytest.mark.parametrize("with_metadata", [True, False])
def test_model_metadata_matches_onnxruntime(with_metadata: bool) -> None:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "graph_name",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], doc_string="gdoc")
    kw = dict(producer_name="prod", doc_string="mdoc", domain="dom", model_version=5) if with_metadata else {}
    m = _model(g, **kw)
    if with_metadata:
        helper.set_model_props(m, {"k": "v"})
    theirs, ours = _ort_session(m).get_modelmeta(), ModelMetadata.from_model_proto(m)
    for f in ("producer_name", "graph_name", "domain", "description", "graph_description", "version",
              "custom_metadata_map"):
        assert getattr(ours, f) == getattr(theirs, f), f


# --- runtime functions -----------------------------------------------------------------------


def test_runtime_functions() -> None:
    assert jitort.get_all_providers() == ort.get_all_providers()
    avail = jitort.get_available_providers()
    assert avail[-1] == "CPUExecutionProvider" and set(avail) <= set(ort.get_all_providers())
    assert jitort.get_device() in ("CPU", "GPU")
    assert jitort.get_version_string() == jitort.__version__
    assert "jitort" in jitort.get_build_info() and "numba" in jitort.get_build_info()
    assert jitort.has_collective_ops() is ort.has_collective_ops() is False
    for bad in (5, -1):  # checked without touching onnxruntime's global logger state
        with pytest.raises(RuntimeError):
            ort.set_default_logger_severity(bad)
        with pytest.raises(RuntimeError):
            jitort.set_default_logger_severity(bad)
    with pytest.raises(TypeError):
        jitort.set_default_logger_severity("3")
    before = runtime_info.get_default_logger_severity()
    try:
        jitort.set_default_logger_severity(3)
        assert runtime_info.get_default_logger_severity() == 3
    finally:
        jitort.set_default_logger_severity(before)
    jitort.set_default_logger_verbosity(7)  # any int, as in onnxruntime
    jitort.enable_telemetry_events()
    jitort.disable_telemetry_events()


def test_set_seed_makes_rng_deterministic() -> None:
    jitort.set_seed(-3)  # onnxruntime accepts negative int64 seeds
    assert runtime_info.get_seed() == -3
    first = runtime_info.rng().random(3)
    jitort.set_seed(-3)
    assert np.array_equal(first, runtime_info.rng().random(3))
    with pytest.raises(TypeError):
        jitort.set_seed(1.5)


def test_public_names_mirror_onnxruntime() -> None:
    ours = {n for n in jitort.__all__ if not n.startswith("__")}
    assert ours <= set(dir(ort)), sorted(ours - set(dir(ort)))
    assert {n for n in jcapi.__all__} <= set(dir(ocapi)), sorted(set(jcapi.__all__) - set(dir(ocapi)))
    assert jitort.capi.onnxruntime_pybind11_state is jcapi and jcapi.OrtValue is jitort.OrtValue


# --- IOBinding -------------------------------------------------------------------------------


class _DelegatingSession:
    """Implements the session side of IOBinding's contract on top of a real onnxruntime session."""

    def __init__(self, m: onnx.ModelProto) -> None:
        self.sess = _ort_session(m)
        self.calls: list[tuple[dict[str, np.ndarray], list[str], dict[str, np.ndarray]]] = []

    def get_inputs(self) -> list[NodeArg]:
        return [NodeArg(a.name, a.type, a.shape) for a in self.sess.get_inputs()]

    def _run_bound(self, inputs: dict[str, np.ndarray], output_names: list[str],
                   preallocated: dict[str, np.ndarray], *,
                   run_options: RunOptions | None) -> list[np.ndarray]:
        self.calls.append((inputs, output_names, preallocated))
        results = self.sess.run(output_names, inputs)
        for name, arr in zip(output_names, results):
            if name in preallocated:
                np.copyto(preallocated[name], arr)
        return [preallocated.get(n, a) for n, a in zip(output_names, results)]


@pytest.fixture
def relu_neg() -> _DelegatingSession:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["z"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n"])])
    return _DelegatingSession(_model(g))


def test_iobinding_matches_onnxruntime(relu_neg: _DelegatingSession) -> None:
    x = np.array([1.0, -2.0], np.float32)
    theirs = relu_neg.sess.io_binding()
    ours = IOBinding(relu_neg)
    assert ours.get_outputs() == [] and theirs.get_outputs() == []
    for io in (theirs, ours):
        io.bind_cpu_input("x", x)
        io.bind_output("z")
        io.bind_output("y")
        io.bind_output("z")  # rebinding keeps the first position
    relu_neg.sess.run_with_iobinding(theirs)
    ours._run(relu_neg)
    for a, b in zip(ours.copy_outputs_to_cpu(), theirs.copy_outputs_to_cpu()):
        np.testing.assert_array_equal(a, b)
    assert [v.data_type() for v in ours.get_outputs()] == [v.data_type() for v in theirs.get_outputs()]
    assert relu_neg.calls[-1][0]["x"] is x  # bound array used in place, no copy
    x[0] = 5.0  # changing the bound array changes the next run, in both
    relu_neg.sess.run_with_iobinding(theirs)
    ours._run(relu_neg)
    np.testing.assert_array_equal(ours.copy_outputs_to_cpu()[1], theirs.copy_outputs_to_cpu()[1])
    copied = ours.copy_outputs_to_cpu()[0]
    assert not np.shares_memory(copied, ours.get_outputs()[0].numpy())
    for io in (theirs, ours):
        io.clear_binding_inputs()
        assert len(io.get_outputs()) == 2
        io.clear_binding_outputs()
        assert io.get_outputs() == []


def test_iobinding_preallocated_outputs(relu_neg: _DelegatingSession) -> None:
    io = IOBinding(relu_neg)
    x = np.array([3.0, -4.0], np.float32)
    io.bind_input("x", "cpu", 0, np.float32, [2], x.ctypes.data)
    dst = OrtValue.ortvalue_from_shape_and_type([2], np.float32)
    raw = np.zeros(2, np.float32)
    io.bind_ortvalue_output("y", dst)
    io.bind_output("z", "cpu", 0, TensorProto.FLOAT, [2], raw.ctypes.data)
    io._run(relu_neg)
    assert dst.numpy().tolist() == [3.0, 0.0] and raw.tolist() == [-3.0, 4.0]
    outs = io.get_outputs()
    assert outs[0] is dst and outs[1].data_ptr() == raw.ctypes.data
    assert set(relu_neg.calls[-1][2]) == {"y", "z"}
    io.bind_ortvalue_input("x", OrtValue.ortvalue_from_numpy(np.array([-1.0, 1.0], np.float32)))
    io._run(relu_neg)
    assert dst.numpy().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="element_type"):
        io.bind_output("z", "cpu", 0, None, None, raw.ctypes.data)


def test_iobinding_errors(relu_neg: _DelegatingSession) -> None:
    io = IOBinding(relu_neg)
    with pytest.raises(RuntimeError, match="Failed to find NodeArg"):  # onnxruntime's message
        io.bind_cpu_input("nope", np.ones(2, np.float32))
    with pytest.raises(RuntimeError):
        io.bind_cpu_input("x", [1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="Error when binding input"):
        io.bind_input("x", "cuda", 0, np.float32, [2], 1234)
    with pytest.raises(RuntimeError):
        io.bind_output("y", "cuda", 0)
    io.bind_cpu_input("x", np.ones(2, np.float32))
    with pytest.raises(RuntimeError, match="At least one output"):
        io._run(relu_neg)
    io.bind_output("y")
    with pytest.raises(ValueError, match="session that created it"):
        io._run(_DelegatingSession.__new__(_DelegatingSession))
    io.synchronize_inputs()
    io.synchronize_outputs()
    assert io.get_outputs_as_ortvaluevector() == []


# --- onnxruntime 1.32 additions --------------------------------------------------------------


def _tiny_model() -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "logged",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    return _model(g)


def test_logger_callback_receives_messages_and_severities() -> None:
    got: list[tuple] = []
    before = runtime_info.get_default_logger_severity()
    so = jitort.SessionOptions()
    so.logid = "my-session"
    try:
        jitort.set_default_logger_callback(lambda *a: got.append(a), 0)
        assert runtime_info.get_default_logger_severity() == 0  # installing sets the severity
        with pytest.warns(UserWarning, match="not in available provider names"):
            sess = jitort.InferenceSession(_tiny_model().SerializeToString(), so,
                                           providers=["XnnpackExecutionProvider", "CPUExecutionProvider"])
        np.testing.assert_array_equal(sess.run(None, {"x": np.array([-1, 0, 2], np.float32)})[0], [0, 0, 2])
        for severity, category, logid, where, message in got:
            assert isinstance(severity, int) and 0 <= severity <= 4 and category == "jitort"
            assert isinstance(logid, str) and ".py:" in where and isinstance(message, str)
        warned = [m for s, _, _, _, m in got if s == 2]
        assert any("XnnpackExecutionProvider" in m for m in warned)  # a warning also reaches the callback
        info = [(lid, m) for s, _, lid, _, m in got if s == 1]
        assert any(lid == "my-session" and "'logged'" in m for lid, m in info)
        jitort.set_default_logger_callback(lambda *a: got.append(a), 3)
        n = len(got)
        jitort.InferenceSession(_tiny_model().SerializeToString(), so)  # info is below severity 3
        assert len(got) == n
        jitort.set_default_logger_callback(None, 0)  # reset: severity stays as it is
        assert runtime_info.get_default_logger_severity() == 3
        with pytest.warns(UserWarning):
            jitort.InferenceSession(_tiny_model().SerializeToString(), so,
                                    providers=["XnnpackExecutionProvider", "CPUExecutionProvider"])
        assert len(got) == n
    finally:
        jitort.set_default_logger_callback(None)
        jitort.set_default_logger_severity(before)


def test_logger_callback_errors_match_onnxruntime() -> None:
    before = runtime_info.get_default_logger_severity()
    for args in ((None, 7), (None, -1), (5, 2), ("print", 2)):  # rejected before onnxruntime changes state
        with pytest.raises(RuntimeError):
            ort.set_default_logger_callback(*args)
        with pytest.raises(RuntimeError):
            jitort.set_default_logger_callback(*args)
    with pytest.raises(TypeError):
        jitort.set_default_logger_callback(None, "2")
    assert runtime_info.get_default_logger_severity() == before
    try:  # a failing callback never breaks the code that logged
        jitort.set_default_logger_callback(lambda *a: 1 / 0, 0)
        sess = jitort.InferenceSession(_tiny_model().SerializeToString())
        assert sess.run(None, {"x": np.ones(3, np.float32)})[0].tolist() == [1, 1, 1]
    finally:
        jitort.set_default_logger_callback(None)
        jitort.set_default_logger_severity(before)


_PACKAGE_CLASSES = ["ModelPackage", "ModelPackageComponentContext", "ModelPackageContext", "ModelPackageOptions"]


@pytest.mark.parametrize("name", _PACKAGE_CLASSES)
def test_model_package_names_match_onnxruntime(name: str) -> None:
    theirs = {n for n in dir(getattr(ort, name)) if not n.startswith("_")}
    ours = {n for n in dir(getattr(jitort, name)) if not n.startswith("_")}
    assert ours == theirs
    assert getattr(jcapi, name) is getattr(jitort, name)


def test_model_package_behaviour() -> None:
    assert [(m.name, int(m)) for m in jitort.ModelPackageWriteMode] == \
        [(n, int(v)) for n, v in ort.ModelPackageWriteMode.__members__.items()]
    jitort.ModelPackageOptions(jitort.SessionOptions())
    for cls, arg in ((jitort.ModelPackageOptions, 5), (ort.ModelPackageOptions, 5)):
        with pytest.raises(TypeError):
            cls(arg)
    for cls in (jitort.ModelPackageComponentContext, ort.ModelPackageComponentContext):
        with pytest.raises(TypeError):
            cls()
    for call in (lambda: jitort.ModelPackage(), lambda: jitort.ModelPackage.open("pkg"),
                 lambda: jitort.ModelPackageContext("pkg"), lambda: jitort.ModelPackage.compute_directory_hash(".")):
        with pytest.raises(errors.NotImplemented, match="model packages"):
            call()


def test_oracle_is_the_pinned_onnxruntime() -> None:
    """The suite's oracle is the onnxruntime release range named in the test extra; moving to a new
    release is a deliberate change (bump the range in pyproject.toml, re-run, adapt)."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement
    pins = [Requirement(r) for r in requires("jitort") or []]
    pin = next(r for r in pins if r.name == "onnxruntime" and r.marker and r.marker.evaluate({"extra": "test"}))
    assert pin.specifier.contains(version("onnxruntime")), (
        f"the oracle is onnxruntime {version('onnxruntime')}, the suite is pinned to onnxruntime{pin.specifier}")
    assert ort.__version__ == version("onnxruntime")
