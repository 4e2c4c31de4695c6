"""Mirror of ``onnxruntime.capi``: code written as ``from onnxruntime.capi.onnxruntime_pybind11_state
import InvalidArgument`` works unchanged with ``jitort.capi``."""

from jitort.capi import onnxruntime_pybind11_state

__all__ = ["onnxruntime_pybind11_state"]
