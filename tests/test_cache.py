"""The compiled-model cache and artifacts: warm starts compile nothing, concurrency leaves a
consistent cache, damaged entries are rebuilt, unsafe directories are refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

import jitort
from jitort import artifact, zoo
from jitort.errors import Fail

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent("""
    import json, sys, numpy as np, jitort
    model, seq = sys.argv[1], int(sys.argv[2])
    s = jitort.InferenceSession(model)
    x = np.random.default_rng(seq).standard_normal((2, seq, 64)).astype(np.float32)
    feeds = {s.get_inputs()[0].name: x}
    if len(s.get_inputs()) > 1:
        feeds[s.get_inputs()[1].name] = np.ones((2, seq), np.int64)
    out = s.run(None, feeds)[0]
    r = s.compile_report
    from jitort import cache
    print(json.dumps({"compiled": len(r["compiled"]) + 0, "run_compiled": cache.compile_count(),
                      "loaded_from": r["loaded_from"], "sum": float(np.float64(out).sum()),
                      "notes": r["cache_notes"]}))
""")


def _run_child(root: Path, model: Path, seq: int = 5, extra_env: dict | None = None) -> dict:
    env = dict(os.environ, JITORT_CACHE_DIR=str(root), **(extra_env or {}))
    p = subprocess.run([sys.executable, "-c", CHILD, str(model), str(seq)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    paths = []
    for k, build in enumerate((zoo.gpt_block, zoo.bert_layer)):
        p = d / f"m{k}.onnx"
        onnx.save(build(seed=k + 5), str(p))
        paths.append(p)
    return paths


def test_second_process_compiles_nothing(tmp_path, models):
    first = _run_child(tmp_path, models[0])
    assert first["compiled"] > 0 and first["loaded_from"] == ""
    second = _run_child(tmp_path, models[0])
    assert second["compiled"] == 0 and second["run_compiled"] == 0, second
    assert second["loaded_from"] != ""
    assert second["sum"] == first["sum"]
    third = _run_child(tmp_path, models[0], seq=9)  # a new sequence length
    assert third["run_compiled"] == 0


def test_concurrent_processes_leave_consistent_cache(tmp_path, models):
    env = dict(os.environ, JITORT_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(models[k % 2]), "5"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(4)]
    sums = {}
    for k, p in enumerate(procs):
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
        sums.setdefault(k % 2, set()).add(json.loads(out.strip().splitlines()[-1])["sum"])
    assert all(len(v) == 1 for v in sums.values())
    for k in range(2):
        later = _run_child(tmp_path, models[k])
        assert later["compiled"] == 0 and later["run_compiled"] == 0, later
        assert later["sum"] in sums[k]


def _entry(root: Path) -> Path:
    (m,) = list((root / "models").glob("*/*/manifest.json"))
    return m.parent


def test_truncated_and_tampered_entries_are_rebuilt(tmp_path, models):
    ref = _run_child(tmp_path, models[1])
    entry = _entry(tmp_path)
    const = next(entry.glob("consts/*.npy"))
    const.write_bytes(const.read_bytes()[: const.stat().st_size // 2])
    r = _run_child(tmp_path, models[1])
    assert r["sum"] == ref["sum"] and any("rebuilt" in n for n in r["notes"]), r
    # tamper with a generated kernel's source: detected by its hash, rebuilt
    m = json.loads((_entry(tmp_path) / "manifest.json").read_text())
    name = next(iter(m["kernels"]))
    src = next(tmp_path.glob(f"kernels/*/{name}.py"))
    src.write_text(src.read_text().replace("+", "-"))
    r = _run_child(tmp_path, models[1])
    assert r["sum"] == ref["sum"] and any("does not match" in n for n in r["notes"]), r
    # truncate Numba's own index files: Numba must treat them as misses, not crash
    for f in tmp_path.rglob("*.nbi"):
        f.write_bytes(f.read_bytes()[:7])
    r = _run_child(tmp_path, models[1])
    assert r["sum"] == ref["sum"]


def test_manifest_from_another_version_is_rebuilt_or_refused(tmp_path, models):
    ref = _run_child(tmp_path, models[0])
    mf = _entry(tmp_path) / "manifest.json"
    m = json.loads(mf.read_text())
    m["versions"]["numba"] = "0.1.0"
    mf.write_text(json.dumps(m))
    r = _run_child(tmp_path, models[0])
    assert r["sum"] == ref["sum"] and any("numba 0.1.0" in n for n in r["notes"]), r
    mf = _entry(tmp_path) / "manifest.json"
    m = json.loads(mf.read_text())
    m["cpu"]["cpu_name"] = "pentium2"
    mf.write_text(json.dumps(m))
    env = dict(os.environ, JITORT_CACHE_DIR=str(tmp_path), JITORT_STRICT_CACHE="1")
    p = subprocess.run([sys.executable, "-c", CHILD, str(models[0]), "5"], env=env, capture_output=True, text=True)
    assert p.returncode != 0 and "pentium2" in p.stderr and "strict" in p.stderr


def test_unsafe_cache_directory_is_refused(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o777)
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.cache_dir", str(root))
    with pytest.raises(Fail, match="writable by other users"):
        jitort.InferenceSession(zoo.mlp(sizes=(4, 3)).SerializeToString(), so)


def test_cache_can_be_disabled(tmp_path):
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.disable_cache", "1")
    so.add_session_config_entry("session.jitort.cache_dir", str(tmp_path / "unused"))
    s = jitort.InferenceSession(zoo.mlp(sizes=(4, 3)).SerializeToString(), so)
    x = np.ones((2, 4), np.float32)
    assert s.run(None, {"x": x})[0].shape == (2, 3)
    assert not (tmp_path / "unused").exists()


def test_artifact_loads_in_fresh_process_with_zero_compilation(tmp_path, models):
    from jitort.aot import compile_artifact
    art = tmp_path / "art"
    compile_artifact(str(models[0]), str(art), {"input_embeds": [2, 5, 64]}, quiet=True)
    # the block's GELU and residual Adds fold into its GEMMs' epilogues, so it may have no generated
    # kernel (the report's "kernels"); the artifact holds the library kernels it runs, compiled
    assert (art / "manifest.json").exists() and any(p.suffix == ".nbi" for p in (art / "library").rglob("*"))
    fresh_root = tmp_path / "other-cache"
    r = _run_child(fresh_root, art)
    assert r["compiled"] == 0 and r["run_compiled"] == 0, r
    direct = _run_child(tmp_path / "third-cache", models[0])
    assert r["sum"] == direct["sum"]
    # the artifact named by a session option for the original model
    code = CHILD.replace("s = jitort.InferenceSession(model)",
                         "so = jitort.SessionOptions(); so.add_session_config_entry('session.jitort.artifact', "
                         f"{str(art)!r}); s = jitort.InferenceSession(model, so)")
    env = dict(os.environ, JITORT_CACHE_DIR=str(tmp_path / "fourth-cache"))
    p = subprocess.run([sys.executable, "-c", code, str(models[0]), "5"], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["compiled"] == 0 and out["run_compiled"] == 0 and out["sum"] == direct["sum"]


def test_stale_artifact_rebuilds_or_refuses(tmp_path, models):
    from jitort.aot import compile_artifact
    art = tmp_path / "art"
    compile_artifact(str(models[1]), str(art), {"hidden_states": [2, 5, 64], "attention_mask": [2, 5]}, quiet=True)
    m = json.loads((art / "manifest.json").read_text())
    m["versions"]["jitort"] = "0.0.0-other"
    (art / "manifest.json").write_text(json.dumps(m))
    r = _run_child(tmp_path / "c1", art)
    assert any("stale" in n for n in r["notes"]), r
    env = dict(os.environ, JITORT_CACHE_DIR=str(tmp_path / "c2"), JITORT_STRICT_CACHE="1")
    p = subprocess.run([sys.executable, "-c", CHILD, str(art), "5"], env=env, capture_output=True, text=True)
    assert p.returncode != 0 and "0.0.0-other" in p.stderr


def _session(model: onnx.ModelProto, root: Path) -> jitort.InferenceSession:
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.cache_dir", str(root))
    return jitort.InferenceSession(model.SerializeToString(), so)


def test_ml_dtypes_constants_survive_the_cache(tmp_path):
    """bfloat16/float8/int4 constants round-trip through an entry (np.save would reload them as void)."""
    from onnx import TensorProto, helper
    vals = np.array([1.5, -2.0, 0.25], np.float32)
    types = [TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN, TensorProto.INT4]
    nodes, ins, outs, feeds = [], [], [], {}
    for k, t in enumerate(types):
        dt = helper.tensor_dtype_to_np_dtype(t)
        nodes.append(helper.make_node("Concat", [f"c{k}", f"x{k}"], [f"y{k}"], axis=0))
        ins.append(helper.make_tensor_value_info(f"x{k}", t, [1]))
        outs.append(helper.make_tensor_value_info(f"y{k}", t, [4]))
        feeds[f"x{k}"] = vals[:1].astype(dt)
    inits = [helper.make_tensor(f"c{k}", t, [3], vals.astype(helper.tensor_dtype_to_np_dtype(t)).astype(
        np.float32).tolist() if t != TensorProto.INT4 else [1, -2, 0]) for k, t in enumerate(types)]
    m = helper.make_model(helper.make_graph(nodes, "g", ins, outs, inits),
                          opset_imports=[helper.make_opsetid("", 21)])
    first = _session(m, tmp_path).run(None, feeds)
    warm = _session(m, tmp_path)
    assert warm.compile_report["loaded_from"], warm.compile_report
    for k, (a, b) in enumerate(zip(first, warm.run(None, feeds))):
        assert a.dtype == b.dtype == feeds[f"x{k}"].dtype
        np.testing.assert_array_equal(b.astype(np.float32), a.astype(np.float32))
    np.testing.assert_array_equal(first[0].astype(np.float32), [1.5, -2.0, 0.25, 1.5])


def test_subgraph_plans_live_in_the_session_cache_root(tmp_path):
    """If-branch plans are written under the session's cache_dir, so a warm session there finds them."""
    from onnx import TensorProto, helper

    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["x", "x"], [f"{name}_y"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [3])])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch("t", "Add"),
                                            else_branch=branch("e", "Mul"))], "g",
                          [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([1.0, 2.0, 3.0], np.float32)
    for root in (tmp_path / "a", tmp_path / "b"):  # the second root: modules already imported in-process
        s = _session(m, root)
        np.testing.assert_array_equal(s.run(None, {"c": np.array(True), "x": x})[0], x + x)
        np.testing.assert_array_equal(s.run(None, {"c": np.array(False), "x": x})[0], x * x)
        assert len(list((root / "plans").rglob("*.py"))) == 3, sorted((root / "plans").rglob("*.py"))


def test_numba_index_save_is_atomic(tmp_path, monkeypatch):
    """Two savers adding different signatures of one function at once (the index read widened to
    0.2 s): without jitort's lock both pick data file .1.nbc and one signature ends up naming the
    other's machine code; with it, each key loads its own data."""
    import threading
    import time

    from numba.core import caching

    import jitort.kernels  # noqa: F401  (installs the lock)
    read = caching.IndexDataCacheFile._load_index

    def slow_read(self):  # type: ignore[no-untyped-def]
        r = read(self)
        time.sleep(0.2)
        return r
    monkeypatch.setattr(caching.IndexDataCacheFile, "_load_index", slow_read)
    files = [caching.IndexDataCacheFile(str(tmp_path), "f-1.py311", "stamp") for _ in range(2)]
    threads = [threading.Thread(target=f.save, args=(("sig", k), f"code for sig {k}")) for k, f in enumerate(files)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh = caching.IndexDataCacheFile(str(tmp_path), "f-1.py311", "stamp")
    assert [fresh.load(("sig", k)) for k in range(2)] == ["code for sig 0", "code for sig 1"]


PRECOMPILE_CHILD = textwrap.dedent("""
    import json, sys, numpy as np, jitort
    from jitort import cache
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.compile_workers", sys.argv[2])
    so.add_session_config_entry("session.jitort.warmup", "0")
    s = jitort.InferenceSession(sys.argv[1], so)
    x = np.random.default_rng(0).standard_normal((2, 8, 9, 9)).astype(np.float32)
    mark = cache.compile_count()
    y = s.run(None, {s.get_inputs()[0].name: x})[0]
    np.save(sys.argv[3], y)
    print(json.dumps({"session": len(s.compile_report["compiled"]), "run": len(cache.compiled_since(mark))}))
""")


def test_worker_processes_precompile_library_calls_and_kernels(tmp_path):
    """With a compile worker, a fresh session's library calls (on zero stand-ins) and generated kernels
    are compiled before the first run, by the worker and this process; that run compiles nothing
    and matches onnxruntime."""
    from oracle import run_ort
    m = zoo.conv_block(channels=8, size=9, batch=2)
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    env = dict(os.environ, JITORT_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-c", PRECOMPILE_CHILD, str(path), "1", str(tmp_path / "y.npy")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["run"] == 0, r
    x = np.random.default_rng(0).standard_normal((2, 8, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), run_ort(m, {m.graph.input[0].name: x})[0],
                               rtol=1e-4, atol=1e-4)


def test_precompile_jobs_describe_static_calls_only():
    from jitort import compile_pool
    from jitort.compiler import compile_graph
    from jitort.frontend.importer import import_model
    c = compile_graph(import_model(zoo.conv_block(channels=8, size=9, batch=2)), ["CPUExecutionProvider"])
    jobs = compile_pool.jobs_for(c.steps, c.graph)
    calls = [j for j in jobs if not j.kind]
    assert calls and all(isinstance(a, compile_pool.Zeros) or not isinstance(a, np.ndarray) or a.nbytes <= 4096
                         for j in calls for a in [*j.args, *j.kwargs.values()])
    # symbolic batch: the calls' run-time inputs cannot be described, only the kernel modules remain
    c = compile_graph(import_model(zoo.conv_block(channels=8, size=9)), ["CPUExecutionProvider"])
    assert all(j.kind for j in compile_pool.jobs_for(c.steps, c.graph))
    assert len(compile_pool._split(jobs, 2)) == 2 and sum(map(len, compile_pool._split(jobs, 2))) == len(jobs)


def test_split_keeps_jobs_that_share_a_gemm_together():
    """Jobs sharing an expensive part go to one process when their cluster fits a fair share; every
    job lands in exactly one share."""
    from jitort import compile_pool as cp
    jobs = [cp.Job(kind="k", name=n, parts=p) for n, p in
            [("a", {"gemm": 2.0, "a": 1.0}), ("b", {"gemm": 2.0, "b": 1.0}), ("c", {"c": 3.0}), ("d", {"d": 2.0})]]
    shares = cp._split(jobs, 2)
    assert sorted(j.name for s in shares for j in s) == ["a", "b", "c", "d"]
    assert any({"a", "b"} <= {j.name for j in s} for s in shares)


def test_split_gives_gemm_jobs_to_the_worker_that_holds_the_gemm():
    """A worker that compiled a shared part while the model was lowered (``Workers.have``) gets the
    jobs needing it: for them it has the smaller remaining cost."""
    from jitort import compile_pool as cp
    jobs = [cp.Job(kind="k", name=n, parts=p) for n, p in
            [("a", {"gemm": 2.0, "a": 1.0}), ("b", {"gemm": 2.0, "b": 1.0}), ("c", {"c": 2.5}), ("d", {"d": 1.0})]]
    shares = cp._split(jobs, 2, {"gemm"})
    assert sorted(j.name for s in shares for j in s) == ["a", "b", "c", "d"]
    assert {"a", "b"} <= {j.name for j in shares[1]}


def test_compile_worker_prepares_the_gemm(tmp_path, monkeypatch):
    """A worker started (as a new interpreter) for a float32 conv model compiles the packed GEMM
    into the shared cache before its jobs arrive (here: none), and the split knows it holds that
    part. (A forked worker inherits this process's GEMM if it has one: the forked path is tested
    from a fresh interpreter below.)"""
    import pickle

    from jitort import compile_pool as cp
    from jitort.kernels.convgemm import gemm_part
    monkeypatch.setenv("JITORT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cp, "_FORK", False)
    w = cp.Workers(1, ("float32",))
    assert w.have == {gemm_part(np.dtype(np.float32))}
    jobs = tmp_path / "jobs.pkl"
    jobs.write_bytes(pickle.dumps((str(tmp_path), [], [], str(tmp_path))))
    w.send(0, str(jobs))
    w.close(timeout=120)
    assert w.procs[0].returncode == 0
    assert list(tmp_path.rglob("*_gemm_c*.nbi")), sorted(str(p) for p in tmp_path.rglob("*"))[:20]


def test_forked_compile_worker_prepares_the_gemm_and_runs_claimed_jobs(tmp_path):
    """In a process with no other thread (a fresh interpreter here: pytest-xdist has its IO
    thread), workers are forked after the set-up; the forked one compiles the GEMM, claims and
    runs the jobs its order names that nobody claimed, and ends with status 0."""
    code = textwrap.dedent("""
        import os, pickle, sys, threading
        from pathlib import Path
        import numpy as np
        from jitort import compile_pool as cp
        root = Path(sys.argv[1])
        assert threading.active_count() == 1
        w = cp.Workers(1, ("float32",))
        assert w.forked, "expected a forked worker"
        jobs = [cp.Job(fn=np.add, args=(1, 2)), cp.Job(fn=os.makedirs, args=(str(root / "ran1"),)),
                cp.Job(fn=os.makedirs, args=(str(root / "ran2"),))]
        claims = root / "claims"
        claims.mkdir()
        (claims / "claim2").touch()  # claimed by someone else: not run
        path = root / "jobs.pkl"
        path.write_bytes(pickle.dumps((str(root), jobs, [0, 1, 2], str(claims))))
        w.send(0, str(path))
        w.close(timeout=120)
        assert w.procs[0].returncode == 0, w.procs[0].returncode
        assert (root / "ran1").is_dir() and not (root / "ran2").exists()
        assert sorted(p.name for p in claims.iterdir()) == ["claim0", "claim1", "claim2"]
        print("ok")
    """)
    env = dict(os.environ, JITORT_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-3000:]
    assert list((tmp_path / "cache").rglob("*_gemm_c*.nbi"))


def test_claim_orders_steal_from_the_end_but_not_a_second_gemm():
    """Each process runs its own share first, then the others' jobs from their ends; a job that
    needs an expensive part shared by several jobs is not taken by a process without it."""
    from jitort import compile_pool as cp
    g = "jitort.kernels.convgemm.gemm[float32]"
    main = [cp.Job(kind="k", name="pool", parts={"pool": 4.5}), cp.Job(kind="k", name="soft", parts={"soft": 2.0})]
    worker = [cp.Job(kind="k", name="wino", parts={g: 1.4, "wino": 5.2}),
              cp.Job(kind="k", name="im2col", parts={g: 1.4, "im2col": 3.8}),
              cp.Job(kind="k", name="fc", parts={"fc": 0.7})]
    orders = cp._orders([main, worker], {g})
    jobs = main + worker
    assert [jobs[i].name for i in orders[0]] == ["pool", "soft", "fc"]
    assert [jobs[i].name for i in orders[1]] == ["wino", "im2col", "fc", "soft", "pool"]


def test_claimed_jobs_run_once(tmp_path):
    from jitort import compile_pool as cp
    ran: list[int] = []
    jobs = [cp.Job(fn=ran.append, args=(i,)) for i in range(4)]
    cp._run_claimed(jobs, [0, 1], tmp_path, tmp_path)
    cp._run_claimed(jobs, [3, 1, 2, 0], tmp_path, tmp_path)
    assert ran == [0, 1, 3, 2]


def test_conv_dtypes_name_what_the_workers_prepare():
    from jitort.compile_service import conv_dtypes
    from jitort.models import resolve_model
    assert conv_dtypes(zoo.conv_block(channels=8, size=9).graph) == ("float32",)
    assert conv_dtypes(zoo.mlp().graph) == ()
    # the wheel's light models make their weights with ConstantOfShape
    assert conv_dtypes(onnx.load(str(resolve_model("light_resnet50"))).graph) == ("float32",)


def test_idle_compile_workers_end_without_jobs():
    """Workers started before lowering (``early_workers``) that get no jobs are ended, not waited for."""
    import time

    from jitort import compile_pool as cp
    w = cp.Workers(1)
    t0 = time.perf_counter()
    w.close()
    assert time.perf_counter() - t0 < 5 and all(p.poll() is not None for p in w.procs)
