"""Cache entries and artifacts: every file jitort or Numba reads from them is checked against the
hash recorded when it was written. A same-size edit of a constant (.npy), a pickled constant (.pkl),
Numba's index (.nbi) or data (.nbc) is rebuilt with a warning, or refused in strict mode — never
loaded. The pickles are replaced by a payload that would create a sentinel file if unpickled.
Directories below a private root that others can write are refused."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import jitort
from jitort import artifact, cache
from jitort.errors import Fail

pytestmark = pytest.mark.slow

X = np.arange(8, dtype=np.float32).reshape(2, 4)
C = np.array([0.5, -1.0, 2.0, -3.0], np.float32)

CHILD = textwrap.dedent("""
    import json, sys, warnings
    import ml_dtypes, numpy as np, jitort
    from jitort.errors import Fail
    source, strict = sys.argv[1], sys.argv[2]
    so = jitort.SessionOptions()
    if strict == "1":
        so.add_session_config_entry("session.jitort.strict_cache", "1")
    out = {"error": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            s = jitort.InferenceSession(source, so)
            y, z = s.run(None, {"x": np.arange(8, dtype=np.float32).reshape(2, 4),
                                "xb": np.array([1.0], ml_dtypes.bfloat16)})
            out.update(y=y.tolist(), z=z.astype(np.float32).tolist(), notes=s.compile_report["cache_notes"],
                       loaded_from=s.compile_report["loaded_from"])
        except Fail as e:
            out["error"] = str(e)
    out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    print(json.dumps(out))
""")


def _model() -> onnx.ModelProto:
    """A fused kernel (Numba .nbi/.nbc) with an array constant (.npy), and a bfloat16 constant (.pkl)."""
    g = h.make_graph(
        [h.make_node("Add", ["x", "c"], ["t"]), h.make_node("Relu", ["t"], ["y"]),
         h.make_node("Concat", ["cb", "xb"], ["z"], axis=0)], "g",
        [h.make_tensor_value_info("x", T.FLOAT, [2, 4]), h.make_tensor_value_info("xb", T.BFLOAT16, [1])],
        [h.make_tensor_value_info("y", T.FLOAT, [2, 4]), h.make_tensor_value_info("z", T.BFLOAT16, [4])],
        [h.make_tensor("c", T.FLOAT, [4], C.tolist()), h.make_tensor("cb", T.BFLOAT16, [3], [1.5, -2.0, 0.25])])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 21)])


EXPECTED = {"y": np.maximum(X + C, 0).tolist(), "z": [1.5, -2.0, 0.25, 1.0]}


def _child(source: Path, root: Path, strict: bool = False) -> dict:
    env = dict(os.environ, JITORT_CACHE_DIR=str(root))
    p = subprocess.run([sys.executable, "-c", CHILD, str(source), "1" if strict else "0"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A model, a warm cache root holding its entry, and its AOT artifact (copied per test)."""
    from jitort.aot import compile_artifact
    d = tmp_path_factory.mktemp("integrity")
    model = d / "m.onnx"
    onnx.save(_model(), str(model))
    first = _child(model, d / "cache")
    assert first["error"] is None and first["loaded_from"] == "", first
    warm = _child(model, d / "cache")
    assert warm["loaded_from"] and warm["y"] == EXPECTED["y"] and warm["z"] == EXPECTED["z"], warm
    compile_artifact(str(model), str(d / "art"), quiet=True)
    return model, d / "cache", d / "art"


class _Payload:
    """Unpickling this creates the sentinel file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.sentinel, "w"))


def _same_size_edit(f: Path, sentinel: Path) -> None:
    """Overwrite ``f`` with content of the same size: pickles with the sentinel payload (padded;
    unpickling ignores what follows the STOP opcode), arrays with their last data byte flipped."""
    data = f.read_bytes()
    if f.suffix == ".npy":
        new = data[:-1] + bytes([data[-1] ^ 0x40])
    else:
        payload = pickle.dumps(_Payload(sentinel), protocol=2)
        assert len(payload) <= len(data), (f, len(payload), len(data))
        new = payload + b"\0" * (len(data) - len(payload))
    assert len(new) == len(data) and new != data
    f.write_bytes(new)


def _target(root: Path, suffix: str, artifact_dir: bool) -> Path:
    """The first file of that kind: constants in the entry (or artifact), Numba's files in the root."""
    if suffix in (".npy", ".pkl"):
        base = root if artifact_dir else next(d for d in root.glob("models/*/*") if d.is_dir())
        pattern = f"consts/*{suffix}"
    else:
        base, pattern = root, f"kernels/*/__pycache__/*{suffix}"
    (f,) = sorted(base.glob(pattern))[:1]
    return f


@pytest.mark.parametrize("where", ["entry", "artifact"])
@pytest.mark.parametrize("suffix", [".npy", ".pkl", ".nbi", ".nbc"])
def test_same_size_edit_is_rebuilt_or_refused_never_loaded(tmp_path, built, where, suffix):
    model, pristine_cache, pristine_art = built
    sentinel = tmp_path / "unpickled"
    if where == "entry":
        root = tmp_path / "cache"
        shutil.copytree(pristine_cache, root)
        source, tampered = model, _target(root, suffix, False)
    else:
        root = tmp_path / "art"
        shutil.copytree(pristine_art, root)
        source, tampered = root, _target(root, suffix, True)
    _same_size_edit(tampered, sentinel)
    session_root = root if where == "entry" else tmp_path / "session-cache"

    strict = _child(source, session_root, strict=True)
    assert strict["error"] is not None and tampered.name in strict["error"], strict
    assert not sentinel.exists()
    if where == "entry":
        assert "strict" in strict["error"]

    r = _child(source, session_root)
    assert not sentinel.exists()
    assert r["error"] is None and r["y"] == EXPECTED["y"] and r["z"] == EXPECTED["z"], r
    assert any(tampered.name in w for w in r["warnings"]), r
    assert any(tampered.name in n and ("rebuilt" in n or "stale" in n) for n in r["notes"]), r
    assert not r["loaded_from"], r  # compiled again, not loaded
    if where == "entry":  # the rebuilt entry loads again, without warnings
        again = _child(source, session_root)
        assert again["loaded_from"] and not again["warnings"] and again["y"] == EXPECTED["y"], again
    assert not sentinel.exists()


def _gated_file(d: Path) -> object:
    from numba.core import caching

    import jitort.kernels  # noqa: F401  (installs jitort's hooks)
    cache.gate_numba_dir(d)
    return caching.IndexDataCacheFile(str(d), "f-1.py311", "stamp" * 40)  # room for the payload


@pytest.mark.parametrize("suffix", [".nbi", ".nbc"])
def test_numba_reads_only_files_matching_their_record(tmp_path, suffix):
    """Numba's own reads (any function jitort's locator placed, with or without a manifest: the
    library kernels, a kernel shared by models) check the record its save wrote."""
    d = tmp_path / "pyc"
    d.mkdir()
    cf = _gated_file(d)
    cf.save(("sig", 1), "machine code" * 20)
    assert _gated_file(d).load(("sig", 1)) == "machine code" * 20
    sentinel = tmp_path / "unpickled"
    (f,) = d.glob(f"*{suffix}")
    _same_size_edit(f, sentinel)
    with pytest.warns(RuntimeWarning, match=f"{f.name} does not match its record"):
        assert _gated_file(d).load(("sig", 1)) is None
    assert not sentinel.exists()
    cf = _gated_file(d)  # the miss recompiles and saves: file and record agree again
    cf.save(("sig", 1), "machine code 2" * 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _gated_file(d).load(("sig", 1)) == "machine code 2" * 20
    cache.record_path(cf._index_path).unlink()  # no record at all: not loaded either
    with pytest.warns(RuntimeWarning, match="has no record"):
        assert _gated_file(d).load(("sig", 1)) is None


def test_artifact_library_files_are_copied_only_as_pinned(tmp_path):
    """An artifact's library kernels reach this process's library cache only when they match the
    artifact's manifest; the copy gets a record, so Numba then loads it."""
    from jitort.codegen.source import library_hash
    art = tmp_path / "art"
    lib = art / "library" / library_hash()
    lib.mkdir(parents=True)
    _gated_file(lib).save(("sig", 1), "library code" * 20)
    m = artifact.Manifest(key="k", model_sha256="m", plan="plan_x", plan_sha256="", kernels={}, inputs=[],
                          outputs=[], consts={})
    m.numba = artifact.pin_numba_files(art, m, library=True)
    assert sorted(Path(p).suffix for p in m.numba) == [".nbc", ".nbi"]
    (art / artifact.MANIFEST).write_text(json.dumps(artifact.asdict(m)))
    dst = tmp_path / "cache"
    artifact.import_library_objects(art, dst)
    assert _gated_file(dst / "library" / library_hash()).load(("sig", 1)) == "library code" * 20

    sentinel = tmp_path / "unpickled"
    (index,) = lib.glob("*.nbi")
    _same_size_edit(index, sentinel)
    other = tmp_path / "cache2"
    with pytest.raises(artifact.TamperedEntry, match=index.name):
        artifact.import_library_objects(art, other)
    assert not list((other / "library").rglob("*.nb*")) and not sentinel.exists()


def _session(model: onnx.ModelProto, root: Path) -> jitort.InferenceSession:
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.cache_dir", str(root))
    return jitort.InferenceSession(model.SerializeToString(), so)


@pytest.mark.parametrize("sub", ["kernels/*", "kernels/*/__pycache__", "plans/*", "models/*/*", "models/*/*/consts"])
def test_world_writable_subdirectory_is_refused(tmp_path, sub):
    m = _model()
    root = tmp_path / "cache"
    _session(m, root)
    artifact.wait_pending()
    (d,) = sorted(d for d in root.glob(sub) if d.is_dir() and not d.name.startswith("."))[:1]
    os.chmod(d, 0o777)
    with pytest.raises(Fail, match="writable by other users") as e:
        _session(m, root)
    assert str(d) in str(e.value)


def test_world_writable_library_directory_is_refused(tmp_path):
    """The library kernels' directory is checked where Numba's locator is set up (a new process)."""
    from jitort.codegen.source import library_hash
    lib = tmp_path / "library" / library_hash()
    lib.mkdir(parents=True, mode=0o700)
    os.chmod(tmp_path, 0o700)
    os.chmod(lib, 0o777)
    env = dict(os.environ, JITORT_CACHE_DIR=str(tmp_path))
    p = subprocess.run([sys.executable, "-c", "import jitort.kernels.conv"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0 and "writable by other users" in p.stderr and str(lib) in p.stderr, p.stderr[-2000:]


def test_constant_edited_between_sessions_of_one_process_is_caught(tmp_path):
    """A process skips re-hashing a constant file it verified unless the file was written since
    (its ctime moves): an edit between two sessions is still found."""
    import ml_dtypes
    m = _model()
    root = tmp_path / "cache"
    _session(m, root)
    artifact.wait_pending()
    feeds = {"x": X, "xb": np.array([1.0], ml_dtypes.bfloat16)}
    for _ in range(2):  # the second load skips hashing: nothing changed
        warm = _session(m, root)
        assert warm.compile_report["loaded_from"] and warm.run(None, feeds)[0].tolist() == EXPECTED["y"]
    (f,) = sorted(next(d for d in root.glob("models/*/*") if d.is_dir()).glob("consts/*.npy"))[:1]
    _same_size_edit(f, tmp_path / "unused")
    with pytest.warns(RuntimeWarning, match=f"{f.name} does not match the manifest"):
        s = _session(m, root)
    assert not s.compile_report["loaded_from"] and s.run(None, feeds)[0].tolist() == EXPECTED["y"]


@pytest.mark.parametrize("edit", ["const_path", "kernels_type", "module_name"])
def test_malformed_manifest_is_rebuilt(tmp_path, edit):
    """The manifest is input too: a constant path leaving the entry, a field of the wrong type or a
    module name jitort would not generate is a tampered entry (rebuilt with a warning), not a crash."""
    import ml_dtypes
    m = _model()
    root = tmp_path / "cache"
    _session(m, root)
    artifact.wait_pending()
    mf = next(root.glob("models/*/*/manifest.json"))
    data = json.loads(mf.read_text())
    if edit == "const_path":
        next(iter(data["consts"].values()))["file"] = "consts/../../../../evil.pkl"
    elif edit == "kernels_type":
        data["kernels"] = 5
    else:
        data["plan"] = "../../evil"
    mf.write_text(json.dumps(data))
    with pytest.warns(RuntimeWarning, match="failed its integrity check"):
        s = _session(m, root)
    feeds = {"x": X, "xb": np.array([1.0], ml_dtypes.bfloat16)}
    assert not s.compile_report["loaded_from"] and s.run(None, feeds)[0].tolist() == EXPECTED["y"]
