"""The library is a stack: no module reaches, even from inside a function, one that reaches back.

Every import line of ``src/sgsr`` is parsed, at module level and inside functions alike, so an
import moved into a function to dodge a cycle is still seen as the edge it is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from import_graph import cycles, import_graph

SRC = Path(__file__).resolve().parent.parent / "src"


def test_the_library_has_no_import_cycle() -> None:
    found = cycles(import_graph(SRC))
    assert not found, "import cycles (imports inside functions count):\n" + "\n".join(
        " <-> ".join(component) for component in found
    )


def test_the_cycle_finder_sees_a_cycle_closed_inside_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text("from . import a\n")
    edges = import_graph(tmp_path, root="pkg")
    assert edges["pkg.c"] == {"pkg.a"}
    assert edges["pkg.a"] == {"pkg.sub", "pkg.sub.b"}
    assert cycles(edges) == [["pkg.a", "pkg.sub.b"]]


def test_a_sibling_import_inside_a_package_is_not_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("from pkg.models.edsr import EDSR\n")
    (pkg / "models" / "common.py").write_text("X = 1\n")
    (pkg / "models" / "edsr.py").write_text("from pkg.models.common import X\nEDSR = X\n")
    assert cycles(import_graph(tmp_path, root="pkg")) == []


def test_no_file_cites_a_design_document_outside_the_repository() -> None:
    """The repository is read on its own: every file it cites must be in it."""
    repo = SRC.parent
    outside = "DESIGN" + ".md"
    citing = [
        str(path.relative_to(repo))
        for folder in ("src", "docs", "benchmarks", "notebooks", "tests", "profiles")
        for path in (repo / folder).rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".md", ".ipynb", ".yaml", ".txt"}
        and not (repo / outside).exists()
        and outside in path.read_text(encoding="utf-8", errors="replace")
    ]
    citing += [
        name
        for name in ("README.md", "dvc.yaml", "params.yaml", "Makefile")
        if outside in (repo / name).read_text(encoding="utf-8")
    ]
    assert not citing, f"{outside} is not in the repository but is cited by: {citing}"


def readme_layers(readme: Path) -> dict[int, list[str]]:
    """Layer number -> the entries README's Layout block lists for it (``cli``, ``data/prepare``,
    ``models/`` for a package), parenthesised notes left out."""
    block = readme.read_text(encoding="utf-8").split("## Layout", 1)[1].split("```")[1]
    text: dict[int, str] = {}
    layer = None
    for line in block.splitlines():
        if line.startswith(("published/", "src/")) or not line.strip():
            if line.startswith("published/"):
                break
            continue
        number = line[:3].strip()
        if number.isdigit():
            layer = int(number)
            text[layer] = ""
        if layer is not None and line[:15].strip() != line.strip():  # content from column 15
            text[layer] += " " + line[15:]
    out = {}
    for number, content in text.items():
        flat, depth = "", 0
        for ch in content:
            depth += (ch == "(") - (ch == ")")
            if depth == 0 and ch != ")":
                flat += ch
        out[number] = [entry.strip() for entry in flat.split(",") if entry.strip()]
    return out


def layer_of(layers: dict[int, list[str]], modules: set[str], root: str = "sgsr") -> dict[str, int]:
    """Module -> layer: ``a/b`` is ``root.a.b``; ``a/`` is package ``root.a`` and each of its
    modules not listed on its own."""
    named, packages = {}, {}
    for number, entries in layers.items():
        for entry in entries:
            dotted = ".".join([root, *entry.strip("/").split("/")])
            assert dotted in modules, f"README Layout lists {entry!r}, which is no module"
            assert dotted not in named and dotted not in packages, f"{entry!r} listed twice"
            (packages if entry.endswith("/") else named)[dotted] = number
    out = dict(named)
    for module in modules - set(named) - {root}:
        owners = [p for p in packages if module == p or module.startswith(p + ".")]
        assert owners, f"README Layout does not place {module}"
        out[module] = packages[max(owners, key=len)]
    return out


def upward(edges: dict[str, set[str]], level: dict[str, int]) -> list[str]:
    return [
        f"{a} (layer {level[a]}) imports {b} (layer {level[b]})"
        for a in sorted(edges)
        for b in sorted(edges[a])
        if a in level and b in level and level[b] > level[a]
    ]


def test_every_module_imports_only_from_its_own_or_a_lower_layer_of_the_readme() -> None:
    edges = import_graph(SRC)
    layers = readme_layers(SRC.parent / "README.md")
    assert sorted(layers) == list(range(1, len(layers) + 1)), "layers are numbered 1, 2, ..."
    found = upward(edges, layer_of(layers, set(edges)))
    assert not found, "imports that go up the README's stack:\n" + "\n".join(found)


def test_the_layer_reader_sees_an_upward_import_and_an_unplaced_module(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "## Layout\n\n```\nsrc/pkg/\n  2 top        a (the top), sub/\n"
        "  1 bottom     b, c (x, y)\npublished/\n```\n"
    )
    layers = readme_layers(readme)
    assert layers == {2: ["a", "sub/"], 1: ["b", "c"]}
    modules = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.d"}
    level = layer_of(layers, modules, root="pkg")
    assert level == {"pkg.a": 2, "pkg.b": 1, "pkg.c": 1, "pkg.sub": 2, "pkg.sub.d": 2}
    assert upward({"pkg.a": {"pkg.b"}, "pkg.b": set()}, level) == []
    assert upward({"pkg.b": {"pkg.sub.d"}}, level) == [
        "pkg.b (layer 1) imports pkg.sub.d (layer 2)"
    ]
    with pytest.raises(AssertionError, match=r"does not place pkg\.c"):
        layer_of({1: ["a", "b", "sub/"]}, modules, root="pkg")
