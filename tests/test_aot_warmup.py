"""`jitort compile` on models whose integer inputs are indices (issue 22): the warm-up never depends
on input values, `--input` samples are used when given, and a compile that cannot produce an
artifact leaves nothing behind and says why in one line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from jitort import zoo
from jitort.zoo import bert_encoder

pytestmark = pytest.mark.slow

VOCAB, POSITIONS, HIDDEN = 30, 32, 32  # zoo.bert_encoder's defaults


def gpt_decoder(seed: int = 0) -> onnx.ModelProto:
    """Token and position embeddings (positions an int64 input), zoo's GPT block, a final LayerNorm
    and the LM head (MatMul to vocabulary logits)."""
    b = zoo._Builder(seed)
    b.count = 10_000
    emb = b.op("Add", [b.op("Gather", [b.weight([VOCAB, HIDDEN], "wte", 0.5), "input_ids"], axis=0),
                       b.op("Gather", [b.weight([POSITIONS, HIDDEN], "wpe", 0.5), "position_ids"], axis=0)])
    m = zoo.prepend(zoo.gpt_block(hidden=HIDDEN, heads=2, max_positions=POSITIONS, seed=seed), "input_embeds",
                    [zoo.token_ids("input_ids"), zoo.token_ids("position_ids")], b, emb)
    head = zoo._Builder(seed + 1)
    head.count = 20_000
    g = m.graph
    logits = head.op("MatMul", [head.layernorm(g.output[0].name, HIDDEN), head.weight([HIDDEN, VOCAB], "lm_head")])
    g.node.extend(head.nodes)
    g.initializer.extend(head.inits)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", "sequence", VOCAB]))
    onnx.checker.check_model(m)
    return m


# --- helpers -------------------------------------------------------------------------------------------

LOAD = textwrap.dedent("""
    import json, sys, numpy as np, jitort
    from jitort import cache
    art, feeds_file, out_file = sys.argv[1:4]
    s = jitort.InferenceSession(art)
    with np.load(feeds_file) as f:
        feeds = {i.name: f[i.name] for i in s.get_inputs()}
    mark = cache.compile_count()
    outs = s.run(None, feeds)
    np.savez(out_file, *outs)
    r = s.compile_report
    print(json.dumps({"created_compiled": len(r["compiled"]), "loaded_from": r["loaded_from"],
                      "run_compiled": [n for n, _ in cache.compiled_since(mark)]}))
