"""Array helpers every layer uses (a leaf: imports numpy only)."""
from __future__ import annotations

import numpy as np


def contiguous(a: np.ndarray) -> np.ndarray:
    """C-contiguous and writeable (Numba types read-only arrays apart); 0-d stays 0-d, unlike
    np.ascontiguousarray."""
    return a if a.flags.c_contiguous and a.flags.writeable else np.array(a, order="C", copy=True)
