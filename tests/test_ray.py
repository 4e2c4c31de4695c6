"""Batch inference on Ray Data (issue 19): ``jitort.ray.Predictor`` in ``map_batches`` and
``jitort.ray.predict``, with the model compiled once and every worker loading the artifact.

One local Ray instance (``ray.init(num_cpus=2)``) serves the module; its workers' JITORT_CACHE_DIR
is a directory that is empty when Ray starts, so what they load can only come from the shipped
artifact. The model is zoo's token-level BERT (three int64 input columns, dynamic batch and
sequence); every output is compared with onnxruntime's, row by row.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import ray  # the test extra installs ray[data]
from onnx import TensorProto, helper

import jitort.ray as jr
from jitort import aot, archive, cache
from jitort.errors import Fail, InvalidProtobuf, NoSuchFile
from jitort.zoo import bert_encoder

ROWS, SEQ, VOCAB = 512, 16, 30
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


# --- data, model, oracle -------------------------------------------------------------------------

def _columns() -> dict[str, np.ndarray]:
    """Token ids over the whole vocabulary, two segments, padding in the mask; ``row`` numbers the rows."""
    rng = np.random.default_rng(19)
    types = np.zeros((ROWS, SEQ), np.int64)
    types[:, SEQ // 2:] = 1
    mask = np.ones((ROWS, SEQ), np.int64)
    mask[::3, -rng.integers(1, SEQ // 2):] = 0
    return {"input_ids": rng.integers(0, VOCAB, (ROWS, SEQ)).astype(np.int64), "token_type_ids": types,
            "attention_mask": mask, "row": np.arange(ROWS)}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "bert.onnx"
    onnx.save(bert_encoder(seed=19), str(path))
    return path


@pytest.fixture(scope="module")
def artifact_dir(model_file, tmp_path_factory) -> Path:
    """What ``jitort compile bert.onnx -o DIR --input-shape input_ids=2x16`` writes."""
    art = tmp_path_factory.mktemp("artifact") / "art"
    aot.compile_artifact(str(model_file), str(art), input_shapes={"input_ids": [2, SEQ]}, quiet=True)
    return art


@pytest.fixture(scope="module")
def expected(model_file) -> np.ndarray:
    cols = _columns()
    sess = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {k: cols[k] for k in INPUTS})
    return out


def _output_name(model_file: Path) -> str:
    return onnx.load(str(model_file)).graph.output[0].name


def _assert_rows_match(rows: list[dict], column: str, expected: np.ndarray) -> None:
    """Every row present once, each equal to onnxruntime's output for that row."""
    assert sorted(int(r["row"]) for r in rows) == list(range(ROWS))
    for r in rows:
        np.testing.assert_allclose(r[column], expected[int(r["row"])], rtol=1e-4, atol=1e-5,
                                   err_msg=f"row {int(r['row'])}")


# --- the Ray instance ------------------------------------------------------------------------------

class Reporting(jr.Predictor):
    """jitort's Predictor, adding per row what its worker did: pid, JITORT_CACHE_DIR, what the
    session compiled when it was created and what was compiled while running batches."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._mark = cache.compile_count()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().__call__(batch)
        n = len(out["row"])
        report = {"pid": os.getpid(), "cache_dir": os.environ.get("JITORT_CACHE_DIR", ""),
                  "loaded_from": self.session.compile_report["loaded_from"],
                  "compiled_at_load": self.session.compile_report["compiled"],
                  "compiled_running": [f for f, _ in cache.compiled_since(self._mark)],
                  "threads": self.session.get_session_options().intra_op_num_threads}
        out["worker"] = np.array([json.dumps(report)] * n)
        return out


@pytest.fixture(scope="module")
def workers_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workers-cache")


@pytest.fixture(scope="module")
def ray_local(workers_cache):
    """A local Ray instance for the module; its workers' jitort cache starts empty."""
    assert not any(workers_cache.iterdir())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"JITORT_CACHE_DIR": str(workers_cache)}})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Reporting, for the workers
    try:
        yield
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()


