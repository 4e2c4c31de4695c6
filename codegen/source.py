"""Source building blocks shared by the CPU and CUDA emitters: an indented buffer and stable names."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Hashable, Iterable, Iterator


class IndentedBuffer:
    """Lines of Python source with an indentation context (after Inductor's IndentedBuffer).

    Each line may carry an *origin* (``with buf.origin(tag):``): the plan emitter tags the lines of
    each step with the step, so a generated line can be mapped back to its ONNX node after buffers
    are spliced into one another (``jitort.codegen.linemap``). ``splice(other)`` appends another
    buffer's lines at this buffer's current indentation, their origins kept.
    """

    def __init__(self, indent: int = 0) -> None:
        self._lines: list[str] = []
        self._origins: list[Hashable | None] = []
        self._level = indent
        self._origin: Hashable | None = None

    @property
    def level(self) -> int:
        """The current indentation depth, in steps of four spaces (change it with ``indent()``)."""
        return self._level

    def writeline(self, line: str = "") -> None:
        """One line at the current indentation (text holding newlines: one line per piece, each
        indented, so that the buffer's line numbers are the source's)."""
        for piece in line.split("\n"):
            self._lines.append(("    " * self._level + piece) if piece else "")
            self._origins.append(self._origin)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.writeline(line)

    @contextlib.contextmanager
    def indent(self, n: int = 1) -> Iterator[None]:
        self._level += n
        try:
            yield
        finally:
            self._level -= n

    @contextlib.contextmanager
    def origin(self, tag: Hashable) -> Iterator[None]:
        """Lines written (or spliced without an origin of their own) inside carry ``tag``."""
        outer, self._origin = self._origin, tag
        try:
            yield
        finally:
            self._origin = outer

    def splice(self, other: IndentedBuffer) -> None:
        """Append ``other``'s lines, indented by this buffer's current level, with their origins
        (lines without one take this buffer's current origin)."""
        pad = "    " * self._level
        for line, tag in zip(other._lines, other._origins):
            self._lines.append(pad + line if line else "")
            self._origins.append(self._origin if tag is None else tag)

    def lines(self) -> list[str]:
        """A copy of the lines written so far."""
        return list(self._lines)

    def origins(self) -> list[Hashable | None]:
        """Each line's origin (None: written outside any ``origin``), parallel to ``lines()``."""
        return list(self._origins)

    def __len__(self) -> int:
        return len(self._lines)

    def getvalue(self) -> str:
        return "\n".join(self._lines) + "\n"


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
        import llvmlite
        import numba

        h = hashlib.sha256(f"numba {numba.__version__} llvmlite {llvmlite.__version__}".encode())
        for pkg in ("jitort.kernels", "jitort.codegen"):
            # find_spec locates the package without importing it (jitort.kernels imports this module)
            spec = importlib.util.find_spec(pkg)
            assert spec is not None and spec.origin is not None
            root = Path(spec.origin).parent
            for f in sorted(root.rglob("*.py")):
                h.update(str(f.relative_to(root)).encode())
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
