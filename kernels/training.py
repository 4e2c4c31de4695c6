"""The ai.onnx.preview.training optimiser steps: Adagrad, Adam, Momentum (standard and Nesterov).

Each takes a learning rate R and an iteration count T (scalars) followed by n tensors to update
and their per-tensor state, grouped by role (Adagrad/Momentum: X_1..X_n, G_1..G_n, H_1..H_n;
Adam: X, G, V, H), and returns the updated tensors grouped the same way (Adagrad: X_new..., H_new...;
Momentum: X_new..., V_new...; Adam: X_new..., V_new..., H_new...). The formulas are the spec's.
The per-step scalars (adjusted learning rate, bias corrections) are formed in float64 once, then
typed to the tensors' dtype; the elementwise update is one Numba loop per tensor that stays in that
dtype (float32 or float64, the types the spec allows).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.kernels.registry import op

DOMAIN = "ai.onnx.preview.training"
_KW = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_KW)
def _adagrad(x, g, h, r, eps, norm, xo, ho):  # type: ignore[no-untyped-def]
    for i in range(x.shape[0]):
        gr = norm * x[i] + g[i]
        hn = h[i] + gr * gr
        ho[i] = hn
        xo[i] = x[i] - r * gr / (np.sqrt(hn) + eps)


@njit(**_KW)
def _adam(x, g, v, h, r, alpha, beta, eps, norm, post, xo, vo, ho):  # type: ignore[no-untyped-def]
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        gr = norm * x[i] + g[i]
        vn = alpha * v[i] + (one - alpha) * gr
        hn = beta * h[i] + (one - beta) * (gr * gr)
        vo[i] = vn
        ho[i] = hn
        xo[i] = (one - post) * (x[i] - r * (vn / (np.sqrt(hn) + eps)))


@njit(**_KW)
def _momentum(x, g, v, r, alpha, beta, norm, nesterov, xo, vo):  # type: ignore[no-untyped-def]
    for i in range(x.shape[0]):
        gr = norm * x[i] + g[i]
        vn = alpha * v[i] + beta * gr
        vo[i] = vn
        if nesterov:
            xo[i] = x[i] - r * (gr + alpha * vn)
        else:
            xo[i] = x[i] - r * vn


def _scalar(v: np.ndarray, op_name: str, what: str) -> float | int:
    if v.size != 1:
        raise InvalidArgument(f"{op_name}: {what} must be a scalar, got shape {list(v.shape)}")
    return v.reshape(-1)[0].item()


def _groups(op_name: str, inputs: tuple[np.ndarray, ...], roles: str, nout: int, nroles_out: int
            ) -> list[list[np.ndarray]]:
    """Split the variadic inputs by role; every group must hold n tensors of one shape and dtype."""
    k = len(roles)
    n = len(inputs) // k
    if n == 0 or len(inputs) != n * k:
        raise InvalidArgument(f"{op_name}: expected R, T and {k}*n inputs ({', '.join(roles)}), "
                              f"got {len(inputs) + 2} inputs")
    if nout > nroles_out * n:
        raise InvalidArgument(f"{op_name}: {n} tensors to optimise give {nroles_out * n} outputs, "
                              f"the node has {nout}")
    groups = [list(inputs[j * n:(j + 1) * n]) for j in range(k)]
    for t in range(n):
        x = groups[0][t]
        if x.dtype not in (np.float32, np.float64):
            raise InvalidArgument(f"{op_name}: tensors must be float or double, got {x.dtype}")
        for j in range(1, k):
            o = groups[j][t]
            if o.shape != x.shape or o.dtype != x.dtype:
                raise InvalidArgument(f"{op_name}: {roles[j]}_{t + 1} ({o.dtype} {list(o.shape)}) must match "
                                      f"X_{t + 1} ({x.dtype} {list(x.shape)})")
    return groups


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


@op("Adagrad", since=1, domain=DOMAIN)
def Adagrad(R: np.ndarray, T: np.ndarray, *inputs: np.ndarray, decay_factor: float, epsilon: float,
            norm_coefficient: float, _nout: int = 0) -> tuple[np.ndarray, ...]:
    """r = R / (1 + T * decay_factor); g' = norm_coefficient * X + G; H' = H + g'^2;
    X' = X - r * g' / (sqrt(H') + epsilon)."""
    xs, gs, hs = _groups("Adagrad", inputs, "XGH", _nout, 2)
    r = float(_scalar(R, "Adagrad", "R")) / (1.0 + int(_scalar(T, "Adagrad", "T")) * float(decay_factor))
    xo, ho = [], []
    for x, g, h in zip(xs, gs, hs):
        t = x.dtype.type
        a, b = np.empty_like(x, order="C"), np.empty_like(x, order="C")
        _adagrad(_flat(x), _flat(g), _flat(h), t(r), t(epsilon), t(norm_coefficient), a.reshape(-1), b.reshape(-1))
        xo.append(a)
        ho.append(b)
    return tuple(xo + ho)


@op("Adam", since=1, domain=DOMAIN)
def Adam(R: np.ndarray, T: np.ndarray, *inputs: np.ndarray, alpha: float, beta: float, epsilon: float,
         norm_coefficient: float, norm_coefficient_post: float, _nout: int = 0) -> tuple[np.ndarray, ...]:
    """g' = norm_coefficient * X + G; V' = alpha V + (1 - alpha) g'; H' = beta H + (1 - beta) g'^2;
    r = R * sqrt(1 - beta^T) / (1 - alpha^T) when T > 0, else R;
    X' = (1 - norm_coefficient_post) * (X - r * V' / (sqrt(H') + epsilon))."""
    xs, gs, vs, hs = _groups("Adam", inputs, "XGVH", _nout, 3)
    r = float(_scalar(R, "Adam", "R"))
    step = int(_scalar(T, "Adam", "T"))
    if step > 0:
        r = r * math.sqrt(1.0 - float(beta) ** step) / (1.0 - float(alpha) ** step)
    xo, vo, ho = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        t = x.dtype.type
        a, b, c = (np.empty_like(x, order="C") for _ in range(3))
        _adam(_flat(x), _flat(g), _flat(v), _flat(h), t(r), t(alpha), t(beta), t(epsilon), t(norm_coefficient),
              t(norm_coefficient_post), a.reshape(-1), b.reshape(-1), c.reshape(-1))
        xo.append(a)
        vo.append(b)
        ho.append(c)
    return tuple(xo + vo + ho)


@op("Momentum", since=1, domain=DOMAIN)
def Momentum(R: np.ndarray, T: np.ndarray, *inputs: np.ndarray, alpha: float, beta: float, mode: str,
             norm_coefficient: float, _nout: int = 0) -> tuple[np.ndarray, ...]:
    """g' = norm_coefficient * X + G; V' = alpha V + beta' g' with beta' = beta if T > 0 else 1;
    standard: X' = X - R V'; nesterov: X' = X - R (g' + alpha V')."""
    if mode not in ("standard", "nesterov"):
        raise InvalidArgument(f"Momentum: mode must be 'standard' or 'nesterov', got '{mode}'")
    xs, gs, vs = _groups("Momentum", inputs, "XGV", _nout, 2)
    r = float(_scalar(R, "Momentum", "R"))
    b = float(beta) if int(_scalar(T, "Momentum", "T")) > 0 else 1.0
    xo, vo = [], []
    for x, g, v in zip(xs, gs, vs):
        t = x.dtype.type
        a, c = np.empty_like(x, order="C"), np.empty_like(x, order="C")
        _momentum(_flat(x), _flat(g), _flat(v), t(r), t(alpha), t(b), t(norm_coefficient), mode == "nesterov",
                  a.reshape(-1), c.reshape(-1))
        xo.append(a)
        vo.append(c)
    return tuple(xo + vo)
