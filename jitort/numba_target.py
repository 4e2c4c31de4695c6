"""Numba's CPU target for jitort's code, set once, before anything in the process compiles.

On Intel cores with AVX-512, LLVM's tuning for the host (skylake-avx512, icelake-server,
sapphirerapids, ...) includes ``prefer-256-bit``: its loop and SLP vectorisers then emit ymm
code even though zmm registers exist. jitort's GEMM and convolution tiles are explicit 512-bit
vector IR (vecir.py), which that preference does not touch, but every loop LLVM vectorises itself
(fused elementwise kernels, exp/erf/tanh in softmax, attention and GELU, normalisation rows,
pooling) ran at half the vector width. ``prefer_512_bit_vectors`` adds ``-prefer-256-bit`` to the
host's features, so those loops use zmm. Measured on the Intel Xeon (Ice Lake-SP) dev VM, 1 thread:
the attention kernel's exp over 16,384 float32 8.9 -> 7.0 us; in a BERT-base layer (same run,
against onnxruntime) the fused attention 1.87 -> 1.43 ms and the fused LayerNorms 0.24 -> 0.20 ms
each.

Left alone: a host without AVX-512F (AVX2 hosts have nothing wider), a process whose Numba target
is already chosen (``NUMBA_CPU_FEATURES`` set, as ``jitort compile --target portable`` does, or a
Numba function compiled before jitort was imported: the target machine exists by then, and jitort
keeps working on it as it is). The features are part of Numba's cache key, so code cached with the
other setting is compiled anew, never mixed in.
"""
from __future__ import annotations


def prefer_512_bit_vectors() -> bool:
    """Set Numba's CPU features to the host's plus ``-prefer-256-bit`` where that applies (see the
    module docstring); True when set."""
    from numba.core import config
    from numba.core.registry import cpu_target

    if config.CPU_FEATURES is not None or config.CPU_NAME is not None:
        return False
    if any(k.startswith("_toplevel_target_context") for k in vars(cpu_target)):
        return False  # Numba's target machine exists already
    import llvmlite.binding as ll

    features = ll.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return False
    config.CPU_FEATURES = features + ",-prefer-256-bit"
    return True


PREFER_512 = prefer_512_bit_vectors()
