"""File trees in the model: FS-SA keys, per-node tree lists, and load-time tree errors."""

from __future__ import annotations

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._pools_files import (
    peer_pool,
    tree_of,
    tree_peers,
    trees_for,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModel,
    PoolModelError,
)

BASE = """
nodes:
  n1: {address: 198.18.0.11, pools: [web, api]}
  n2: {address: 198.18.0.12, pools: [web]}
  n3: {address: 198.18.0.13, pools: [api]}
pools:
  web:
    files:
      /srv/www: {owner: www-data, delete: true, exclude: ["*.tmp"]}
  api:
    files:
      /srv/api: {live: false, conflict: newest}
"""


SAME_BUT_DELETE = (
    '/srv/www: {owner: www-data, delete: false, exclude: ["*.tmp"]}\n      /srv/x: {live: false'
)


def _errors(text: str) -> list[str]:
    with pytest.raises(PoolModelError) as info:
        PoolModel.from_text(text, "p.yml")
    return [str(e) for e in info.value.errors]


def test_trees_for_lists_each_tree_with_its_pool_and_defaults() -> None:
    model = PoolModel.from_text(BASE, "p.yml")
    trees = trees_for(model, "n1")
    assert sorted(trees) == ["/srv/api", "/srv/www"]
    assert trees["/srv/www"] == {
        "pool": "web",
        "pools": ["web"],
        "source": None,
        "owner": "www-data",
        "group": None,
        "mode": None,
        "exclude": ["*.tmp"],
        "delete": True,
        "live": True,
        "conflict": "keep_both",
    }
    assert trees["/srv/api"]["live"] is False and trees["/srv/api"]["conflict"] == "newest"
    assert list(trees_for(model, "n2")) == ["/srv/www"]


def test_a_node_in_two_pools_syncs_each_tree_with_that_pools_members_only() -> None:
    model = PoolModel.from_text(BASE, "p.yml")
    assert tree_peers(model, "n1", "/srv/www") == ["n2"]
    assert tree_peers(model, "n1", "/srv/api") == ["n3"]
    assert tree_peers(model, "n2", "/srv/www") == ["n1"]
    assert peer_pool(model, "n1", "n3", "/srv/api") == "api"
    with pytest.raises(KeyError):
        peer_pool(model, "n1", "n3", "/srv/www")


def test_tree_of_finds_the_declared_tree_holding_a_path() -> None:
    trees = {"/srv/www": {}, "/srv/api": {}}
    assert tree_of(trees, "/srv/www/a/b") == "/srv/www"
    assert tree_of(trees, "/srv/www") == "/srv/www"
    assert tree_of(trees, "/srv/wwwx") is None and tree_of(trees, "/etc") is None


def test_a_bad_conflict_policy_names_file_line_and_choices() -> None:
    (err,) = _errors(BASE.replace("conflict: newest", "conflict: last"))
    assert err.startswith("p.yml:12:") and "keep_both, newest" in err


def test_one_tree_declared_differently_by_two_pools_of_a_node_is_an_error() -> None:
    text = BASE.replace("/srv/api: {live: false", SAME_BUT_DELETE)
    (err,) = _errors(text)
    assert "tree /srv/www is declared differently by pools 'api' and 'web' of node 'n1'" in err
    assert (
        "delete is False in pool 'api' (p.yml:12:" in err and "True in pool 'web' (p.yml:9:" in err
    )


def test_a_node_override_settles_a_difference() -> None:
    text = BASE.replace("/srv/api: {live: false", SAME_BUT_DELETE)
    text = text.replace(
        "pools: [web, api]}", "pools: [web, api], settings: {files: {/srv/www: {delete: true}}}}"
    )
    model = PoolModel.from_text(text, "p.yml")
    assert trees_for(model, "n1")["/srv/www"]["pools"] == ["api", "web"]


def test_a_tree_inside_another_on_one_node_is_an_error_naming_both() -> None:
    (err,) = _errors(BASE.replace("/srv/api:", "/srv/www/api:"))
    assert err.startswith("p.yml:12:")
    assert "tree /srv/www/api (pool 'api') is inside tree /srv/www (pool 'web', p.yml:9:" in err


def test_nested_trees_on_different_nodes_are_fine() -> None:
    text = BASE.replace("pools: [web, api]}", "pools: [web]}").replace("/srv/api:", "/srv/www/api:")
    model = PoolModel.from_text(text, "p.yml")
    assert list(trees_for(model, "n3")) == ["/srv/www/api"]
