"""Golden tests of generated source: the plan (and kernel) text of six small graphs, compared with
the files in ``tests/golden/`` so that an emitter change shows up as a readable diff.

After an intended change to the generated text, rewrite the golden files and review the diff:

    JITORT_UPDATE_GOLDEN=1 pytest tests/test_golden_codegen.py
    git diff tests/golden/

Plans are golden per case (``<case>.plan.py``, plus ``<case>.sub<k>.plan.py`` per If branch);
fused kernel text is golden apart (``<case>.kernels.py``), as kernel emitters change on their own.
The text is made independent of the library version: content-hashed kernel names become
``k_<1>``, ``k_<2>``... in order of first appearance (``cuk_<n>`` for CUDA kernels) and the
``# jitort library <hash>`` line loses its hash. Nothing else in the text varies from run to run;
``test_emission_is_deterministic`` checks that.

The graphs: an elementwise chain (one fused kernel), Conv + Relu (the conv epilogue), MatMul + Add,
an If with a branch per subgraph plan, elementwise ops whose broadcast is resolved at run time, and a
graph partitioned across CUDA and CPU (CUDA plan; no GPU needed to emit it).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from jitort.codegen.emit import emit, lower
from jitort.codegen.linemap import parse_line_map
from jitort.codegen.plan import TERMINATE_CHECK, Emitted
from jitort.compiler import optimize
from jitort.kernels.control import SubPlan
from jitort.frontend.importer import import_model
from oracle import make_model

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("JITORT_UPDATE_GOLDEN") == "1"
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
F = np.float32


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def elementwise_chain() -> onnx.ModelProto:
    r = _rng()
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="add"),
             helper.make_node("Mul", ["a", "s"], ["m"], name="mul"),
             helper.make_node("Relu", ["m"], ["r"], name="relu"),
             helper.make_node("Tanh", ["r"], ["y"], name="tanh")]
    return make_model(nodes, {"x": (F, ["N", 4])}, {"y": (F, ["N", 4])},
                      {"b": r.standard_normal(4).astype(F), "s": r.standard_normal((1, 4)).astype(F)})


def conv_relu() -> onnx.ModelProto:
    r = _rng()
    nodes = [helper.make_node("Conv", ["x", "w", "bias"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return make_model(nodes, {"x": (F, [1, 2, 5, 5])}, {"y": (F, [1, 3, 5, 5])},
                      {"w": r.standard_normal((3, 2, 3, 3)).astype(F), "bias": r.standard_normal(3).astype(F)})


def matmul_add() -> onnx.ModelProto:
    r = _rng()
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "b"], ["y"], name="add")]
    return make_model(nodes, {"x": (F, [2, 3])}, {"y": (F, [2, 4])},
                      {"w": r.standard_normal((3, 4)).astype(F), "b": r.standard_normal(4).astype(F)})


def if_branches() -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    then = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["t"], name="then_sigmoid")], "then", [],
                             [vi("t", TensorProto.FLOAT, [3])])
    els = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="else_neg")], "else", [],
                            [vi("e", TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=els)]
    return make_model(nodes, {"c": (np.bool_, []), "x": (F, [3])}, {"y": (F, [3])})


def runtime_broadcast() -> onnx.ModelProto:
    """An operand whose broadcast is known only at run time (x has no shape): a "strided" kernel,
    the plan broadcasting at run time, a one-element constant passed as it is. (One fused kernel per
    plan: kernel placeholders are numbered in order of appearance, and import lines are sorted by
    the real, library-dependent names.)"""
    nodes = [helper.make_node("Relu", ["x"], ["m"], name="relu"),
             helper.make_node("Mul", ["m", "k"], ["w"], name="scale")]
    return make_model(nodes, {"x": (F, None)}, {"w": (F, ["A", "B"])}, {"k": np.array(3, F)})


def cuda_partitioned() -> onnx.ModelProto:
    """MatMul, a fused Add + Relu and Softmax on CUDA; CumSum (no CUDA kernel) on the CPU, with copies."""
    r = _rng()
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "b"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("CumSum", ["r", "axis"], ["cs"], name="cumsum"),
             helper.make_node("Softmax", ["cs"], ["y"], name="softmax", axis=-1)]
    return make_model(nodes, {"x": (F, [2, 4])}, {"y": (F, [2, 4])},
                      {"w": r.standard_normal((4, 4)).astype(F), "b": r.standard_normal(4).astype(F),
                       "axis": np.array(1, np.int64)})


CASES: dict[str, tuple[Callable[[], onnx.ModelProto], list[str]]] = {
    "elementwise_chain": (elementwise_chain, [CPU]),
    "conv_relu": (conv_relu, [CPU]),
    "matmul_add": (matmul_add, [CPU]),
    "if_branches": (if_branches, [CPU]),
    "runtime_broadcast": (runtime_broadcast, [CPU]),
    "cuda_partitioned": (cuda_partitioned, [CUDA, CPU]),
}


def _emitted(case: str) -> Emitted:
    build, providers = CASES[case]
    g = optimize(import_model(build()), providers)
    return emit(g, lower(g), case)


class _Normaliser:
    """Content-hashed names -> stable placeholders, numbered in order of first appearance."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        def name(m: re.Match[str]) -> str:
            prefix = m.group(1)
            key = m.group(0)
            if key not in self.names:
                self.names[key] = f"{prefix}_<{1 + sum(1 for v in self.names.values() if v.startswith(prefix + '_'))}>"
            return self.names[key]
        text = re.sub(r"\b(cuk|k)_[0-9a-f]{20}\b", name, text)
        return re.sub(r"# jitort library [0-9a-f]{16}", "# jitort library <hash>", text)


