# -*- coding: utf-8 -*-
"""jitort plan (generated; edits are overwritten)."""
# model: conv_relu
from jitort.run_state import terminated as _terminated
import jitort.kernels.conv as conv
import numpy as np


def build(consts, slow_bind):
    c0 = consts['c0']  # conv#0: float32[1, 108]
    c1 = consts['c1']  # conv#1: float32[3]
    c2 = consts['c2']  # conv#2: float32[6]

    def run(i0, _ro=None):
        if _ro is not None and _ro.terminate: _terminated()
        # FusedConv conv
        t4 = conv.conv_packed(i0, c0, c1, c2, None, None, w_shape=(3, 2, 3, 3, ), auto_pad='NOTSET', group=1, strides=(1, 1, ), dilations=(1, 1, ), pads=(1, 1, 1, 1, ), act=1)
        return (t4,)

    ndarray = np.ndarray

    def run_feed(feed, _ro=None):
        if len(feed) == 1:
            try:
                i0 = feed['x']
            except KeyError:
                return run(*slow_bind(feed), _ro=_ro)
            if (type(i0) is ndarray and i0.dtype == np.float32
                    and i0.ndim == 4
                    and i0.shape[0] == 1
                    and i0.shape[1] == 2
                    and i0.shape[2] == 5
                    and i0.shape[3] == 5):
                f = i0.flags
                if not (f.c_contiguous and f.writeable and f.aligned):
                    return run(*slow_bind(feed), _ro=_ro)
                return run(i0, _ro=_ro)
        return run(*slow_bind(feed), _ro=_ro)

    return run, run_feed


# generated line -> ONNX node: (first line, last line, op, node) per step (jitort.codegen.linemap)
NODE_LINES = (
    (16, 18, 'FusedConv', 'conv'),
)
