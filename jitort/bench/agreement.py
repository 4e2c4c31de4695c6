"""Whether a runtime's outputs agree with the reference runtime's: per output, within
``atol + rtol * |ref|`` with NaNs in the same places, and the largest absolute and relative differences."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def compare_outputs(got: np.ndarray, ref: np.ndarray, rtol: float = 1e-3, atol: float = 1e-4) -> dict[str, Any]:
    """``ok`` when ``|got - ref| <= atol + rtol * |ref|`` everywhere with NaNs in the same places;
    ``max_abs`` and ``max_rel`` (relative over elements with ``|ref| > atol``)."""
    out: dict[str, Any] = {"shape": list(ref.shape), "dtype": str(ref.dtype)}
    if got.shape != ref.shape:
        return {**out, "ok": False, "max_abs": None, "max_rel": None,
                "note": f"shape {list(got.shape)} != reference {list(ref.shape)}"}
    if got.size == 0:
        return {**out, "ok": True, "max_abs": 0.0, "max_rel": 0.0}
    g, r = got.astype(np.float64), ref.astype(np.float64)
    same_nan = np.isnan(g) == np.isnan(r)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(g - r)
        diff[(g == r) | np.isnan(g) | np.isnan(r)] = 0.0
        diff[~np.isfinite(diff)] = np.inf
        big = np.isfinite(r) & (np.abs(r) > atol)
        rel = float(np.max(diff[big] / np.abs(r[big]))) if big.any() else 0.0
        ok = bool(same_nan.all()) and bool(np.allclose(g, r, rtol=rtol, atol=atol, equal_nan=True))
    res = {**out, "ok": ok, "max_abs": finite_or_none(float(diff.max())), "max_rel": finite_or_none(rel)}
    if not same_nan.all():
        res["note"] = f"NaN in different places ({int((~same_nan).sum())})"
    return res


def finite_or_none(x: float) -> float | None:
    return x if np.isfinite(x) else None


def agreement(got: list[np.ndarray], ref: list[np.ndarray], names: list[str], rtol: float, atol: float,
              reference: str) -> dict[str, Any]:
    """Every output compared (``compare_outputs``), and the worst differences over all of them."""
    outs = []
    for n, a, b in zip(names, got, ref):
        outs.append({"name": n, **compare_outputs(a, b, rtol, atol)})
    if len(got) != len(ref):
        outs.append({"name": "?", "ok": False, "note": f"{len(got)} outputs vs {len(ref)}"})
    abs_ = [o["max_abs"] for o in outs if o.get("max_abs") is not None]
    rel = [o["max_rel"] for o in outs if o.get("max_rel") is not None]
    ok = all(o["ok"] for o in outs)
    return {"reference": reference, "ok": ok, "rtol": rtol, "atol": atol,
            "max_abs": max(abs_) if abs_ else None, "max_rel": max(rel) if rel else None, "outputs": outs}


def load_npz(path: Path) -> list[np.ndarray]:
    """The outputs a worker saved (``o0``, ``o1``, ...), in order."""
    with np.load(path, allow_pickle=False) as z:
        return [z[f"o{k}"] for k in range(len(z.files))]
