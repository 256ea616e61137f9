"""Every import of a package's source parsed, module level and inside functions alike.

The cycle test (test_imports.py) and the DVC code dependencies (code_deps.py) read the same
graph: an import moved into a function is still the edge it is.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from pathlib import Path


def _modules(src: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every module under ``src``."""
    out: dict[str, tuple[Path, bool]] = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def import_targets(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    return [target, *(f"{target}.{alias.name}" for alias in node.names)]


def import_graph(src: Path, root: str = "sgsr") -> dict[str, set[str]]:
    """Edges importer -> imported among the modules of ``root``.

    Importing ``a.b.c`` from outside package ``a.b`` also runs ``a/b/__init__.py``, so that is
    an edge too. The root package's ``__init__`` imports nothing at module level (its public
    names resolve lazily): it is an edge only for a name it defines itself (``from sgsr import
    __version__``), never for a submodule reached through it, and it has no edges of its own.
    """
    modules = _modules(src)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_pkg) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in import_targets(name, is_pkg, node):
                parts = target.split(".")
                for i in range(2, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    inside = name == dep or name.startswith(dep + ".")
                    is_target = i == len(parts)
                    if dep in modules and dep != name and dep != root and (is_target or not inside):
                        edges[name].add(dep)
            if (
                isinstance(node, ast.ImportFrom)
                and import_targets(name, is_pkg, node)[0] == root
                and any(f"{root}.{alias.name}" not in modules for alias in node.names)
            ):
                edges[name].add(root)  # a name the root package itself defines (__version__)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def imported(
    module: str,
    is_pkg: bool,
    node: ast.Import | ast.ImportFrom,
    modules: Iterable[str],
    root: str = "sgsr",
) -> set[str]:
    """The modules among `modules` one import statement runs: each one named, the packages
    above it (their ``__init__`` runs first) and the root package only for a name it defines."""
    known = set(modules)
    found: set[str] = set()
    for target in import_targets(module, is_pkg, node):
        parts = target.split(".")
        found.update(p for i in range(2, len(parts) + 1) if (p := ".".join(parts[:i])) in known)
    if (
        isinstance(node, ast.ImportFrom)
        and import_targets(module, is_pkg, node)[0] == root
        and any(f"{root}.{alias.name}" not in known for alias in node.names)
    ):
        found.add(root)
    return found


def source_imports(text: str, module: str, is_pkg: bool, modules: Iterable[str]) -> set[str]:
    """The modules among `modules` that the code `text` (of `module`) imports, anywhere in it."""
    known = set(modules)
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= imported(module, is_pkg, node, known)
    return found


def notebook_imports(notebook: Path, modules: Iterable[str]) -> set[str]:
    """The modules among `modules` that the code cells of a Jupyter notebook import."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = "\n".join(
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in cells
        if c["cell_type"] == "code"
    )
    lines = [line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))]
    return source_imports("\n".join(lines), "__notebook__", False, modules)


def closure(
    edges: dict[str, set[str]], starts: Iterable[str], gates: dict[str, set[str]] | None = None
) -> set[str]:
    """Every module `starts` reach. A gate is followed only along the edges `gates` gives it
    (a check that can stop a stage but hands back what its allowed edges made)."""
    gates = gates or {}
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(gates.get(module, edges.get(module, set())))
    return seen


def module_files(src: Path) -> dict[str, Path]:
    """Dotted module name -> its file, relative to `src`."""
    return {name: path.relative_to(src) for name, (path, _) in _modules(src).items()}
