"""Compiled-model entries: the model-level cache and the ahead-of-time artifact are one format.

An entry is a directory holding ``manifest.json`` (format, key, model hash, versions, CPU target,
input signature, plan and kernel module names with their content hashes, constant files with
their sizes and sha256, and the sha256 of Numba's index and data files for the plan and kernels —
for an artifact also for its library kernels) and ``consts/`` (the plan's constants after folding,
one ``.npy`` each, ``.pkl`` for what numpy cannot store). Generated source and Numba's objects live
in the cache root beside it (``kernels/``, ``plans/``, ``library/``) — for an artifact directory,
the artifact *is* that root.

An entry is written to a temporary directory and renamed into place, under a file lock, so a
reader sees a complete entry or none. Loading checks versions and CPU, then that every file it
will read hashes to what the manifest says before it is read: sources, Numba's files, pickled
constants (before they are unpickled), and the arrays (hashed on threads while the kernels are
imported, before the entry is returned). Any mismatch means "stale": the session recompiles (or, in
strict mode, refuses with the reason); a file that changed since it was written (``TamperedEntry``)
also gets a warning, and its Numba files are removed from a cache root before the rebuild.
"""
from __future__ import annotations

import atexit
import glob
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jitort import cache
from jitort.codegen.source import content_hash, library_hash
from jitort.compiled import Artifact
from jitort.errors import Fail
from jitort.runtime_info import get_version_string

FORMAT = 3  # 2: constants and Numba's files carry a sha256; 3: own_threads
MANIFEST = "manifest.json"
NUMBA_FILES = (".nbi", ".nbc")


class StaleEntry(Exception):
    """The entry exists but cannot be used as it is; the message says why."""


