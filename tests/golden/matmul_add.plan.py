# -*- coding: utf-8 -*-
"""jitort plan (generated; edits are overwritten)."""
# model: matmul_add
from jitort.run_state import terminated as _terminated
from k_<1> import k_<1>
import jitort.kernels.linalg as linalg
import numpy as np


def build(consts, slow_bind):
    c0 = consts['c0']  # w: float32[3, 4]
    c1 = consts['c1']  # b: float32[4]

    def run(i0, _ro=None):
        if _ro is not None and _ro.terminate: _terminated()
        # MatMul matmul
        t2 = linalg.MatMul(i0, c0)
        if _ro is not None and _ro.terminate: _terminated()
        # 1 fused: add
        t4 = np.empty(t2.shape, np.float32)
        k_<1>(t2, c1, t4)
        del t2
        return (t4,)

    ndarray = np.ndarray

    def run_feed(feed, _ro=None):
        if len(feed) == 1:
            try:
                i0 = feed['x']
            except KeyError:
                return run(*slow_bind(feed), _ro=_ro)
            if (type(i0) is ndarray and i0.dtype == np.float32
                    and i0.ndim == 2
                    and i0.shape[0] == 2
                    and i0.shape[1] == 3):
                f = i0.flags
                if not (f.c_contiguous and f.writeable and f.aligned):
                    return run(*slow_bind(feed), _ro=_ro)
                return run(i0, _ro=_ro)
        return run(*slow_bind(feed), _ro=_ro)

    return run, run_feed


# generated line -> ONNX node: (first line, last line, op, node) per step (jitort.codegen.linemap)
NODE_LINES = (
    (16, 17, 'MatMul', 'matmul'),
    (19, 23, 'fused elementwise', 'add'),
)
