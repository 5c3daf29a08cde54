#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dns_zone
short_description: Make a pool's DNS records follow its topology (RFC 2136 with TSIG, or zone rebuild)
version_added: 0.1.0
author:
  - TakeLAN MultiAll developers (@takelan)
description:
  - Computes the records a pool should have from the pool model and the pool's current
    topology - the pool name's A/AAAA set holds the members that are alive, SBM OK or WARNING
    and past their hold-down; one name per node; the pool's extra C(dns.records).
  - Asks the authoritative server what it serves for exactly those names, and applies the
    difference. Records MultiAll does not own are never touched.
  - In C(update) mode the difference is sent as one RFC 2136 dynamic update signed with TSIG
    (all or nothing). A wrong or missing key fails with a clear message and changes nothing.
  - In C(rebuild) mode the whole zone is rendered with Jinja2, the SOA serial is bumped
    monotonically, the file is checked with C(named-checkzone), atomically replaced and
    reloaded with C(rndc reload). A zone that fails the check is never installed. Run it on the
    DNS server (C(delegate_to)).
  - In C(push) mode the zone is rendered the same way and written atomically to
    C(<dns.push_dir>/<zone>.zone), a live FS-SA tree of the pool that carries it to the DNS
    server, whose connector checks, installs and reloads it. Changed means the records in that
    file differ; check mode with diff shows the pushed file against the new one.
  - The members come from O(members) when given, else from the local TakeConnector (the same
    choice the connector applies in-process, hold-down included). Without quorum the module
    refuses to change anything, so a minority partition never rewrites DNS for the majority.
  - Idempotent - nothing is sent when the server already serves what the topology wants.
extends_documentation_fragment:
  - takelan.multiall.pools
  - takelan.multiall.connector
  - takelan.multiall._attributes
attributes:
  check_mode:
    support: full
    details:
      - Shows the records that would be added and removed; sends and writes nothing.
  diff_mode:
    support: full
    details:
      - Before and after are the owned records as zone-file lines; in O(mode=push) the pushed
        zone file and the newly rendered one.
requirements:
  - dnspython (python3-dnspython)
  - Jinja2, named-checkzone and rndc for O(mode=rebuild)
  - Jinja2 for O(mode=push)
options:
  pool:
    description: The pool whose zone to reconcile; its C(dns) section gives zone, server, TTL, mode.
    type: str
    required: true
  members:
    description:
      - The members to put in the pool record. Default - ask the connector on O(socket) for the
        members, leader and quorum.
      - An empty list is refused (DNS never removes the last member).
    type: list
    elements: str
  mode:
    description: Overrides the pool's C(dns.mode).
    type: str
    choices: [update, rebuild, push]
  server:
    description: The DNS server's address; overrides the pool's C(dns.server).
    type: str
  port:
    description: The DNS server's port.
    type: int
    default: 53
  key_file:
    description:
      - A BIND key file (C(tsig-keygen) output) with the TSIG key, for O(mode=update).
      - C({pool}) in it is replaced by O(pool); the default is where the C(dns_sa) role puts
        each pool's own key on the pool's nodes.
    type: path
    default: /etc/multiall/dns/{pool}.key
  key_name:
    description: TSIG key name, when the key is given with O(key_secret) instead of O(key_file).
    type: str
  key_secret:
    description: TSIG secret (base64); takes precedence over O(key_file).
    type: str
  key_algorithm:
    description: TSIG algorithm for O(key_secret).
    type: str
    default: hmac-sha256
  zone_file:
    description: For O(mode=rebuild) - the zone file named loads.
    type: path
  template:
    description: For O(mode=rebuild) and O(mode=push) - a Jinja2 zone template; default is the built-in one.
    type: path
  reload:
    description: For O(mode=rebuild) - run C(rndc reload ZONE) after installing.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each DNS answer (the connector is given 10 seconds).
    type: float
    default: 2
seealso:
  - module: takelan.multiall.tns_maintenance
  - name: DNS-SA guide
    description: docs/dns.md in the collection.
    link: https://github.com/takelan/multiall/blob/main/docs/dns.md
