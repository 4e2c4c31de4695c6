"""ONNX's protobuf message classes (``ModelProto``, ``TensorProto``, ...) without importing the onnx package.

``import onnx`` imports ``ml_dtypes`` (for its dtype tables), ~0.7 s of CPU in a fresh process: more
than the rest of jitort's start-up without Numba. A session that loads an AOT artifact of a float32
model needs only to parse ``model.onnx`` (its inputs, outputs and metadata); a Ray worker pays that
start-up before its first batch. So :func:`messages` returns the generated message module
``onnx/onnx_ml_pb2.py`` of the installed onnx, executed on its own under a private module name,
when onnx is not imported yet; else onnx's own module.

The classes are onnx's own either way: protobuf's upb backend (the default since protobuf 4.21)
keeps one descriptor per file in its default pool (adding the same serialized file twice returns
the first) and one concrete class per descriptor, so ``onnx.ModelProto`` imported later *is* the
class returned here (``tests/test_lazy_imports.py`` checks it). With another backend, or without
that file, :func:`messages` imports onnx instead: slower, never different.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

__all__ = ["messages"]

_PRIVATE_NAME = "jitort._onnx_ml_pb2"
_lock = threading.Lock()
_module: ModuleType | None = None


def messages() -> ModuleType:
    """A module with onnx's message classes as attributes (``messages().ModelProto``)."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            _module = _load()
    return _module


def _load() -> ModuleType:
    if "onnx" not in sys.modules:
        standalone = _standalone()
        if standalone is not None:
            return standalone
    import onnx  # the slow way: onnx is imported already, or its messages cannot be had alone
    return onnx


def _standalone() -> ModuleType | None:
    """onnx's ``onnx_ml_pb2`` executed alone (it imports only google.protobuf), or None."""
    try:
        from google.protobuf.internal import api_implementation
        if api_implementation.Type() != "upb":
            return None  # class identity with onnx's own import is only established for upb
        spec = importlib.util.find_spec("onnx")  # finds the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "onnx_ml_pb2.py"
    if not path.is_file():
        return None
    pb2_spec = importlib.util.spec_from_file_location(_PRIVATE_NAME, path)
    if pb2_spec is None or pb2_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(pb2_spec)
    try:
        pb2_spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - a protobuf/onnx version pair that refuses: take the slow way
        return None
    return module
