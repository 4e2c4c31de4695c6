"""Compiled-model entries: the model-level cache and the ahead-of-time artifact are one format.

An entry is a directory holding ``manifest.json`` (format, key, model hash, versions, CPU target,
input signature, plan and kernel module names with their content hashes, constant files with
their sizes) and ``consts/`` (the plan's constants after folding, one ``.npy`` each). Generated
source and Numba's objects live in the cache root beside it (``kernels/``, ``plans/``,
``library/``) — for an artifact directory, the artifact *is* that root.

An entry is written to a temporary directory and renamed into place, under a file lock, so a
reader sees a complete entry or none. Loading checks everything cheap to check (versions, CPU,
source hashes, file sizes); any mismatch means "stale": the session recompiles (or, in strict
mode, refuses with the reason).
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jitort import cache
from jitort.codegen.source import content_hash, library_hash
from jitort.errors import Fail

FORMAT = 1
MANIFEST = "manifest.json"


class StaleEntry(Exception):
    """The entry exists but cannot be used as it is; the message says why."""


def cpu_target() -> dict[str, str]:
    import llvmlite.binding as ll
    from numba.core import config
    name = config.CPU_NAME or ll.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else ll.get_host_cpu_features().flatten()
    return {"cpu_name": str(name), "cpu_features": hashlib.sha256(str(features).encode()).hexdigest()[:16]}


_frontend_hash: str | None = None


def frontend_hash() -> str:
    """Hash of jitort's own source outside the kernels and codegen (importer, passes, compiler):
    they decide what a model compiles to, so an edited pass must not keep serving old entries.
    (Library kernels do not depend on it: they stay keyed by ``library_hash`` alone.)"""
    global _frontend_hash
    if _frontend_hash is None:
        pkg = Path(__file__).parent
        h = hashlib.sha256()
        for f in sorted(pkg.rglob("*.py")):
            rel = f.relative_to(pkg)
            if rel.parts[0] != "bench":
                h.update(str(rel).encode())
                h.update(f.read_bytes())
        _frontend_hash = h.hexdigest()[:16]
    return _frontend_hash


def versions() -> dict[str, str]:
    import llvmlite
    import numba

    from jitort.runtime_info import get_version_string
    return {"jitort": get_version_string(), "numba": numba.__version__, "llvmlite": llvmlite.__version__,
            "library": library_hash(), "frontend": frontend_hash()}


def model_key(model_bytes: bytes, external: list[bytes], options: dict[str, Any]) -> tuple[str, str]:
    """(entry key, model hash): everything that can change the generated code is in the key."""
    h = hashlib.sha256(model_bytes)
    for e in external:
        h.update(e)
    model_hash = h.hexdigest()
    key = content_hash(model_hash, json.dumps(options, sort_keys=True, default=str),
                       json.dumps(versions(), sort_keys=True), json.dumps(cpu_target(), sort_keys=True))
    return key, model_hash


@dataclass
class Manifest:
    key: str
    model_sha256: str
    plan: str
    plan_sha256: str
    kernels: dict[str, str]                  # module name -> sha256 of its source
    inputs: list[dict[str, Any]]             # name, dtype, shape (dims int or str)
    outputs: list[str]
    consts: dict[str, dict[str, Any]]        # name -> {"file", "size"}
    target: str = "host"
    format: int = FORMAT
    versions: dict[str, str] = field(default_factory=versions)
    cpu: dict[str, str] = field(default_factory=cpu_target)


def entry_dir(root: Path, key: str) -> Path:
    return root / "models" / key[:2] / key


def _source_path(root: Path, kind: str, name: str) -> Path:
    return root / kind / name[-20:-18] / f"{name}.py"


def save(entry: Path, m: Manifest, consts: dict[str, Any]) -> None:
    """Atomically write an entry (constants + manifest); sources are already in the root."""
    entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".tmp-"))
    try:
        (tmp / "consts").mkdir()
        for name, value in _frozen(consts).items():
            if isinstance(value, _Pickled):
                f = f"consts/{name}.pkl"
                (tmp / f).write_bytes(value.data)
            else:
                f = f"consts/{name}.npy"
                np.save(tmp / f, value, allow_pickle=False)
            m.consts[name] = {"file": f, "size": (tmp / f).stat().st_size}
        (tmp / MANIFEST).write_text(json.dumps(asdict(m), indent=1, sort_keys=True))
        with cache.file_lock(entry.parent / f".{entry.name}.lock"):
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class _Pickled:
    """A constant already pickled (``save`` writes the bytes as they are)."""

    data: bytes


def _frozen(consts: dict[str, Any]) -> dict[str, Any]:
    """Constants as ``save`` writes them: arrays of numpy's own kinds as they are (.npy), anything
    else pickled now (.npy round-trips numpy's own kinds only: ml_dtypes such as bfloat16, float8
    and int4 reload as void)."""
    return {k: v if isinstance(v, _Pickled) or (isinstance(v, np.ndarray) and v.dtype.kind in "biufc")
            else _Pickled(pickle.dumps(v)) for k, v in consts.items()}


_PENDING: dict[str, threading.Thread] = {}  # entry path -> the thread writing it (this process)
_PENDING_LOCK = threading.Lock()


def save_in_background(entry: Path, m: Manifest, consts: dict[str, Any], notes: list[str]) -> None:
    """``save`` on a thread, so a cold session does not wait for its entry (light_resnet50: ~130 MB
    of packed weights, 0.33 s). The thread is not a daemon: the interpreter finishes it before it
    exits. ``wait_pending`` makes the entry visible to this process's next lookups; others see it
    when the atomic rename lands (before that they compile, as during any cold start). Failures
    go to ``notes`` (the session's cache notes).

    Constants other than arrays are pickled here, before the session runs: some carry state that
    running advances (a seeded op's random generator), and the entry must hold their state at
    creation. Arrays are read-only constants and are written as they are."""
    try:
        snapshot = _frozen(consts)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        notes.append(f"not cached: {e}")  # uncacheable (a hoisted closure, say): bypass loudly
        return

    def write() -> None:
        try:
            save(entry, m, snapshot)
        except OSError as e:
            notes.append(f"not cached: {e}")
        finally:
            with _PENDING_LOCK:
                if _PENDING.get(str(entry)) is threading.current_thread():
                    del _PENDING[str(entry)]
    t = threading.Thread(target=write, name="jitort-cache-write")
    with _PENDING_LOCK:
        _PENDING[str(entry)] = t
    t.start()


def wait_pending(entry: Path | None = None) -> None:
    """Wait until this process's background writes of ``entry`` (default: of all entries) are done."""
    with _PENDING_LOCK:
        threads = [t for k, t in _PENDING.items() if entry is None or k == str(entry)]
    for t in threads:
        t.join()


def save_artifact(root: Path, m: Manifest, consts: dict[str, Any]) -> None:
    """Write constants and manifest into an artifact root that already holds its sources;
    the manifest goes last (atomically), so its presence means the artifact is complete."""
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save(staging / "entry", m, consts)
        if (root / "consts").exists():
            shutil.rmtree(root / "consts")
        os.replace(staging / "entry" / "consts", root / "consts")
        os.replace(staging / "entry" / MANIFEST, root / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_manifest(entry: Path) -> Manifest:
    try:
        data = json.loads((entry / MANIFEST).read_text())
        m = Manifest(**data)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError) as e:
        raise StaleEntry(f"manifest unreadable ({e})") from None
    if m.format != FORMAT:
        raise StaleEntry(f"entry format {m.format}, this jitort reads {FORMAT}")
    now = versions()
    for k, v in now.items():
        if m.versions.get(k) != v:
            raise StaleEntry(f"built with {k} {m.versions.get(k)}, this process has {v}")
    cpu = cpu_target()
    if m.cpu != cpu and m.target == "host":
        raise StaleEntry(f"built for CPU {m.cpu.get('cpu_name')} ({m.cpu.get('cpu_features')}), this machine is "
                         f"{cpu['cpu_name']} ({cpu['cpu_features']})")
    return m


def verify_sources(root: Path, m: Manifest) -> dict[str, str]:
    """Sources must hash to what the manifest says (truncated or tampered files are stale)."""
    out = {}
    for kind, name, digest in [("plans", m.plan, m.plan_sha256)] + [("kernels", k, d) for k, d in m.kernels.items()]:
        p = _source_path(root, kind, name)
        try:
            src = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise StaleEntry(f"{kind} source {p.name} unreadable ({e})") from None
        if hashlib.sha256(src.encode()).hexdigest() != digest:
            raise StaleEntry(f"{kind} source {p} does not match the manifest (modified or truncated)")
        out[name] = src
    return out


def load_consts(entry: Path, m: Manifest) -> dict[str, Any]:
    consts: dict[str, Any] = {}
    for name, info in m.consts.items():
        p = entry / info["file"]
        try:
            if p.stat().st_size != info["size"]:
                raise StaleEntry(f"constant file {p.name} has the wrong size (truncated?)")
            if p.suffix == ".npy":
                # Copy-on-write map: writeable (Numba types read-only arrays apart), lazily read.
                # np.asarray drops the np.memmap subclass: its __array_finalize__ runs in Python on
                # every view the kernels take (measured 4 µs per MatMul on an MLP).
                consts[name] = np.asarray(np.load(p, mmap_mode="c", allow_pickle=False))
            else:
                consts[name] = pickle.loads(p.read_bytes())
        except StaleEntry:
            raise
        except Exception as e:  # noqa: BLE001 - any unreadable constant makes the entry stale
            raise StaleEntry(f"constant file {p.name} unreadable ({e})") from None
    return consts


def check_artifact_dir(path: Path) -> None:
    if not (path / MANIFEST).is_file():
        raise Fail(f"{path} is a directory but not a jitort artifact (no {MANIFEST})")


# --- obtaining a compiled model: cache entry, artifact, or a fresh compile ----------------------

@dataclass
class CachePolicy:
    root: Path
    enabled: bool = True
    strict: bool = False
    notes: list[str] = field(default_factory=list)


def policy(config: dict[str, str]) -> CachePolicy:
    """Session config entries and environment variables that steer the cache."""
    disabled = config.get("session.jitort.disable_cache", os.environ.get("JITORT_DISABLE_CACHE", "0")) == "1"
    strict = config.get("session.jitort.strict_cache", os.environ.get("JITORT_STRICT_CACHE", "0")) == "1"
    root = config.get("session.jitort.cache_dir")
    if disabled:
        # Generated source must still be a real file for Numba: a private throwaway root, removed at exit.
        tmp = tempfile.mkdtemp(prefix="jitort-nocache-")
        atexit.register(shutil.rmtree, tmp, True)
        return CachePolicy(Path(tmp), False, strict)
    return CachePolicy(Path(root).expanduser() if root else cache.cache_root(), True, strict)


def manifest_for(c: Any, key: str, model_hash: str, target: str = "host") -> Manifest:
    sha = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    return Manifest(key=key, model_sha256=model_hash, plan=c.plan_name, plan_sha256=sha(c.plan_source),
                    kernels={k: sha(v) for k, v in c.kernel_sources.items()},
                    inputs=[{"name": n, "dtype": None if d is None else np.dtype(d).name,
                             "shape": None if s is None else list(s)} for n, d, s in c.inputs],
                    outputs=list(c.outputs), consts={}, target=target)


def load_entry(entry: Path, root: Path, key: str | None = None) -> Any:
    """A Compiled from an entry directory; raises StaleEntry (or FileNotFoundError if absent)."""
    from jitort.compiler import Compiled
    m = load_manifest(entry)
    if key is not None and m.key != key:
        raise StaleEntry(f"entry key {m.key[:12]} does not match {key[:12]}")
    sources = verify_sources(root, m)
    consts = load_consts(entry, m)
    inputs = [(i["name"], None if i["dtype"] is None else _dtype(i["dtype"]),
               None if i["shape"] is None else tuple(i["shape"])) for i in m.inputs]
    return Compiled(m.plan, sources[m.plan], {k: sources[k] for k in m.kernels}, consts, inputs,
                    list(m.outputs), loaded_from=str(entry))


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # noqa: F401  (registers bfloat16 and the float8 types with numpy)
        return np.dtype(name)


def import_library_objects(src_root: Path, dst_root: Path) -> None:
    """Copy an artifact's compiled library kernels into this process's library cache, if missing."""
    src = src_root / "library" / library_hash()
    if not src.is_dir() or src_root.resolve() == dst_root.resolve():
        return
    dst = dst_root / "library" / library_hash()
    dst.mkdir(mode=0o700, parents=True, exist_ok=True)
    for f in src.rglob("*"):
        t = dst / f.relative_to(src)
        if f.is_file() and not t.exists():
            t.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            data = f.read_bytes()
            cache.write_atomic(t, data)
