"""The on-disk home of generated source and Numba's compiled objects.

Generated modules live at ``<root>/<kind>/<hash[:2]>/<name>.py`` and are imported by path, with
``sys.modules[name]`` registered before execution — the condition for Numba's ``cache=True`` to
find its objects again in a later process (see the Numba notes). Writes are atomic (temp file +
rename) and the first import of a module, which is when Numba compiles or loads it, runs under an
exclusive file lock, because Numba's own index file is read-modify-written without one.

The root is private (0700). jitort refuses to import code from a directory another user could
have written (world- or group-writable, or owned by someone else): loading a cache is executing it.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import stat
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Iterator

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


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
