"""Fused elementwise kernels vectorise, and stay exact: the generated kernel's LLVM IR has a vector
loop per stage loop and no gathers, on representative chains (unary math, binary broadcast, NaN-
aware Where/Max/Min/Clip/Relu, a 20-op mix); results match onnxruntime with NaN/inf, in float32,
float64 and float16, odd sizes and broadcast forms; a kernel split across threads gives the same
bits as one thread."""
from __future__ import annotations

import re
import sys
from typing import Any

import numpy as np
import onnx
import pytest
from numba import njit
from onnx import helper

import jitort
from oracle import assert_close, make_model, rand, run_ort

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -3.5, 1e-30, 88.0, -88.0, 100.0, -100.0],
                   np.float32)


def chain(ops: list[tuple[str, ...]], dtype: Any, shape: list[int], inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x through ``ops``: (op, other operands...) with the running value as the first operand;
    ("Where", cond_rhs, other) is Where(Greater(v, cond_rhs), v, other)."""
    nodes, cur = [], "x"
    for k, (op, *others) in enumerate(ops):
        out = f"v{k}"
        if op == "Where":
            nodes.append(helper.make_node("Greater", [cur, others[0]], [f"c{k}"]))
            nodes.append(helper.make_node("Where", [f"c{k}", cur, others[1]], [out]))
        else:
            nodes.append(helper.make_node(op, [cur, *others], [out]))
        cur = out
    return make_model(nodes, {"x": (dtype, shape)}, [cur], inits)


def _consts(dtype: Any, n: int, c: int) -> dict[str, np.ndarray]:
    return {"row": rand((c,), dtype, 1), "col": rand((n, 1), dtype, 2), "s": np.array(0.3, dtype),
            "pos": rand((1, c), dtype, 3, 0.5, 2.0), "lo": np.array(-1.5, dtype), "hi": np.array(2.0, dtype)}


UNARY = [("Exp",), ("Tanh",), ("Sigmoid",), ("Erf",), ("Abs",), ("Sqrt",), ("Log",), ("Neg",)]
BROADCAST = [("Add", "row"), ("Mul", "col"), ("Sub", "s"), ("Div", "pos"), ("Add", "col"), ("Mul", "row")]
NAN_SELECT = [("Max", "row"), ("Relu",), ("Min", "col"), ("Clip", "lo", "hi"), ("Where", "s", "row"),
              ("Max", "s"), ("Sub", "col")]  # (Relu then Clip: onnxruntime's fusion of the two fails in float64)
MIXED = [("Add", "row"), ("Mul", "col"), ("Relu",), ("Sub", "s"), ("Tanh",), ("Mul", "row"), ("Add", "col"),
         ("Sigmoid",), ("Div", "pos"), ("Exp",), ("Neg",), ("Add", "col"), ("Abs",), ("Sqrt",), ("Mul", "s"),
         ("Erf",), ("Max", "row"), ("Min", "col"), ("Where", "s", "row"), ("Sub", "pos")]
CHAINS = {"unary": UNARY, "broadcast": BROADCAST, "nan_select": NAN_SELECT, "mixed": MIXED}


def _session(model: onnx.ModelProto, threads: int = 1) -> Any:
    so = jitort.SessionOptions()
    so.intra_op_num_threads = threads
    return jitort.InferenceSession(model.SerializeToString(), so)


def _kernel_of(sess: Any) -> tuple[str, Any]:
    """The (single) fused kernel of a session: its source and its @njit function."""
    (name, src), = sess.artifact.kernel_sources.items()
    mod = sys.modules[name]
    return src, getattr(mod, "_kernel", None) or getattr(mod, name)


def _fresh_llvm(disp: Any) -> str:
    """Optimised LLVM IR of a kernel, compiled again here (Numba cannot inspect code it loaded
    from its cache), with the flags the generated file uses."""
    fresh = njit(disp.signatures[0], nogil=True, error_model="numpy")(disp.py_func)
    return fresh.inspect_llvm(fresh.signatures[0])


@pytest.mark.parametrize("kind", list(CHAINS))
def test_generated_kernel_vectorises(kind: str) -> None:
    n, c = 8, 1000
    m = chain(CHAINS[kind], np.float32, [n, c], _consts(np.float32, n, c))
    sess = _session(m)
    src, disp = _kernel_of(sess)
    assert len(sess.artifact.kernel_sources) == 1 and "(flat)" in src
    llvm = _fresh_llvm(disp)
    loops = src.count("for j in range(m):")
    assert loops >= (3 if kind in ("unary", "mixed") else 1), src  # long chains run as stages
    assert len(re.findall(r"^vector\.body\d*:", llvm, re.M)) >= loops, "a stage loop did not vectorise"
    assert "masked.gather" not in llvm, "contiguous operands must load as vectors, not gathers"
    widths = {int(w) for w in re.findall(r"= f(?:add|sub|mul|div|cmp \w+) <(\d+) x float>", llvm)}
    assert widths and max(widths) >= 8, widths  # AVX2: 8 floats, AVX-512: 16
    if kind == "nan_select":  # NaN-aware max/min/relu/where are vector selects, not branches
        assert re.search(r"select <\d+ x i1> %[\w.]+, <\d+ x float>", llvm)
    x = rand((n, c), np.float32, 7)
    x.reshape(-1)[:SPECIAL.size] = SPECIAL
    assert_close(sess.run(None, {"x": x}), run_ort(m, {"x": x}), rtol=2e-5, atol=1e-6)


def test_scalars_and_rows_are_loaded_outside_the_inner_loop() -> None:
    n, c = 6, 300  # rows long enough to be the inner loop alone
    sess = _session(chain(BROADCAST, np.float32, [n, c], _consts(np.float32, n, c)))
    src, _ = _kernel_of(sess)
    inner = src.split("for j in range(m):", 1)[1]
    loads = re.findall(r"x\d+ = a\d+\[([^\]]*)\]", inner)
    assert loads and all("j" in ix for ix in loads), inner  # only per-element loads inside
    head = src.split("for j in range(m):", 1)[0]
    assert re.search(r"x\d+ = a\d+\[0\]", head) and re.search(r"x\d+ = a\d+\[i0\]", head), head


@pytest.mark.parametrize("kind,dtype,rtol,atol", [
    (kind, *tol) for kind in ("nan_select", "mixed")
    for tol in ((np.float32, 2e-5, 1e-6), (np.float64, 1e-12, 1e-13), (np.float16, 2e-3, 2e-3))
    if (kind, tol[0]) != ("mixed", np.float16)] + [
    pytest.param("mixed", np.float16, 2e-3, 2e-3, marks=pytest.mark.slow)])  # compiles for ~20-60 s
def test_chains_match_onnxruntime(kind: str, dtype: Any, rtol: float, atol: float) -> None:
    ops = CHAINS[kind]
    if dtype == np.float64:  # onnxruntime has no float64 Erf
        ops = [("Tanh",) if op == ("Erf",) else op for op in ops]
    # odd sizes: vector remainders, a partial last block; (3, 17) is one short-run kernel (float16
    # kernels compile slowly: a conversion pair per op)
    for n, c in ((3, 17), (5, 1029)) if dtype != np.float16 else ((5, 1029),):
        m = chain(ops, dtype, [n, c], _consts(dtype, n, c))
        x = rand((n, c), dtype, 11)
        x.reshape(-1)[:SPECIAL.size] = SPECIAL[: x.size].astype(dtype)
        assert_close(_session(m).run(None, {"x": x}), run_ort(m, {"x": x}), rtol=rtol, atol=atol)


@pytest.mark.parametrize("x_shape,other_shape", [
    ([2, 3, 5, 7], [7]), ([2, 3, 5, 7], [5, 1]), ([2, 3, 5, 7], [3, 1, 7]), ([2, 3, 5, 7], [1, 3, 1, 1]),
    ([2, 3, 5, 7], []), ([1, 1, 300], [300]), ([700], [1]), ([4, 1, 9], [4, 1, 9])])
def test_broadcast_forms(x_shape: list[int], other_shape: list[int]) -> None:
    other = rand(other_shape, np.float32, 5, 0.5, 2.0)
    ops = [("Mul", "w"), ("Tanh",), ("Add", "w"), ("Sigmoid",), ("Div", "w"), ("Exp",), ("Max", "w"), ("Erf",)]
    m = chain(ops, np.float32, x_shape, {"w": other})
    x = rand(x_shape, np.float32, 6)
    x.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, -0.0]
    assert_close(_session(m).run(None, {"x": x}), run_ort(m, {"x": x}), rtol=2e-5, atol=1e-6)


def test_multiple_outputs_and_values_carried_between_stages() -> None:
    # y = x + b is used after two fast-math stages (a buffer), t = tanh(y) is also an output
    nodes = [helper.make_node("Add", ["x", "b"], ["y"]), helper.make_node("Tanh", ["y"], ["t"]),
             helper.make_node("Exp", ["t"], ["e"]), helper.make_node("Erf", ["e"], ["f"]),
             helper.make_node("Mul", ["f", "y"], ["g"]), helper.make_node("Greater", ["g", "y"], ["k"]),
             helper.make_node("Sigmoid", ["g"], ["h"]), helper.make_node("Where", ["k", "h", "y"], ["z"])]
    m = make_model(nodes, {"x": (np.float32, [3, 333])}, ["t", "k", "z"], {"b": rand((333,), np.float32, 2)})
    x = rand((3, 333), np.float32, 3)
    x.reshape(-1)[:SPECIAL.size] = SPECIAL
    sess = _session(m)
    src, _ = _kernel_of(sess)
    assert "t0[j] = " in src, src  # values cross a stage boundary through a block buffer
    assert_close(sess.run(None, {"x": x}), run_ort(m, {"x": x}), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [[40, 3000], [70001]])
def test_parts_cover_the_output_bit_for_bit(shape: list[int]) -> None:
    """A kernel's parts (what ``run_split`` hands to threads) give the bits of the whole call."""
    inits = {"row": rand(shape[-1:], np.float32, 1), "s": np.array(0.3, np.float32)}
    m = chain([("Add", "row"), ("Tanh",), ("Mul", "s"), ("Exp",), ("Sub", "row"), ("Erf",)], np.float32, shape, inits)
    sess = _session(m)
    src, disp = _kernel_of(sess)
    assert "run_split" in src  # shape is large enough for the threaded form
    x = rand(shape, np.float32, 4)
    args = [x, inits["row"].reshape(shape[-1:]), inits["s"]]
    whole = np.empty(shape, np.float32)
    disp(*args, whole, 0, 1)
    for nparts in (2, 3, 7):
        out = np.full(shape, np.nan, np.float32)
        for p in range(nparts):
            disp(*args, out, p, nparts)
        np.testing.assert_array_equal(out, whole)
    np.testing.assert_array_equal(_session(m, threads=2).run(None, {"x": x})[0], whole)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], whole)


