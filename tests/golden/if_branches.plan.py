# -*- coding: utf-8 -*-
"""jitort plan (generated; edits are overwritten)."""
# model: if_branches
from jitort.run_state import terminated as _terminated
import jitort.kernels.control as control
import numpy as np


def build(consts, slow_bind):
    c0 = consts['c0']  # if.then_branch#0: SubPlan
    c1 = consts['c1']  # if.else_branch#1: SubPlan

    def run(i0, i1, _ro=None):
        if _ro is not None and _ro.terminate: _terminated()
        # If if
        t4 = control.If(i0, i1, then_branch=c0, else_branch=c1, _nout=1)
        return (t4,)

    ndarray = np.ndarray

    def run_feed(feed, _ro=None):
        if len(feed) == 2:
            try:
                i0 = feed['c']
                i1 = feed['x']
            except KeyError:
                return run(*slow_bind(feed), _ro=_ro)
            if (type(i0) is ndarray and i0.dtype == np.bool_
                    and i0.ndim == 0
                    and type(i1) is ndarray and i1.dtype == np.float32
                    and i1.ndim == 1
                    and i1.shape[0] == 3):
                f = i0.flags
                if not (f.c_contiguous and f.writeable and f.aligned):
                    return run(*slow_bind(feed), _ro=_ro)
                f = i1.flags
                if not (f.c_contiguous and f.writeable and f.aligned):
                    return run(*slow_bind(feed), _ro=_ro)
                return run(i0, i1, _ro=_ro)
        return run(*slow_bind(feed), _ro=_ro)

    return run, run_feed


# generated line -> ONNX node: (first line, last line, op, node) per step (jitort.codegen.linemap)
NODE_LINES = (
    (15, 17, 'If', 'if'),
)
