#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: baseline
short_description: Evaluate a node's MultiAll Baseline Rules once
version_added: 0.1.0
author:
  - TakeLAN MultiAll developers
description:
  - Runs the node's effective Baseline Rules (the aggregation of its pools' C(baseline) sections,
    from the pool model) or the rules given in O(rules), once, and returns each result with the
    SBM status codes C(0 OK), C(1 WARNING), C(2 CRITICAL), C(3 UNKNOWN).
  - The node's status is its worst rule. The task fails when any rule is CRITICAL unless
    O(fail_on_critical=false).
  - A check that cannot run (missing tool, timeout) is UNKNOWN, never OK.
  - The same code runs 24/7 in TakeConnector.
extends_documentation_fragment:
  - takelan.multiall.pools
attributes:
  check_mode:
    support: full
    description: Only reads the system; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing.
  platform:
    platforms: posix
options:
  rules:
    description:
      - Rules to evaluate instead of the model's, as a mapping of rule name to rule
        (C(kind), C(warn), C(crit), C(timeout) and the kind's parameters).
    type: dict
  only:
    description: Evaluate only these rule names.
    type: list
    elements: str
  fail_on_critical:
    description: Fail the task when any rule is CRITICAL.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Check this node against its pools' Baseline Rules
  takelan.multiall.baseline:
    node: "{{ inventory_hostname }}"

- name: Evaluate an ad-hoc rule without failing
  takelan.multiall.baseline:
    rules:
      root_disk: {kind: disk, mount: /, warn: 80, crit: 90}
      nagios_load: {kind: command, command: [/usr/lib/nagios/plugins/check_load, -w, "4,3,2", -c, "8,6,4"]}
    fail_on_critical: false
  register: health
"""

RETURN = r"""
status:
  description: The node's SBM status code (worst rule).
  returned: always
  type: int
  sample: 0
status_name:
  description: The status as a word.
  returned: always
  type: str
  sample: OK
results:
  description: One entry per rule.
  returned: always
  type: list
  elements: dict
  sample:
    - {rule: root_disk, kind: disk, status: 0, status_name: OK, message: "/ space used 41.0%", value: 41.0}
"""

import socket

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModelError, load

    IMPORT_ERROR = None
except ImportError as exc:
    IMPORT_ERROR = exc
from ansible_collections.takelan.multiall.plugins.module_utils.sbm import NAMES, evaluate_all, worst


def main() -> None:
    """Collect the rules, evaluate them once, report."""
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/multiall/pools.yml"},
            "node": {"type": "str"},
            "rules": {"type": "dict"},
            "only": {"type": "list", "elements": "str"},
            "fail_on_critical": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    rules = module.params["rules"]
    if rules is None:
        if IMPORT_ERROR is not None:
            module.fail_json(msg=f"reading the pool model needs PyYAML: {IMPORT_ERROR}")
        node = module.params["node"] or socket.gethostname().split(".")[0]
        try:
            rules = load(module.params["path"]).effective(node).settings["baseline"]
        except PoolModelError as exc:
            module.fail_json(msg=str(exc))
        except KeyError as exc:
            module.fail_json(msg=f"{module.params['path']}: {exc.args[0]}")
    for name, rule in rules.items():
        if not isinstance(rule, dict) or "kind" not in rule:
            module.fail_json(msg=f"rule {name!r}: expected a mapping with at least 'kind'")
    only = module.params["only"]
    if only:
        missing = sorted(set(only) - set(rules))
        if missing:
            module.fail_json(
                msg=f"no such rule(s): {', '.join(missing)}; rules: {', '.join(sorted(rules))}"
            )
        rules = {k: v for k, v in rules.items() if k in only}
    try:
        results = evaluate_all(rules)
    except KeyError as exc:
        module.fail_json(msg=f"unknown rule kind {exc.args[0]!r}")
    status = worst([r.status for r in results])
    out = {
        "changed": False,
        "status": status,
        "status_name": NAMES[status],
        "results": [r.as_dict() for r in results],
    }
    if status == 2 and module.params["fail_on_critical"]:
        critical = [f"{r.rule}: {r.message}" for r in results if r.status == 2]
        module.fail_json(msg="CRITICAL: " + "; ".join(critical), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
