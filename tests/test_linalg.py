"""MatMul, Gemm and Einsum vs onnxruntime (numpy's formula of the spec where onnxruntime has no kernel)."""
from __future__ import annotations

import numpy as np
import pytest

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels import batched_gemm, einsum, matmul
from oracle import assert_close, check, make_model, node_model, rand, run_jitort

from onnx import helper

FLOATS = [np.float32, np.float64]
INTS = [np.int32, np.int64, np.uint32, np.uint64]


def _tol(dtype, k: int = 8) -> dict[str, float]:
    if dtype == np.float16:
        return dict(rtol=1e-2, atol=2e-3 * k)
    if dtype == np.float32:
        return dict(rtol=1e-5, atol=1e-5 * k)
    return dict(rtol=1e-12, atol=1e-12 * k)


def _inp(shape, dtype, seed):
    return rand(shape, dtype, seed, -2, 2)  # integers: -20..20


# --- MatMul ---------------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((1, 1), (1, 1)),
    ((4,), (4, 5)),            # 1-D left: prepend 1, then drop
    ((3, 4), (4,)),            # 1-D right: append 1, then drop
    ((7,), (7,)),              # both 1-D: a scalar
    ((2, 3, 4), (4, 5)),       # [B, S, K] @ [K, N]: one gemm over B*S rows
    ((2, 3, 17, 33), (33, 9)),
    ((2, 3, 4), (2, 4, 5)),    # same batch
    ((3, 4), (2, 4, 5)),       # 2-D left, batched right
    ((2, 1, 3, 4), (5, 4, 6)),  # batch broadcasting both ways
    ((1, 3, 4), (2, 4, 5)),
    ((2, 3, 4), (1, 4, 5)),
    ((5,), (2, 5, 3)),
    ((2, 3, 5), (5,)),
    ((0, 3), (3, 4)),          # empty outputs
    ((2, 0), (0, 3)),          # K = 0: zeros
    ((2, 0, 4), (4, 3)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_matmul_shapes(sa, sb, dtype):
    a, b = _inp(sa, dtype, 1), _inp(sb, dtype, 2)
    check(node_model("MatMul", {"a": a, "b": b}, opset=13), {"a": a, "b": b}, **_tol(dtype, sa[-1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16] + INTS)
@pytest.mark.parametrize("opset", [9, 13])
def test_matmul_dtypes(dtype, opset):
    a, b = _inp((2, 5, 19), dtype, 3), _inp((2, 19, 7), dtype, 4)
    check(node_model("MatMul", {"a": a, "b": b}, opset=opset), {"a": a, "b": b}, **_tol(dtype, 19))


@pytest.mark.parametrize("dtype", FLOATS)
def test_matmul_opset1(dtype):
    a, b = _inp((3, 6), dtype, 5), _inp((6, 2), dtype, 6)
    check(node_model("MatMul", {"a": a, "b": b}, opset=1), {"a": a, "b": b}, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32])
@pytest.mark.parametrize("sa", [(1, 16, 48), (4, 48), (48,), (2, 3, 5, 48)])
def test_matmul_constant_weight(sa, dtype):
    """The transformer case: activations @ a constant 2-D weight (float16 weights are pre-converted)."""
    a, w = _inp(sa, dtype, 7), _inp((48, 40), dtype, 8)
    check(node_model("MatMul", {"a": a}, opset=13, initializers={"w": w}), {"a": a}, **_tol(dtype, 48))


def test_matmul_blocked_integer_kernel():
    # larger than one 128 x 256 block in every direction, with values that wrap int32
    a = rand((70, 300), np.int32, 1, -3e8, 3e8)
    b = rand((300, 520), np.int32, 2, -3e8, 3e8)
    check(node_model("MatMul", {"a": a, "b": b}, opset=13), {"a": a, "b": b})
    ua, ub = rand((3, 9, 140), np.uint64, 3, 0, 1e8), rand((140, 11), np.uint64, 4, 0, 1e8)
    check(node_model("MatMul", {"a": ua, "b": ub}, opset=13), {"a": ua, "b": ub})


def test_matmul_nan_inf():
    a = rand((3, 4), np.float32, 1)
    b = rand((4, 5), np.float32, 2)
    a[0, 1], a[1, 2], b[3, 4] = np.nan, np.inf, -np.inf
    check(node_model("MatMul", {"a": a, "b": b}, opset=13), {"a": a, "b": b})


def test_matmul_bfloat16():
    """MatMul-13 allows bfloat16; onnxruntime has no CPU kernel, so float32 math is the oracle."""
    import ml_dtypes
    bf = ml_dtypes.bfloat16
    a, b = rand((2, 3, 8), np.float32, 1).astype(bf), rand((8, 4), np.float32, 2).astype(bf)
    got = matmul.MatMul(a, b)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(bf)
    assert got.dtype == bf and got.shape == (2, 3, 4)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_matmul_symbolic_batch_no_recompile():
    """A new batch size / sequence length must not compile a new kernel signature."""
    w = rand((16, 8), np.float32, 1)
    m = make_model([helper.make_node("MatMul", ["a", "w"], ["y"])], {"a": (np.float32, ["B", "S", 16])},
                   ["y"], {"w": w}, opset=13)
    n_sigs = None
    for b, s in [(1, 3), (4, 7), (2, 1), (3, 0)]:
        a = rand((b, s, 16), np.float32, b)
        check(m, {"a": a})
        if n_sigs is None:
            n_sigs = len(batched_gemm.gemm_batched.signatures)
        assert len(batched_gemm.gemm_batched.signatures) == n_sigs


def test_matmul_errors():
    with pytest.raises(InvalidArgument, match="MatMul: inner dimensions"):
        matmul.MatMul(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(InvalidArgument, match="MatMul: batch dimensions"):
        matmul.MatMul(np.ones((2, 2, 3), np.float32), np.ones((3, 3, 5), np.float32))
    with pytest.raises(InvalidArgument, match="rank"):
        matmul.MatMul(np.ones((), np.float32), np.ones((3,), np.float32))
    with pytest.raises(InvalidArgument, match="element type"):
        matmul.MatMul(np.ones((2, 3), np.float32), np.ones((3, 5), np.float64))
    with pytest.raises(OrtNotImplemented, match="MatMul.*bool"):
        matmul.MatMul(np.ones((2, 3), bool), np.ones((3, 5), bool))


# --- Gemm -----------------------------------------------------------------------------------------

def _np_gemm(a, b, c, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.T if transA else a
    b = b.T if transB else b
    y = alpha * (a.astype(np.float64) @ b.astype(np.float64))
    if c is not None and beta != 0:
        y = y + beta * c.astype(np.float64)
    return y


@pytest.mark.parametrize("transA", [0, 1])
@pytest.mark.parametrize("transB", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (), (1,), (11,), (1, 11), (6, 1), (6, 11)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0), (1.0, 0.0)])
def test_gemm_float32(transA, transB, c_shape, alpha, beta):
    a = rand((13, 6) if transA else (6, 13), np.float32, 1)
    b = rand((11, 13) if transB else (13, 11), np.float32, 2)
    feeds = {"a": a, "b": b}
    names = ["a", "b"]
    if c_shape is not None:
        feeds["c"] = rand(c_shape, np.float32, 3)
        names.append("c")
    m = node_model("Gemm", feeds, opset=13, input_names=names, alpha=alpha, beta=beta, transA=transA,
                   transB=transB)
    check(m, feeds, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("m_rows,n_cols", [(1, 11), (6, 1), (1, 1)])
@pytest.mark.parametrize("transA", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (), (1, 1)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0), (1.0, 0.0)])
def test_gemm_vector_operand(m_rows, n_cols, transA, c_shape, alpha, beta):
    """A single row or column (the gemv path), with and without C, alpha and beta."""
    a = rand((13, m_rows) if transA else (m_rows, 13), np.float32, 1)
    b = rand((13, n_cols), np.float32, 2)
    feeds = {"a": a, "b": b}
    names = ["a", "b"]
    if c_shape is not None:
        feeds["c"] = rand(c_shape if c_shape != (1, 1) else (m_rows, n_cols), np.float32, 3)
        names.append("c")
    m = node_model("Gemm", feeds, opset=13, input_names=names, alpha=alpha, beta=beta, transA=transA)
    check(m, feeds, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("opset", [7, 9, 11, 13])
def test_gemm_opsets_dtypes(dtype, opset):
    a, b, c = _inp((5, 9), dtype, 1), _inp((7, 9), dtype, 2), _inp((7,), dtype, 3)
    m = node_model("Gemm", {"a": a, "b": b, "c": c}, opset=opset, transB=1, alpha=0.75, beta=1.5)
    check(m, {"a": a, "b": b, "c": c}, **_tol(dtype, 9))


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("transB", [0, 1])
@pytest.mark.parametrize("const_c", [False, True])
def test_gemm_constant_weight(dtype, transB, const_c):
    """B (and C) as initializers: the lowering pre-converts float16 weights."""
    a = _inp((4, 32), dtype, 1)
    w = _inp((24, 32) if transB else (32, 24), dtype, 2)
    c = _inp((24,), dtype, 3)
    inits = {"w": w, "c": c} if const_c else {"w": w}
    feeds = {"a": a} if const_c else {"a": a, "c": c}
    m = node_model("Gemm", feeds, opset=13, initializers=inits, input_names=["a", "w", "c"], transB=transB,
                   beta=0.5)
    check(m, feeds, **_tol(dtype, 32))


@pytest.mark.parametrize("pretranspose", [False, True])
def test_gemm_pretranspose_switch(monkeypatch, pretranspose):
    monkeypatch.setattr(matmul, "PRETRANSPOSE_B", pretranspose)
    a, w, c = rand((3, 10), np.float32, 1), rand((6, 10), np.float32, 2), rand((3, 6), np.float32, 3)
    m = node_model("Gemm", {"a": a}, opset=13, initializers={"w": w, "c": c}, transB=1, alpha=2.0)
    check(m, {"a": a}, rtol=1e-5, atol=1e-4)


def test_gemm_nan_inf_and_beta_zero():
    a, b = rand((3, 4), np.float32, 1), rand((4, 5), np.float32, 2)
    a[0, 0], b[1, 1] = np.nan, np.inf
    c = rand((5,), np.float32, 3)
    check(node_model("Gemm", {"a": a, "b": b, "c": c}, opset=13), {"a": a, "b": b, "c": c})
    c[2] = np.nan  # beta = 0: C is not read (onnxruntime's behaviour), so its NaN must not appear
    feeds = {"a": rand((3, 4), np.float32, 4), "b": rand((4, 5), np.float32, 5), "c": c}
    check(node_model("Gemm", feeds, opset=13, beta=0.0), feeds)


def test_gemm_k_zero():
    """K = 0: the spec's beta * C. (onnxruntime 1.31 returns C unscaled here, so numpy is the oracle.)"""
    a, b, c = np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), rand((4,), np.float32, 1)
    got = run_jitort(node_model("Gemm", {"a": a, "b": b, "c": c}, opset=13, beta=2.0), {"a": a, "b": b, "c": c})
    assert_close(got, [np.broadcast_to(2 * c, (3, 4))])
    feeds = {"a": a, "b": b}
    check(node_model("Gemm", feeds, opset=13), feeds)


