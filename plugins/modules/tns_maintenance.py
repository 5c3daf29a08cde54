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
  - TakeLAN MultiAll developers
description:
  - Sets or clears the node's maintenance flag in TNS through the local TakeConnector.
  - Entering maintenance returns only after every reachable pool peer has seen the flag and
    the pool DNS no longer hands the node out (drained), so it can go down right after.
    When a peer has not acknowledged, or DNS still answers with the node, within O(timeout)
    the module fails and says what is missing; the flag stays set.
  - Idempotent - a node already in maintenance with the same reason is left alone; a new
    reason updates it.
  - Runs on the node itself (the connector's control socket is local, mode 0600).
attributes:
  check_mode:
    support: full
    description: Reports what would change without touching the flag.
  diff_mode:
    support: full
    description: Shows the maintenance flag and reason before and after.
  platform:
    platforms: posix
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
  socket:
    description: The connector's control socket.
    type: path
    default: /run/multiall/connector.sock
  timeout:
    description: Seconds to wait for every pool peer to acknowledge.
    type: float
    default: 15
seealso:
  - module: takelan.multiall.pool_facts
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
  description: The maintenance reason after the task.
  returned: always
  type: str
  sample: kernel upgrade
waited:
  description: Seconds spent waiting for pool peers to acknowledge.
  returned: changed and not check mode
  type: float
  sample: 0.21
dns:
  description: Per DNS pool of the node, V(drained) or why not (V(kept ...) when no other member can take the clients).
  returned: changed and not check mode
  type: dict
  sample: {web: drained}
not_acknowledged_by:
  description: Pool peers that had not seen the change when the module gave up.
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.takelan.multiall.plugins.module_utils._control import (
    ControlError,
    control_request,
)


def current_state(tag: str) -> tuple[bool, str]:
    """``1:reason`` -> (True, reason); ``0`` -> (False, '')."""
    flag, _, reason = (tag or "0").partition(":")
    return flag == "1", reason if flag == "1" else ""


def main() -> None:
    """Compare the wanted flag with the connector's, change it if needed."""
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "reason": {"type": "str", "default": ""},
            "socket": {"type": "path", "default": "/run/multiall/connector.sock"},
            "timeout": {"type": "float", "default": 15.0},
        },
        supports_check_mode=True,
    )
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
            msg=f"maintenance flag set on {status.get('node')}, but {'; '.join(problems)}",
            not_acknowledged_by=missing,
            not_drained=undrained,
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