class TamperedEntry(StaleEntry):
    """A file of the entry differs from what the manifest recorded when it was written: modified,
    truncated or replaced. ``files``: those of Numba's files among them (never loaded; a rebuild in
    a cache root removes them first)."""

    def __init__(self, message: str, files: list[Path] | None = None) -> None:
        super().__init__(message)
        self.files = files or []


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
    consts: dict[str, dict[str, Any]]        # name -> {"file", "size", "sha256"}
    target: str = "host"
    own_threads: bool = False                # see jitort.compiled.Artifact
    numba: dict[str, str] = field(default_factory=dict)  # Numba file (relative to the root) -> sha256
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
        (tmp / "consts").mkdir(mode=0o700)
        for name, value in _frozen(consts).items():
            if isinstance(value, _Pickled):
                f = f"consts/{name}.pkl"
                (tmp / f).write_bytes(value.data)
                sha = cache.digest(value.data)
            else:
                f = f"consts/{name}.npy"
                np.save(tmp / f, value, allow_pickle=False)
                sha = cache.file_digest(tmp / f)
            m.consts[name] = {"file": f, "size": (tmp / f).stat().st_size, "sha256": sha}
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
            m.numba = pin_numba_files(entry.parents[2], m)  # entry_dir: <root>/models/<xx>/<key>
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
    m.numba = pin_numba_files(root, m, library=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        save(staging / "entry", m, consts)
        if (root / "consts").exists():
            shutil.rmtree(root / "consts")
        os.replace(staging / "entry" / "consts", root / "consts")
        os.replace(staging / "entry" / MANIFEST, root / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    shapes = {"kernels": dict, "inputs": list, "outputs": list, "consts": dict, "target": str, "numba": dict,
              "versions": dict, "cpu": dict, "key": str, "model_sha256": str, "own_threads": bool}
    bad = [k for k, t in shapes.items() if not isinstance(getattr(m, k), t)]
    if bad:
        raise TamperedEntry(f"manifest malformed ({', '.join(bad)})")
    if not all(isinstance(n, str) and _MODULE.fullmatch(n) for n in [m.plan, *m.kernels]):
        raise TamperedEntry("the manifest names a module that jitort does not generate")
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
            raise TamperedEntry(f"{kind} source {p} does not match the manifest (modified or truncated)")
        out[name] = src
    return out


_CONST_FILE = re.compile(r"consts/[^/\\]+\.(npy|pkl)")


def _inside(root: Path, rel: str) -> Path:
    """A file the manifest names, which must lie below ``root`` (the manifest is input too)."""
    parts = Path(rel).parts if isinstance(rel, str) else ()
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise TamperedEntry(f"the manifest names a file outside the entry: {rel!r}")
    return root.joinpath(*parts)


def _open_consts(entry: Path, m: Manifest) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
    """The constants, and the array files still to hash: pickles are read once, hashed and only
    then unpickled; arrays are mapped (``allow_pickle=False``: nothing in them runs) and hashed by
    ``_hash_arrays`` before the entry is used."""
    consts: dict[str, Any] = {}
    arrays: list[tuple[Path, str]] = []
    for name, info in m.consts.items():
        f = info.get("file") if isinstance(info, dict) else None
        if not isinstance(f, str) or not _CONST_FILE.fullmatch(f) or not isinstance(info.get("sha256"), str):
            raise TamperedEntry(f"the manifest's record of constant {name!r} is malformed")
        p = entry / f
        try:
            if p.stat().st_size != info["size"]:
                raise TamperedEntry(f"constant file {p} has the wrong size (truncated?)")
            if p.suffix == ".npy":
                # Copy-on-write map: writeable (Numba types read-only arrays apart), lazily read.
                # np.asarray drops the np.memmap subclass: its __array_finalize__ runs in Python on
                # every view the kernels take (measured 4 µs per MatMul on an MLP).
                consts[name] = np.asarray(np.load(p, mmap_mode="c", allow_pickle=False))
                arrays.append((p, info["sha256"]))
            else:
                data = p.read_bytes()
                if cache.digest(data) != info["sha256"]:
                    raise TamperedEntry(f"constant file {p} does not match the manifest (modified since the entry "
                                        "was written); not unpickling it")
                consts[name] = pickle.loads(data)
        except StaleEntry:
            raise
        except Exception as e:  # noqa: BLE001 - any unreadable constant makes the entry stale
            raise StaleEntry(f"constant file {p} unreadable ({e})") from None
    return consts, arrays


_VERIFIED: dict[str, tuple] = {}  # path -> (stat identity, sha256) when it last hashed right here


def _identity(st: os.stat_result) -> tuple[int, ...]:
    # Any write to the file changes its ctime, which no unprivileged process can set back.
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hash_arrays(files: list[tuple[Path, str]]) -> Any:
    """Start hashing ``files`` on threads (hashlib releases the GIL); the returned function waits
    and raises TamperedEntry naming the first file that does not match. light_resnet50's 124 MB
    take ~0.08 s of CPU, overlapped with importing the kernels. A file this process verified
    before and that has not been written since is not hashed again."""
    todo = []
    for p, sha in files:
        try:
            ident = (*_identity(p.stat()), sha)
        except OSError as e:
            raise StaleEntry(f"constant file {p} unreadable ({e})") from None
        if _VERIFIED.get(str(p)) != ident:
            todo.append((p, sha, ident))
    if not todo:
        return lambda: None
    workers = max(1, min(4, (os.cpu_count() or 2) - 1, len(todo)))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="jitort-verify")
    todo.sort(key=lambda f: -f[2][2])  # largest first, so the threads finish together
    futures = [(p, sha, ident, pool.submit(cache.file_digest, p)) for p, sha, ident in todo]
    pool.shutdown(wait=False)

    def wait() -> None:
        for p, sha, ident, fut in futures:
            try:
                ok = fut.result() == sha
            except OSError as e:
                raise StaleEntry(f"constant file {p} unreadable ({e})") from None
            if ok:
                _VERIFIED[str(p)] = ident
            else:
                for *_, rest in futures:
                    rest.cancel()
                raise TamperedEntry(f"constant file {p} does not match the manifest (modified since the entry "
                                    "was written)")
    return wait


def load_consts(entry: Path, m: Manifest) -> dict[str, Any]:
    """The entry's constants, every file verified against the manifest."""
    consts, arrays = _open_consts(entry, m)
    _hash_arrays(arrays)()
    return consts


def _modules(m: Manifest) -> list[tuple[str, str]]:
    """(kind, name) of the entry's generated modules, in import order (the plan imports the kernels)."""
    return [("kernels", k) for k in m.kernels] + [("plans", m.plan)]


def _record_digest(f: Path) -> str | None:
    """The sha256 of Numba file ``f`` if it matches the record Numba's save left beside it."""
    index = f if f.suffix == ".nbi" else f.with_name(f.name.rsplit(".", 2)[0] + ".nbi")
    want = cache.read_record(index).get(f.name)
    return want if want is not None and cache.file_digest(f) == want else None


def pin_numba_files(root: Path, m: Manifest, library: bool = False) -> dict[str, str]:
    """Numba's index and data files of the entry's plan and kernels (and, for an artifact, of the
    library kernels) that match their record: relative path -> sha256, for the manifest."""
    groups = [(_source_path(root, kind, name).parent / "__pycache__", name + ".") for kind, name in _modules(m)]
    if library:
        groups.append((root / "library" / library_hash(), ""))
    pins = {}
    for d, prefix in groups:
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.suffix in NUMBA_FILES and f.name.startswith(prefix) and (sha := _record_digest(f)) is not None:
                pins[f.relative_to(root).as_posix()] = sha
    return pins


def verify_numba_files(root: Path, m: Manifest) -> None:
    """The plan's and kernels' Numba files must hash to what the manifest says (a missing one is
    stale; the library kernels an artifact pins are checked when they are copied)."""
    bad, missing = [], []
    for rel, sha in m.numba.items():
        if not isinstance(sha, str):
            raise TamperedEntry(f"the manifest's record of {rel!r} is malformed")
        p = _inside(root, rel)
        if p.parts[len(root.parts)] == "library":
            continue
        try:
            if cache.file_digest(p) != sha:
                bad.append(p)
        except FileNotFoundError:
            missing.append(p)
        except OSError as e:
            raise StaleEntry(f"Numba cache file {p} unreadable ({e})") from None
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise TamperedEntry(f"Numba cache file {bad[0]} does not match the manifest (modified since the entry was "
                            f"written){more}", bad)
    if missing:
        raise StaleEntry(f"Numba cache file {missing[0]} is missing")


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


def manifest_for(c: Artifact, target: str = "host") -> Manifest:
    """The manifest of ``c`` (its ``key`` and ``model_hash`` set) as an entry for ``target``."""
    sha = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    return Manifest(key=c.key, model_sha256=c.model_hash, plan=c.plan_name, plan_sha256=sha(c.plan_source),
                    kernels={k: sha(v) for k, v in c.kernel_sources.items()},
                    inputs=[{"name": n, "dtype": None if d is None else np.dtype(d).name,
                             "shape": None if s is None else list(s)} for n, d, s in c.inputs],
                    outputs=list(c.outputs), consts={}, target=target, own_threads=c.own_threads)


def load_entry(entry: Path, root: Path, key: str | None = None, discard_tampered: bool = False) -> Artifact:
    """The ``Artifact`` in an entry directory; raises StaleEntry (or FileNotFoundError if absent).

    Every file is verified before it is read (see the module docstring); the arrays are hashed while
    the plan and kernel modules (verified source, verified Numba files) are imported, so the
    session's own imports find them loaded. With ``discard_tampered`` (a cache root about to be
    rebuilt) Numba files that fail their check are removed, so the rebuild cannot load them."""
    m = load_manifest(entry)
    if key is not None and m.key != key:
        raise StaleEntry(f"entry key {m.key[:12]} does not match {key[:12]}")
    cache.check_tree(root, entry / "consts")
    sources = verify_sources(root, m)
    try:
        verify_numba_files(root, m)
    except TamperedEntry as e:
        if discard_tampered:
            for f in e.files:
                f.unlink(missing_ok=True)
        raise
    consts, arrays = _open_consts(entry, m)
    wait = _hash_arrays(arrays)
    if not m.target.startswith("cuda"):  # (a CUDA plan imports only on a session that runs CUDA)
        for kind, name in _modules(m):
            cache.load_source_module(kind, name, sources[name], root)
    wait()
    inputs = [(i["name"], None if i["dtype"] is None else _dtype(i["dtype"]),
               None if i["shape"] is None else tuple(i["shape"])) for i in m.inputs]
    return Artifact(m.plan, sources[m.plan], {k: sources[k] for k in m.kernels}, consts, inputs,
                    list(m.outputs), target="cuda" if m.target.startswith("cuda") else "cpu",
                    own_threads=m.own_threads, loaded_from=str(entry), key=m.key, model_hash=m.model_sha256)


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # noqa: F401  (registers bfloat16 and the float8 types with numpy)
        return np.dtype(name)


def import_library_objects(src_root: Path, dst_root: Path) -> None:
    """Copy an artifact's compiled library kernels into this process's library cache where that
    has none for a function: only files the artifact's manifest pins, each checked against it as
    it is read (TamperedEntry otherwise), with a record for Numba's check beside them."""
    src = src_root / "library" / library_hash()
    if not src.is_dir() or src_root.resolve() == dst_root.resolve():
        return
    m = load_manifest(src_root)
    pins = {Path(rel).name: sha for rel, sha in m.numba.items()
            if isinstance(rel, str) and Path(rel).parent.as_posix() == f"library/{library_hash()}"}
    dst = cache.private_tree(dst_root, dst_root / "library" / library_hash())
    for index in sorted(src.glob("*.nbi")):
        if index.name not in pins or (dst / index.name).exists():
            continue
        base = index.name[:-len(".nbi")] + "."
        group = [index] + sorted(f for f in src.glob(f"{glob.escape(base)}*.nbc") if f.name in pins)
        blobs = {}
        for f in group:
            data = f.read_bytes()
            if cache.digest(data) != pins[f.name]:
                raise TamperedEntry(f"library cache file {f} does not match the artifact's manifest (modified since "
                                    "the artifact was written)", [f])
            blobs[f.name] = data
        with cache.file_lock(dst / f"{index.name}.lock"):
            # data files first: the index names them. No fsync (37 of them took ~0.14 s of a fresh
            # Ray worker's session): the files are read through their record, a torn one is a miss
            for name, data in blobs.items():
                if name != index.name:
                    cache.write_atomic(dst / name, data, sync=False)
            cache.write_atomic(dst / index.name, blobs[index.name], sync=False)
            cache.write_record(dst / index.name, {n: pins[n] for n in blobs})
