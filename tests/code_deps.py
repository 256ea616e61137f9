"""The source files each DVC stage depends on: the import closure of the library code it runs.

A stage's command is ``sgsr <command>``; its handler in ``sgsr/cli.py`` imports the library
modules the stage runs (inside the handler, so ``--help`` stays fast). The stage's code is the
closure of those imports (every import of ``src/sgsr`` parsed, including those inside
functions), plus, for a stage that depends on the notebooks folder, what the notebooks import.
Two things are deliberately not code dependencies:

- ``cli.py`` itself: its argument parser, help text, module-level imports and the logging set up
  by ``main`` decide nothing a stage writes; the handler is a thin pass-through whose imports are
  read here, so a handler that starts calling other library code changes the stage's list.
- what ``sgsr.preflight`` imports to ask whether the models, losses and warm start can be built
  (a gate: it can stop a stage, never change its outputs; it returns the config
  ``sgsr.config`` parsed, which test_code_deps.py pins). preflight.py and config's closure are
  dependencies; the builders are so only for stages that run them.

An empty file (a bare ``__init__.py``) runs no code and is left out (DVC warns about empty deps).

``python tests/code_deps.py --write`` rewrites the code entries of every dvc.yaml from this;
test_code_deps.py fails, naming the files, whenever a dvc.yaml and this closure disagree.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml
from import_graph import closure, import_graph, imported, module_files, notebook_imports

REPO = Path(__file__).resolve().parents[1]
CLI = "sgsr.cli"
#: A gate is followed only along these edges (see the module docstring).
GATES = {"sgsr.preflight": {"sgsr.config"}}
#: How a code dependency is written in dvc.yaml: relative to the repository root.
PREFIX = "${root}/src/"
#: The module that loads each compiled extension, and the C files it is built from (setup.py's
#: sources and headers): a stage that runs the module depends on them too.
EXTENSIONS = {"sgsr.cstencil": ("sgsr/_cstencil.c", "sgsr/_cstencil_impl.h")}


def dvc_files(repo: Path = REPO) -> list[Path]:
    """The root dvc.yaml and every profile's own (a symlink to the root's is the root's)."""
    profiles = sorted(p for p in (repo / "profiles").glob("*/dvc.yaml") if not p.is_symlink())
    return [repo / "dvc.yaml", *profiles]


def _handlers(tree: ast.Module) -> dict[str, str]:
    """``sgsr`` subcommand -> the cli function that runs it (the ``add(name, fn, ...)`` calls)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "add"
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[1], ast.Name)
        ):
            out[node.args[0].value] = node.args[1].id
    return out


def _function_imports(
    functions: dict[str, ast.FunctionDef], name: str, modules: set[str], seen: set[str]
) -> set[str]:
    """What cli function `name` imports, and every cli function it calls, recursively."""
    if name in seen:
        return set()
    seen.add(name)
    found: set[str] = set()
    for node in ast.walk(functions[name]):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= imported(CLI, False, node, modules)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in functions
        ):
            found |= _function_imports(functions, node.func.id, modules, seen)
    return found


def _commands(cmd: str) -> list[str]:
    """The ``sgsr`` subcommands a stage's cmd runs (``sgsr [--params F] <command> ...``)."""
    found = []
    for part in re.split(r"&&|;|\|\|", cmd):
        words = part.split()
        if not words or words[0] != "sgsr":
            raise ValueError(f"stage command {part.strip()!r} is not `sgsr <command>`")
        rest = words[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] == "--params" else rest[1:]
        found.append(rest[0])
    return found


def _stages(dvc_yaml: Path) -> dict[str, dict]:
    """Stage name -> its definition (a foreach stage's ``do`` block), unrendered."""
    raw = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))
    return {name: body.get("do", body) for name, body in raw["stages"].items()}


