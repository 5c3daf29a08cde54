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
  - TakeLAN MultiAll developers (@takelan)
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
  - takelan.multiall.pools.node
  - takelan.multiall._attributes
  - takelan.multiall._attributes.info_module
options:
  rules:
    description:
      - Rules to evaluate instead of the model's, as a mapping of rule name to rule
        (C(kind), C(warn), C(crit), C(timeout) and the kind's parameters), checked as the pool
        model checks its C(baseline) sections.
      - With O(rules) the model is not read, so PyYAML is not needed.
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
  description: The node's SBM status code (worst rule); C(0) when there are no rules.
  returned: always
  type: int
  sample: 0
status_name:
  description: The status as a word (V(OK), V(WARNING), V(CRITICAL), V(UNKNOWN)).
  returned: always
  type: str
  sample: OK
results:
  description: One entry per enabled rule, in rule name order.
  returned: always
  type: list
  elements: dict
  sample:
    - {rule: root_disk, kind: disk, status: 0, status_name: OK, message: "/ space used 41.0%", value: 41.0}
  contains:
    rule:
      description: The rule's name.
      type: str
      sample: root_disk
    kind:
      description: The rule's kind.
      type: str
      sample: disk
    status:
      description: The rule's SBM status code.
      type: int
      sample: 0
    status_name:
      description: The status as a word.
      type: str
      sample: OK
    message:
      description: What was measured, or why the check could not run.
      type: str
      sample: / space used 41.0%
    value:
      description: The measured value, when the kind measures one.
      type: raw
      sample: 41.0
    warn:
      description: The rule's warning threshold, if any.
      type: float
      sample: 80
    crit:
      description: The rule's critical threshold, if any.
      type: float
      sample: 90
    perfdata:
      description: Performance data the check reported, by label (Nagios plugins for C(command) rules).
      type: dict
    took_ms:
      description: Milliseconds the check took.
      type: float
      sample: 1.7
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.takelan.multiall.plugins.module_utils._argspec import (
    ArgumentSpec,
    node_argspec,
    pools_file_argspec,
)
from ansible_collections.takelan.multiall.plugins.module_utils._pools_module import node_view
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModelError,
    validate_rules,
)
from ansible_collections.takelan.multiall.plugins.module_utils.sbm import (
    CRITICAL,
    NAMES,
    evaluate_all,
    worst,
)


def argument_spec() -> ArgumentSpec:
    """The module's options, as DOCUMENTATION (with its fragments) describes them."""
    return (
        pools_file_argspec()
        .merge(node_argspec())
        .merge(
            ArgumentSpec(
                {
                    "rules": {"type": "dict"},
                    "only": {"type": "list", "elements": "str"},
                    "fail_on_critical": {"type": "bool", "default": True},
                }
            )
        )
    )


def node_rules(module: AnsibleModule) -> dict:
    """The rules to run: O(rules) checked like the model's, else the node's from the model."""
    if module.params["rules"] is None:
        return node_view(module).settings["baseline"]
    try:
        return validate_rules(module.params["rules"])
    except PoolModelError as exc:
        module.fail_json(
            msg="; ".join(str(e) for e in exc.errors), errors=[e.as_dict() for e in exc.errors]
        )
    return {}  # not reached: fail_json exits


def main() -> None:
    """Collect the rules, evaluate them once, report."""
    module = AnsibleModule(**argument_spec().to_kwargs(), supports_check_mode=True)
    rules = node_rules(module)
    only = module.params["only"]
    if only:
        missing = sorted(set(only) - set(rules))
        if missing:
            module.fail_json(
                msg=f"no such rule(s): {', '.join(missing)}; rules: {', '.join(sorted(rules))}"
            )
        rules = {k: v for k, v in rules.items() if k in only}
    results = evaluate_all(rules)
    status = worst([r.status for r in results])
    out = {
        "changed": False,
        "status": status,
        "status_name": NAMES[status],
        "results": [r.as_dict() for r in results],
    }
    if status == CRITICAL and module.params["fail_on_critical"]:
        critical = [f"{r.rule}: {r.message}" for r in results if r.status == CRITICAL]
        module.fail_json(msg="CRITICAL: " + "; ".join(critical), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
