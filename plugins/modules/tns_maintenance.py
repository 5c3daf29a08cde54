#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: tns_maintenance
short_description: Put a MultiAll node into planned maintenance, or take it out
version_added: 0.1.0
author:
  - TakeLAN MultiAll developers (@takelan)
description:
  - Sets or clears the node's maintenance flag in TNS through the local TakeConnector.
  - Entering maintenance returns only after every reachable pool peer has seen the flag and
    the pool DNS no longer hands the node out (drained), so it can go down right after.
    When a peer has not acknowledged, or DNS still answers with the node, within O(timeout)
    the module fails and says what is missing; the flag stays set.
  - Idempotent - a node already in maintenance with the same reason is left alone; a new
    reason updates it.
  - Runs on the node itself (the connector's control socket is local, mode 0600).
extends_documentation_fragment:
  - takelan.multiall.connector
  - takelan.multiall._attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports what would change without touching the flag.
  diff_mode:
    support: full
    details:
      - Shows the maintenance flag and reason before and after.
options:
  state:
    description:
      - V(present) puts the node into maintenance, V(absent) takes it out.
    type: str
    choices: [present, absent]
    default: present
  reason:
    description: Why the node is in maintenance; shown by C(multiall status) and in events.
    type: str
    default: ""
  timeout:
    description:
      - Seconds to wait for every pool peer to acknowledge the change and, when entering
        maintenance, for the pool DNS to stop handing the node out.
    type: float
    default: 15
seealso:
  - module: takelan.multiall.pool_facts
  - module: takelan.multiall.dns_zone
"""

EXAMPLES = r"""
- name: Drain this node before a kernel upgrade
  takelan.multiall.tns_maintenance:
    state: present
    reason: kernel upgrade

- name: Back in service
  takelan.multiall.tns_maintenance:
    state: absent
"""

RETURN = r"""
maintenance:
  description: Whether the node is in maintenance after the task.
  returned: always
  type: bool
  sample: true
reason:
  description: The maintenance reason after the task (empty when not in maintenance).
  returned: always
  type: str
  sample: kernel upgrade
waited:
  description: Seconds spent waiting for pool peers to acknowledge (and DNS to drain).
  returned: changed and not check mode
  type: float
  sample: 0.21
dns:
  description:
    - Per DNS pool of the node, V(drained) or why not (V(kept ...) when no other member can take
      the clients). Empty when leaving maintenance.
  returned: changed and not check mode
  type: dict
  sample: {web: drained}
not_acknowledged_by:
  description: Pool peers that had not seen the change when the module gave up.
  returned: failure after the flag was set
  type: list
  elements: str
  sample: [n3]
not_drained:
  description: DNS pools that still handed the node out when the module gave up.
  returned: failure after the flag was set
  type: list
  elements: str
  sample: [web]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.takelan.multiall.plugins.module_utils._argspec import (
    ArgumentSpec,
    connector_argspec,
)
from ansible_collections.takelan.multiall.plugins.module_utils._control import (
    ControlError,
    control_request,
)
from ansible_collections.takelan.multiall.plugins.module_utils.tns import SerfMember


def argument_spec() -> ArgumentSpec:
    """The module's options, as DOCUMENTATION (with its fragments) describes them."""
    return connector_argspec().merge(
        ArgumentSpec(
            {
                "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
                "reason": {"type": "str", "default": ""},
                "timeout": {"type": "float", "default": 15.0},
            }
        )
    )


def current_state(tag: str) -> tuple[bool, str]:
    """The connector's ``maint`` tag as (in maintenance, reason), read as TNS reads it."""
    member = SerfMember(name="", tags={"maint": tag or "0"})
    return member.in_maintenance, member.maintenance_reason


def main() -> None:
    """Compare the wanted flag with the connector's, change it if needed."""
    module = AnsibleModule(**argument_spec().to_kwargs(), supports_check_mode=True)
    path, want_on = module.params["socket"], module.params["state"] == "present"
    want_reason = module.params["reason"] if want_on else ""
    try:
        status = control_request(path, {"op": "status"}, timeout=10)
    except ControlError as exc:
        module.fail_json(msg=str(exc))
    is_on, reason = current_state(status.get("maintenance", "0"))
    before = {"maintenance": is_on, "reason": reason}
    after = {"maintenance": want_on, "reason": want_reason}
    changed = before != after
    result = {
        "changed": changed,
        "maintenance": want_on if changed else is_on,
        "reason": want_reason if changed else reason,
        "diff": {"before": before, "after": after},
    }
    if not changed or module.check_mode:
        module.exit_json(**result)
    timeout = module.params["timeout"]
    try:
        reply = control_request(
            path,
            {
                "op": "maintenance",
                "action": "enter" if want_on else "exit",
                "reason": want_reason,
                "timeout": timeout,
            },
            timeout=timeout + 10,
        )
    except ControlError as exc:
        module.fail_json(msg=str(exc), **result)
    result["waited"] = reply.get("waited_s")
    result["dns"] = reply.get("dns", {})
    if not reply.get("ok"):
        missing = reply.get("not_acknowledged_by", [])
        undrained = reply.get("not_drained", [])
        problems = ([f"not yet seen by: {', '.join(missing)}"] if missing else []) + (
            [f"DNS still hands the node out for: {', '.join(undrained)}"] if undrained else []
        )
        module.fail_json(
            msg=f"maintenance flag {'set' if want_on else 'cleared'} on {status.get('node')}, but {'; '.join(problems)}",
            not_acknowledged_by=missing,
            not_drained=undrained,
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
