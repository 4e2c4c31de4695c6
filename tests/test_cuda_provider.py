"""CUDAExecutionProvider: partitioning, the generated CUDA plan, sessions, device values, IOBinding.

Without a GPU (CI): the partition pass is pure (it never probes a device), so its assignments and
inserted copies are checked directly; the CUDA plan is generated and imported; a session asking for
CUDA falls back to the CPU with a warning; ``jitort compile --provider cuda`` writes PTX (and
cubins where nvJitLink is installed). In the CUDA simulator (a child process), whole sessions —
the transformer blocks, the conv block, the elementwise chain — run through the CUDA plan, with
device OrtValues and IOBinding, and match onnxruntime. With a GPU, the same sessions run on it and
the device-memory API (OrtValue on 'cuda', IOBinding with device pointers, __cuda_array_interface__)
is exercised; those tests skip cleanly without one. This file is also the simulator's script.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jitort as ort
from jitort import zoo
from jitort.compiler import compile_graph, optimize
from jitort.ir import Graph, verify
from jitort.frontend.importer import import_model

HERE = Path(__file__).parent
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
BOTH = [CUDA, CPU]


def _gpu() -> bool:
    try:
        from numba import cuda
        return bool(cuda.is_available()) and not os.environ.get("NUMBA_ENABLE_CUDASIM")
    except Exception:  # noqa: BLE001
        return False


GPU = _gpu()
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")


def _tiny(name: str) -> tuple[Any, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    if name == "bert":
        return (zoo.bert_layer(hidden=8, heads=2, ffn=16),
                {"hidden_states": rng.standard_normal((1, 3, 8)).astype(np.float32),
                 "attention_mask": np.array([[1, 1, 0]], np.int64)})
    if name == "gpt":
        return zoo.gpt_block(hidden=8, heads=2, max_positions=8), {
            "input_embeds": rng.standard_normal((1, 3, 8)).astype(np.float32)}
    if name == "conv":
        return zoo.conv_block(channels=2, size=4, batch=1), {"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)}
    return zoo.elementwise_chain(shape=(2, 3, 4, 5)), {"x": rng.standard_normal((2, 3, 4, 5)).astype(np.float32)}


def _ort(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sys.path.insert(0, str(HERE))
    from oracle import run_ort
    return run_ort(model, feeds)


# --- the partition pass (no GPU needed) --------------------------------------------------------

def _partition(model: Any, providers: list[str] = BOTH) -> Graph:
    return optimize(import_model(model), providers, check=True)


def _check_locations(g: Graph) -> None:
    """The pass's invariant, recomputed: every read finds its value where it reads it."""
    from jitort.kernels.cuda.ops import cuda_op
    where: dict[str, str] = {i: "host" for i in g.inputs}
    for n in g.nodes:
        for o in n.outputs:
            if not o:
                continue
            if n.provider != CUDA or n.op_type == "MemcpyToHost":
                where[o] = "host"
            else:
                e = cuda_op(n) if n.domain == "" else None
                where[o] = "host" if e is not None and e.host_outputs else "device"
    for n in g.nodes:
        e = cuda_op(n) if n.provider == CUDA and n.domain == "" else None
        for k, i in enumerate(n.inputs):
            if not i or g.const(i) is not None:
                continue
            if n.provider != CUDA or n.op_type == "MemcpyFromHost" or (e is not None and k in e.host_inputs):
                want = "host"
            elif e is not None and k in e.meta_inputs:
                continue
            else:
                want = "device"
            assert where[i] == want, f"{n.op_type} '{n.name}' reads '{i}' ({where[i]}) on the {want}"
    for o in g.outputs:
        assert where.get(o, "host") == "host", o


def test_partition_bert_layer() -> None:
    g = _partition(zoo.bert_layer())
    _check_locations(g)
    prov = {}
    for n in g.nodes:
        prov.setdefault(n.op_type, set()).add(n.provider)
    for op in ("MatMul", "Softmax", "LayerNormalization", "ReduceMean", "Transpose", "Reshape", "FusedElementwise",
               "Shape"):
        assert prov[op] == {CUDA}, (op, prov[op])
    # shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Reshape's shape input) stays on the host
    assert prov["Gather"] == {CPU} and prov["Concat"] == {CPU}
    copies = [(n.op_type, n.inputs[0]) for n in g.nodes if n.domain == "jitort" and n.op_type.startswith("Memcpy")]
    assert sorted(copies) == sorted([("MemcpyFromHost", "hidden_states"), ("MemcpyFromHost", "attention_mask"),
                                     ("MemcpyToHost", g.outputs[0] + "::cuda")])
    assert g.outputs == [import_model(zoo.bert_layer()).outputs[0]]  # the output keeps its name
    assert any("shape arithmetic" in note for note in g.notes)


