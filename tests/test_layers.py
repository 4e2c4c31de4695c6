"""jitort's module graph has no import cycles, counting every import statement: top level, inside
functions, under ``TYPE_CHECKING``. The layer order is in ``jitort/__init__.py``'s docstring and
README's architecture section; a cycle means some module reaches up past its layer."""
from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import jitort

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (("jitort", "jitort"), ("codegen", "jitort.codegen"), ("kernels", "jitort.kernels"))


def _modules() -> dict[str, Path]:
    mods = {}
    for base, pkg in PACKAGES:
        for f in (ROOT / base).rglob("*.py"):
            parts = [p for p in f.relative_to(ROOT / base).with_suffix("").parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the jitort modules it imports (``from pkg import mod`` names the module ``pkg.mod``;
    a package's implicit import of its parent is not an edge)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                names = [x for x in (f"{mod}.{a.name}" for a in node.names) if x in mods] or [mod]
            else:
                continue
            for n in names:
                while n and n not in mods:
                    n = n.rsplit(".", 1)[0] if "." in n else ""
                if n and n != m:
                    edges[m].add(n)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles() -> None:
    edges = import_graph()
    assert len(edges) > 100  # the walk found the packages
    found = cycles(edges)
    detail = [f"{c}: " + "; ".join(f"{m} -> {sorted(edges[m] & set(c))}" for m in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(detail)


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_layer_order_is_documented() -> None:
    for text in (jitort.__doc__ or "", (ROOT / "README.md").read_text()):
        assert "frontend" in text and "compile_service" in text and "kernels" in text


def uncovered_function_imports(text: str) -> list[int]:
    """Lines of the imports of jitort modules inside functions that no comment explains: a comment on
    the import's line, on another line of its block (consecutive import statements), or on the line
    just above the block. A function-level import is a deliberate start-up deferral and says why."""
    comments = {t.start[0] for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT}
    bad = set()
    for fn in ast.walk(ast.parse(text)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        imports = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
        starts = {n.end_lineno: n.lineno for n in imports}
        ends = {n.lineno: n.end_lineno for n in imports}
        for node in imports:
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["jitort"]
            else:
                names = [a.name for a in node.names]
            if not any(x == "jitort" or x.startswith("jitort.") for x in names):
                continue
            first, last = node.lineno, node.end_lineno
            while first - 1 in starts:
                first = starts[first - 1]
            while last + 1 in ends:
                last = ends[last + 1]
            if not any(ln in comments for ln in range(first - 1, last + 1)):
                bad.add(node.lineno)
    return sorted(bad)


def test_function_level_imports_say_why() -> None:
    """Function-level imports of jitort modules are start-up deferrals (numba.cuda only for CUDA
    sessions, the bench machinery only for ``jitort bench``/profile reports, kernel families on first
    lookup...), each with a comment saying why; any other belongs at the module's top level."""
    found = []
    for base, _ in PACKAGES:
        for f in sorted((ROOT / base).rglob("*.py")):
            text = f.read_text()
            lines = text.splitlines()
            found += [f"{f.relative_to(ROOT)}:{ln}: {lines[ln - 1].strip()}" for ln in uncovered_function_imports(text)]
    assert not found, ("function-level imports with no comment saying why they are deferred (hoist them, or "
                       "add e.g. '# deferred: numba.cuda, imported only for CUDA sessions'):\n" + "\n".join(found))


def test_uncovered_function_imports_finds_one() -> None:
    text = ("def f():\n    import os\n    from jitort import cache\n    return cache\n\n\n"
            "def g():\n    # deferred: why\n    import os\n    from jitort import cache\n    return cache\n\n\n"
            "def h():\n    import jitort.kernels as k  # deferred: why\n    return k\n")
    assert uncovered_function_imports(text) == [3]


def test_no_private_names_across_modules() -> None:
    """What two modules share is public: no jitort module imports another one's ``_private`` name
    (a private name is free to change with its own module)."""
    bad = []
    for m, f in _modules().items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("jitort")):
                bad += [f"{m}: from {'.' * node.level}{node.module or ''} import {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)