def _dataset(renamed: dict[str, str] | None = None):
    """The rows as a materialized dataset (no operator before the model's: with two actors holding
    both CPUs, an upstream task such as ``rename_columns`` would wait for a CPU forever)."""
    cols = {(renamed or {}).get(k, k): v for k, v in _columns().items()}
    return ray.data.from_items([{k: v[i] for k, v in cols.items()} for i in range(ROWS)], override_num_blocks=8)


def _reports(rows: list[dict]) -> list[dict]:
    return list({r["worker"]: json.loads(r["worker"]) for r in rows}.values())


def _assert_nothing_compiled(reports: list[dict], workers_cache: Path) -> None:
    assert reports
    for rep in reports:
        assert rep["cache_dir"] == str(workers_cache) != os.environ["JITORT_CACHE_DIR"], rep
        assert rep["loaded_from"], rep
        assert rep["compiled_at_load"] == [] and rep["compiled_running"] == [], rep


# --- on Ray --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_predict_compiles_once_and_every_worker_loads(ray_local, workers_cache, model_file, expected,
                                                      monkeypatch) -> None:
    """``predict`` compiles on the driver, ships the artifact through the object store, and two
    actors whose cache directory started empty load it without compiling anything; the thread
    budget is the actors' num_cpus."""
    monkeypatch.setattr(jr, "Predictor", Reporting)
    ds = jr.predict(_dataset(), str(model_file), batch_size=64, concurrency=2, num_cpus=1)
    rows = ds.take_all()
    out = _output_name(model_file)
    assert set(rows[0]) == {*INPUTS, "row", out, "worker"}
    _assert_rows_match(rows, out, expected)
    reports = _reports(rows)
    _assert_nothing_compiled(reports, workers_cache)
    assert {rep["threads"] for rep in reports} == {1}
    shipped = [rep["loaded_from"] for rep in reports]
    assert all(Path(p).parent == workers_cache / "shipped" for p in shipped), shipped  # not the driver's disk


@pytest.mark.slow
def test_predictor_from_an_artifact_with_renamed_columns(ray_local, tmp_path, model_file, artifact_dir,
                                                         expected) -> None:
    """``Predictor`` on a ``jitort compile`` artifact in a plain ``map_batches``: columns renamed both
    ways; workers with an empty cache of their own load everything from the artifact."""
    own_cache = tmp_path / "actors-cache"
    own_cache.mkdir()
    out = _output_name(model_file)
    rows = _dataset({"input_ids": "tokens"}).map_batches(Reporting, fn_constructor_kwargs={
        "model": str(artifact_dir), "input_columns": {"input_ids": "tokens"}, "output_columns": {out: "embedding"},
        "threads": 1}, batch_size=100, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1,
        batch_format="numpy", runtime_env={"env_vars": {"JITORT_CACHE_DIR": str(own_cache)}}).take_all()
    assert set(rows[0]) == {"tokens", "token_type_ids", "attention_mask", "row", "embedding", "worker"}
    _assert_rows_match(rows, "embedding", expected)
    _assert_nothing_compiled(_reports(rows), own_cache)