def test_partition_gpt_block_runtime_broadcast_falls_back() -> None:
    g = _partition(zoo.gpt_block())
    _check_locations(g)
    (where,) = [n for n in g.nodes if n.op_type == "FusedElementwise" and n.attrs["body"][0].op_type == "Where"]
    assert where.provider == CPU  # its broadcast is known only at run time
    assert any("broadcast known only at run time" in note for note in g.notes)
    ins = {n.outputs[0]: n for n in g.nodes if n.op_type == "MemcpyToHost"}
    assert all(i in ins for i in where.inputs if g.const(i) is None)  # device results copied to the host
    (back,) = [n for n in g.nodes if n.op_type == "MemcpyFromHost" and n.inputs[0] == where.outputs[0]]
    assert back.provider == CUDA


def test_partition_conv_block_and_chain() -> None:
    g = _partition(zoo.conv_block(channels=8, size=8))
    _check_locations(g)
    assert {n.op_type for n in g.nodes if n.provider != CUDA} == set()
    g = _partition(zoo.elementwise_chain())
    _check_locations(g)
    assert [n.op_type for n in g.nodes] == ["MemcpyFromHost", "FusedElementwise", "MemcpyToHost"]


def test_partition_cpu_only_is_unchanged() -> None:
    g = _partition(zoo.bert_layer(), [CPU])
    assert all(n.provider == CPU for n in g.nodes)
    assert not any(n.domain == "jitort" and n.op_type.startswith("Memcpy") for n in g.nodes)


def _mixed_model(opset: int = 17) -> Any:
    """MatMul -> CumSum (no CUDA kernel) -> MatMul, with an intermediate also a graph output."""
    from onnx import helper
    sys.path.insert(0, str(HERE))
    from oracle import make_model
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]),
             helper.make_node("CumSum", ["a", "ax"], ["b"]),
             helper.make_node("MatMul", ["b", "w"], ["y"]),
             helper.make_node("Softmax", ["a"], ["s"], axis=0)]
    w = np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32)
    return make_model(nodes, {"x": (np.float32, [3, 4])}, ["y", "a", "s"],
                      {"w": w, "ax": np.array(1, np.int64)}, opset=opset)


def test_partition_inserts_copies_around_cpu_fallbacks() -> None:
    g = _partition(_mixed_model())
    _check_locations(g)
    by = {n.op_type: n for n in g.nodes}
    assert by["CumSum"].provider == CPU and any("no CUDA kernel for CumSum" in x for x in g.notes)
    assert by["Softmax"].provider == CPU  # axis 0 is not the last axis at opset 13+
    mm = [n for n in g.nodes if n.op_type == "MatMul"]
    assert all(n.provider == CUDA for n in mm)
    to_host = [n for n in g.nodes if n.op_type == "MemcpyToHost"]
    # 'a' is read on the host by CumSum and Softmax and is a graph output: one copy serves all three
    assert len([n for n in to_host if n.outputs[0] == "a"]) == 1
    assert "a" in g.outputs and "y" in g.outputs
    verify(g)


def test_partition_keeps_subgraph_reads_on_cpu() -> None:
    from onnx import TensorProto, helper
    sys.path.insert(0, str(HERE))
    from oracle import make_model
    then = helper.make_graph([helper.make_node("Identity", ["a"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [3, 4])])
    els = helper.make_graph([helper.make_node("Neg", ["a"], ["e"])], "else", [],
                            [helper.make_tensor_value_info("e", TensorProto.FLOAT, [3, 4])])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els)]
    m = make_model(nodes, {"x": (np.float32, [3, 4]), "c": (np.bool_, [])}, ["y"],
                   {"w": np.eye(4, dtype=np.float32)})
    g = _partition(m)
    mm = next(n for n in g.nodes if n.op_type == "MatMul")
    assert mm.provider == CPU and any("a subgraph reads its output" in x for x in g.notes)


def test_cuda_plan_is_generated_and_imports_without_a_gpu() -> None:
    from jitort import cache
    model, _ = _tiny("bert")
    c = compile_graph(import_model(model), BOTH)
    src = c.plan_source
    assert "def run_on(device_out" in src and "run.run_on = run_on" in src
    for call in ("cu_gemm.matmul(ctx", "cu_rows.softmax(ctx", "cu_rows.layernorm(ctx", "cu_movement.transpose(ctx",
                 "ctx.to_device(", "ctx.detach(", "rt.compiled(cu_gemm.gemm_tiled, 'float32')"):
        assert call in src, call
    assert "# Gather /Gather_" in src and "[CPU]" in src
    # the arena: values with disjoint lifetimes share slots
    import re
    slots = {int(s) for s in re.findall(r"ctx\.alloc\((\d+),", src)}
    slots |= {int(s) for t in re.findall(r"\(ctx, \(([\d, ]+)\)", src) for s in t.split(",") if s.strip()}
    allocating = len(re.findall(r"ctx\.alloc\(\d+,", src)) + len(re.findall(r"\(ctx, \(\d", src))
    assert slots and len(slots) < allocating
    for name, s in c.kernel_sources.items():
        cache.load_source_module("kernels", name, s)
    mod = cache.load_source_module("plans", c.plan_name, c.plan_source)
    assert callable(mod.build)