def expected(dvc_yaml: Path, repo: Path = REPO) -> dict[str, list[str]]:
    """Stage name -> the code dependencies it should list, as dvc.yaml writes them, sorted."""
    src = repo / "src"
    edges = import_graph(src)
    modules = set(edges)
    files = module_files(src)
    tree = ast.parse((src / "sgsr" / "cli.py").read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    handlers = _handlers(tree)
    out: dict[str, list[str]] = {}
    for name, stage in _stages(dvc_yaml).items():
        starts: set[str] = set()
        for command in _commands(stage["cmd"]):
            if command not in handlers:
                raise ValueError(f"{dvc_yaml}: stage {name} runs `sgsr {command}`, not in cli.py")
            starts |= _function_imports(functions, handlers[command], modules, set())
        if any(str(d).rstrip("/").endswith("/notebooks") for d in stage.get("deps", [])):
            for notebook in sorted((repo / "notebooks").glob("*.ipynb")):
                starts |= notebook_imports(notebook, modules)
        reached = closure(edges, starts - {CLI}, GATES)
        kept = [
            files[m].as_posix() for m in reached if (src / files[m]).stat().st_size
        ]  # empty: no code
        kept += [c for m in reached for c in EXTENSIONS.get(m, ())]
        out[name] = sorted(f"{PREFIX}{path}" for path in kept)
    return out


def listed(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name -> the code dependencies dvc.yaml lists now."""
    return {
        name: sorted(str(d) for d in stage.get("deps", []) if str(d).startswith(PREFIX))
        for name, stage in _stages(dvc_yaml).items()
    }


def rewrite(text: str, code: dict[str, list[str]]) -> str:
    """`text` (a dvc.yaml) with each stage's code entries replaced by ``code[stage]``, appended
    to its deps (a deps key is added after the cmd where there is none); nothing else moves."""
    lines = text.splitlines(keepends=True)
    top = next(i for i, line in enumerate(lines) if line.rstrip() == "stages:")
    heads = [
        i for i in range(top + 1, len(lines)) if re.match(r"^  [A-Za-z0-9_.-]+:\s*$", lines[i])
    ]
    end = next(
        (i for i in range(top + 1, len(lines)) if re.match(r"^[^\s#]", lines[i])), len(lines)
    )
    for head, stop in reversed(list(zip(heads, [*heads[1:], end], strict=True))):
        name = lines[head].strip().rstrip(":")
        block = [
            line for line in lines[head + 1 : stop] if not line.lstrip().startswith("- " + PREFIX)
        ]
        deps = next((i for i, line in enumerate(block) if re.match(r"^\s+deps:\s*$", line)), None)
        if deps is None:
            cmd = next(i for i, line in enumerate(block) if re.match(r"^\s+cmd:", line))
            indent = len(block[cmd]) - len(block[cmd].lstrip())
            at = cmd + 1
            while at < len(block) and len(block[at]) - len(block[at].lstrip()) > indent:
                at += 1
            block[at:at] = [" " * indent + "deps:\n"]
            deps, at = at, at + 1
        else:
            indent = len(block[deps]) - len(block[deps].lstrip())
            at = deps + 1
            while at < len(block) and block[at].startswith(" " * (indent + 2) + "- "):
                at += 1
        block[at:at] = [" " * (indent + 2) + f"- {path}\n" for path in code[name]]
        if at == deps + 1 and not code[name]:
            del block[deps]  # a deps key the code entries alone had made
        lines[head + 1 : stop] = block
    return "".join(lines)


def relock(project: Path) -> list[str]:
    """Record the current code dependencies in `project`'s dvc.lock as `dvc commit` would, for a
    lock whose outputs are not in the workspace (weights never published): every other entry,
    outputs and params included, stays as locked. A stage whose lock entry is of another
    definition (command, data dependencies or outputs) is left alone: it is stale anyway.
    Returns the stages it rewrote."""
    from dvc.repo import Repo

    def paths(entries: list) -> list[str]:
        return sorted(str(e.def_path if hasattr(e, "def_path") else e["path"]) for e in entries)

    with Repo(str(project)) as repo:
        lock = yaml.safe_load((Path(repo.root_dir) / "dvc.lock").read_text(encoding="utf-8"))
        todo = []
        for stage in repo.index.stages:
            locked = lock["stages"].get(stage.name)
            data = [d for d in stage.deps if not hasattr(d, "params")]
            code = [d for d in data if "/src/sgsr/" in d.def_path]
            if (
                not code
                or not locked
                or locked.get("cmd") != stage.cmd
                or paths([d for d in data if d not in code])
                != paths([d for d in locked.get("deps", []) if "/src/sgsr/" not in d["path"]])
                or paths(stage.outs) != paths(locked.get("outs", []))
            ):
                continue
            for dep in code:
                dep.save()
            todo.append(stage)
        if todo:
            todo[0].dvcfile._lockfile.dump_stages(todo)
    return [stage.name for stage in todo]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--relock"]:
        for project in argv[1:]:
            n = len(relock(Path(project)))
            print(f"{project}/dvc.lock: code dependencies recorded for {n} stage(s)")
        return 0
    write = "--write" in argv
    stale = []
    for path in dvc_files():
        want = expected(path)
        if listed(path) == want:
            continue
        if write:
            path.write_text(rewrite(path.read_text(encoding="utf-8"), want), encoding="utf-8")
            print(f"{path.relative_to(REPO)}: code dependencies rewritten")
        else:
            stale.append(path.relative_to(REPO))
    for path in stale:
        print(f"{path}: code dependencies differ; run python tests/code_deps.py --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
