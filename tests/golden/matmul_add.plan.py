# -*- coding: utf-8 -*-
"""jitort plan (generated; edits are overwritten)."""
# model: matmul_add
from jitort.run_state import terminated as _terminated
import jitort.kernels.gemm_ops as gemm_ops
import numpy as np


def build(consts, slow_bind):
    c0 = consts['c0']  # matmul#0: float32[48]
    c1 = consts['c1']  # matmul#1: float32[16]

    def run(i0, _ro=None):
        if _ro is not None and _ro.terminate: _terminated()
        # MatMul matmul
        t3 = gemm_ops.matmul_packed(i0, c0, c1, None, k=3, n=4, hasb=1, transA=0, act=0, lo=0.0, hi=0.0)
        return (t3,)

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
    (15, 17, 'MatMul', 'matmul'),
)
