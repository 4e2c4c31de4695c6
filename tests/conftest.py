import os
import tempfile

# Tests use a private, per-run cache so they never depend on (or pollute) the user's cache;
# pytest-xdist workers share it, which also exercises the cache's locking.
os.environ.setdefault("JITORT_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"jitort-test-cache-{os.getuid()}"))
