import os
import tempfile

import pytest

# Tests use a private, per-run cache so they never depend on (or pollute) the user's cache;
# pytest-xdist workers share it, which also exercises the cache's locking.
os.environ.setdefault("JITORT_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"jitort-test-cache-{os.getuid()}"))
# The IR is verified after every pass (jitort.compiler.optimize), so a pass that leaves it broken
# fails where it broke it.
os.environ.setdefault("JITORT_DEBUG", "1")


def pytest_report_header(config):  # noqa: ANN001, ANN201 - pytest's hook signature
    """Name the oracle: every comparison in this suite is against this onnxruntime release."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"oracle: onnxruntime {version('onnxruntime')} (the test extra pins the release range)"
    except PackageNotFoundError:
        return "oracle: onnxruntime is not installed"


@pytest.fixture
def all_conv_paths(monkeypatch):  # noqa: ANN001, ANN201
    """conv_plan picks paths by the rules that take every kernel (an AVX-512 host takes Winograd on
    many channels only): modules that test those kernels directly keep them covered on every host."""
    from jitort.kernels import conv_setup
    monkeypatch.setattr(conv_setup, "WIDE_TILE_RULES", False)
    conv_setup.conv_plan.cache_clear()
    yield
    conv_setup.conv_plan.cache_clear()