@pytest.mark.parametrize("opset", [1, 6])
@pytest.mark.parametrize("broadcast", [0, 1])
def test_gemm_old_opsets(opset, broadcast):
    """onnxruntime has no Gemm-1/6 kernel: the spec's formula is the oracle."""
    a, b = rand((4, 5), np.float32, 1), rand((3, 5), np.float32, 2)
    c = rand((4, 3) if not broadcast else (3,), np.float32, 3)
    m = node_model("Gemm", {"a": a, "b": b, "c": c}, opset=opset, broadcast=broadcast, transB=1, alpha=2.0,
                   beta=0.5)
    got = run_jitort(m, {"a": a, "b": b, "c": c})
    assert_close(got, [_np_gemm(a, b, c, 2.0, 0.5, 0, 1).astype(np.float32)], rtol=1e-5, atol=1e-5)


def test_gemm_old_opset_needs_broadcast():
    with pytest.raises(InvalidArgument, match="Gemm: C of shape"):
        matmul.Gemm_1(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.ones((4,), np.float32),
                      alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0)


@pytest.mark.parametrize("dtype", INTS)
@pytest.mark.parametrize("alpha,beta,trans", [(1.0, 1.0, (0, 0)), (1.0, 1.0, (1, 1)), (2.0, 0.5, (0, 1))])
def test_gemm_integers(dtype, alpha, beta, trans):
    """Integer Gemm (opset 9+): onnxruntime has no kernel, so the spec's formula is the oracle."""
    ta, tb = trans
    a = rand((6, 5) if ta else (5, 6), dtype, 1, 0, 4)
    b = rand((4, 6) if tb else (6, 4), dtype, 2, 0, 4)
    c = rand((4,), dtype, 3, 0, 4)
    m = node_model("Gemm", {"a": a, "b": b, "c": c}, opset=13, alpha=alpha, beta=beta, transA=ta, transB=tb)
    (got,) = run_jitort(m, {"a": a, "b": b, "c": c})
    if alpha == 1 and beta == 1:
        want = (a.T if ta else a) @ (b.T if tb else b) + c
    else:
        want = _np_gemm(a, b, c, alpha, beta, ta, tb).astype(dtype)
    assert_close([got], [want])


