#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: fs_sync
short_description: Converge a MultiAll file tree across its pool from one node
version_added: 0.1.0
author:
  - TakeLAN MultiAll developers (@takelan)
description:
  - Makes a file tree declared under a pool's C(files) identical on every pool peer that holds it,
    by pushing it from one node (O(from)) with rsync over the pool's peer transport (one SSH key
    per pool, pinned host keys, the receiver confined to the declared trees by its forced
    command).
  - Only differences travel; files land atomically (rsync's temporary file and rename). A second
    run changes nothing.
  - Run it on every node of the pool (for example on C(pool_<name>)); only the source node acts,
    the others report that they are not the source.
  - Devices, fifos, sockets and symlinks that lead outside the tree are never sent; they are
    listed in RV(trees[].skipped).
  - Extra files on a peer are deleted only when the tree declares C(delete=true).
  - The same code serves TakeConnector's full catch-up (C(module_utils/_fs_converge.py)).
extends_documentation_fragment:
  - takelan.multiall.pools
  - takelan.multiall.pools.node
  - takelan.multiall._attributes
options:
  tree:
    description:
      - The declared tree to converge. A path that no pool of O(node) declares is refused.
      - Default is every tree of O(node).
    type: path
  from:
    description:
      - The node whose copy of the tree is pushed to the other holders.
      - Default is the first member of the tree's pool (sorted), so that every node of a play
        agrees on one source; pass the pool leader from C(takelan.multiall.pool_facts) or
        C(multiall status) to follow TNS.
      - C(consensus) takes the copy most holders share, so that one node changed by hand is
        put back instead of spreading its change. Each holder's copy is digested as it is on
        its disk (paths, types, contents, modes, owners; not mtimes), the peers' over the
        peer transport (C(multiall-fs disk-digest)). The largest group of identical copies wins, a
        tie goes to the group with the lowest-named node, and that group's lowest-named node
        is the source, so every node of a play agrees. Peers that do not answer have no
        vote (RV(trees[].consensus.unreachable)).
    type: str
    aliases: [source_node]
  key_dir:
    description: Where the pool keys (C(<pool>.key)) and the pinned C(known_hosts) are.
    type: path
    default: /etc/multiall/peer
  control_dir:
    description: Directory of the SSH control sockets (one persistent connection per pool and peer).
    type: path
    default: /run/multiall/ssh
requirements:
  - rsync and the OpenSSH client on the source node; rsync on the peers.
  - The peer transport installed by the C(takelan.multiall.fs_sa) role.
attributes:
  check_mode:
    support: full
    details:
      - Runs rsync with C(--dry-run); RV(trees[].peers) and the diff list what would change.
  diff_mode:
    support: full
    details:
      - One line per added (C(+)), changed (C(~)) or deleted (C(-)) entry per peer.
"""

EXAMPLES = r"""
# Run on every node of the pool (hosts: pool_web); only web1 pushes.
- name: Converge every tree of this node from web1
  takelan.multiall.fs_sync:
    node: "{{ inventory_hostname }}"
    from: web1

- name: Put back what most nodes hold (one node was edited by hand)
  takelan.multiall.fs_sync:
    node: "{{ inventory_hostname }}"
    tree: /srv/www
    from: consensus

- name: Preview what converging /srv/www would change
  takelan.multiall.fs_sync:
    node: "{{ inventory_hostname }}"
    tree: /srv/www
  check_mode: true
  diff: true
"""

RETURN = r"""
trees:
  description: One entry per tree considered on this node.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The tree.
      type: str
      sample: /srv/www
    pool:
      description: The pool whose key carries the tree.
      type: str
      sample: web
    source:
      description: The node the tree is converged from.
      type: str
      sample: web1
    consensus:
      description: With O(from=consensus), how the source was chosen.
      returned: when O(from=consensus)
      type: dict
      contains:
        agree:
          description: The holders whose copies are identical to the source's.
          type: list
          elements: str
        groups:
          description: Every group of identical copies, largest first.
          type: list
          elements: list
        unreachable:
          description: Peers that gave no digest, and why; they had no vote.
          type: dict
      sample: {agree: [n2, n3], groups: [[n2, n3], [n1]], unreachable: {}}
    acted:
      description: Whether this node pushed (it is the source).
      type: bool
      sample: true
    peers:
      description: Per peer, what was (in check mode, would be) added, changed and deleted.
      type: dict
      sample: {web2: {pool: web, address: 198.18.0.12, added: [index.html], changed: [], deleted: []}}
    skipped:
      description: Entries that are not transferred (devices, fifos, sockets, unsafe symlinks).
      type: list
      elements: dict
      sample: [{path: dev/null0, reason: "device or socket: not transferred"}]
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.takelan.multiall.plugins.module_utils._argspec import (
    ArgumentSpec,
    node_argspec,
    pools_file_argspec,
)
from ansible_collections.takelan.multiall.plugins.module_utils._fs_converge import (
    CONSENSUS,
    ConvergeError,
    consensus,
    converge,
    diff_text,
    plan,
    skipped_entries,
)
from ansible_collections.takelan.multiall.plugins.module_utils._pools_files import trees_for
from ansible_collections.takelan.multiall.plugins.module_utils._pools_module import load_model
from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
    CONTROL_DIR,
    PEER_DIR,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import local_node_name


def argument_spec() -> ArgumentSpec:
    """The module's options, as DOCUMENTATION (with its fragments) describes them."""
    return (
        pools_file_argspec()
        .merge(node_argspec())
        .merge(
            ArgumentSpec(
                {
                    "tree": {"type": "path"},
                    "from": {"type": "str", "aliases": ["source_node"]},
                    "key_dir": {"type": "path", "default": PEER_DIR},
                    "control_dir": {"type": "path", "default": CONTROL_DIR},
                }
            )
        )
    )


def main() -> None:
    """Plan each tree, push from the source node, report per peer."""
    module = AnsibleModule(**argument_spec().to_kwargs(), supports_check_mode=True)
    model = load_model(module)
    params = module.params
    node = params["node"] or local_node_name()
    if not module.get_bin_path("rsync"):
        module.fail_json(msg="fs_sync: rsync is not installed on this node")

    def run(argv):
        return module.run_command(list(argv))

    plans, votes = [], {}
    try:
        paths = [params["tree"]] if params["tree"] else sorted(trees_for(model, node))
        for path in paths:
            source = params["from"]
            if source == CONSENSUS:
                path = plan(model, node, path)["path"]  # declared? (and normalised)
                votes[path] = consensus(
                    model,
                    node,
                    path,
                    run,
                    key_dir=params["key_dir"],
                    control_dir=params["control_dir"],
                )
                source = votes[path]["source"]
            plans.append(plan(model, node, path, source))
    except (ConvergeError, KeyError) as exc:
        module.fail_json(msg=f"fs_sync: {str(exc).strip(chr(39))}")

    trees, diffs, failures = [], [], []
    for p in plans:
        entry = {
            "path": p["path"],
            "pool": p["tree"]["pool"],
            "source": p["source"],
            "acted": p["source"] == node,
            "peers": {},
            "skipped": [],
        }
        if p["path"] in votes:
            entry["consensus"] = {k: v for k, v in votes[p["path"]].items() if k != "source"}
        if entry["acted"] and not os.path.isdir(p["path"]):
            # Pushing a missing tree (with delete) would empty every peer: refuse.
            failures.append(f"{p['path']} does not exist on {node}, the source")
        elif entry["acted"]:
            entry["skipped"] = skipped_entries(p["path"])
            results = converge(
                model,
                node,
                p["path"],
                run,
                check=module.check_mode,
                key_dir=params["key_dir"],
                control_dir=params["control_dir"],
            )
            entry["peers"] = {r.peer: r.as_dict() for r in results}
            failures += [f"{r.peer} ({r.address}): {r.error}" for r in results if r.rc]
            text = diff_text(p["path"], results)
            if text:
                diffs.append(
                    {"before_header": p["path"], "after_header": p["path"], "prepared": text}
                )
        trees.append(entry)
    changed = any(
        peer["added"] or peer["changed"] or peer["deleted"]
        for entry in trees
        for peer in entry["peers"].values()
    )
    result = {"changed": changed, "trees": trees}
    if module._diff:
        result["diff"] = diffs
    if failures:
        module.fail_json(msg="fs_sync: rsync failed for " + "; ".join(failures), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
