"""jitort's op implementations (installed as ``jitort.kernels``).

Importing this package installs jitort's Numba cache locator, before any kernel is decorated:

* library kernels (``jitort.kernels.*``) cache under ``<jitort cache root>/library/<library hash>/``:
  compiled once per machine, shared by all models, and invalidated as a whole when any kernel
  source (or numba/llvmlite) changes — Numba's own cache would keep serving a caller compiled
  against an old version of a callee in another module;
* generated modules (written by ``jitort.cache.load_source_module``) cache in ``__pycache__``
  beside their source.

Both are stamped by content (the library hash; the generated module's name, itself a content
hash), not by file mtime, so a copied cache or artifact directory stays valid. In both, Numba reads
an index or data file (pickles) only when it matches the record jitort wrote when Numba saved it
(see ``jitort.cache``).
"""
from __future__ import annotations

import os
import sys

from numba.core import caching as _caching

from jitort import cache as _cache
from jitort.codegen.source import library_hash
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
            root = _cache.ensure_private_dir(_cache.cache_root())
            path = _cache.private_tree(root, root / "library" / library_hash())
            self = cls(py_func, py_file, library_hash(), str(path))
        elif getattr(sys.modules.get(module), "__jitort_source__", None) is not None:
            self = cls(py_func, py_file, module, os.path.join(os.path.dirname(py_file), "__pycache__"))
        else:
            return None
        _cache.gate_numba_dir(self._cache_path)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


if not any(c.__name__ == "_JitortCacheLocator" for c in _caching.CacheImpl._locator_classes):
    _caching.CacheImpl._locator_classes.insert(0, _JitortCacheLocator)


# Numba reads and writes its index and data files through these; jitort's versions verify what is
# read against the record and update the record on save (jitort.cache), in jitort's directories.
for _name, _hook in (("_load_index", _cache.numba_load_index), ("_load_data", _cache.numba_load_data),
                     ("_save_index", _cache.numba_save_index), ("_save_data", _cache.numba_save_data),
                     ("save", _cache.numba_save)):
    if not getattr(getattr(_caching.IndexDataCacheFile, _name), "_jitort_hook", False):
        _fn = _hook(getattr(_caching.IndexDataCacheFile, _name))
        _fn._jitort_hook = True
        setattr(_caching.IndexDataCacheFile, _name, _fn)


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
