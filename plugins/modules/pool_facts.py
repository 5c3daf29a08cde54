#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pool_facts
short_description: A node's effective MultiAll pool settings as facts
version_added: 0.1.0
author:
  - TakeLAN MultiAll developers
description:
  - Loads the MultiAll pool model and returns the merged settings of one node in
    C(ansible_facts.multiall) - its pools, and for every section (baseline, files, packages,
    services, databases, dns, vars) the aggregation of all its pools, with the pool each
    value came from.
  - Fails when the model is invalid (the message names file, line and column) and, unless told
    otherwise, when the node has an unresolved conflict between two of its pools.
  - The same code backs C(multiall pools show) and the C(takelan.multiall.pools) inventory plugin.
extends_documentation_fragment:
  - takelan.multiall.pools
  - takelan.multiall.pools.attributes
attributes:
  facts:
    support: full
options:
  fail_on_conflict:
    description:
      - Fail when the node's pools disagree on a key that no exception settles.
      - With V(false) the conflicted keys are left out of the settings and listed in
        RV(ansible_facts.multiall.conflicts).
    type: bool
    default: true
seealso:
  - plugin: takelan.multiall.pools
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Read this node's pool settings
  takelan.multiall.pool_facts:
    node: "{{ inventory_hostname }}"

- name: Show which packages the pools ask for
  ansible.builtin.debug:
    var: ansible_facts.multiall.settings.packages

- name: Read a model kept elsewhere, tolerating conflicts
  takelan.multiall.pool_facts:
    path: /srv/multiall/pools.d
    fail_on_conflict: false
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: dict
  contains:
    multiall:
      description: The node's effective pool settings.
      returned: always
      type: dict
      contains:
        node:
          description: The node name in the model.
          type: str
          sample: web1
        address:
          description: The node's address in the model.
          type: str
          sample: 198.18.0.11
        pools:
          description: The pools the node is in, sorted.
          type: list
          elements: str
          sample: [api, web]
        settings:
          description: Merged settings, one key per section.
          type: dict
          sample: {packages: {nginx: {version: "1.24*"}}, files: {}, baseline: {}}
        sources:
          description: For each merged value (dotted key), the pools or overrides it came from.
          type: dict
          sample: {"packages.nginx.version": ["api"]}
        conflicts:
          description: Unresolved disagreements between pools (only when O(fail_on_conflict=false)).
          type: list
          elements: dict
        connection:
          description: Connection variables the model declares for the node.
          type: dict
"""

import socket

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
        PoolModelError,
        load,
    )

    YAML_IMPORT_ERROR = None
except ImportError as exc:  # PyYAML missing on the managed node
    YAML_IMPORT_ERROR = exc


def main() -> None:
    """Load the model, merge the node's pools, return them as facts."""
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/multiall/pools.yml"},
            "node": {"type": "str"},
            "fail_on_conflict": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    if YAML_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("PyYAML"), exception=str(YAML_IMPORT_ERROR))
    node = module.params["node"] or socket.gethostname().split(".")[0]
    try:
        model = load(module.params["path"])
        view = model.effective(node)
    except PoolModelError as exc:
        module.fail_json(msg=str(exc), errors=[e.as_dict() for e in exc.errors])
    except KeyError as exc:
        module.fail_json(msg=f"{module.params['path']}: {exc.args[0]}")
    facts = view.as_dict()
    if view.conflicts and module.params["fail_on_conflict"]:
        module.fail_json(
            msg="; ".join(c.message() for c in view.conflicts),
            conflicts=facts["conflicts"],
        )
    module.exit_json(changed=False, ansible_facts={"multiall": facts})


if __name__ == "__main__":
    main()
