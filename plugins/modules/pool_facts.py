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
  - TakeLAN MultiAll developers (@takelan)
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
  - takelan.multiall.pools.node
  - takelan.multiall._attributes
  - takelan.multiall._attributes.info_module
  - takelan.multiall._attributes.facts
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
    pools_file: /srv/multiall/pools.d
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
          returned: always
          type: str
          sample: web1
        address:
          description: The node's address in the model.
          returned: always
          type: str
          sample: 198.18.0.11
        ip:
          description:
            - The IPv4 address TNS (probe and Serf) uses for the node, from C(ip) in the model or
              its address when that is IPv4; V(null) for a node in no pool known by host name.
          returned: always
          type: str
          sample: 198.18.0.11
        pools:
          description: The pools the node is in, sorted.
          returned: always
          type: list
          elements: str
          sample: [api, web]
        settings:
          description:
            - Merged settings, one key per section (V(baseline), V(files), V(packages),
              V(services), V(databases), V(dns), V(vars)); every section is present, empty when
              no pool sets it.
          returned: always
          type: dict
          sample: {packages: {nginx: {version: "1.24*"}}, files: {}, baseline: {}}
        sources:
          description: For each merged value (dotted key), the pools or overrides it came from.
          returned: always
          type: dict
          sample: {"packages.nginx.version": ["api"]}
        conflicts:
          description:
            - Unresolved disagreements between the node's pools; empty when there are none.
            - With O(fail_on_conflict=true) (the default) a conflict fails the task instead, and
              the failure result carries the same list as RV(ansible_facts.multiall.conflicts).
          returned: always
          type: list
          elements: dict
          contains:
            node:
              description: The node.
              type: str
              sample: web1
            key:
              description: The dotted key the pools disagree on.
              type: str
              sample: packages.nginx.version
            values:
              description: Each pool's value, by pool name.
              type: dict
              sample: {web: "1.22*", api: "1.24*"}
            where:
              description: Where each pool sets it (C(file:line:column)), by pool name.
              type: dict
              sample: {web: "pools.yml:9:14", api: "pools.yml:14:14"}
            message:
              description: The conflict in one sentence.
              type: str
        connection:
          description:
            - Connection variables the model declares for the node, named as Ansible names them
              (C(ansible_user), C(ansible_port), C(ansible_ssh_private_key_file),
              C(ansible_ssh_common_args), C(ansible_python_interpreter)).
          returned: always
          type: dict
          sample: {ansible_user: root, ansible_python_interpreter: /usr/bin/python3}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.takelan.multiall.plugins.module_utils._argspec import (
    ArgumentSpec,
    node_argspec,
    pools_file_argspec,
)
from ansible_collections.takelan.multiall.plugins.module_utils._pools_module import node_view


def argument_spec() -> ArgumentSpec:
    """The module's options, as DOCUMENTATION (with its fragments) describes them."""
    return (
        pools_file_argspec()
        .merge(node_argspec())
        .merge(ArgumentSpec({"fail_on_conflict": {"type": "bool", "default": True}}))
    )


def main() -> None:
    """Load the model, merge the node's pools, return them as facts."""
    module = AnsibleModule(**argument_spec().to_kwargs(), supports_check_mode=True)
    view = node_view(module)
    facts = view.as_dict()
    if view.conflicts and module.params["fail_on_conflict"]:
        module.fail_json(
            msg="; ".join(c.message() for c in view.conflicts),
            conflicts=facts["conflicts"],
        )
    module.exit_json(changed=False, ansible_facts={"multiall": facts})


if __name__ == "__main__":
    main()
