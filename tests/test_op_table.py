"""The op table (jitort.kernels.registry): one registration per op and opset range states the op's
facts and its providers' kernels; the passes read them from there.

* Attribute defaults a library function retypes equal the ONNX schema's at every opset the
  registration serves (the importer fills schema defaults, so a differing one would only ever show
  when a kernel is called directly — and would then be wrong).
* Every registered op has a test (its name quoted in a file under tests/) or a passing case in the
  conformance report (docs/conformance.md, written by ``jitort conformance``).
* The facts: random ops, warm-up policy, what constant folding may fold, host inputs, the CUDA
  registrations' opset ranges, the compute-dtype policy applied by the decorator.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from jitort.conformance import passing_ops
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node, TensorType, Value
from jitort.kernels import registry
from jitort.kernels.cuda.ops import CUDA, cuda_op, supports
from jitort.passes.const_fold import fold_constants

ROOT = Path(__file__).resolve().parent.parent

# Python defaults that differ from the schema's on purpose, with the reason.
DIFFERENT_DEFAULTS = {
    ("", "GRU", "direction"): "GRU-1's schema default is the misspelt 'foward'; the kernel accepts both spellings",
}


def _schemas() -> dict[tuple[str, str], list[Any]]:
    out: dict[tuple[str, str], list[Any]] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        out.setdefault((s.domain, s.name), []).append(s)
    for v in out.values():
        v.sort(key=lambda s: s.since_version)
    return out


def _served(schemas: list[Any], lo: int, hi: int) -> list[Any]:
    """The schema versions in force somewhere in opsets [lo, hi)."""
    out = []
    for k, s in enumerate(schemas):
        end = schemas[k + 1].since_version if k + 1 < len(schemas) else 1 << 30
        if s.since_version < hi and end > lo:
            out.append(s)
    return out


def _value(a: onnx.AttributeProto) -> Any:
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [x.decode() if isinstance(x, bytes) else x for x in v]
    return v


def _same(py: Any, schema: Any) -> bool:
    if isinstance(schema, float):  # schema floats are float32
        return isinstance(py, (int, float)) and np.float32(py) == np.float32(schema)
    if isinstance(schema, list):
        try:
            return [np.float32(a) if isinstance(b, float) else a for a, b in zip(py, schema)] == \
                [np.float32(b) if isinstance(b, float) else b for b in schema] and len(py) == len(schema)
        except TypeError:
            return False
    return bool(py == schema)


def test_retyped_defaults_equal_schema_defaults() -> None:
    schemas = _schemas()
    by_op: dict[tuple[str, str], list[registry.OpDef]] = {}
    for d in registry.registrations():
        by_op.setdefault((d.domain, d.op_type), []).append(d)
    checked, bad = 0, []
    for (dom, op), defs in by_op.items():
        for k, d in enumerate(defs):
            if d.fn is None:
                continue
            hi = defs[k + 1].since if k + 1 < len(defs) else 1 << 30
            served = _served(schemas.get((dom, op), []), d.since, hi)
            for p in inspect.signature(d.fn).parameters.values():
                # None is "not given" (the importer always fills a schema default); _names are jitort's
                if p.kind != p.KEYWORD_ONLY or p.name.startswith("_") or p.default in (inspect.Parameter.empty, None):
                    continue
                if (dom, op, p.name) in DIFFERENT_DEFAULTS:
                    continue
                for s in served:
                    a = s.attributes.get(p.name)
                    if a is None or not a.default_value.name:
                        continue
                    checked += 1
                    if not _same(p.default, _value(a.default_value)):
                        bad.append(f"{dom or 'ai.onnx'}::{op} (registered since {d.since}, schema "
                                   f"{s.since_version}): {p.name}={p.default!r}, schema {_value(a.default_value)!r}")
    assert checked > 300  # the comparison ran over the library's retyped defaults
    assert not bad, "\n".join(bad)


def _label(domain: str, op: str) -> str:
    return f"{domain}::{op}" if domain else op


def test_every_registered_op_has_a_test_or_a_passing_conformance_case() -> None:
    passing = passing_ops((ROOT / "docs" / "conformance.md").read_text())
    assert len(passing) > 150  # the report's per-op table was read
    me = Path(__file__).name
    text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("*.py") if p.name != me)
    ops = sorted({(d.domain, d.op_type) for d in registry.registrations()})
    missing = [_label(dom, op) for dom, op in ops
               if _label(dom, op) not in passing and not re.search(r"[\"']%s[\"']" % re.escape(op), text)]
    assert not missing, f"registered ops with neither a test nor a passing conformance case: {missing}"


def test_passing_ops_reads_the_per_op_table() -> None:
    md = ("# ONNX conformance\n\n| cases | pass | mismatch | not implemented | error | total |\n"
          "|---|---|---|---|---|---|\n| node | 3 | 0 | 1 | 0 | 4 |\n\n## Per op\n\n"
          "| op | pass | mismatch | not implemented | error |\n|---|---|---|---|---|\n"
          "| Abs | 1 | 0 | 0 | 0 |\n| ai.onnx.ml::Binarizer | 2 | 0 | 0 | 0 |\n| Foo | 0 | 0 | 1 | 0 |\n\n"
          "## Not implemented (1)\n\n| case | op | reason |\n|---|---|---|\n| test_foo | Foo | x |\n")
    assert passing_ops(md) == {"Abs", "ai.onnx.ml::Binarizer"}


# --- the facts -------------------------------------------------------------------------------------

RANDOM = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial")


def test_random_ops() -> None:
    assert all(registry.is_random(op) for op in RANDOM)
    assert registry.is_random("RandomUniform", "ai.onnx")
    assert not any(registry.is_random(op) for op in ("Add", "Dropout", "Loop", "MatMul", "SequenceEmpty"))
    random = {d.op_type for d in registry.registrations() if d.random}
    assert random == set(RANDOM)


def test_warmup_policy() -> None:
    for op in RANDOM:
        assert not registry.warmup_safe(op, "", ["x"], set())
    assert not registry.warmup_safe("Loop", "", ["M", "cond"], {"M", "cond"})  # may not terminate
    assert not registry.warmup_safe("Dropout", "", ["x", "r", "t"], {"r"})  # run-time training_mode
    assert registry.warmup_safe("Dropout", "", ["x", "r", "t"], {"r", "t"})
    assert registry.warmup_safe("Dropout", "", ["x"], set())
    assert registry.warmup_safe("Conv", "", ["x", "w"], {"w"})
    assert registry.warmup_safe("NotAnOp", "", [], set())


def _graph(op: str, inputs: dict[str, np.ndarray], n_out: int = 1, version: int = 17,
           **attrs: Any) -> Graph:
    vals = {k: Value(k, TensorType(v.dtype, v.shape), v) for k, v in inputs.items()}
    outs = [f"y{k}" for k in range(n_out)]
    for o in outs:
        vals[o] = Value(o, TensorType(None, None))
    return Graph([Node(op, list(inputs), outs, attrs, "n", "", version)], [], outs, vals)


@pytest.mark.parametrize("op,ins,attrs,version", [
    ("RandomUniformLike", {"x": np.zeros(3, np.float32)}, {}, 17),
    ("Bernoulli", {"x": np.full(3, 0.5, np.float32)}, {}, 17),
    ("SequenceConstruct", {"a": np.zeros(2, np.float32)}, {}, 17),
    ("SplitToSequence", {"a": np.zeros(4, np.float32)}, {"axis": 0, "keepdims": 1}, 17),
])
def test_const_fold_keeps_random_and_sequence_ops(op: str, ins: dict, attrs: dict, version: int) -> None:
    def evaluate(n: Node, g: Graph) -> list[np.ndarray]:
        raise AssertionError(f"{n.op_type} must not be folded")
    g = fold_constants(_graph(op, ins, version=version, **attrs), evaluate)
    assert [n.op_type for n in g.nodes] == [op]


def test_const_fold_folds_pure_ops() -> None:
    g = fold_constants(_graph("Neg", {"x": np.ones(3, np.float32)}), lambda n, g: [-g.const(n.inputs[0])])
    assert not g.nodes and g.const("y0").tolist() == [-1.0, -1.0, -1.0]


def test_host_inputs_are_op_facts() -> None:
    for op, version, want in [("Reshape", 5, (1,)), ("Slice", 10, (1, 2, 3, 4)), ("Expand", 8, (1,)),
                              ("ReduceSum", 13, (1,)), ("ReduceMean", 18, (1,)), ("ReduceMean", 13, ()),
                              ("Squeeze", 13, (1,)), ("Squeeze", 11, ()), ("MatMul", 13, ())]:
        d = registry.find(op, "", version)
        assert d is not None and d.host_inputs == want, (op, version)
    for op in ("Shape", "Size"):
        d = registry.find(op, "", 17)
        assert d is not None and d.meta_inputs == (0,) and d.host_outputs


def test_cuda_registrations_follow_the_cpu_opset_ranges() -> None:
    impls = registry.provider_registrations(CUDA)
    assert len(impls) > 30
    for impl in impls:
        d = registry.find(impl.op_type, impl.domain, impl.since)
        assert d is not None and d.since <= impl.since, impl
    # A CUDA registration never serves an opset a later CPU registration took over.
    for d in registry.registrations():
        node = Node(d.op_type, [], [], {}, "n", d.domain, d.since)
        found = registry.provider_impl(CUDA, node)
        assert found is None or found[1].since >= d.since, (d.op_type, d.since)


def _node_at(op: str, version: int, **attrs: Any) -> tuple[Node, Graph]:
    x = Value("x", TensorType(np.dtype(np.float32), (2, 3, 4, 5)))
    vals = {"x": x, "y": Value("y", TensorType(np.dtype(np.float32), (2, 3, 4, 5)))}
    return Node(op, ["x"], ["y"], attrs, "n", "", version), Graph([], ["x"], ["y"], vals)


def test_cuda_opset_ranges_replace_version_tests() -> None:
    n5, g = _node_at("BatchNormalization", 5)
    assert cuda_op(n5) is None and "at opset 5" in (supports(n5, g) or "")
    assert cuda_op(_node_at("BatchNormalization", 15)[0]) is not None
    # Softmax-11 normalises the input coerced to 2-D at any axis; Softmax-13 one axis (the last only).
    n11, g = _node_at("Softmax", 11, axis=1)
    n13, _ = _node_at("Softmax", 13, axis=1)
    assert supports(n11, g) is None
    assert "not the last axis" in (supports(n13, g) or "")
    assert cuda_op(n11).lower is not cuda_op(n13).lower  # type: ignore[union-attr]
    assert cuda_op(_node_at("Slice", 9)[0]).host_inputs == ()  # type: ignore[union-attr]
    assert cuda_op(_node_at("Slice", 13)[0]).host_inputs == (1, 2, 3, 4)  # type: ignore[union-attr]


def test_compute_policy() -> None:
    f = registry.FLOAT
    assert f(np.float16, "X") == np.float32 and f(np.float64, "X") == np.float64
    assert f(registry.BFLOAT16, "X") == np.float32
    with pytest.raises(OrtNotImplemented, match="DeformConv: jitort does not support input dtype int32"):
        f(np.int32, "DeformConv")
    assert registry.FLOAT_OR_INT8(np.uint8, "MaxPool") == np.uint8
    with pytest.raises(TypeError, match="_compute"):
        registry.op("NoComputeParam", domain="test.optable", compute=registry.FLOAT)(lambda x: x)


def test_compute_policy_is_applied_by_the_decorator() -> None:
    node = Node("DeformConv", ["x"], ["y"], {}, "n", "", 19)
    assert registry.compute_dtype_for(node, np.float16) == np.float32
    fn = registry.lookup("DeformConv", "", 19).fn
    assert fn is not None
    # the policy refuses the dtype before the body looks at shapes (these would be InvalidArgument)
    x = np.zeros((1, 1, 2, 2), np.int32)
    with pytest.raises(OrtNotImplemented, match="DeformConv"):
        fn(x, x, x, group=1, offset_group=1)
    seen: dict[str, Any] = {}

    def body(x: np.ndarray, *, _compute: np.dtype) -> np.ndarray:
        seen["dt"] = _compute
        return x
    wrapped = registry.apply_compute(body, registry.FLOAT, "Body")
    wrapped(np.zeros(2, np.float16))
    assert seen["dt"] == np.float32
    wrapped(np.zeros(2, np.float16), _compute=np.dtype(np.float64))  # a lowering's choice wins
    assert seen["dt"] == np.float64