""")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name, build in (("bert", bert_encoder), ("gpt", gpt_decoder)):
        out[name] = d / f"{name}.onnx"
        onnx.save(build(seed=3), str(out[name]))
    return out


def _feeds(model: str, batch: int = 2, seq: int = 7) -> dict[str, np.ndarray]:
    """Realistic inputs: token ids over the whole vocabulary, two segments, padding in the mask."""
    rng = np.random.default_rng(11)
    ids = rng.integers(0, VOCAB, (batch, seq)).astype(np.int64)
    if model == "bert":
        types = np.zeros((batch, seq), np.int64)
        types[:, seq // 2:] = 1
        mask = np.ones((batch, seq), np.int64)
        mask[-1, -2:] = 0
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    return {"input_ids": ids, "position_ids": np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq)).copy()}


def _compile(model: Path, out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jitort", "compile", str(model), "-o", str(out), *args],
                          capture_output=True, text=True, timeout=600, env=env)


def _load_in_fresh_process(art: Path, feeds: dict[str, np.ndarray], tmp: Path) -> tuple[dict, list[np.ndarray]]:
    np.savez(tmp / "feeds.npz", **feeds)
    env = dict(os.environ, JITORT_CACHE_DIR=str(tmp / "fresh-cache"))
    p = subprocess.run([sys.executable, "-c", LOAD, str(art), str(tmp / "feeds.npz"), str(tmp / "outs.npz")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    with np.load(tmp / "outs.npz") as f:
        outs = [f[f"arr_{k}"] for k in range(len(f.files))]
    return json.loads(p.stdout.strip().splitlines()[-1]), outs


def _assert_matches_ort(model: Path, feeds: dict[str, np.ndarray], outs: list[np.ndarray]) -> None:
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert len(outs) == len(want)
    for got, ref in zip(outs, want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def _leftovers(out: Path) -> list[str]:
    """The target and any hidden staging directories beside it."""
    return sorted(p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))


# --- the warm-up's inputs ------------------------------------------------------------------------------

def test_warmup_feeds_are_valid_by_construction() -> None:
    from jitort.models import warmup_feeds
    feeds = warmup_feeds(bert_encoder(), {"batch": 2, "sequence": 3})
    assert {k: (v.dtype, v.shape) for k, v in feeds.items()} == {k: (np.dtype(np.int64), (2, 3)) for k in
                                                                  ("input_ids", "token_type_ids", "attention_mask")}
    assert not feeds["input_ids"].any() and not feeds["token_type_ids"].any() and feeds["attention_mask"].all()
    sample = np.full((2, 3), 1, np.int64)
    assert warmup_feeds(bert_encoder(), {"batch": 2, "sequence": 3}, {"token_type_ids": sample})["token_type_ids"] \
        is sample


def test_session_warmup_does_not_depend_on_values(tmp_path: Path) -> None:
    """The session's own warm-up at creation runs on a BERT (2-row token-type table) and reaches the
    library kernels: a run at the warm-up's shapes compiles nothing more."""
    import jitort
    from jitort import cache
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.cache_dir", str(tmp_path))
    sess = jitort.InferenceSession(bert_encoder().SerializeToString(), so)
    assert not any("warm-up" in n for n in sess.compile_report["cache_notes"]), sess.compile_report["cache_notes"]
    feeds = _feeds("bert", batch=1, seq=1)
    mark = cache.compile_count()
    got = sess.run(None, feeds)
    assert cache.compiled_since(mark) == []
    want = ort.InferenceSession(bert_encoder().SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)


# --- `jitort compile` ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model,args", [("bert", ()), ("gpt", ()), ("bert", ("--input-shape", "input_ids=2x7")),
                                        ("gpt", ("--input-shape", "position_ids=2x7"))],
                         ids=["bert", "gpt", "bert-shape", "gpt-shape"])
def test_compile_writes_an_artifact_that_loads_without_compiling(tmp_path: Path, model_files, model: str,
                                                                 args: tuple[str, ...]) -> None:
    art = tmp_path / "art"
    p = _compile(model_files[model], art, *args)
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr, p.stderr
    assert (art / "manifest.json").is_file() and _leftovers(art) == ["art"]
    feeds = _feeds(model)
    rep, outs = _load_in_fresh_process(art, feeds, tmp_path)
    assert rep["created_compiled"] == 0 and rep["loaded_from"], rep
    if args:  # warmed up at the shapes it runs at: the library kernels are in the artifact too
        assert rep["run_compiled"] == [], rep
    _assert_matches_ort(model_files[model], feeds, outs)


def test_compile_uses_input_samples(tmp_path: Path, model_files) -> None:
    """Samples set the warm-up's shapes (the other inputs follow their symbolic dims), and the
    artifact then runs at those shapes without compiling."""
    feeds = _feeds("bert", batch=3, seq=5)
    np.save(tmp_path / "ids.npy", feeds["input_ids"])
    np.save(tmp_path / "types.npy", feeds["token_type_ids"])
    art = tmp_path / "art"
    p = _compile(model_files["bert"], art, "--input", f"input_ids={tmp_path / 'ids.npy'}",
                 "--input", f"token_type_ids={tmp_path / 'types.npy'}")
    assert p.returncode == 0 and "warning" not in p.stderr, p.stderr
    assert "warm-up inputs: input_ids 3x5, token_type_ids 3x5, attention_mask 3x5" in p.stdout, p.stdout
    rep, outs = _load_in_fresh_process(art, feeds, tmp_path)
    assert rep["created_compiled"] == 0 and rep["run_compiled"] == [], rep
    _assert_matches_ort(model_files["bert"], feeds, outs)


