"""Source building blocks shared by the CPU and CUDA emitters: an indented buffer and stable names."""
from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Iterator


class IndentedBuffer:
    """Lines of Python source with an indentation context (after Inductor's IndentedBuffer)."""

    def __init__(self, indent: int = 0) -> None:
        self.lines: list[str] = []
        self.level = indent

    def writeline(self, line: str = "") -> None:
        self.lines.append(("    " * self.level + line) if line else "")

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.writeline(line)

    @contextlib.contextmanager
    def indent(self, n: int = 1) -> Iterator[None]:
        self.level += n
        try:
            yield
        finally:
            self.level -= n

    def getvalue(self) -> str:
        return "\n".join(self.lines) + "\n"


def content_hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


_library_hash: str | None = None


def library_hash() -> str:
    """Hash of jitort's kernel and codegen source plus the numba/llvmlite versions.

    Goes into every generated file's header: Numba's cache keys a function by its own source, so a
    changed @njit callee elsewhere (jitort.kernels.fastmath, say) would otherwise keep serving
    machine code built from the old callee.
    """
    global _library_hash
    if _library_hash is None:
        from pathlib import Path

        import llvmlite
        import numba

        import jitort.codegen
        import jitort.kernels
        h = hashlib.sha256(f"numba {numba.__version__} llvmlite {llvmlite.__version__}".encode())
        for pkg in (jitort.kernels, jitort.codegen):
            for f in sorted(Path(pkg.__file__).parent.rglob("*.py")):
                h.update(str(f.relative_to(Path(pkg.__file__).parent)).encode())
                h.update(f.read_bytes())
        _library_hash = h.hexdigest()[:16]
    return _library_hash


_IDENT = re.compile(r"[^0-9a-zA-Z_]")


def comment_safe(text: str, limit: int = 100) -> str:
    """A value or node name as it may appear in a comment (one line, bounded)."""
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def identifier(text: str) -> str:
    s = _IDENT.sub("_", text)
    return s if s and not s[0].isdigit() else "_" + s
