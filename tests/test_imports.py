"""The library is a stack: no module reaches, even from inside a function, one that reaches back.

Every import line of ``src/sgsr`` is parsed, at module level and inside functions alike, so an
import moved into a function to dodge a cycle is still seen as the edge it is.
"""

from __future__ import annotations

from pathlib import Path

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