"""

EXAMPLES = r"""
- name: Pool DNS follows the topology the local connector sees
  takelan.multiall.dns_zone:
    pool: web

- name: Publish an explicit member list, show what would change
  takelan.multiall.dns_zone:
    pool: web
    members: [n1, n2]
  check_mode: true
  diff: true

- name: Push mode - show the zone the leader would push (pool dns.mode push)
  takelan.multiall.dns_zone:
    pool: web
  check_mode: true
  diff: true

- name: Rebuild mode - render, check and reload the zone on the DNS server
  takelan.multiall.dns_zone:
    pool: api
    mode: rebuild
    members: "{{ api_members }}"
    zone_file: /var/lib/bind/multiall/api.pool.example.test.zone
  delegate_to: ns1
"""

RETURN = r"""
zone:
  description: The pool's zone.
  returned: success
  type: str
  sample: web.pool.example.test
members:
  description: The members published in the pool record, sorted.
  returned: success
  type: list
  elements: str
  sample: [n1, n2]
records:
  description:
    - One line per record added (V(+)) or removed (V(-)), or whose TTL changes (V(~)).
  returned: success
  type: list
  elements: str
  sample: ["- @ IN A 198.18.0.13", "+ @ 5 IN A 198.18.0.12"]
changes:
  description: Each changed record set with the values added and removed.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Owner name relative to the zone (V(@) is the apex).
      type: str
      sample: "@"
    type:
      description: Record type.
      type: str
      sample: A
    ttl:
      description: The TTL the set gets.
      type: int
      sample: 5
    add:
      description: Values added.
      type: list
      elements: str
      sample: [198.18.0.12]
    remove:
      description: Values removed.
      type: list
      elements: str
      sample: [198.18.0.13]
    values:
      description: The set's values after the change (empty means the set is deleted).
      type: list
      elements: str
      sample: [198.18.0.11, 198.18.0.12]
wanted:
  description: The owned records as they should be, zone-file lines.
  returned: success
  type: list
  elements: str
  sample: ["@ 5 IN A 198.18.0.11", "n1 5 IN A 198.18.0.11"]
served:
  description: The owned records as the server served them before the task, zone-file lines.
  returned: success
  type: list
  elements: str
  sample: ["@ 5 IN A 198.18.0.11", "@ 5 IN A 198.18.0.13"]
kept_last:
  description: Members kept although unfit, because no member was fit (never an empty pool).
  returned: when the members came from the connector
  type: list
  elements: str
  sample: []
update_ms:
  description: Milliseconds the signed dynamic update took.
  returned: when an update was sent (O(mode=update), changed, not check mode)
  type: float
  sample: 1.42
serial:
  description: SOA serial of the rendered zone.
  returned: O(mode=rebuild) or O(mode=push)
  type: int
  sample: 1764118800
