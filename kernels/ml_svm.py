"""Support vector machines of ai.onnx.ml: SVMClassifier and SVMRegressor (opset 1), in onnxruntime's arithmetic.

As onnxruntime's CPU kernels (``svmclassifier.cc``, ``svmregressor.cc``), X is read as float32 rows and:

* **kernel** ``K(x, v)`` against the support vectors, with ``kernel_params = [gamma, coef0, degree]``:
  LINEAR ``x.v``, POLY ``(gamma x.v + coef0) ** degree``, SIGMOID ``tanh(gamma x.v + coef0)`` (one product
  on jitort's packed GEMM, kernels/gemm.py), RBF ``exp(-gamma |x - v|^2)`` (the squared distance summed in
  float32 in feature order, every support vector at once in SIMD lanes); the kernel values are kept
  transposed, [vectors, rows], so the sums below run over blocks of rows side by side, each row's sum in
  its own order (vectorised without reordering a sum);
* **SVM_SVC** mode (``vectors_per_class`` / ``n_supports`` > 0): the one-vs-one score of classes i < j is
  ``sum_{m in i} coef[j-1, m] K_m + sum_{m in j} coef[i, m] K_m + rho[ij]``, products in float32 summed in
  float64 (the vote goes to i when that double is > 0, else to j), stored as float32; the label is the
  first class with the most votes, also when probabilities are output;
* **SVM_LINEAR** mode (no support vectors; the kernel is forced to LINEAR): ``x @ coef.T + rho[0]`` (GEMM) per
  class, the label the first largest score (the binary case through onnxruntime's ``ChooseClass``:
  with all coefficients >= 0 the second label when the score is >= 0.5, else when it is > 0);
* **probabilities** (``prob_a``/``prob_b`` given, SVC mode): Platt's ``1 - logistic(s a + b)`` per pair,
  clipped to [1e-7, 1 - 1e-7], coupled into class probabilities by libsvm's iterative method
  (``multiclass_probability``, float32, at most 100 iterations, stop at 0.005 / classes);
* scores: SVC without probabilities gives the pairwise scores (two classes: ``[-s, s]`` under NONE,
  ``[logistic(-s), logistic(s)]`` under LOGISTIC, ``[1 - s, s]`` of the raw score under SOFTMAX and
  SOFTMAX_ZERO; PROBIT is refused, onnxruntime leaves the second column unwritten); otherwise one column per class; the
  post-transform is kernels/ml_scores.py's. SVMRegressor (SVC mode: ``sum_v coef[v] K_v`` in float32 in vector order, then ``+ rho[0]``) ignores post_transform; ``one_class`` maps the
  value to +1 (> 0) or -1.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels import gemm
from jitort.kernels.ml_linear import Packed, argmax_first, rows_f32
from jitort.kernels.ml_scores import (LOGISTIC, NONE, PROBIT, classifier_types, float_types, logistic, post_code,
                                      post_rows)
from jitort.kernels.registry import Call, Ref, op
from jitort.arrays import contiguous

ML = "ai.onnx.ml"
LINEAR, POLY, RBF, SIGMOID = 0, 1, 2, 3
# onnxruntime's MakeKernel: any other name is SIGMOID; jitort refuses unknown names
_KERNELS = {"LINEAR": LINEAR, "POLY": POLY, "RBF": RBF, "SIGMOID": SIGMOID}

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_CLIP = np.float32(1.0e-7)
_EPS = np.float32(0.005)


ROWS = 256  # rows per block of the vectorised kernels (a block's float64 sums stay in L1)


@njit(cache=True, nogil=True)
def _rbf_t(x: np.ndarray, svt: np.ndarray, gamma: np.float32) -> np.ndarray:
    """RBF kernel values, transposed: [M, N] for x [N, F] and the support vectors svt [F, M]. Each
    squared distance is summed in float32 in feature order (onnxruntime's loop), all M of them at
    once: the inner loop runs over the support vectors, so it vectorises without reordering a sum."""
    n, k = x.shape
    m = svt.shape[1]
    out = np.empty((m, n), np.float32)
    acc = np.empty(m, np.float32)
    g = np.float32(gamma)
    for r in range(n):
        acc[:] = np.float32(0.0)
        for f in range(k):
            xv = x[r, f]
            for v in range(m):
                d = xv - svt[f, v]
                acc[v] += d * d
        for v in range(m):
            out[v, r] = np.float32(math.exp(-g * acc[v]))
    return out


class SupportVectors:
    """The support vectors [M, F], built once at lowering in the forms the kernels read: transposed
    (the RBF loop) and packed as the GEMM's B = SV^T (``gemm.pack_b``, the dot-product kernels)."""

    def __init__(self, sv: np.ndarray) -> None:
        self.sv = np.ascontiguousarray(sv, np.float32)
        self.m, self.f = self.sv.shape
        self.svt = np.ascontiguousarray(self.sv.T)
        self.bp = gemm.pack_b(self.svt)
        self.zero_bias = gemm.pad_bias(None, self.m)


def dots_t(x: np.ndarray, s: SupportVectors) -> np.ndarray:
    """x . v for every row and support vector, transposed: [M, N] float32, each one fma chain in
    feature order (kernels/gemm.py). Few rows: X @ SV^T on the packed SV^T, then transposed (a copy
    of at most 16 rows); more: SV @ X^T, X^T packed per call (N x F values)."""
    n = x.shape[0]
    if n < gemm.PANEL:
        return np.ascontiguousarray(gemm.gemm(x, s.bp, s.m, s.zero_bias, False).T)
    return gemm.gemm(s.sv, gemm.pack_b(np.ascontiguousarray(x.T)), n, gemm.pad_bias(None, n), False)


def kernel_t(x: np.ndarray, s: SupportVectors, kernel: int, gamma: np.float32, coef0: np.float32,
             degree: np.float32) -> np.ndarray:
    """onnxruntime's ``batched_kernel_dot`` against the support vectors, transposed: x [N, F] float32 to
    K^T [M, N] float32 with LINEAR ``x.v``, POLY ``(gamma x.v + coef0) ** degree``, SIGMOID
    ``tanh(gamma x.v + coef0)``, RBF ``exp(-gamma |x - v|^2)``."""
    if kernel == RBF:
        return _rbf_t(x, s.svt, gamma)
    z = dots_t(x, s)
    if kernel == LINEAR:
        return z
    z *= gamma
    z += coef0
    if kernel == POLY:
        if degree == 2:
            z = z * z
        elif degree == 3:
            z = z * z * z
        else:
            z = np.power(z, degree)
    else:
        z = np.tanh(z)
    return z


@njit(cache=True, nogil=True)
def _ovo(kt: np.ndarray, coef: np.ndarray, rho: np.ndarray, starts: np.ndarray, counts: np.ndarray,
         n_class: int) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-one scores [N, C(C-1)/2] float32 and votes [N, C] of the transposed kernel values kt [V, N];
    coef [C-1, V]. Every row's sum runs in onnxruntime's order (float32 products, float64 sum); blocks
    of rows are summed side by side, so the loops vectorise over rows."""
    n = kt.shape[1]
    n_pairs = n_class * (n_class - 1) // 2
    scores = np.empty((n, n_pairs), np.float32)
    votes = np.zeros((n, n_class), np.int64)
    acc = np.empty(ROWS, np.float64)
    for r0 in range(0, n, ROWS):
        nr = min(ROWS, n - r0)
        idx = 0
        for i in range(n_class - 1):
            si, ci = starts[i], counts[i]
            for j in range(i + 1, n_class):
                sj, cj = starts[j], counts[j]
                for r in range(nr):
                    acc[r] = 0.0
                for m in range(ci):
                    c = coef[j - 1, si + m]
                    for r in range(nr):
                        acc[r] += np.float64(c * kt[si + m, r0 + r])
                for m in range(cj):
                    c = coef[i, sj + m]
                    for r in range(nr):
                        acc[r] += np.float64(c * kt[sj + m, r0 + r])
                rh = np.float64(rho[idx])
                for r in range(nr):
                    s = acc[r] + rh
                    scores[r0 + r, idx] = np.float32(s)
                    if s > 0:
                        votes[r0 + r, i] += 1
                    else:
                        votes[r0 + r, j] += 1
                idx += 1
    return scores, votes


@njit(cache=True, nogil=True)
def _weighted_t(kt: np.ndarray, coef: np.ndarray, rho: np.float32) -> np.ndarray:
    """SVMRegressor in SVC mode: per row ``sum_v coef[v] K[v]`` in float32 in support-vector order,
    then ``+ rho`` (onnxruntime's loop), rows side by side: [N, 1] float32."""
    v_count, n = kt.shape
    out = np.empty((n, 1), np.float32)
    acc = np.empty(ROWS, np.float32)
    for r0 in range(0, n, ROWS):
        nr = min(ROWS, n - r0)
        for r in range(nr):
            acc[r] = np.float32(0.0)
        for v in range(v_count):
            c = coef[v]
            for r in range(nr):
                acc[r] += c * kt[v, r0 + r]
        for r in range(nr):
            out[r0 + r, 0] = acc[r] + rho
    return out


@njit(cache=True, nogil=True)
def _coupling(r: np.ndarray, p: np.ndarray, n_class: int) -> None:
    """onnxruntime's ``multiclass_probability`` in float32: pairwise r [C*C] to p [C] in place."""
    c = n_class
    q = np.zeros(c * c, np.float32)
    qp = np.zeros(c, np.float32)
    eps = _EPS / np.float32(c)
    for i in range(c):
        p[i] = _F1 / np.float32(c)
        for j in range(i):
            q[i * c + i] += r[j * c + i] * r[j * c + i]
            q[i * c + j] = q[j * c + i]
        for j in range(i + 1, c):
            q[i * c + i] += r[j * c + i] * r[j * c + i]
            q[i * c + j] = -r[j * c + i] * r[i * c + j]
    for _loop in range(100):
        pqp = np.float32(0.0)
        for i in range(c):
            qp[i] = _F0
            for j in range(c):
                qp[i] += q[i * c + j] * p[j]
            pqp += p[i] * qp[i]
        max_error = np.float32(0.0)
        for i in range(c):
            err = abs(qp[i] - pqp)
            if err > max_error:
                max_error = err
        if max_error < eps:
            break
        for i in range(c):
            diff = (-qp[i] + pqp) / q[i * c + i]
            p[i] += diff
            d1 = _F1 + diff
            pqp = (pqp + diff * (diff * q[i * c + i] + _F2 * qp[i])) / d1 / d1
            for j in range(c):
                qp[j] = (qp[j] + diff * q[i * c + j]) / d1
                p[j] /= d1


@njit(cache=True, nogil=True)
def _probabilities(scores: np.ndarray, proba: np.ndarray, probb: np.ndarray, n_class: int) -> np.ndarray:
    """Platt scaling of each pairwise score, then the pairwise coupling: [N, C] float32."""
    n = scores.shape[0]
    c = n_class
    out = np.empty((n, c), np.float32)
    r = np.zeros(c * c, np.float32)
    for row in range(n):
        r[:] = _F0
        idx = 0
        for i in range(c - 1):
            for j in range(i + 1, c):
                v = _F1 - logistic(scores[row, idx] * proba[idx] + probb[idx])
                v = max(v, _CLIP)
                v = min(v, _F1 - _CLIP)
                r[i * c + j] = v
                r[j * c + i] = _F1 - v
                idx += 1
        _coupling(r, out[row], c)
    return out


def _kernel_params(node: Node) -> tuple[int, np.float32, np.float32, np.float32]:
    a = node.attrs
    name = a.get("kernel_type") or "LINEAR"
    kernel = _KERNELS.get(name)
    if kernel is None:
        raise InvalidArgument(f"{node.op_type} node '{node.name}': unknown kernel_type '{name}' "
                              f"(expected one of {sorted(_KERNELS)})")
    params = a.get("kernel_params")
    if params is None:  # onnxruntime requires the attribute (it may be empty)
        raise Fail(f"{node.op_type} node '{node.name}': attribute kernel_params is required")
    params = [float(v) for v in params]
    if params and len(params) < 3:
        raise Fail(f"{node.op_type} node '{node.name}': kernel_params needs [gamma, coef0, degree], "
                   f"got {len(params)} values")
    gamma, coef0, degree = (np.float32(v) for v in (params[:3] if params else (0.0, 0.0, 0.0)))
    return kernel, gamma, coef0, degree


def _features(xs: np.ndarray, n_features: int, op_type: str) -> None:
    if xs.shape[1] != n_features:
        raise InvalidArgument(f"{op_type}: X has {xs.shape[1]} features, the model {n_features}")


def run_svm_classifier(x: np.ndarray, sv: SupportVectors | None, lin: Packed | None, coef: np.ndarray,
                       rho: np.ndarray, proba: np.ndarray, probb: np.ndarray, starts: np.ndarray,
                       counts: np.ndarray, labels: np.ndarray, *, svc: bool, kernel: int, gamma: np.float32,
                       coef0: np.float32, degree: np.float32, post: int,
                       all_positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """SVC mode: ``sv`` the support vectors; SVM_LINEAR mode: ``lin`` the packed coefficients with
    rho[0] as every class's intercept (``x @ coef^T + rho[0]`` on the GEMM)."""
    xs = rows_f32(x, "SVMClassifier")
    n_class = len(labels)
    have_proba = proba.size > 0
    if svc:
        _features(xs, sv.f, "SVMClassifier")
        kt = kernel_t(xs, sv, kernel, gamma, coef0, degree)
        z, votes = _ovo(kt, coef, rho, starts, counts, n_class)
        best = argmax_first(votes)
        max_weight = np.zeros(len(best), np.float32)
        if have_proba:
            z = _probabilities(z, proba, probb, n_class)
    else:
        _features(xs, lin.k, "SVMClassifier")
        z = lin.product(xs)
        best = argmax_first(z)
        max_weight = z[np.arange(len(best)), best]
    if n_class == 2:  # onnxruntime's ChooseClass
        if have_proba:
            y = labels[best]
        else:
            second = (max_weight >= 0.5) if all_positive else (max_weight > 0)
            y = np.where(second, labels[1], labels[best])
    else:
        y = labels[best]
    if svc and not have_proba and n_class == 2:
        s = z[:, :1]
        if post == LOGISTIC:  # onnxruntime 1.32: [logistic(-s), logistic(s)]
            v = np.float32(1) / (np.float32(1) + np.exp(-np.abs(s)))
            p = np.where(s < 0, np.float32(1) - v, v)
            z = np.concatenate([np.float32(1) - p, p], axis=1)
        else:
            z = np.concatenate([-s if post == NONE else np.float32(1) - s, s], axis=1)
    elif post != NONE:
        z = np.ascontiguousarray(z)
        post_rows(z, post)
    return contiguous(np.asarray(y, labels.dtype)), contiguous(z)


run_svm_classifier.own_threads = True  # type: ignore[attr-defined]  # jitort.compiled.Artifact.own_threads


def _f32(a: Any) -> np.ndarray:
    return np.asarray(list(a or []), np.float32)


def _lower_classifier(node: Node, g: Graph) -> Call:
    a = node.attrs
    where = f"SVMClassifier node '{node.name}'"
    kernel, gamma, coef0, degree = _kernel_params(node)
    strings, ints = list(a.get("classlabels_strings") or []), list(a.get("classlabels_ints") or [])
    if not strings and not ints:
        raise Fail(f"{where}: one of classlabels_strings, classlabels_ints is required")
    labels = np.array(strings, object) if strings else np.array(ints, np.int64)
    n_class = len(labels)
    counts = np.asarray(list(a.get("vectors_per_class") or []), np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts.size else counts
    n_vec = int(counts.sum())
    coef, rho, sv = _f32(a.get("coefficients")), _f32(a.get("rho")), _f32(a.get("support_vectors"))
    proba, probb = _f32(a.get("prob_a")), _f32(a.get("prob_b"))
    post = post_code(a.get("post_transform") or "NONE", "SVMClassifier", node.name)
    if proba.size != probb.size:
        raise Fail(f"{where}: prob_a has {proba.size} values, prob_b {probb.size}")
    if coef.size == 0:
        raise Fail(f"{where}: coefficients are empty")
    svc = n_vec > 0
    n_pairs = n_class * (n_class - 1) // 2
    if svc:
        if counts.size != n_class or (counts < 0).any():
            raise Fail(f"{where}: vectors_per_class {counts.tolist()} does not match {n_class} class labels")
        if n_class < 2:
            raise OrtNotImplemented(f"{where} (domain {ML}, opset {node.version}): one class in SVM_SVC mode")
        if sv.size == 0 or sv.size % n_vec:
            raise Fail(f"{where}: {sv.size} support_vectors values do not split into {n_vec} vectors")
        if coef.size < (n_class - 1) * n_vec:
            raise Fail(f"{where}: {coef.size} coefficients, expected {(n_class - 1) * n_vec}")
        if rho.size < n_pairs:
            raise Fail(f"{where}: {rho.size} rho values, expected {n_pairs}")
        if proba.size and proba.size < n_pairs:
            raise Fail(f"{where}: {proba.size} prob_a/prob_b values, expected {n_pairs}")
        if n_class == 2 and proba.size == 0 and post == PROBIT:
            raise OrtNotImplemented(f"{where} (domain {ML}, opset {node.version}): PROBIT on a binary model "
                                    "without probabilities (onnxruntime leaves the second score column unwritten)")
        vectors, lin = SupportVectors(sv.reshape(n_vec, -1)), None
        coef = np.ascontiguousarray(coef[:(n_class - 1) * n_vec].reshape(n_class - 1, n_vec))
    else:
        if coef.size % n_class:
            raise Fail(f"{where}: {coef.size} coefficients do not split into {n_class} classes")
        if rho.size < 1:
            raise Fail(f"{where}: rho must have at least one value")
        vectors, lin = None, Packed(coef.reshape(n_class, -1).T, np.full(n_class, rho[0], np.float32))
    all_positive = bool((_f32(a.get("coefficients")) >= 0).all())
    return Call(run_svm_classifier, [Ref(node.inputs[0]), vectors, lin, coef, rho, proba, probb, starts, counts,
                                     labels],
                dict(svc=svc, kernel=kernel, gamma=gamma, coef0=coef0, degree=degree, post=post,
                     all_positive=all_positive))


@op("SVMClassifier", since=1, domain=ML, lower=_lower_classifier, infer=classifier_types)
def SVMClassifier(x: np.ndarray, **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
    c = _lower_classifier(Node("SVMClassifier", ["x"], ["y", "z"], attrs, "", ML, 1), Graph([], [], [], {}))
    return c.fn(x, *c.args[1:], **c.kwargs)


def run_svm_regressor(x: np.ndarray, sv: SupportVectors | None, lin: Packed | None, coef: np.ndarray,
                      rho: np.float32, *, svc: bool, kernel: int, gamma: np.float32, coef0: np.float32,
                      degree: np.float32, one_class: bool) -> np.ndarray:
    """SVC mode: ``sv`` the support vectors, ``coef`` their weights; SVM_LINEAR mode: ``lin`` the
    packed coefficients with rho as intercept."""
    xs = rows_f32(x, "SVMRegressor")
    if svc:
        _features(xs, sv.f, "SVMRegressor")
        y = _weighted_t(kernel_t(xs, sv, kernel, gamma, coef0, degree), coef, rho)
    else:
        _features(xs, lin.k, "SVMRegressor")
        y = lin.product(xs)
    if one_class:
        y = np.where(y > 0, np.float32(1), np.float32(-1))
    return contiguous(y.astype(np.float32, copy=False))


run_svm_regressor.own_threads = True  # type: ignore[attr-defined]


def _lower_regressor(node: Node, g: Graph) -> Call:
    a = node.attrs
    where = f"SVMRegressor node '{node.name}'"
    kernel, gamma, coef0, degree = _kernel_params(node)
    if "n_supports" not in a:
        raise Fail(f"{where}: attribute n_supports is required")
    n_vec = int(a["n_supports"])
    coef, rho, sv = _f32(a.get("coefficients")), _f32(a.get("rho")), _f32(a.get("support_vectors"))
    if coef.size == 0:
        raise Fail(f"{where}: coefficients are empty")
    if rho.size < 1:
        raise Fail(f"{where}: rho must have at least one value")
    svc = n_vec > 0
    if svc:
        if sv.size == 0 or sv.size % n_vec:
            raise Fail(f"{where}: {sv.size} support_vectors values do not split into {n_vec} vectors")
        if coef.size < n_vec:
            raise Fail(f"{where}: {coef.size} coefficients for {n_vec} support vectors")
        vectors, lin = SupportVectors(sv.reshape(n_vec, -1)), None
        coef = np.ascontiguousarray(coef[:n_vec])
    else:
        vectors, lin = None, Packed(coef.reshape(-1, 1), rho[:1])
    return Call(run_svm_regressor, [Ref(node.inputs[0]), vectors, lin, coef, rho[0]],
                dict(svc=svc, kernel=kernel, gamma=gamma, coef0=coef0, degree=degree,
                     one_class=bool(int(a.get("one_class", 0)))))


@op("SVMRegressor", since=1, domain=ML, lower=_lower_regressor, infer=float_types)
def SVMRegressor(x: np.ndarray, **attrs: Any) -> np.ndarray:
    c = _lower_regressor(Node("SVMRegressor", ["x"], ["y"], attrs, "", ML, 1), Graph([], [], [], {}))
    return c.fn(x, *c.args[1:], **c.kwargs)
