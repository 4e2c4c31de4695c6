"""jitort's CUDA library kernels and their host-side launchers (installed as ``jitort.kernels.cuda``).

* ``runtime``  — kernel specs (plain function + one numba signature per dtype), lazy ``cuda.jit``,
  PTX/cubin compilation without a GPU, the per-run context (stream, arena, error flag) and
  host/device transfers;
* ``rows``     — one-block-per-row reductions: Softmax/LogSoftmax, LayerNormalization,
  ReduceSum/Mean/Max/Min over trailing axes, GlobalAverage/MaxPool;
* ``gemm``     — MatMul/Gemm as a tiled shared-memory kernel (batched over grid.z);
* ``convpool`` — Conv (1-D/2-D implicit GEMM with the bias + activation epilogue), Max/AveragePool,
  BatchNormalization (inference);
* ``movement`` — Transpose, Concat, Split, Slice, Expand, Gather, and the free views (Reshape...);
* ``ops``      — the CUDA provider's registrations in the op table (``jitort.kernels.registry``),
  which the partitioner and the CUDA plan read.

The registry imports ``ops`` with the kernel families; ``ops`` imports the launcher modules only
when it lowers a node, and this package's ``__init__`` stays empty, so the CPU path never pulls in
``numba.cuda``.
"""

from __future__ import annotations

_hash: str | None = None


def library_hash() -> str:
    """Hash of this package's source: part of the cache key of every model compiled for CUDA (the
    generated CUDA plans call these launchers by name)."""
    global _hash
    if _hash is None:
        import hashlib
        from pathlib import Path
        h = hashlib.sha256()
        for f in sorted(Path(__file__).parent.glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        _hash = h.hexdigest()[:16]
    return _hash
