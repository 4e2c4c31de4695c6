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
        import importlib.util
        from pathlib import Path

        import llvmlite
        import numba

        h = hashlib.sha256(f"numba {numba.__version__} llvmlite {llvmlite.__version__}".encode())
        # The packages' directories, found without importing them (the kernels import this module).
        for pkg in ("jitort.kernels", "jitort.codegen"):
            spec = importlib.util.find_spec(pkg)
            assert spec is not None and spec.submodule_search_locations, pkg
            d = Path(list(spec.submodule_search_locations)[0])
            for f in sorted(d.rglob("*.py")):
                h.update(str(f.relative_to(d)).encode())
                h.update(f.read_bytes())
        _library_hash = h.hexdigest()[:16]
    return _library_hash


# --- model text in generated source --------------------------------------------------------------
# Names, titles and other strings read from a model file are untrusted. Generated source may carry
# them in exactly two places, both produced here and nowhere else: a ``#`` comment (comment_safe)
# and a string literal (string_literal). Identifiers in generated code are always jitort's own.

# PEP 263: a comment on line 1 or 2 matching this picks the file's source encoding (utf-7 would
# turn "+AAo-" in a comment into a newline). Every generated module starts with GENERATED_HEADER, a
# fixed declaration on line 1, so no later comment is consulted; comment_safe also defuses the
# pattern, so a comment cannot declare an encoding wherever it lands.
_CODING = re.compile(r"(coding)([:=])", re.IGNORECASE)
GENERATED_HEADER = "# -*- coding: utf-8 -*-"


def _printable_ascii(text: str) -> str:
    """``text`` as printable ASCII: backslash escapes for everything else (newlines, NUL, U+2028,
    lone surrogates from undecodable bytes, any non-ASCII), as ``ascii()`` spells them."""
    return ascii(text)[1:-1]


def comment_safe(text: object, limit: int = 100) -> str:
    """Model text as it may stand after ``#`` in generated source: one line of printable ASCII,
    at most about ``limit`` characters, with no encoding declaration in it."""
    if not isinstance(text, str):
        text = repr(text)
    out = _printable_ascii(text[:limit])
    if len(text) > limit or len(out) > limit:
        out = out[: max(limit - 3, 0)] + "..."
    return _CODING.sub(lambda m: m.group(1) + "\\x%02x" % ord(m.group(2)), out)


def string_literal(text: str) -> str:
    """A Python string literal (printable ASCII) that evaluates to exactly ``text``."""
    if not isinstance(text, str):
        raise TypeError(f"string_literal expects str, got {type(text).__name__}")
    return ascii(text)
