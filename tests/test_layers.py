"""jitort's module graph has no import cycles, counting every import statement: top level, inside
functions, under ``TYPE_CHECKING``. The layer order is in ``jitort/__init__.py``'s docstring and
README's architecture section; a cycle means some module reaches up past its layer."""
from __future__ import annotations

import ast
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
