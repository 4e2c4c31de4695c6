"""jitort's op implementations (installed as ``jitort.kernels``).

Importing this package installs jitort's Numba cache locator, before any kernel is decorated:

* library kernels (``jitort.kernels.*``) cache under ``<jitort cache root>/library/<library hash>/``:
  compiled once per machine, shared by all models, and invalidated as a whole when any kernel
  source (or numba/llvmlite) changes — Numba's own cache would keep serving a caller compiled
  against an old version of a callee in another module;
* generated modules (written by ``jitort.cache.load_source_module``) cache in ``__pycache__``
  beside their source.

Both are stamped by content (the library hash; the generated module's name, itself a content
hash), not by file mtime, so a copied cache or artifact directory stays valid.
"""
from __future__ import annotations

import os
import sys

from numba.core import caching as _caching

from jitort.kernels.threads import load_scipy_blas

load_scipy_blas()  # before Numba's set-up imports it the slow way (see there)


class _JitortCacheLocator(_caching._CacheLocator):  # type: ignore[misc]
    def __init__(self, py_func, py_file, stamp: str, path: str):  # type: ignore[no-untyped-def]
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._stamp = stamp
        self._cache_path = path

    def get_cache_path(self) -> str:
        return self._cache_path

    def get_source_stamp(self) -> str:
        return self._stamp

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):  # type: ignore[no-untyped-def]
        module = getattr(py_func, "__module__", "") or ""
        if module.startswith("jitort.kernels."):
            from jitort.cache import cache_root, ensure_private_dir
            from jitort.codegen.source import library_hash
            path = ensure_private_dir(cache_root()) / "library" / library_hash()
            self = cls(py_func, py_file, library_hash(), str(path))
        elif getattr(sys.modules.get(module), "__jitort_source__", None) is not None:
            self = cls(py_func, py_file, module, os.path.join(os.path.dirname(py_file), "__pycache__"))
        else:
            return None
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


if not any(c.__name__ == "_JitortCacheLocator" for c in _caching.CacheImpl._locator_classes):
    _caching.CacheImpl._locator_classes.insert(0, _JitortCacheLocator)


def _tolerant_load(load):  # type: ignore[no-untyped-def]
    """Numba raises on a truncated or corrupted index/data file (UnpicklingError, EOFError...),
    which would make every later session fail until the cache is deleted. A file that cannot be
    read is a cache miss: Numba compiles again and overwrites it."""
    def wrapper(self, key):  # type: ignore[no-untyped-def]
        try:
            return load(self, key)
        except Exception:  # noqa: BLE001 - any unreadable cache file is a miss
            return None
    wrapper._jitort_tolerant = True  # type: ignore[attr-defined]
    return wrapper


if not getattr(_caching.IndexDataCacheFile.load, "_jitort_tolerant", False):
    _caching.IndexDataCacheFile.load = _tolerant_load(_caching.IndexDataCacheFile.load)


def _tolerant_index(load_index):  # type: ignore[no-untyped-def]
    def wrapper(self):  # type: ignore[no-untyped-def]
        try:
            return load_index(self)
        except Exception:  # noqa: BLE001 - an unreadable index is an empty one (save() reads it too)
            return {}
    wrapper._jitort_tolerant = True  # type: ignore[attr-defined]
    return wrapper


if not getattr(_caching.IndexDataCacheFile._load_index, "_jitort_tolerant", False):
    _caching.IndexDataCacheFile._load_index = _tolerant_index(_caching.IndexDataCacheFile._load_index)


def _locked_save(save):  # type: ignore[no-untyped-def]
    """Numba's ``save`` reads the index, picks the first free data-file number and writes both,
    unlocked: two processes adding different signatures of one function at once both pick ``.1.nbc``,
    and the index can end up naming the other signature's machine code. One lock per index file
    makes the read-modify-write atomic across processes."""
    def wrapper(self, key, data):  # type: ignore[no-untyped-def]
        from pathlib import Path

        from jitort.cache import file_lock
        with file_lock(Path(self._index_path + ".lock")):
            save(self, key, data)
    wrapper._jitort_locked = True  # type: ignore[attr-defined]
    return wrapper


if not getattr(_caching.IndexDataCacheFile.save, "_jitort_locked", False):
    _caching.IndexDataCacheFile.save = _locked_save(_caching.IndexDataCacheFile.save)
