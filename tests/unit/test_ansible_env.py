"""Ansible finds takelan.multiall from a checkout and from an installed collection."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.ansible_env import (
    COLLECTION_ROOT,
    CollectionNotFoundError,
    ansible_env,
    collections_path,
)


def test_checkout_uses_its_collection_link():
    assert collections_path() == COLLECTION_ROOT / "collection"
    linked = collections_path() / "ansible_collections" / "takelan" / "multiall"
    assert linked.resolve() == COLLECTION_ROOT


def test_installed_collection_uses_the_directory_holding_ansible_collections(tmp_path: Path):
    root = tmp_path / "opt" / "ansible_collections" / "takelan" / "multiall"
    root.mkdir(parents=True)
    (root / "ansible.cfg").write_text("[defaults]\n")
    env = ansible_env(root=root, base={"PATH": "/usr/bin"})
    assert env["ANSIBLE_COLLECTIONS_PATH"] == str(tmp_path / "opt")
    assert env["ANSIBLE_CONFIG"] == str(root / "ansible.cfg")
    assert env["PATH"].endswith(":/usr/bin")


def test_a_collection_without_ansible_cfg_keeps_the_callers_config(tmp_path: Path):
    root = tmp_path / "ansible_collections" / "takelan" / "multiall"
    root.mkdir(parents=True)
    env = ansible_env({"X": "1"}, root=root, base={"ANSIBLE_CONFIG": "/etc/mine.cfg"})
    assert env["ANSIBLE_CONFIG"] == "/etc/mine.cfg" and env["X"] == "1"


def test_code_outside_any_collection_is_a_clear_error(tmp_path: Path):
    with pytest.raises(CollectionNotFoundError, match=r"neither a checkout .* nor an installed"):
        collections_path(tmp_path / "somewhere")
