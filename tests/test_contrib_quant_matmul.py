"""MatMulNBits (bits, block sizes, K not a multiple of the block, packed/float/absent zero points,
bias, g_idx, constant or run-time weights; kernels/nbits.py's GEMV (M <= GEMV_ROWS) and
kernels/nbits_prefill.py's dequantise-a-panel GEMM, split over threads and on both ISA paths, float16
A, accuracy_level 4), MatMulIntegerToFloat and
DynamicQuantizeMatMul (com.microsoft) vs onnxruntime; the packed kernels' loops vectorise."""
from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from jitort.kernels import gemm, nbits, nbits_prefill, threads
from oracle import assert_close, make_model, rand, run_ort

F = np.float32
MS = {"com.microsoft": 1}


def _run(node, feeds, inits, rtol=1e-4, atol=1e-4, nthreads=0):
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y"], inits, extra_opsets=MS)
    so = ort.SessionOptions()
    so.intra_op_num_threads = nthreads
    got = ort.InferenceSession(m.SerializeToString(), so).run(None, feeds)
    assert_close(got, run_ort(m, feeds), rtol, atol)
    return got[0]


def _nbits_inputs(rng, bits, block, K, N, zp, bias):
    """MatMulNBits' initializers (random values) and its input names."""
    blocks = -(-K // block)
    inits = {"B": rng.integers(0, 256, (N, blocks, block * bits // 8), dtype=np.uint8),
             "s": rng.uniform(0.01, 0.1, N * blocks).astype(F)}
    ins = ["a", "B", "s", "", "", ""]
    if zp == "packed":
        inits["zp"] = rng.integers(0, 256, (N, -(-blocks * bits // 8)), dtype=np.uint8)
        ins[3] = "zp"
    elif zp == "float":
        inits["zp"] = rng.uniform(0, 15, N * blocks).astype(F)
        ins[3] = "zp"
    if bias:
        inits["bias"] = rand((N,), seed=3)
        ins[5] = "bias"
    while not ins[-1]:
        ins.pop()
    return inits, ins


NBITS_GRID = [
    # (bits, block_size, K, N, zero points, bias, A shape prefix, weights at run time)
    (4, 32, 64, 16, None, False, (3,), False),
    (4, 16, 40, 8, "packed", True, (2, 3), False),
    (4, 32, 64, 12, "float", False, (5,), False),
    (8, 32, 64, 16, None, True, (3,), False),
    (8, 64, 96, 8, "packed", False, (2, 2), False),
    (4, 128, 128, 16, "packed", True, (1,), True),
    (2, 32, 64, 8, None, False, (3,), False),
    (2, 16, 48, 8, "packed", True, (2,), False),
]


@pytest.mark.parametrize("bits,block,K,N,zp,bias,prefix,dynamic", NBITS_GRID)
def test_matmul_nbits(bits, block, K, N, zp, bias, prefix, dynamic):
    inits, ins = _nbits_inputs(np.random.default_rng(K * N + bits), bits, block, K, N, zp, bias)
    feeds = {"a": rand(prefix + (K,), seed=2)}
    if dynamic:
        feeds["B"] = inits.pop("B")
    node = helper.make_node("MatMulNBits", ins, ["y"], domain="com.microsoft", K=K, N=N, bits=bits, block_size=block)
    _run(node, feeds, inits)


def test_matmul_nbits_g_idx():
    """g_idx: the identity block assignment runs (as onnxruntime; without zero points, since
    onnxruntime 1.32 drops packed zero points when g_idx is given, unlike without it); a permuted one
    (act-order GPTQ) raises NotImplemented naming op, domain and opset."""
    from jitort.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented
    rng = np.random.default_rng(7)
    K, N, block = 64, 8, 32
    inits = {"B": rng.integers(0, 256, (N, 2, 16), dtype=np.uint8), "s": rng.uniform(0.01, 0.1, N * 2).astype(F),
             "g": (np.arange(K) // block).astype(np.int32)}
    node = helper.make_node("MatMulNBits", ["a", "B", "s", "", "g"], ["y"], domain="com.microsoft", K=K, N=N, bits=4,
                            block_size=block)
    _run(node, {"a": rand((3, K), seed=1)}, inits)
    inits["g"] = inits["g"][::-1].copy()
    m = make_model([node], {"a": (F, [3, K])}, ["y"], inits, extra_opsets=MS)
    with pytest.raises(OrtNotImplemented, match=r"MatMulNBits.*com\.microsoft.*opset 1.*g_idx"):
        ort.InferenceSession(m.SerializeToString())


# (bits, block, K, N, zero points, bias, rows of A): N past one panel of nbits.NC with a ragged
# tail; up to GEMV_ROWS (2) rows of 4/8-bit take the GEMV, more rows and 2-bit the dequantise-a-panel
# GEMM (N past one panel, so that two threads get a panel each). onnxruntime's CPU kernel refuses
# 8-bit weights with float zero points.
PACKED_GRID = [
    (4, 32, 96, 70, None, True, 1),
    (4, 32, 96, 70, "packed", True, 2),
    (8, 32, 64, 70, None, False, 2),
    (4, 16, 40, 130, "packed", False, 4),
    (4, 32, 64, 70, "float", True, 1),
    (8, 32, 96, 70, "packed", True, 1),
    (8, 16, 48, 70, None, False, 3),
    (4, 32, 96, 300, "packed", True, 7),
    (8, 64, 128, 260, "packed", False, 17),
    (4, 32, 64, 260, None, True, 20),
    (2, 16, 48, 260, None, True, 1),
]


@pytest.mark.parametrize("bits,block,K,N,zp,bias,M", PACKED_GRID)
def test_matmul_nbits_packed(bits, block, K, N, zp, bias, M, monkeypatch):
    """Both paths of kernels/nbits.py against onnxruntime, on one thread and split over two
    (every panel its own part: same bits as one thread)."""
    inits, ins = _nbits_inputs(np.random.default_rng(K + N + M), bits, block, K, N, zp, bias)
    node = helper.make_node("MatMulNBits", ins, ["y"], domain="com.microsoft", K=K, N=N, bits=bits, block_size=block)
    feeds = {"a": rand((M, K), seed=2)}
    one = _run(node, feeds, inits, nthreads=1)
    monkeypatch.setattr(nbits, "GEMV_MACS_PER_PART", 1)
    monkeypatch.setattr(threads, "PART_FLOPS", 1)
    calls = []
    run_parts = threads.run_parts
    monkeypatch.setattr(threads, "run_parts", lambda fn, n: (calls.append(n), run_parts(fn, n)))
    run_native = threads.run_native  # the GEMV's split (native parts)
    monkeypatch.setattr(threads, "run_native", lambda fn, argv, n: (calls.append(n), run_native(fn, argv, n)))
    two = _run(node, feeds, inits, nthreads=2)
    assert max(calls) == 2
    np.testing.assert_array_equal(one, two)


# the prefill path (kernels/nbits_prefill.py), (bits, block, K, N, zero points, bias, rows of A):
# blocks 16-128, K not a multiple of the block nor of a word's values (8 for 4-bit, 4 for 8-bit), N
# not a multiple of a panel (nbits.NC = 64) nor of gemm.PANEL (16), rows for every register tile
# shape (6-row tiles and 1-, 2- (as 3) and 4-row tails: 7, 128 = 21 * 6 + 2, 129, 3)
PREFILL_GRID = [
    (4, 16, 75, 100, None, False, 3),
    (4, 32, 200, 130, "packed", True, 128),
    (4, 64, 301, 70, "float", False, 129),
    (4, 128, 260, 150, None, True, 7),
    (8, 16, 41, 90, "packed", False, 129),
    (8, 32, 101, 200, None, True, 7),
    (8, 64, 130, 64, "packed", True, 128),
    (8, 128, 300, 33, None, False, 3),
    (2, 16, 50, 100, "packed", True, 129),
    (4, 16, 5, 3, "packed", True, 4),  # K inside one word, N inside one gemm panel
]


@pytest.mark.parametrize("bits,block,K,N,zp,bias,M", PREFILL_GRID)
def test_matmul_nbits_prefill(bits, block, K, N, zp, bias, M, monkeypatch):
    """The dequantise-a-panel GEMM against onnxruntime (one thread); bitwise the same split over two
    threads (every panel its own part) and on the AVX2 path (JITORT_ISA=avx2: gemm.py's tiles of
    that path; on a host without AVX-512 both runs take it)."""
    assert M > nbits.GEMV_ROWS or bits == 2
    inits, ins = _nbits_inputs(np.random.default_rng(K + N + M + block), bits, block, K, N, zp, bias)
    node = helper.make_node("MatMulNBits", ins, ["y"], domain="com.microsoft", K=K, N=N, bits=bits, block_size=block)
    feeds = {"a": rand((M, K), seed=M)}
    one = _run(node, feeds, inits, nthreads=1)
    monkeypatch.setattr(threads, "PART_FLOPS", 1)
    calls = []
    run_native = threads.run_native
    monkeypatch.setattr(threads, "run_native", lambda fn, argv, n: (calls.append(n), run_native(fn, argv, n)))
    two = _run(node, feeds, inits, nthreads=2)
    assert calls == [min(2, -(-N // nbits.NC))]  # a part per panel of NC columns
    np.testing.assert_array_equal(one, two)
    monkeypatch.setenv("JITORT_ISA", "avx2")
    avx2 = _run(node, feeds, inits, nthreads=1)
    np.testing.assert_array_equal(one, avx2)


def test_matmul_nbits_float16():
    """float16 A, scales and bias (computed in float32, as onnxruntime's CPU kernel)."""
    inits, ins = _nbits_inputs(np.random.default_rng(5), 4, 32, 64, 70, "packed", True)
    inits = {k: v.astype(np.float16) if v.dtype == F else v for k, v in inits.items()}
    node = helper.make_node("MatMulNBits", ins, ["y"], domain="com.microsoft", K=64, N=70, bits=4, block_size=32)
    for M in (1, 6):
        _run(node, {"a": rand((M, 64), np.float16, seed=2)}, inits, rtol=1e-2, atol=1e-2)


def test_matmul_nbits_accuracy_level_4():
    """accuracy_level 4: onnxruntime (1.32, CPU) quantises A to int8 per block (measured relative
    error ~3e-3 against float); jitort computes in float32 at every level: it matches the float64
    product of the dequantised weights to float32 rounding and onnxruntime to the int8 error."""
    from jitort.kernels.contrib_quant_matmul import dequantize_nbits
    K, N = 256, 96
    inits, ins = _nbits_inputs(np.random.default_rng(9), 4, 32, K, N, None, False)
    node = helper.make_node("MatMulNBits", ins, ["y"], domain="com.microsoft", K=K, N=N, bits=4, block_size=32,
                            accuracy_level=4)
    for M in (1, 8):
        a = rand((M, K), seed=M)
        exact = a.astype(np.float64) @ dequantize_nbits(inits["B"], inits["s"], None, None, K, N, 4, 32, np.float64)
        scale = np.abs(exact).max()
        got = _run(node, {"a": a}, inits, rtol=1e-2, atol=1e-2 * scale)
        np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-6 * scale)


def _vector_ir(fn, *args, fastmath=True) -> str:
    """Optimised LLVM IR of a kernel (or a plain function calling one) compiled afresh for ``args``
    (cached code cannot be inspected)."""
    from numba import njit
    fresh = njit(nogil=True, fastmath=fastmath, error_model="numpy")(getattr(fn, "py_func", fn))
    fresh(*args)
    return fresh.inspect_llvm(fresh.signatures[0])


def _dequant4(w, s, out):  # type: ignore[no-untyped-def]
    """nbits_prefill.dequant_group as its part functions inline it: bits a constant."""
    nbits_prefill.dequant_group(w, s, s, 0, F(8), 4, 32, out.shape[1], 0, out)


@pytest.mark.parametrize("kernel", ["gemv4", "gemv8", "dequant_group"])
def test_nbits_kernels_vectorise(kernel):
    """The inner loops are vector code: int32 lanes converted to float (never int64: that takes
    AVX-512DQ) and vector float multiply-adds."""
    P, kw, blocks = 1, 8, 2
    w = np.zeros((P, kw, nbits.NC), np.int32)
    s = np.ones((P, blocks, nbits.NC), F)
    if kernel == "dequant_group":
        ir = _vector_ir(_dequant4, w, s, np.zeros((nbits.NC // gemm.PANEL, 64, gemm.PANEL), F), fastmath=False)
    else:
        per = 8 if kernel == "gemv4" else 4
        a = np.ones((1, kw * per), F)
        ir = _vector_ir(getattr(nbits, kernel), a, np.ones((1, blocks), F), w, s, None, F(8), None,
                        np.zeros((1, nbits.NC), F), 0, P)
    assert re.search(r"[su]itofp( nneg)? <(8|16) x i32>", ir), "no vector int32 -> float conversion"
    assert not re.search(r"[su]itofp( nneg)? <\d+ x i64>", ir)
    assert re.search(r"f(mul|add)( \w+)* <(8|16) x float>", ir), "no vector float arithmetic"


QGRID = [(np.uint8, np.int8, "scalar", True), (np.int8, np.int8, "column", False), (np.uint8, np.uint8, "column", True)]


@pytest.mark.parametrize("adt,bdt,per,bias", QGRID)
def test_matmul_integer_to_float(adt, bdt, per, bias):
    N = 6
    feeds = {"a": rand((2, 3, 5), adt, seed=1)}
    inits = {"b": rand((5, N), bdt, seed=2), "sa": np.array(0.05, F),
             "sb": rand((N,), seed=3, low=0.01, high=0.1) if per == "column" else np.array(0.02, F),
             "za": np.array(3, adt), "zb": rand((N,), bdt, seed=4) if per == "column" else np.array(1, bdt),
             "bias": rand((N,), seed=5)}
    ins = ["a", "b", "sa", "sb", "za", "zb"] + (["bias"] if bias else [])
    node = helper.make_node("MatMulIntegerToFloat", ins, ["y"], domain="com.microsoft")
    _run(node, feeds, {k: v for k, v in inits.items() if k in ins})


@pytest.mark.parametrize("bdt,per,zp,bias", [(np.int8, "scalar", False, False), (np.int8, "column", True, True),
                                             (np.uint8, "column", True, False)])
def test_dynamic_quantize_matmul(bdt, per, zp, bias):
    N = 7
    inits = {"b": rand((9, N), bdt, seed=2),
             "sb": rand((N,), seed=3, low=0.01, high=0.1) if per == "column" else np.array(0.02, F),
             "zb": rand((N,), bdt, seed=4) if per == "column" else np.array(1, bdt), "bias": rand((N,), seed=5)}
    ins = ["a", "b", "sb", "zb" if zp else "", "bias" if bias else ""]
    while not ins[-1]:
        ins.pop()
    node = helper.make_node("DynamicQuantizeMatMul", ins, ["y"], domain="com.microsoft")
    _run(node, {"a": rand((4, 9), seed=1)}, {k: v for k, v in inits.items() if k in ins}, rtol=1e-4, atol=1e-3)