@pytest.mark.skipif(GPU, reason="a GPU is present: CUDA is not a fallback here")
def test_cuda_request_without_gpu_falls_back_to_cpu() -> None:
    model, feeds = _tiny("bert")
    assert CUDA not in ort.get_available_providers()
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        sess = ort.InferenceSession(model.SerializeToString(), providers=BOTH)
    assert sess.get_providers() == [CPU]
    np.testing.assert_allclose(sess.run(None, feeds)[0], _ort(model, feeds)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError):
        ort.OrtValue.ortvalue_from_numpy(feeds["hidden_states"], "cuda", 0)


def test_compile_cli_cuda_writes_ptx(tmp_path: Path) -> None:
    import onnx

    from jitort.cli import main
    from jitort.kernels.cuda import runtime as rt
    model, _ = _tiny("chain")
    path = tmp_path / "chain.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "art"
    assert main(["compile", str(path), "--provider", "cuda", "--cc", "9.0", "-o", str(out)]) == 0
    rows = json.loads((out / "cuda" / "kernels.json").read_text())
    assert len(rows) == 1 and rows[0]["key"] == "fused"
    ptx = (out / rows[0]["ptx"]).read_text()
    assert ".target sm_90" in ptx
    if rt.nvjitlink_available():
        assert (out / rows[0]["cubin"]).read_bytes()[:4] == b"\x7fELF"
        assert rows[0]["registers"] > 0 and rows[0]["spill_stores"] == 0
    assert json.loads((out / "manifest.json").read_text())["target"] == "cuda-sm_90"
    if not GPU:  # a CPU session will not load a CUDA artifact: it says so and compiles for the CPU
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            sess = ort.InferenceSession(str(out), providers=[CPU])
        assert any("is stale" in str(x.message) for x in w)  # built for target cuda-sm_90
        assert sess.get_providers() == [CPU] and sess.compile_report["loaded_from"] != str(out)
    assert main(["compile", str(path), "--provider", "cuda", "--cc", "nine", "-o", str(out)]) == 2


# --- sessions in the CUDA simulator ------------------------------------------------------------

def _sim_session(names: list[str]) -> dict[str, Any]:
    """In the simulator: sessions on CUDA, plain runs, IOBinding on device memory, concurrent runs."""
    from numba import cuda
    assert cuda.is_available()
    out: dict[str, Any] = {}
    for first, name in enumerate(names):
        model, feeds = _tiny(name)
        want = _ort(model, feeds)
        sess = ort.InferenceSession(model.SerializeToString(), providers=BOTH)
        assert sess.get_providers() == BOTH
        on_cuda = {n.op_type for n in sess.artifact.ir().nodes if n.provider == CUDA}
        got = sess.run(None, feeds)
        err = [float(np.abs(a - b).max()) for a, b in zip(got, want)]
        # IOBinding (a second run: the arena is reused): device OrtValue inputs, the output left on the device
        io = sess.io_binding()
        for k, v in feeds.items():
            io.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0))
        oname = sess.get_outputs()[0].name
        io.bind_output(oname, "cuda")
        sess.run_with_iobinding(io)
        dev = io.get_outputs()[0]
        assert dev.device_name() == "cuda"
        err.append(float(np.abs(dev.numpy() - want[0]).max()))
        if first == 0:  # a preallocated device output (the simulator is slow: once per process)
            dst = ort.OrtValue.ortvalue_from_shape_and_type(want[0].shape, want[0].dtype, "cuda", 0)
            io.bind_ortvalue_output(oname, dst)
            sess.run_with_iobinding(io)
            assert io.get_outputs()[0] is dst
            err.append(float(np.abs(io.copy_outputs_to_cpu()[0] - want[0]).max()))
        out[name] = {"err": err, "on_cuda": sorted(on_cuda)}
    return out


