"""CUDA code generation without a GPU: every fused kernel of the zoo models compiles to sm_90 PTX,
and the CUDA simulator (in its own process: it is chosen when numba.cuda is first imported) runs
a chain's kernel on tiny shapes and matches onnxruntime."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("numba.cuda")

from jitort import zoo  # noqa: E402
from jitort.codegen.cuda import compile_ptx, fused_cuda_kernel  # noqa: E402
from jitort.compiler import optimize  # noqa: E402
from jitort.errors import NotImplemented as OrtNotImplemented  # noqa: E402
from jitort.frontend.importer import import_model  # noqa: E402


def _fused_groups(model):
    # the groups a CUDA session compiles (a CPU session folds the MLP's bias/Relu into its GEMMs)
    g = optimize(import_model(model), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    return g, [n for n in g.nodes if n.op_type == "FusedElementwise"]


@pytest.mark.parametrize("build", [zoo.elementwise_chain, zoo.bert_layer, zoo.gpt_block, zoo.mlp],
                         ids=["chain", "bert", "gpt", "mlp"])
def test_fused_kernels_compile_to_sm90_ptx(build):
    g, groups = _fused_groups(build())
    assert groups
    compiled = 0
    for n in groups:
        try:
            k = fused_cuda_kernel(n, g)
        except OrtNotImplemented as e:
            assert "runs on CPU" in str(e)  # a deliberate CPU fallback, named
            continue
        ptx = compile_ptx(k, cc=(9, 0))
        assert ".target sm_90" in ptx and k.name in ptx
        compiled += 1
    assert compiled >= max(1, len(groups) // 2)


SIM = textwrap.dedent("""
    import json, sys, numpy as np
    from numba import cuda
    assert cuda.simulator_enabled if hasattr(cuda, 'simulator_enabled') else True
    from jitort import zoo, cache
    from jitort.codegen.cuda import fused_cuda_kernel
    from jitort.compiler import optimize
    from jitort.frontend.importer import import_model
    model = zoo.elementwise_chain(shape=(2, 3, 4, 5))
    g = optimize(import_model(model), ["CPUExecutionProvider"])
    (n,) = [n for n in g.nodes if n.op_type == "FusedElementwise"]
    k = fused_cuda_kernel(n, g)
    mod = cache.load_source_module("cuda", k.name, k.source)
    kern = cuda.jit(mod.SIGNATURE)(getattr(mod, k.name))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    env = {"x": x}
    arrays = [(env[i] if i in env else g.const(i)).reshape(-1) for i in k.inputs]
    out = np.empty(x.size, np.float32)
    sizes = [int(np.prod([x.shape[d] for d in grp])) for grp in k.dim_groups]
    kern[2, 32](*arrays, out, *sizes)
    print(json.dumps({"out": out.tolist()}))
""")


def test_simulator_matches_onnxruntime():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    p = subprocess.run([sys.executable, "-c", SIM], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    got = np.array(json.loads(p.stdout.strip().splitlines()[-1])["out"], np.float32)
    from oracle import run_ort
    model = zoo.elementwise_chain(shape=(2, 3, 4, 5))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    want = run_ort(model, {"x": x})[0].reshape(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
