"""YAML aliases are bounded before any value is built or formatted (sgsr.yamlio)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgsr import yamlio
from sgsr.config import ConfigError, load_config


def _laughs(depth: int) -> str:
    """The 'billion laughs': each level lists the previous one nine times."""
    lines = ['a0: &a0 "lol"']
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines)


def test_an_alias_bomb_in_params_is_refused_with_a_short_message(tmp_path: Path) -> None:
    """Depth 6 is 531 441 values (a 5.8 MB type-error message before); depth 9 would be 387
    million. Both are refused before any value is built, in a message of a few lines; a
    smaller chain that loads has its value cut short in the message."""
    for depth in (3, 6, 9):  # 3: 729 values, within the bound: its type error is cut short
        text = _laughs(depth).replace(f"a{depth}: ", "train:\n  freeze: ", 1)
        path = tmp_path / "params.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="aliases" if depth > 3 else "train.freeze") as info:
            load_config(path)
        assert len(str(info.value)) < 1000


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(yamlio.AliasBombError, match="recursive"):
        yamlio.loads("a: &a [1, *a]")


def test_ordinary_aliases_and_merge_keys_still_work() -> None:
    doc = yamlio.loads("base: &b {lr: 1, n: [1, 2]}\nrun:\n  <<: *b\n  lr: 2\nother: *b\n")
    assert doc["run"] == {"lr": 2, "n": [1, 2]} and doc["other"] == {"lr": 1, "n": [1, 2]}