@pytest.mark.parametrize("names", [["bert", "chain"], ["gpt", "conv"]], ids=["bert+chain", "gpt+conv"])
def test_simulator_sessions_match_onnxruntime(names: list[str]) -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    p = subprocess.run([sys.executable, __file__, *names], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    for name in names:
        assert max(res[name]["err"]) < 1e-5, (name, res[name])
        if name != "conv":
            assert "FusedElementwise" in res[name]["on_cuda"]
    if "bert" in names:
        assert {"MatMul", "Softmax", "LayerNormalization", "ReduceMean"} <= set(res["bert"]["on_cuda"])
    if "conv" in names:  # BatchNormalization, the Relus and the residual Add fold into the Convs (FusedConv)
        assert res["conv"]["on_cuda"] == ["FusedConv", "MemcpyFromHost", "MemcpyToHost"]


# --- on a GPU ------------------------------------------------------------------------------------

@needs_gpu
@pytest.mark.parametrize("name", ["bert", "gpt", "conv", "chain"])
def test_gpu_session_matches_onnxruntime(name: str) -> None:
    model, feeds = _tiny(name)
    sess = ort.InferenceSession(model.SerializeToString(), providers=BOTH)
    assert sess.get_providers() == BOTH
    for got, want in zip(sess.run(None, feeds), _ort(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@needs_gpu
def test_gpu_session_full_size_bert_matches_onnxruntime() -> None:
    model = zoo.bert_layer()
    rng = np.random.default_rng(0)
    feeds = {"hidden_states": rng.standard_normal((2, 37, 64)).astype(np.float32),
             "attention_mask": (rng.random((2, 37)) > 0.2).astype(np.int64)}
    sess = ort.InferenceSession(model.SerializeToString(), providers=BOTH)
    for _ in range(2):  # the second run reuses the arena
        np.testing.assert_allclose(sess.run(None, feeds)[0], _ort(model, feeds)[0], rtol=1e-4, atol=1e-4)


@needs_gpu
def test_gpu_concurrent_runs() -> None:
    """Each run takes its own context (stream + arena) from the plan's pool."""
    model, feeds = _tiny("gpt")
    want = _ort(model, feeds)[0]
    sess = ort.InferenceSession(model.SerializeToString(), providers=BOTH)
    res: list[Any] = [None] * 4

    def work(k: int) -> None:
        for _ in range(5):
            res[k] = sess.run(None, feeds)[0]
    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for r in res:
        np.testing.assert_allclose(r, want, rtol=1e-4, atol=1e-5)


@needs_gpu
def test_gpu_ortvalue_on_device() -> None:
    from numba import cuda
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    v = ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0)
    assert v.device_name() == "cuda" and v.shape() == [3, 4] and v.data_type() == "tensor(float)"
    assert v.data_ptr() == v.__cuda_array_interface__["data"][0] != 0
    np.testing.assert_array_equal(v.numpy(), a)
    d = cuda.as_cuda_array(v)  # zero-copy export
    assert d.__cuda_array_interface__["data"][0] == v.data_ptr()
    z = ort.OrtValue.ortvalue_from_shape_and_type([2, 5], np.int64, "cuda", 0)
    assert z.device_name() == "cuda" and not z.numpy().any()
    v.update_inplace(a * 2)
    np.testing.assert_array_equal(v.numpy(), a * 2)


@needs_gpu
def test_gpu_iobinding_with_device_pointers() -> None:
    from numba import cuda
    model, feeds = _tiny("bert")
    want = _ort(model, feeds)[0]
    sess = ort.InferenceSession(model.SerializeToString(), providers=BOTH)
    x = cuda.to_device(feeds["hidden_states"])
    y = cuda.device_array(want.shape, np.float32)
    io = sess.io_binding()
    io.bind_input("hidden_states", "cuda", 0, np.float32, list(x.shape), x.__cuda_array_interface__["data"][0])
    io.bind_cpu_input("attention_mask", feeds["attention_mask"])
    io.bind_output(sess.get_outputs()[0].name, "cuda", 0, np.float32, list(want.shape),
                   y.__cuda_array_interface__["data"][0])
    io.synchronize_inputs()
    sess.run_with_iobinding(io)
    io.synchronize_outputs()
    np.testing.assert_allclose(y.copy_to_host(), want, rtol=1e-4, atol=1e-5)
    io.clear_binding_outputs()
    io.bind_output(sess.get_outputs()[0].name, "cpu")
    sess.run_with_iobinding(io)
    np.testing.assert_allclose(io.get_outputs()[0].numpy(), want, rtol=1e-4, atol=1e-5)


@needs_gpu
def test_gpu_dlpack_and_array_interface_bind_without_copies() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    t = torch.arange(6, dtype=torch.float32, device="cuda").reshape(2, 3)
    v = ort.OrtValue.from_dlpack(t)
    assert v.device_name() == "cuda" and v.data_ptr() == t.data_ptr()
    back = torch.as_tensor(v, device="cuda")
    assert back.data_ptr() == t.data_ptr()


if __name__ == "__main__":
    print(json.dumps(_sim_session(sys.argv[1:])))