def test_failed_warmup_is_a_warning_and_the_artifact_is_complete(tmp_path: Path, model_files) -> None:
    """A sample the model rejects (segment id 5 in a 2-row table) is used as given: the warm-up run
    fails, the compile warns with the reason and still writes an artifact that loads without
    compiling; what the run did not reach compiles on first use."""
    np.save(tmp_path / "types.npy", np.full((2, 7), 5, np.int64))
    art = tmp_path / "art"
    p = _compile(model_files["bert"], art, "--input", f"token_type_ids={tmp_path / 'types.npy'}")
    assert p.returncode == 0, p.stderr
    warning = [ln for ln in p.stderr.splitlines() if "warning" in ln]
    assert len(warning) == 1 and "Gather" in warning[0] and "idx=5" in warning[0], p.stderr
    assert (art / "manifest.json").is_file() and _leftovers(art) == ["art"]
    feeds = _feeds("bert")
    rep, outs = _load_in_fresh_process(art, feeds, tmp_path)
    assert rep["created_compiled"] == 0 and rep["run_compiled"], rep
    _assert_matches_ort(model_files["bert"], feeds, outs)


def _unsupported_model(path: Path) -> Path:
    g = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")], "unsupported",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
              str(path))
    return path


def _one_line_error(p: subprocess.CompletedProcess, code: int) -> str:
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_failed_compile_leaves_nothing_and_says_why_in_one_line(tmp_path: Path) -> None:
    art = tmp_path / "art"
    line = _one_line_error(_compile(_unsupported_model(tmp_path / "bad.onnx"), art), 3)
    assert "NoSuchOp" in line and "no artifact written" in line
    assert _leftovers(art) == []
    (tmp_path / "junk.onnx").write_bytes(b"this is not a model")
    line = _one_line_error(_compile(tmp_path / "junk.onnx", art), 3)
    assert str(tmp_path / "junk.onnx") in line and _leftovers(art) == []


def test_failed_compile_keeps_the_artifact_already_there(tmp_path: Path, model_files) -> None:
    art = tmp_path / "art"
    assert _compile(model_files["gpt"], art).returncode == 0
    manifest = (art / "manifest.json").read_bytes()
    _one_line_error(_compile(_unsupported_model(tmp_path / "bad.onnx"), art), 3)
    assert (art / "manifest.json").read_bytes() == manifest and _leftovers(art) == ["art"]


def test_bad_arguments_are_usage_errors(tmp_path: Path, model_files) -> None:
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("not an artifact")
    line = _one_line_error(_compile(model_files["bert"], keep), 2)
    assert "not a jitort artifact" in line and sorted(os.listdir(keep)) == ["notes.txt"]
    np.save(tmp_path / "x.npy", np.zeros((2, 7), np.int64))
    art = tmp_path / "art"
    np.save(tmp_path / "f.npy", np.zeros((2, 7), np.float32))
    np.save(tmp_path / "r.npy", np.zeros((7,), np.int64))
    for sample, why in (("nope=x.npy", "no input"), ("input_ids=f.npy", "float32"), ("input_ids=r.npy", "rank")):
        name, file = sample.split("=")
        assert why in _one_line_error(_compile(model_files["bert"], art, "--input", f"{name}={tmp_path / file}"), 2)
    assert _leftovers(art) == []


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and text.encode() in (d / "cmdline").read_bytes() + (d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_compile_leaves_nothing(tmp_path: Path, model_files, sig: int) -> None:
    art = tmp_path / "art"
    env = dict(os.environ, JITORT_COMPILE_WORKERS="0")
    # SIGINT's default action restored in the child: a shell starting the suite in the background
    # (``cmd &`` without job control) leaves SIGINT ignored, children inherit that, and Python then
    # installs no KeyboardInterrupt handler (the compile ran to completion, exit code 0)
    proc = subprocess.Popen([sys.executable, "-m", "jitort", "compile", str(model_files["bert"]), "-o", str(art)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    staging: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        staging = [p for p in tmp_path.glob(".art.partial-*") if (p / "model.onnx").exists()]
        if staging:
            break
        time.sleep(0.02)
    assert staging and proc.poll() is None, "the compile did not start building"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["jitort compile: interrupted; no artifact written"], err
    assert _leftovers(art) == []
    assert _processes_mentioning(str(staging[0])) == []  # the child that built it is gone too