def test_short_rows_run_as_one_longer_inner_loop() -> None:
    """16-element rows under [N, 3, 8] with operands broadcast inside the rows: the inner loop runs
    over 3*8*16 elements, the small operands expanded to that run once per call."""
    inits = {"b1": rand((16,), np.float32, 1), "b2": rand((8, 1), np.float32, 2),
             "b3": rand((3, 1, 16), np.float32, 3), "s": np.array(0.5, np.float32)}
    ops = [("Add", "b1"), ("Tanh",), ("Mul", "b2"), ("Exp",), ("Sub", "b3"), ("Erf",), ("Max", "s"), ("Sigmoid",),
           ("Div", "b2")]
    m = chain(ops, np.float32, [5, 3, 8, 16], inits)
    sess = _session(m)
    src, disp = _kernel_of(sess)
    assert "n1 = s[1] * s[2] * s[3]" in src and "e1 = np.empty(n1" in src and "e3 = np.empty(n1" in src, src
    llvm = _fresh_llvm(disp)
    assert len(re.findall(r"^vector\.body\d*:", llvm, re.M)) >= src.count("for j in range(m):")
    x = rand((5, 3, 8, 16), np.float32, 4)
    x.reshape(-1)[:SPECIAL.size] = SPECIAL
    assert_close(sess.run(None, {"x": x}), run_ort(m, {"x": x}), rtol=2e-5, atol=1e-6)