def test_gemm_errors():
    with pytest.raises(InvalidArgument, match="Gemm: A and B must be 2-D"):
        matmul.Gemm(np.ones((2, 2, 3), np.float32), np.ones((3, 4), np.float32), alpha=1.0, beta=1.0,
                    transA=0, transB=0)
    with pytest.raises(InvalidArgument, match="Gemm: inner dimensions"):
        matmul.Gemm(np.ones((2, 3), np.float32), np.ones((4, 4), np.float32), alpha=1.0, beta=1.0,
                    transA=0, transB=0)
    with pytest.raises(InvalidArgument, match="Gemm: C of shape"):
        matmul.Gemm(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.ones((3,), np.float32),
                    alpha=1.0, beta=1.0, transA=0, transB=0)


# --- Einsum ---------------------------------------------------------------------------------------

EINSUM_CASES = [
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),   # attention scores: B read transposed in place
    ("bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)]),   # attention context
    ("bqhd,bkhd->bhqk", [(2, 4, 3, 5), (2, 6, 3, 5)]),   # needs copies
    ("bij,bjk->bik", [(3, 4, 5), (3, 5, 2)]),
    ("ij,jk->ik", [(4, 5), (5, 3)]),
    ("ij,jk", [(4, 5), (5, 3)]),                         # implicit output
    ("ij,kj->ik", [(4, 5), (3, 5)]),
    ("ji,jk->ik", [(5, 4), (5, 3)]),
    ("abc,cd->abd", [(2, 3, 4), (4, 5)]),
    ("bij,jk->bik", [(2, 3, 4), (4, 5)]),
    ("ijk,ikl->jl", [(2, 3, 4), (2, 4, 5)]),             # contraction over two labels
    ("i,j->ij", [(3,), (4,)]),                           # outer product
    ("i,i->", [(5,), (5,)]),                             # dot
    ("i,i", [(5,), (5,)]),
    ("bi,bi->b", [(3, 4), (3, 4)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),                     # Hadamard (batch only)
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij->j", [(3, 4)]),
    ("ii->i", [(4, 4)]),                                 # diagonal
    ("ii", [(4, 4)]),                                    # trace
    ("iij,jk->ik", [(3, 3, 4), (4, 2)]),
    ("...ii->...i", [(2, 3, 4, 4)]),
    ("...ij,...jk->...ik", [(2, 5, 3, 4), (2, 5, 4, 6)]),
    ("...,...->...", [(2, 3), (2, 3)]),
    ("i...->...", [(3, 2, 4)]),
    ("...ij->...ji", [(2, 3, 4)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),      # three operands
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("i,ij->j", [(3,), (3, 4)]),
    ("ij,j->i", [(3, 4), (4,)]),
    ("bijk,bk->bij", [(2, 3, 4, 5), (2, 5)]),
    ("ij,kl->ijkl", [(2, 3), (2, 2)]),
    ("ij,ik->", [(3, 4), (3, 2)]),                       # summed labels in each operand
]


@pytest.mark.parametrize("equation,shapes", EINSUM_CASES)
def test_einsum_float32(equation, shapes):
    feeds = {f"x{k}": rand(s, np.float32, k + 1) for k, s in enumerate(shapes)}
    check(node_model("Einsum", feeds, opset=12, equation=equation), feeds, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.int64])
@pytest.mark.parametrize("equation,shapes", [EINSUM_CASES[0], EINSUM_CASES[2], EINSUM_CASES[20],
                                             EINSUM_CASES[23], EINSUM_CASES[27]])
def test_einsum_dtypes(equation, shapes, dtype):
    feeds = {f"x{k}": _inp(s, dtype, k + 1) for k, s in enumerate(shapes)}
    check(node_model("Einsum", feeds, opset=12, equation=equation), feeds, **_tol(dtype, 20))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("equation,shapes", [EINSUM_CASES[1], EINSUM_CASES[20], EINSUM_CASES[27]])
def test_einsum_other_integers(equation, shapes, dtype):
    """onnxruntime has no Einsum for these: numpy (computed wide, wrapped back) is the oracle."""
    xs = [rand(s, dtype, k + 1, 0, 12) for k, s in enumerate(shapes)]
    feeds = {f"x{k}": x for k, x in enumerate(xs)}
    (got,) = run_jitort(node_model("Einsum", feeds, opset=12, equation=equation), feeds)
    wide = np.int64 if np.dtype(dtype).kind == "i" else np.uint64
    assert_close([got], [np.einsum(equation, *[x.astype(wide) for x in xs]).astype(dtype)])


@pytest.mark.parametrize("equation,shapes", [("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 6)]),
                                             ("...,...->...", [(2, 3), (3,)]),
                                             ("...i,...i->...", [(4, 1, 3), (2, 1)])])
def test_einsum_ellipsis_broadcasting(equation, shapes):
    """numpy broadcasts ellipsis dimensions; onnx shape inference rejects it, so numpy is the oracle."""
    xs = [rand(s, np.float32, k + 1) for k, s in enumerate(shapes)]
    got = einsum.Einsum(*xs, equation=equation)
    np.testing.assert_allclose(got, np.einsum(equation, *xs), rtol=1e-5, atol=1e-5)


def test_einsum_opset_28_bfloat16_formula():
    import ml_dtypes
    bf = ml_dtypes.bfloat16
    a, b = rand((2, 3, 4), np.float32, 1).astype(bf), rand((2, 4, 5), np.float32, 2).astype(bf)
    got = einsum.Einsum(a, b, equation="bij,bjk->bik")
    want = np.einsum("bij,bjk->bik", a.astype(np.float32), b.astype(np.float32))
    assert got.dtype == bf
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=2e-2)


def test_einsum_attention_is_copy_free(monkeypatch):
    """'bhqd,bhkd->bhqk' reaches the GEMM with both operands as views (B transposed by BLAS)."""
    seen = []
    real = einsum.bmm

    def spy(a, b, ta, tb, *args, **kw):
        seen.append((ta, tb, a.base is not None, b.base is not None))
        return real(a, b, ta, tb, *args, **kw)

    monkeypatch.setattr(einsum, "bmm", spy)
    q, k = rand((2, 3, 4, 5), np.float32, 1), rand((2, 3, 6, 5), np.float32, 2)
    got = einsum.Einsum(q, k, equation="bhqd,bhkd->bhqk")
    np.testing.assert_allclose(got, np.einsum("bhqd,bhkd->bhqk", q, k), rtol=1e-5, atol=1e-5)
    assert seen == [(0, 1, True, True)]


def test_einsum_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(InvalidArgument, match="operand terms"):
        einsum.Einsum(x, equation="ij,jk->ik")
    with pytest.raises(InvalidArgument, match="rank"):
        einsum.Einsum(x, equation="ijk->i")
    with pytest.raises(InvalidArgument, match="is in no input"):
        einsum.Einsum(x, equation="ij->k")
    with pytest.raises(InvalidArgument, match="has sizes 3 and 4"):
        einsum.Einsum(x, np.ones((4, 5), np.float32), equation="ij,jk->ik")
    with pytest.raises(OrtNotImplemented, match="Einsum.*bool"):
        einsum.Einsum(x.astype(bool), equation="ij->ji")


@pytest.mark.parametrize("equation", ["ij->ij", "ij", "...->..."])
def test_einsum_identity_does_not_alias_input(equation):
    x = rand((3, 4), np.float32, 1)
    y = einsum.Einsum(x, equation=equation)
    assert not np.may_share_memory(x, y)
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", FLOATS)
def test_scipy_blas_fallback(monkeypatch, dtype):
    """Without numpy's ILP64 cblas the same kernel calls scipy's BLAS through Numba's helper."""
    monkeypatch.setattr(batched_gemm, "CBLAS_GEMM", {})
    a, b, c = rand((5, 7), dtype, 1), rand((3, 5), dtype, 2), rand((3,), dtype, 3)
    got = matmul.Gemm(a, b, c, alpha=0.5, beta=2.0, transA=1, transB=1)
    np.testing.assert_allclose(got, _np_gemm(a, b, c, 0.5, 2.0, 1, 1), **_tol(dtype, 5))
    x, y = rand((2, 3, 4, 6), dtype, 4), rand((2, 3, 5, 6), dtype, 5)
    np.testing.assert_allclose(einsum.Einsum(x, y, equation="bhqd,bhkd->bhqk"),
                               np.einsum("bhqd,bhkd->bhqk", x, y), **_tol(dtype, 6))