@pytest.mark.slow
def test_a_worker_on_another_cpu_compiles_and_says_so(ray_local, tmp_path, artifact_dir, model_file, expected,
                                                      caplog) -> None:
    """An artifact whose manifest names another CPU is a safe miss: the Predictor compiles (or
    takes the model from its cache), logs why it did not use the shipped artifact, and is right."""
    other = tmp_path / "other-cpu"
    shutil.copytree(artifact_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["cpu"] = {"cpu_name": "some-other-cpu", "cpu_features": "0" * 16}
    (other / "manifest.json").write_text(json.dumps(manifest))
    data = archive.pack(other)
    shipped = jr._Shipped(ray.put(data), hashlib.sha256(data).hexdigest(), "bert-for-another-cpu")
    with pytest.warns(RuntimeWarning, match="built for CPU some-other-cpu"):
        p = jr.Predictor(shipped, threads=1)
    warning = [r.getMessage() for r in caplog.records if r.name == "jitort.ray"]
    assert len(warning) == 1 and "did not use the artifact shipped for bert-for-another-cpu" in warning[0] \
        and "some-other-cpu" in warning[0], warning
    cols = _columns()
    out = p({k: cols[k][:7] for k in INPUTS})[_output_name(model_file)]
    np.testing.assert_allclose(out, expected[:7], rtol=1e-4, atol=1e-5)


def test_predict_refuses_before_any_batch_runs(ray_local, tmp_path, model_file) -> None:
    """A missing column, a column mapping to no input, and models that cannot load fail in
    ``predict`` itself (no dataset comes back to execute), naming the column or the model."""
    ds = _dataset({"token_type_ids": "segments"})
    with pytest.raises(ValueError, match=r"model .*bert\.onnx: the dataset has no column\(s\) \['token_type_ids'\]"):
        jr.predict(ds, str(model_file))
    with pytest.raises(ValueError, match=r"input_columns names \['segment_ids'\], which the model does not have"):
        jr.predict(_dataset(), str(model_file), input_columns={"segment_ids": "token_type_ids"})
    with pytest.raises(ValueError, match=r"no column\(s\) \['ids'\] \(for input\(s\) \{'input_ids': 'ids'\}\)"):
        jr.predict(_dataset(), str(model_file), input_columns={"input_ids": "ids"})
    with pytest.raises(NoSuchFile, match="missing.onnx: no such file"):
        jr.predict(_dataset(), str(tmp_path / "missing.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"this is not a model")
    with pytest.raises(Fail, match=re.escape(f"cannot read the model {tmp_path / 'junk.onnx'}")):
        jr.predict(_dataset(), str(tmp_path / "junk.onnx"))
    with pytest.raises(Fail, match=r"cannot read the model <model bytes, 19 B>"):
        jr.predict(_dataset(), b"this is not a model")
    with pytest.raises(Fail, match=r"jitort artifact"):
        jr.predict(_dataset(), str(tmp_path))  # a directory, but no artifact


@pytest.mark.slow
def test_predict_refuses_a_model_that_does_not_compile(ray_local, tmp_path) -> None:
    g = helper.make_graph([helper.make_node("NoSuchOp", ["input_ids"], ["y"], domain="com.example")], "bad",
                          [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", SEQ])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", SEQ])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(Fail, match=re.escape(f"cannot compile the model {tmp_path / 'bad.onnx'}: ") + ".*NoSuchOp"):
        jr.predict(_dataset(), str(tmp_path / "bad.onnx"))


# --- Predictor in this process -------------------------------------------------------------------

def test_predictor_checks_its_columns(model_file, expected) -> None:
    p = jr.Predictor(model_file.read_bytes(), threads=1)
    cols = _columns()
    batch = {k: cols[k][:5] for k in (*INPUTS, "row")}
    out = p(batch)
    assert set(out) == {*INPUTS, "row", _output_name(model_file)} and p.session.get_inputs()[0].name == "input_ids"
    np.testing.assert_allclose(out[_output_name(model_file)], expected[:5], rtol=1e-4, atol=1e-5)
    del batch["attention_mask"]
    with pytest.raises(ValueError, match=r"model <model bytes, \d+ B>: the batch has no column\(s\) "
                                         r"\['attention_mask'\] \(for input\(s\) \{'attention_mask'"):
        p(batch)
    with pytest.raises(ValueError, match=r"output_columns names \['logits'\], which the model does not have"):
        jr.Predictor(model_file.read_bytes(), output_columns={"logits": "y"})
    with pytest.raises(ValueError, match="threads must be a positive int"):
        jr.Predictor(model_file.read_bytes(), threads=0)
    with pytest.raises(InvalidProtobuf):
        jr.Predictor(b"this is not a model")