def test_run_split_runs_every_part_once_and_reraises(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from jitort.kernels import parallel
    monkeypatch.setattr(parallel, "thread_count", lambda: 4)
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def fn(tag: str, part: int, nparts: int) -> None:
        with lock:
            seen.append((part, nparts))
    for _ in range(50):
        seen.clear()
        parallel.run_split(fn, ("x",), 3)
        assert sorted(seen) == [(0, 3), (1, 3), (2, 3)]

    def boom(part: int, nparts: int) -> None:
        if part == nparts - 1:
            raise ValueError("part failed")
    with pytest.raises(ValueError, match="part failed"):
        parallel.run_split(boom, (), 2)


_TARGET_PROBE = """
import re, numpy as np, llvmlite.binding as ll, numba, jitort
from numba import njit
@njit(fastmath={"contract"})
def scale(x, y):
    for i in range(x.shape[0]):
        y[i] = x[i] * np.float32(1.5) + np.float32(0.25)
x = np.ones(64, np.float32); scale(x, x.copy())
asm = list(scale.inspect_asm().values())[0]
print(numba.config.CPU_FEATURES or "", "+avx512f" in ll.get_host_cpu_features().flatten().split(","),
      len(re.findall("zmm", asm)), sep="|")
"""


def test_numba_target_prefers_512_bit_vectors_on_avx512_hosts(tmp_path):
    """jitort sets Numba's features to the host's plus -prefer-256-bit on an AVX-512 host (before
    anything compiles), so loops LLVM vectorises use zmm; a NUMBA_CPU_FEATURES of the user's is
    kept as it is. On an AVX2 host nothing changes."""
    import os
    import subprocess
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)

    def probe(extra: dict[str, str]) -> tuple[str, bool, int]:
        out = subprocess.run([sys.executable, "-c", _TARGET_PROBE], env={**env, **extra}, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        feats, avx512, zmm = out.split("|")
        return feats, avx512 == "True", int(zmm)

    feats, avx512, zmm = probe({})
    if avx512:
        assert feats.endswith(",-prefer-256-bit") and "+avx512f" in feats.split(",") and zmm > 0
    else:
        assert feats == "" and zmm == 0
    mine = "+64bit,+avx,+avx2,+fma,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+cmov"
    feats, _, zmm = probe({"NUMBA_CPU_FEATURES": mine})
    assert feats == mine and zmm == 0
