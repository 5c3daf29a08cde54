# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: pools
short_description: MultiAll pools as Ansible inventory
version_added: 0.1.0
author:
  - TakeLAN MultiAll developers (@takelan)
description:
  - Reads a MultiAll pool model (C(pools.yml)) and turns it into inventory.
  - Every pool becomes a group C(pool_<name>) (prefix configurable) holding its members.
  - Every node gets its connection variables (C(ansible_host), C(ansible_user), C(ansible_port),
    C(ansible_ssh_private_key_file), C(ansible_ssh_common_args), C(ansible_python_interpreter)),
    C(multiall_node), C(multiall_pools) and C(multiall_settings), the merged settings of all
    its pools. Variables in the merged C(vars) section become host variables.
  - A node in several pools gets the aggregation of them all. Where pools disagree on a key the
    model reports a conflict naming node, key and both pools; by default that fails the inventory
    so no play ever runs with a silently chosen value.
  - The same model is read by C(multiall pools check) and the C(takelan.multiall.pool_facts) module;
    errors name file, line and column.
  - The file name must end in C(pools.yml) or C(pools.yaml) (for example C(lab.pools.yml)).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks the file as a MultiAll pool model for this plugin.
    required: true
    type: str
    choices: [takelan.multiall.pools]
  group_prefix:
    description: Prefix of the group made for each pool.
    type: str
    default: pool_
  on_conflict:
    description:
      - What to do when a node's pools disagree on a key and no exception settles it.
      - V(error) fails the inventory, listing every conflict with file and line.
      - V(warn) prints a warning, leaves the conflicted keys out of C(multiall_settings)
        and lists them in C(multiall_conflicts).
    type: str
    choices: [error, warn]
    default: error
  with_sources:
    description: Also set C(multiall_sources), the pool each merged value came from.
    type: bool
    default: false
notes:
  - The model format is documented in C(docs/pools.md) of the collection.
  - With O(cache=true) the computed inventory is cached and reused while the file is unchanged.
"""

EXAMPLES = r"""
# inventory/pools.yml -- use with: ansible-inventory -i inventory/pools.yml --graph
plugin: takelan.multiall.pools
defaults:
  ssh_user: root
  python: /usr/bin/python3
nodes:
  web1: {address: 198.18.0.11, pools: [web]}
  web2: {address: 198.18.0.12, pools: [web, db]}
pools:
  web:
    packages: {nginx: {}}
  db:
    packages: {postgresql: "15*"}
# Constructable: group nodes by how many pools they serve (serves_1, serves_2, ...)
keyed_groups:
  - key: "'%d' % (multiall_pools | length)"
    prefix: serves
compose:
  is_multi_pool: multiall_pools | length > 1
"""

import hashlib
from typing import Any

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible_collections.takelan.multiall.plugins.module_utils._located_yaml import (
    SourceError,
    load_located,
)
from ansible_collections.takelan.multiall.plugins.module_utils._pools_spec import MODEL_KEYS
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModel,
    PoolModelError,
    plain,
)

try:  # ansible-core >= 2.19: option templates must be marked trusted explicitly
    from ansible.template import trust_as_template
except ImportError:  # older cores template every string

    def trust_as_template(value: Any) -> Any:  # type: ignore[misc]
        return value


_TEMPLATED_OPTIONS = ("compose", "groups", "keyed_groups")
_SUFFIXES = ("pools.yml", "pools.yaml")


def _trusted(value: Any) -> Any:
    """Mark the user's Constructable expressions as templates (and nothing else)."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """Builds inventory from a MultiAll pool model."""

    NAME = "takelan.multiall.pools"

    def verify_file(self, path: str) -> bool:
        """Only files named ``*pools.yml``/``*pools.yaml`` are ours."""
        return super().verify_file(path) and path.endswith(_SUFFIXES)

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        with open(path, "rb") as handle:
            raw_bytes = handle.read()
        text = raw_bytes.decode("utf-8", errors="replace")
        try:
            raw = load_located(text, path)
        except SourceError as exc:
            raise AnsibleParserError(f"MultiAll pool model: {exc}") from None
        if not isinstance(raw, dict) or raw.get("plugin") != self.NAME:
            found = raw.get("plugin", "none found") if isinstance(raw, dict) else "none found"
            raise AnsibleParserError(f"Incorrect plugin name in file: {found}")
        options = {k: plain(v) for k, v in raw.items() if k not in MODEL_KEYS}
        for key in _TEMPLATED_OPTIONS:
            if key in options:
                options[key] = _trusted(options[key])
        self.set_options(direct=options, var_options=self._vars)
        if self.get_option("cache"):
            self.load_cache_plugin()

        digest = hashlib.sha256(raw_bytes).hexdigest()
        cache_key = self.get_cache_key(path)
        use_cache = cache and self.get_option("cache")
        built = None
        if use_cache:
            try:
                cached = self._cache[cache_key]
                if cached.get("digest") == digest:
                    built = cached["hosts"]
            except KeyError:
                built = None
        if built is None:
            built = self._build(text, path)
            if self.get_option("cache"):
                self._cache[cache_key] = {"digest": digest, "hosts": built}
        self._populate(built)

    def _build(self, text: str, path: str) -> dict[str, Any]:
        """The model, merged per node: {host: {"groups": [...], "vars": {...}}}."""
        try:
            model = PoolModel.from_text(text, path)
        except PoolModelError as exc:
            raise AnsibleParserError(str(exc)) from None
        prefix = self.get_option("group_prefix")
        with_sources = self.get_option("with_sources")
        on_conflict = self.get_option("on_conflict")
        hosts: dict[str, Any] = {}
        conflicts = []
        for name in model.node_names():
            view = model.effective(name)
            hostvars: dict[str, Any] = dict(view.connection)
            hostvars.update(view.settings.get("vars") or {})
            hostvars["multiall_node"] = name
            hostvars["multiall_pools"] = list(view.pools)
            hostvars["multiall_settings"] = view.settings
            if with_sources:
                hostvars["multiall_sources"] = view.sources
            if view.conflicts:
                conflicts.extend(view.conflicts)
                hostvars["multiall_conflicts"] = [c.as_dict() for c in view.conflicts]
            hosts[name] = {"groups": [prefix + p for p in view.pools], "vars": hostvars}
        if conflicts and on_conflict == "error":
            lines = "\n".join(f"  {c.as_error()}" for c in conflicts)
            raise AnsibleParserError(
                f"MultiAll pool model {path} has {len(conflicts)} unresolved conflict(s) "
                f"(set on_conflict: warn to continue without the conflicted keys):\n{lines}"
            )
        for conflict in conflicts:
            self.display.warning(f"MultiAll: {conflict.as_error()}")
        return hosts

    def _populate(self, hosts: dict[str, Any]) -> None:
        strict = self.get_option("strict")
        for name, entry in hosts.items():
            self.inventory.add_host(name)
            for group in entry["groups"]:
                self.inventory.add_group(group)
                self.inventory.add_child(group, name)
            for key, value in entry["vars"].items():
                self.inventory.set_variable(name, key, value)
            hostvars = entry["vars"]
            self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
            self._add_host_to_composed_groups(
                self.get_option("groups"), hostvars, name, strict=strict
            )
            self._add_host_to_keyed_groups(
                self.get_option("keyed_groups"), hostvars, name, strict=strict
            )
