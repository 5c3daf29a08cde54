"""Hostile YAML: alias bombs, recursion, deep nesting and huge files are refused fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._located_yaml import (
    MAX_FILE_BYTES,
    SourceError,
    load_located,
    load_located_file,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModelError, load


def alias_bomb(levels: int = 9) -> str:
    """A pools file whose ``vars`` expand to 10**levels strings ("billion laughs")."""
    lines = [
        "nodes:",
        "  a: {address: 198.18.0.1}",
        "pools:",
        "  p:",
        "    members: [a]",
        "    vars:",
        "      l0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"      l{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


# The bound is a hang guard only: before the guard this ran ~1 min into MemoryError.
@pytest.mark.timeout(5)
def test_alias_bomb_is_refused_with_file_and_line(tmp_path: Path):
    bomb = tmp_path / "pools.yml"
    bomb.write_text(alias_bomb())
    with pytest.raises(PoolModelError) as info:
        load(str(bomb))
    (error,) = info.value.errors
    # l4 (line 11, 10**5 strings) is the first level whose expansion passes the limit.
    assert (error.mark.file, error.mark.line) == (str(bomb), 11)
    assert "YAML alias bomb" in error.message and "expand to" in error.message


def test_ordinary_anchors_and_merge_keys_still_load():
    data = load_located(
        "base: &base {ssh_user: ops, ssh_port: 22}\n"
        "a: {<<: *base, ssh_port: 2222}\n"
        "list: &l [1, 2]\n"
        "again: *l\n",
        "pools.yml",
    )
    assert data["a"] == {"ssh_user": "ops", "ssh_port": 2222}
    assert data["again"] == [1, 2]


@pytest.mark.timeout(5)
def test_recursive_alias_is_refused():
    with pytest.raises(SourceError, match="recursive alias") as info:
        load_located("vars:\n  loop: &x [1, *x]\n", "pools.yml")
    assert str(info.value.mark) == "pools.yml:2:9"


@pytest.mark.timeout(5)
def test_deep_nesting_is_refused_not_a_recursion_error():
    with pytest.raises(SourceError, match="nest more than 100 levels"):
        load_located("[" * 5000 + "]" * 5000, "pools.yml")


@pytest.mark.timeout(5)
def test_oversize_file_is_refused_without_reading_it_whole(tmp_path: Path):
    big = tmp_path / "pools.yml"
    big.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(SourceError, match="larger than 4 MiB") as info:
        load_located_file(str(big))
    assert info.value.mark.file == str(big)
    with pytest.raises(SourceError, match="larger than 4 MiB"):
        load_located_file("/dev/zero")  # endless: must not be read to the end
