"""The wheel installs one top-level package, ``jitort``, with ``codegen/`` and ``kernels/`` inside it.

The source tree keeps ``codegen/`` and ``kernels/`` at the repository root and maps them to
``jitort.codegen`` / ``jitort.kernels`` in pyproject.toml; a wheel that shipped them as top-level
``codegen`` / ``kernels`` packages would clash with other distributions. The wheel is built from a
copy of the tree, so the build writes nothing into the checkout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = {"jitort": "jitort", "codegen": "jitort/codegen", "kernels": "jitort/kernels"}


def _can_build_offline() -> bool:
    """setuptools >= 70.1 has its own bdist_wheel; older ones need the ``wheel`` package."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    if (major, minor) >= (70, 1):
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return True


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for f in ("pyproject.toml", "README.md"):
        if (REPO / f).exists():
            shutil.copy2(REPO / f, src / f)
    for d in SOURCE_DIRS:
        shutil.copytree(REPO / d, src / d, ignore=ignore)
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(out), "."]
    if _can_build_offline():
        cmd.insert(4, "--no-build-isolation")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    r = subprocess.run(cmd, cwd=src, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        log = r.stdout + r.stderr
        if "--no-build-isolation" not in cmd and any(s in log for s in (
                "No matching distribution", "Could not find a version", "NewConnectionError",
                "Temporary failure in name resolution", "Network is unreachable")):
            pytest.skip("building the wheel needs setuptools>=70.1 (or wheel) installed, or a package "
                        "index to fetch them from; neither is available:\n" + log[-2000:])
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{log[-4000:]}")
    wheels = list(out.glob("jitort-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_wheel_has_one_top_level_package(tmp_path: Path) -> None:
    whl = _build_wheel(tmp_path)
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        top = {n.split("/")[0] for n in names}
        assert top == {"jitort", dist_info}, f"unexpected top-level names in the wheel: {sorted(top)}"
        assert not any(n.startswith(("codegen/", "kernels/")) for n in names)
        for pkg in ("jitort/codegen/", "jitort/kernels/"):
            assert f"{pkg}__init__.py" in names
            assert len([n for n in names if n.startswith(pkg) and n.endswith(".py")]) > 1
        assert "jitort/codegen/plan.py" in names and "jitort/kernels/registry.py" in names
        # Every module of the source tree ships (a new subpackage must be listed in pyproject.toml).
        for d, dest in SOURCE_DIRS.items():
            for f in (REPO / d).rglob("*.py"):
                if "__pycache__" in f.parts:
                    continue
                rel = f.relative_to(REPO / d).as_posix()
                assert f"{dest}/{rel}" in names, f"{d}/{rel} is missing from the wheel as {dest}/{rel}"
        eps = z.read(f"{dist_info}/entry_points.txt").decode()
    lines = [ln.replace(" ", "") for ln in eps.splitlines()]
    assert "[console_scripts]" in lines
    assert "jitort=jitort.cli:main" in lines


def test_python_m_jitort_help() -> None:
    r = subprocess.run([sys.executable, "-m", "jitort", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for cmd in ("run", "explain", "cache"):
        assert cmd in r.stdout
    r = subprocess.run([sys.executable, "-m", "jitort", "run", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--compare-ort" in r.stdout, r.stderr


def test_console_script_installed() -> None:
    script = Path(sys.executable).parent / "jitort"
    if not script.exists():
        pytest.skip("jitort is not pip-installed in this environment (no console script next to python)")
    r = subprocess.run([str(script), "cache", "path"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JITORT_CACHE_DIR": "/nonexistent/jitort-cache"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "/nonexistent/jitort-cache"


_BLAS_CHECK = """
import sys
import numpy as np
import jitort  # noqa: F401
from numba import njit
assert "scipy.linalg.cython_blas" in sys.modules and "scipy.linalg" not in sys.modules

@njit
def dot(a, b):
    return np.dot(a, b)

a = np.arange(9.0).reshape(3, 3)
assert np.allclose(dot(a, a), a @ a)
import scipy.linalg
from scipy.linalg import cython_blas
assert scipy.linalg.cython_blas is cython_blas is sys.modules["scipy.linalg.cython_blas"]
assert abs(scipy.linalg.det(np.eye(3)) - 1.0) < 1e-12
print("ok")
"""


def test_scipy_blas_loads_without_scipy_linalg_and_links_later(tmp_path: Path) -> None:
    """``kernels.threads.load_scipy_blas``: jitort loads scipy's BLAS extension without scipy.linalg's
    package init; Numba's np.dot still binds to it, and user code importing scipy.linalg afterwards
    sees the same module as its ``cython_blas`` attribute."""
    env = dict(os.environ, JITORT_CACHE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", _BLAS_CHECK], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