zone_file:
  description: Where the rebuilt zone was installed (rebuild), or the pushed zone file (push).
  returned: O(mode=rebuild) when changed and not check mode; always for O(mode=push)
  type: str
  sample: /var/lib/bind/multiall/web.pool.example.test.zone
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.takelan.multiall.plugins.module_utils._argspec import (
    ArgumentSpec,
    connector_argspec,
    pools_file_argspec,
)
from ansible_collections.takelan.multiall.plugins.module_utils._control import (
    ControlError,
    control_request,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_reconcile import reconcile
from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import HAS_DNSPYTHON
from ansible_collections.takelan.multiall.plugins.module_utils._dns_tsig import (
    DEFAULT_KEY_FILE,
    load_key_file,
    make_key,
    pool_key_file,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import (
    DnsError,
    pool_addresses,
    zone_server,
    zone_settings,
)
from ansible_collections.takelan.multiall.plugins.module_utils._pools_module import require_yaml
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModelError,
    load,
)


def members_from_connector(module: AnsibleModule, pool: str) -> dict:
    """The connector's choice for the pool; refuses without quorum."""
    try:
        reply = control_request(module.params["socket"], {"op": "dns", "pool": pool}, timeout=10)
    except ControlError as exc:
        module.fail_json(msg=f"{exc}; or give the members with the members option")
    info = reply.get("pools", {}).get(pool)
    if not info:
        module.fail_json(msg=f"the connector on {reply.get('node')} is not a member of pool {pool}")
    if not info.get("quorum") or not info.get("fresh_majority", True):
        module.fail_json(
            msg=f"pool {pool} has no quorum in {reply.get('node')}'s view: DNS is left alone "
            "(a minority partition must not rewrite the zone)",
            changed=False,
        )
    return info


def argument_spec() -> ArgumentSpec:
    """The module's options, as DOCUMENTATION (with its fragments) describes them."""
    return (
        pools_file_argspec()
        .merge(connector_argspec())
        .merge(
            ArgumentSpec(
                {
                    "pool": {"type": "str", "required": True},
                    "members": {"type": "list", "elements": "str"},
                    "mode": {"type": "str", "choices": ["update", "rebuild", "push"]},
                    "server": {"type": "str"},
                    "port": {"type": "int", "default": 53},
                    "key_file": {"type": "path", "default": DEFAULT_KEY_FILE},
                    "key_name": {"type": "str"},
                    "key_secret": {"type": "str", "no_log": True},
                    "key_algorithm": {"type": "str", "default": "hmac-sha256"},
                    "zone_file": {"type": "path"},
                    "template": {"type": "path"},
                    "reload": {"type": "bool", "default": True},
                    "timeout": {"type": "float", "default": 2.0},
                },
                required_together=[("key_name", "key_secret")],
                # required_together counts an explicit null as given; this does not.
                required_by={"key_secret": ["key_name"]},
            )
        )
    )


def main() -> None:
    """Plan, show and apply the pool's DNS changes."""
    module = AnsibleModule(**argument_spec().to_kwargs(), supports_check_mode=True)
    if not HAS_DNSPYTHON:
        module.fail_json(msg=missing_required_lib("dnspython (python3-dnspython)"))
    require_yaml(module)
    p = module.params
    result: dict = {"changed": False}
    try:
        model = load(p["pools_file"])
        settings = zone_settings(model, p["pool"])
        if p["mode"]:
            settings["mode"] = p["mode"]
        server = zone_server(settings, p["server"])
        addresses = pool_addresses(model, p["pool"])
        if p["members"] is not None:
            if not p["members"]:
                module.fail_json(msg="members is empty: DNS never removes the last member")
            members = list(p["members"])
        else:
            info = members_from_connector(module, p["pool"])
            members = info["members"]["members"]
            result["kept_last"] = info["members"]["kept_last"]
        key = None
        if settings["mode"] == "update":
            if p["key_secret"]:
                key = make_key(p["key_name"], p["key_algorithm"], p["key_secret"], "key_secret")
            else:
                key = load_key_file(pool_key_file(p["key_file"], p["pool"]))
        template, template_source = None, "built-in template"
        if p["template"]:
            template_source = p["template"]
            try:
                with open(p["template"], encoding="utf-8") as handle:
                    template = handle.read()
            except OSError as exc:
                module.fail_json(msg=f"{p['template']}: cannot read the zone template: {exc}")
        outcome = reconcile(
            settings,
            addresses,
            members,
            server,
            key=key,
            port=p["port"],
            timeout=p["timeout"],
            check=module.check_mode,
            zone_file=p["zone_file"],
            template=template,
            template_source=template_source,
            reload_argv=None if p["reload"] else [],
        )
    except PoolModelError as exc:
        module.fail_json(msg=str(exc), **result)
    except DnsError as exc:
        module.fail_json(msg=str(exc), **result)
    result.update(
        changed=outcome["changed"],
        zone=outcome["zone"],
        members=outcome["members"],
        records=outcome["diff"],
        changes=outcome["changes"],
        wanted=outcome["wanted"],
        served=outcome["served"],
        diff={
            "before": outcome["before"],
            "after": outcome["after"],
            "before_header": (
                f"{outcome['zone_file']} (pushed)"
                if settings["mode"] == "push"
                else f"{outcome['zone']} (served by {server})"
            ),
            "after_header": f"{outcome['zone']} (wanted)",
        },
    )
    for extra in ("update_ms", "serial", "zone_file"):
        if extra in outcome:
            result[extra] = outcome[extra]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
