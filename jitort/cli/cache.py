"""``jitort cache``: the layout of the on-disk cache, listing, clearing and pruning it."""
from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from jitort.artifact import wait_pending
from jitort.cache import cache_root
from jitort.cli.common import EXIT_OK, UsageError

CACHE_KINDS = ("kernels", "plans")  # the trees jitort writes under the cache root (jitort/cache.py)


# --- the cache layout ----------------------------------------------------------------------------

def cached_source_path(name: str, kind: str = "kernels", root: Path | None = None) -> Path:
    """Where ``jitort.cache.load_source_module(kind, name, ...)`` keeps a generated module:
    ``<root>/<kind>/<name[-20:-18]>/<name>.py``."""
    return (root or cache_root()) / kind / name[-20:-18] / f"{name}.py"


@dataclass
class CacheEntry:
    """One generated module in the cache: its source, lock, and Numba's / Python's compiled files."""

    kind: str
    name: str
    files: list[Path] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(_stat(f, "st_size") for f in self.files)

    @property
    def mtime(self) -> float:
        return max((_stat(f, "st_mtime") for f in self.files), default=0.0)

    @property
    def last_used(self) -> float:
        """Latest read or write of any of its files (reads count where the filesystem records
        access times; under ``noatime`` this is the last write)."""
        return max((max(_stat(f, "st_mtime"), _stat(f, "st_atime")) for f in self.files), default=0.0)


def _stat(p: Path, attr: str) -> Any:
    try:
        return getattr(p.lstat(), attr)
    except OSError:
        return 0


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every module under ``<root>/kernels`` and ``<root>/plans``, files grouped by module name
    (Numba's ``__pycache__/<name>.<func>-<line>.py311.nbi/.nbc`` files belong to ``<name>``).
    Leftover temporary files (``.tmp-*``) are entries of their own."""
    root = root or cache_root()
    entries: dict[tuple[str, str], CacheEntry] = {}
    for kind in CACHE_KINDS:
        top = root / kind
        if top.is_symlink() or not top.is_dir():
            continue
        for shard in sorted(top.iterdir()):
            if shard.is_symlink() or not shard.is_dir():
                continue
            files = [f for f in shard.iterdir() if not f.is_dir() or f.is_symlink()]
            pyc = shard / "__pycache__"
            if pyc.is_dir() and not pyc.is_symlink():
                files += list(pyc.iterdir())
            for f in sorted(files):
                name = f.name if f.name.startswith(".") else f.name.split(".")[0]
                entries.setdefault((kind, name), CacheEntry(kind, name)).files.append(f)
    return sorted(entries.values(), key=lambda e: (e.kind, e.name))


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _remove_entry(e: CacheEntry) -> None:
    for f in e.files:
        try:
            f.unlink()
        except FileNotFoundError:
            pass
    for d in {f.parent for f in e.files}:
        for dd in (d, d.parent) if d.name == "__pycache__" else (d,):
            try:
                dd.rmdir()  # only when empty
            except OSError:
                pass


def cmd_cache(args: argparse.Namespace) -> int:
    wait_pending()  # entries this process's sessions are still writing
    root = cache_root()
    if args.action == "path":
        print(root)
        return EXIT_OK
    entries = cache_entries(root)
    if args.action == "list":
        if not entries:
            print(f"cache {root} is empty")
            return EXIT_OK
        print(f"{'kind':8} {'name':28} {'size':>9}  modified")
        for e in entries:
            print(f"{e.kind:8} {e.name:28} {_human(e.size):>9}  {_when(e.mtime)}")
        print(f"{len(entries)} entries, {_human(sum(e.size for e in entries))} in {root}")
        return EXIT_OK
    if args.action == "prune":
        if args.older_than is None:
            raise UsageError("cache prune needs --older-than DAYS")
        cutoff = time.time() - args.older_than * 86400
        entries = [e for e in entries if e.last_used < cutoff]
    total = sum(e.size for e in entries)
    for e in entries:
        print(f"removed {e.kind}/{e.name} ({_human(e.size)})")
        _remove_entry(e)
    if args.action == "clear":
        for kind in CACHE_KINDS:  # whatever else is left in jitort's own trees (empty shards)
            top = root / kind
            if top.is_dir() and not top.is_symlink():
                shutil.rmtree(top, ignore_errors=True)
    what = "cleared" if args.action == "clear" else f"pruned (unused for {args.older_than:g} days)"
    print(f"{what}: {len(entries)} entries, {_human(total)} from {root}")
    return EXIT_OK




def add_parser(sub: Any) -> None:
    c = sub.add_parser("cache", help="the compiled-code cache (JITORT_CACHE_DIR)")
    c.add_argument("action", choices=["path", "list", "clear", "prune"],
                   help="path: print the root; list: entries; clear: remove all; prune: remove old entries")
    c.add_argument("--older-than", type=float, metavar="DAYS", help="prune: entries unused for DAYS days")
    c.set_defaults(fn=cmd_cache)
