#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pkg_converge
short_description: Converge a node's packages, holds and services to its pools (SL-SA), refusing unsafe plans
version_added: 0.1.0
author:
  - TakeLAN MultiAll developers (@takelan)
description:
  - Reads the node's merged C(packages), C(services) and C(libraries) from the pool model (the
    union of its pools), compares them with what dpkg, the linker cache and the service manager
    say, and simulates the change with C(apt-get -s) before doing anything.
  - A plan that would remove a package the model does not remove, cannot be satisfied, downgrades
    a package, changes a held package, or makes a shared library (soname) disappear while a
    package that stays installed depends on its package (or the pool requires the library), is
    refused with a report (RV(refused), RV(plan)) and nothing changes, unless O(force=true).
  - Pools that set different values for one package or service of the node (what
    C(multiall pools check) reports) are refused too, naming both pools.
  - Services are started or stopped (C(state)) and enabled or disabled (C(enabled)) through
    systemd, or through the lab's supervisor inside a MultiAll lab node (there, enabled means
    restarted when it exits). A service whose manager cannot say whether it is enabled is left
    as it is.
  - Debian-family nodes only (dpkg, apt).
extends_documentation_fragment:
  - takelan.multiall.pools
  - takelan.multiall.pools.node
  - takelan.multiall._attributes
options:
  force:
    description:
      - Apply a plan even when it has problems (removals, downgrades, held packages, library
        breaks). Unsatisfiable plans still fail, in apt.
    type: bool
    default: false
  apt_options:
    description:
      - Extra arguments for every C(apt-get) and C(apt-cache) call, for example to use only a
        local repository C([-o, Dir::Etc::sourcelist=/etc/multiall/sl.list, -o, Dir::Etc::sourceparts=-]).
    type: list
    elements: str
    default: []
  update_cache:
    description:
      - Run C(apt-get update) (with O(apt_options)) first, also in check mode, so the simulation
        sees the current repository. Not reported as a change.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - Returns the simulated plan (and refuses it the same way) without changing anything.
  diff_mode:
    support: full
    details:
      - The diff lists package versions, holds and service states (and whether they are enabled,
        when that changes) before and after the plan.
"""

EXAMPLES = r"""
- name: Show what converging would do, and why it would be refused
  takelan.multiall.pkg_converge:
    node: "{{ inventory_hostname }}"
  check_mode: true
  diff: true
  register: sl_plan

- name: Converge from a local repository only
  takelan.multiall.pkg_converge:
    node: "{{ inventory_hostname }}"
    update_cache: true
    apt_options: [-o, "Dir::Etc::sourcelist=/etc/multiall/sl.list", -o, "Dir::Etc::sourceparts=-"]
"""

RETURN = r"""
plan:
  description: The simulated plan.
  returned: always
  type: dict
  contains:
    install:
      description: Packages asked of apt, with the version (null = any).
      type: dict
    remove:
      description: Packages the model removes (C(state=absent)).
      type: list
      elements: str
    hold:
      description: Packages to hold.
      type: list
      elements: str
    unhold:
      description: Packages to unhold.
      type: list
      elements: str
    services:
      description: Services to start or stop, with the state wanted.
      type: dict
    enable:
      description: Services to enable (true) or disable (false).
      type: dict
    changes:
      description: Every package apt would touch, with C(from) and C(to) versions (C(to) null = removed).
      type: dict
    removed:
      description: Packages apt would remove that the model does not remove.
      type: list
      elements: str
    unsatisfiable:
      description: apt's explanation when it cannot satisfy the request.
      type: list
      elements: str
    downgrades:
      description: Packages that would go to an older version.
      type: list
      elements: str
    held:
      description: Held packages the plan would change.
      type: list
      elements: str
    abi:
      description: Sonames that would disappear while needed (C(package), C(soname), C(needed_by), C(message)).
      type: list
      elements: dict
refused:
  description: Why the plan is refused, one sentence each; empty when it is safe (or forced).
  returned: always
  type: list
  elements: str
  sample: ["would remove demo-app 1.0, which the model does not remove"]
commands:
  description: What was run to apply the plan (empty in check mode or when nothing changes).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.takelan.multiall.plugins.module_utils._argspec import (
    ArgumentSpec,
    node_argspec,
    pools_file_argspec,
)
from ansible_collections.takelan.multiall.plugins.module_utils._pools_module import node_view
from ansible_collections.takelan.multiall.plugins.module_utils.slfacts import (
    FactsError,
    collect,
)
from ansible_collections.takelan.multiall.plugins.module_utils.slplan import (
    PlanError,
    apply_plan,
    make_plan,
    state_text,
)

SECTIONS = ("packages", "services", "libraries")


def argument_spec() -> ArgumentSpec:
    """The module's options, as DOCUMENTATION (with its fragments) describes them."""
    return (
        pools_file_argspec()
        .merge(node_argspec())
        .merge(
            ArgumentSpec(
                {
                    "force": {"type": "bool", "default": False},
                    "apt_options": {"type": "list", "elements": "str", "default": []},
                    "update_cache": {"type": "bool", "default": False},
                }
            )
        )
    )


def main() -> None:
    """Facts, plan (simulated), refuse or apply, report."""
    module = AnsibleModule(**argument_spec().to_kwargs(), supports_check_mode=True)
    view = node_view(module)
    apt = module.params["apt_options"]

    def runner(argv: list[str]) -> tuple[int, str, str]:
        return module.run_command(argv, environ_update={"LC_ALL": "C"})

    if module.params["update_cache"]:
        rc, out, err = runner(["apt-get", *apt, "-q", "update"])
        if rc != 0:
            module.fail_json(msg=f"apt-get update failed (exit {rc}): {(err or out).strip()}")
    try:
        facts = collect(view.name, runner)
        plan = make_plan(view.settings, facts, runner, apt)
    except (FactsError, PlanError) as exc:
        module.fail_json(msg=str(exc))
    conflicts = [c.message() for c in view.conflicts if c.path and c.path[0] in SECTIONS]
    refused = conflicts + plan["refused"]
    result = {
        "changed": plan["changed"],
        "plan": plan,
        "refused": refused,
        "commands": [],
    }
    if module._diff:
        result["diff"] = {
            "before": state_text(facts, plan, after=False),
            "after": state_text(facts, plan, after=True),
        }
    if refused and not module.params["force"]:
        module.fail_json(msg="SL plan refused, nothing changed: " + "; ".join(refused), **result)
    if plan["changed"] and not module.check_mode:
        try:
            result["commands"] = apply_plan(plan, runner, apt, force=module.params["force"])
        except PlanError as exc:
            module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