def _subplans(consts: dict[str, Any]) -> list[Any]:
    """The compiled If/Loop/Scan bodies a plan binds (``jitort.kernels.control.SubPlan``), in
    constant order (the plan's ``c<k> = consts[...]`` lines name the attribute each one is)."""
    return [v.compiled for v in consts.values() if isinstance(v, SubPlan)]


def _files(case: str) -> dict[str, str]:
    e = _emitted(case)
    norm = _Normaliser()
    files = {f"{case}.plan.py": norm(e.source)}
    kernel_sources = dict(e.kernel_sources)
    for k, compiled in enumerate(_subplans(e.consts)):
        files[f"{case}.sub{k}.plan.py"] = norm(compiled.plan_source)
        kernel_sources.update(compiled.kernel_sources)
    kernels = [norm(src) for src in kernel_sources.values()]
    if kernels:
        files[f"{case}.kernels.py"] = "\n# ---- next kernel module ----\n".join(kernels)
    return files


@pytest.mark.parametrize("case", list(CASES))
def test_generated_source_matches_golden(case: str) -> None:
    files = _files(case)
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        for old in GOLDEN.glob(f"{case}.*"):
            old.unlink()
        for name, text in files.items():
            (GOLDEN / name).write_text(text)
    have = sorted(p.name for p in GOLDEN.glob(f"{case}.*"))
    assert have == sorted(files), f"golden files differ for {case}: rerun with JITORT_UPDATE_GOLDEN=1 and review"
    for name, text in files.items():
        want = (GOLDEN / name).read_text()
        assert text == want, (f"{name} differs from tests/golden/{name}; if intended, rerun with "
                              "JITORT_UPDATE_GOLDEN=1 and review the diff")


def test_emission_is_deterministic() -> None:
    """Emitting the same graph twice gives the same text, kernel hashes included (the golden files,
    compared in every test process, check it across processes and hash seeds)."""
    for case in ("conv_relu", "cuda_partitioned"):
        a, b = _emitted(case), _emitted(case)
        assert a.source == b.source and a.kernel_sources == b.kernel_sources


@pytest.mark.parametrize("case", list(CASES))
def test_line_map_points_at_each_steps_comment(case: str) -> None:
    """Each map entry starts at its step's comment, which names the same node; between two steps
    there is only the terminate check, so every line a step runs belongs to it."""
    e = _emitted(case)
    lines = e.source.splitlines()
    build, providers = CASES[case]
    g = optimize(import_model(build()), providers)
    assert len(e.line_map) == len(g.nodes)
    for prev, cur in zip(e.line_map, e.line_map[1:]):
        assert [ln.strip() for ln in lines[prev.last:cur.first - 1]] == [TERMINATE_CHECK]
    for entry, n in zip(e.line_map, g.nodes):
        comment = lines[entry.first - 1].strip()
        if entry.op == "fused elementwise":
            assert comment.startswith(f"# {len(n.attrs['body'])} fused: {entry.name}")
        else:
            assert comment.startswith(f"# {entry.op} {entry.name}") and entry.name == n.name
    assert parse_line_map(e.source) == e.line_map  # the map in the source is the emitter's
