"""jitort's op implementations (installed as ``jitort.kernels``).

Importing this package first points Numba's on-disk cache for every ``@njit(cache=True)`` kernel
in it at ``<jitort cache root>/library/<library hash>/``: compiled once per machine, shared by all
models, and invalidated as a whole when any kernel source (or numba/llvmlite) changes — Numba's
own cache would keep serving a caller compiled against an old version of a callee in another
module. The locator runs before any kernel module is imported because it lives here.
"""
from __future__ import annotations

import os

from numba.core import caching as _caching


class _LibraryCacheLocator(_caching._SourceFileBackedLocatorMixin, _caching._CacheLocator):  # type: ignore[misc]
    def __init__(self, py_func, py_file):  # type: ignore[no-untyped-def]
        from jitort.cache import cache_root, ensure_private_dir
        from jitort.codegen.source import library_hash
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        root = ensure_private_dir(cache_root())
        self._cache_path = str(root / "library" / library_hash() / os.path.basename(os.path.dirname(py_file)))

    def get_cache_path(self) -> str:
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):  # type: ignore[no-untyped-def]
        if not (getattr(py_func, "__module__", "") or "").startswith("jitort.kernels."):
            return None
        return super().from_function(py_func, py_file)


if _LibraryCacheLocator not in _caching.CacheImpl._locator_classes:
    _caching.CacheImpl._locator_classes.insert(0, _LibraryCacheLocator)
