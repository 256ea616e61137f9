"""Reading YAML the project trusts: safe types only, and a duplicate key is an error.

PyYAML keeps the *last* of two equal keys in a mapping without a word, so a params file with
``lr`` written twice trains with whichever came second. Every YAML file sgsr reads goes through
`load_yaml` (dvc.yaml and dvc.lock are DVC's, read by DVC). Merge keys (``<<: *anchor``) still
work: a key that overrides a merged one is not a duplicate; two explicit equal keys are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice; the message gives the key and both line numbers."""


class AliasBombError(yaml.YAMLError):
    """Aliases expand the document past :data:`MAX_NODES` values, or refer to themselves."""


#: Most values (scalars, lists, mappings) a document may expand to once its aliases are
#: followed. A 3 KB file of nested aliases can stand for a billion values (the "billion
#: laughs"): building or printing it would exhaust memory. The repository's params files hold
#: a few hundred; 10 000 is far beyond any real one.
MAX_NODES = 10_000


_MERGE = "tag:yaml.org,2002:merge"


def _key_label(node: yaml.Node) -> str:
    """How a key node reads in a message (its scalar text; complex keys by their kind)."""
    return node.value if isinstance(node, yaml.ScalarNode) else f"<{node.id} key>"


def _duplicates(
    loader: yaml.SafeLoader, node: yaml.Node, path: str, seen: set[int], out: list[str]
) -> None:
    """Every key written twice in one mapping, as 'dotted.key (line A and line B)'. Keys are
    compared as the values they load as (``yes`` and ``true`` are the same key)."""
    if id(node) in seen:  # an alias: already walked (and YAML may be recursive)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            label = _key_label(key_node)
            here = f"{path}.{label}" if path else label
            if key_node.tag != _MERGE and isinstance(key_node, yaml.ScalarNode):
                key = loader.construct_object(key_node)
                line = key_node.start_mark.line + 1
                try:
                    if key in first:
                        out.append(f"{here} (line {first[key]} and line {line})")
                    else:
                        first[key] = line
                except TypeError:  # unhashable: construct_document reports it properly
                    pass
            _duplicates(loader, value_node, here, seen, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(loader, item, f"{path}[{i}]", seen, out)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], path: set[int]) -> int:
    """How many values `node` stands for with every alias followed (memoised per node, so the
    count itself is linear in the file); AliasBombError for a node that contains itself."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in path:
        raise AliasBombError("an alias refers to a node that contains it (a recursive value)")
    path.add(key)
    total = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, sizes, path) + _expanded_size(v, sizes, path)
            if total > MAX_NODES:
                break
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            total += _expanded_size(item, sizes, path)
            if total > MAX_NODES:
                break
    path.discard(key)
    sizes[key] = total
    return total


def check_expansion(node: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases expand past MAX_NODES values, before any value is
    built or formatted into a message."""
    try:
        size = _expanded_size(node, {}, set())
    except AliasBombError as exc:
        raise AliasBombError(f"{source}: {exc}; write the value out instead") from None
    except RecursionError:
        raise AliasBombError(f"{source}: nested too deeply to read") from None
    if size > MAX_NODES:
        raise AliasBombError(
            f"{source}: its aliases (*name) expand to more than {MAX_NODES:,} values, which no "
            "params file needs (a 'billion laughs' document?); write the values out or use "
            "fewer nested aliases"
        )


def loads(text: str, source: str = "<string>") -> Any:
    """Parse YAML `text` (safe types only); raise DuplicateKeyError naming `source`, every
    duplicated key and its two lines, AliasBombError for aliases that expand too far (or into
    themselves), or yaml.YAMLError for malformed YAML."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node, source)
        dupes: list[str] = []
        _duplicates(loader, node, "", set(), dupes)
        if dupes:
            raise DuplicateKeyError(
                f"{source}: duplicate key(s), which YAML would silently resolve to the last "
                f"value: {'; '.join(dupes)}. Delete one of each pair."
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse the YAML file at `path` with duplicate keys refused (see module docstring)."""
    path = Path(path)
    return loads(path.read_text(), source=str(path))
