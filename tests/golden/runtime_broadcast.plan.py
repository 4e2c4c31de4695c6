# -*- coding: utf-8 -*-
"""jitort plan (generated; edits are overwritten)."""
# model: runtime_broadcast
from jitort.codegen.broadcast import broadcast_shape as _broadcast_shape, expand_to as _expand_to
from jitort.run_state import terminated as _terminated
from k_<1> import k_<1>
import jitort.kernels.anyrank as anyrank
import numpy as np


def build(consts, slow_bind):
    c0 = consts['c0']  # relu.kernel#0: AnyRankKernel
    c1 = consts['c1']  # k: float32[]

    def run(i0, _ro=None):
        if _ro is not None and _ro.terminate: _terminated()
        # ElementwiseAnyRank relu
        t2 = anyrank.ElementwiseAnyRank(i0, kernel=c0)
        if _ro is not None and _ro.terminate: _terminated()
        # 1 fused: scale
        _s = _broadcast_shape(t2.shape, c1.shape)
        t4 = np.empty(_s, np.float32)
        k_<1>(_expand_to(t2, _s), c1, t4)
        del t2
        return (t4,)

    ndarray = np.ndarray

    def run_feed(feed, _ro=None):
        if len(feed) == 1:
            try:
                i0 = feed['x']
            except KeyError:
                return run(*slow_bind(feed), _ro=_ro)
            if (type(i0) is ndarray and i0.dtype == np.float32):
                f = i0.flags
                if not (f.c_contiguous and f.writeable and f.aligned):
                    return run(*slow_bind(feed), _ro=_ro)
                return run(i0, _ro=_ro)
        return run(*slow_bind(feed), _ro=_ro)

    return run, run_feed


# generated line -> ONNX node: (first line, last line, op, node) per step (jitort.codegen.linemap)
NODE_LINES = (
    (17, 18, 'ElementwiseAnyRank', 'relu'),
    (20, 25, 'fused elementwise', 'scale'),
)
