"""The on-disk home of generated source and Numba's compiled objects.

Generated modules live at ``<root>/<kind>/<hash[:2]>/<name>.py`` and are imported by path, with
``sys.modules[name]`` registered before execution — the condition for Numba's ``cache=True`` to
find its objects again in a later process (see the Numba notes). Writes are atomic (temp file +
rename) and the first import of a module, which is when Numba compiles or loads it, runs under an
exclusive file lock, because Numba's own index file is read-modify-written without one.

The root is private (0700). jitort refuses to import code from a directory another user could
have written (world- or group-writable, or owned by someone else), the root and every directory
below it that it reads: loading a cache is executing it.

Numba's cache files (``.nbi`` index, ``.nbc`` data) are pickles. In the directories jitort's cache
locator gives Numba, each index has a record beside it (``<base>.nbs``, JSON: file name -> sha256)
written from the bytes Numba saved, under the index's lock; Numba reads an index or data file only
when its bytes match that record, and anything else is a cache miss (with a warning): the function
compiles again and its files and record are rewritten. Entries and artifacts also pin these files
in their manifest (see ``jitort.artifact``).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import io
import json
import mmap
import os
import pickle
import stat
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from jitort.errors import Fail

_lock = threading.RLock()


def cache_root() -> Path:
    env = os.environ.get("JITORT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jitort"


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_trusted(path)
    return path


def check_trusted(path: Path) -> None:
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise Fail(f"jitort refuses to use cache directory {path}: it is owned by uid {st.st_uid}, "
                   f"not by you (uid {os.getuid()}); loading a cache executes its code")
    if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
        raise Fail(f"jitort refuses to use cache directory {path}: it is writable by other users "
                   f"(mode {stat.S_IMODE(st.st_mode):o}); make it private with chmod 700")


def private_tree(root: Path, path: Path) -> Path:
    """Create ``path`` (a directory under ``root``) and its parents private, and check the root and
    every directory from it down to ``path``: code or pickles read from there are only as safe as
    the least private of them."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_tree(root, path)
    return path


def check_tree(root: Path, path: Path) -> None:
    """``check_trusted`` for ``root`` and each existing directory from it down to ``path``."""
    check_trusted(root)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise Fail(f"jitort refuses to use {path}: it is outside the cache directory {root}") from None
    d = root
    for part in parts:
        d = d / part
        if part == ".." or not d.is_dir():
            if part == "..":
                raise Fail(f"jitort refuses to use {path}: it leaves the cache directory {root}")
            return
        check_trusted(d)


def digest(data: bytes | memoryview) -> str:
    """The content hash jitort records for cache files (sha256: with SHA extensions the fastest
    hashlib offers here, ~0.75 GB/s a thread, and hashlib releases the GIL while it runs)."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """``digest`` of a file's content, hashed from a read-only map of it (no copy)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return digest(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return digest(m)  # type: ignore[arg-type]


def write_atomic(path: Path, data: bytes, sync: bool = True) -> None:
    """``path`` holds ``data`` or what it held before, never a part (a rename); with ``sync``, also
    after a crash of the machine. Without it, a crash may leave a file of any content: right for
    files read only through their record (``_verified_read``: a torn file is a miss)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@dataclass
class CompileLog:
    """What Numba compiled (as opposed to loaded from its cache) while it was recording."""

    compiled: list[tuple[str, float]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.compiled)


_events: list[tuple[str, float]] = []
_listener_installed = False


def _install_listener() -> None:
    global _listener_installed
    if _listener_installed:
        return
    from numba.core import event

    class _Listener(event.Listener):
        # Compiles nest (a kernel compiles the @njit functions it calls): keep a start-time stack.
        def __init__(self) -> None:
            self._starts = threading.local()

        def on_start(self, ev: event.Event) -> None:
            stack = self._starts.__dict__.setdefault("s", [])
            stack.append(time.perf_counter())

        def on_end(self, ev: event.Event) -> None:
            stack = self._starts.__dict__.setdefault("s", [])
            t0 = stack.pop() if stack else time.perf_counter()
            disp = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            fn = getattr(disp, "py_func", None)
            name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
            _events.append((name, time.perf_counter() - t0))

    event.register("numba:compile", _Listener())
    _listener_installed = True


def record_compile(name: str, seconds: float) -> None:
    """Count a compilation Numba's compile event does not report (a ``cfunc``)."""
    _install_listener()
    _events.append((name, seconds))


def compile_count() -> int:
    """Total Numba compilations in this process since jitort started watching (loads excluded)."""
    _install_listener()
    return len(_events)


def compiled_since(mark: int) -> list[tuple[str, float]]:
    return list(_events[mark:])


def load_source_module(kind: str, name: str, source: str, root: Path | None = None) -> ModuleType:
    """Write ``source`` (if needed) to the cache and import it by path as module ``name``."""
    _install_listener()
    with _lock:
        root = ensure_private_dir(root or cache_root())
        path = root / kind / name[-20:-18] / f"{name}.py"
        private_tree(root, path.parent / "__pycache__")  # where Numba keeps this module's objects
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "__jitort_source__", None) == source:
            if not path.exists():  # imported from another root: this one's entries must find it too
                write_atomic(path, source.encode())
            return mod
        data = source.encode()
        if not path.exists() or path.read_bytes() != data:
            write_atomic(path, data)
        with file_lock(path.with_suffix(".lock")):
            return import_file(name, path, __jitort_source__=source)


def import_file(name: str, path: Path | str, **attrs: object) -> ModuleType:
    """Import the module file at ``path`` (source or extension) as ``name``: registered in
    sys.modules, ``attrs`` set before it runs, unregistered again if running it fails."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {name} from {path}")
    mod = importlib.util.module_from_spec(spec)
    for k, v in attrs.items():
        setattr(mod, k, v)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


# --- Numba's cache files: read only what jitort recorded ----------------------------------------
# Installed on numba.core.caching.IndexDataCacheFile by ``jitort.kernels``; they act only in the
# directories jitort's cache locator handed to Numba (``gate_numba_dir``), elsewhere Numba's own
# code runs unchanged.

_numba_dirs: set[str] = set()


def gate_numba_dir(path: str | Path) -> None:
    """Numba files in ``path`` are read only when they match their record (``.nbs``)."""
    _numba_dirs.add(os.path.abspath(path))


def _gated(cf: Any) -> bool:
    return os.path.abspath(cf._cache_path) in _numba_dirs


def record_path(index_path: str | Path) -> Path:
    """The record (file name -> sha256) of an index file and the data files it names."""
    p = str(index_path)
    return Path((p[:-4] if p.endswith(".nbi") else p) + ".nbs")


def read_record(index_path: str | Path) -> dict[str, str]:
    try:
        rec = json.loads(record_path(index_path).read_bytes())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in rec.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(rec, dict) else {}


def write_record(index_path: str | Path, digests: dict[str, str]) -> None:
    """Merge ``digests`` into the record of ``index_path`` (callers hold the index's lock)."""
    rec = read_record(index_path)
    rec.update(digests)
    write_atomic(record_path(index_path), json.dumps(rec, sort_keys=True).encode())


def _verified_read(cf: Any, name: str) -> bytes | None:
    """The bytes of the index or data file ``name`` if they match the record; None if the file
    does not exist; raises ``_Unverified`` (a miss) otherwise. A mismatch is re-read under the
    index's lock once: a writer may have replaced the file but not yet its record."""
    path = Path(cf._data_path(name))
    holding = cf.__dict__.get("_jitort_written") is not None  # inside numba_save: the lock is ours
    for locked in (False,) if holding else (False, True):
        try:
            with file_lock(Path(cf._index_path + ".lock")) if locked else contextlib.nullcontext():
                data = path.read_bytes()
                want = read_record(cf._index_path).get(name)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _Unverified(f"{path}: {e}") from None
        if want is not None and digest(data) == want:
            return data
    why = "has no record" if want is None else "does not match its record (modified since Numba wrote it)"
    if not holding:  # (inside numba_save the file is about to be replaced: the load said so already)
        warnings.warn(f"jitort: Numba cache file {path} {why}; not loading it, compiling again", RuntimeWarning,
                      stacklevel=2)
    raise _Unverified(f"{path} {why}")


class _Unverified(OSError):
    """A Numba cache file jitort will not unpickle: Numba's ``load`` treats OSError as a miss."""


def numba_load_index(original: Any) -> Any:
    """``IndexDataCacheFile._load_index`` reading verified bytes only (Numba's logic otherwise)."""
    def _load_index(self):  # type: ignore[no-untyped-def]
        if not _gated(self):
            return original(self)
        try:
            data = _verified_read(self, self._index_name)
        except _Unverified:
            return {}
        if data is None:
            return {}
        f = io.BytesIO(data)
        if pickle.load(f) != self._version:
            return {}
        stamp, overloads = pickle.loads(f.read())
        return overloads if stamp == self._source_stamp else {}
    return _load_index


def numba_load_data(original: Any) -> Any:
    def _load_data(self, name):  # type: ignore[no-untyped-def]
        if not _gated(self):
            return original(self, name)
        data = _verified_read(self, name)
        if data is None:
            raise FileNotFoundError(self._data_path(name))
        return pickle.loads(data)
    return _load_data


def numba_save_index(original: Any) -> Any:
    """``_save_index`` that also notes the digest of the bytes it wrote (for ``numba_save``)."""
    def _save_index(self, overloads):  # type: ignore[no-untyped-def]
        if not _gated(self):
            return original(self, overloads)
        data = pickle.dumps(self._version, protocol=-1) + self._dump((self._source_stamp, overloads))
        with self._open_for_write(self._index_path) as f:
            f.write(data)
        self.__dict__.setdefault("_jitort_written", {})[self._index_name] = digest(data)
    return _save_index


def numba_save_data(original: Any) -> Any:
    def _save_data(self, name, data):  # type: ignore[no-untyped-def]
        if not _gated(self):
            return original(self, name, data)
        data = self._dump(data)
        with self._open_for_write(self._data_path(name)) as f:
            f.write(data)
        self.__dict__.setdefault("_jitort_written", {})[name] = digest(data)
    return _save_data


def numba_save(original: Any) -> Any:
    """Numba's ``save`` reads the index, picks the first free data-file number and writes both,
    unlocked: two processes adding different signatures of one function at once both pick ``.1.nbc``,
    and the index can end up naming the other signature's machine code. One lock per index file
    makes the read-modify-write atomic across processes; the record of what was written is updated
    under the same lock."""
    def save(self, key, data):  # type: ignore[no-untyped-def]
        with file_lock(Path(self._index_path + ".lock")):
            self.__dict__["_jitort_written"] = {}
            try:
                original(self, key, data)
            finally:
                written = self.__dict__.pop("_jitort_written")
            if written and _gated(self):
                write_record(self._index_path, written)
    return save
