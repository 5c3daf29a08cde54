"""Lab-wide names and limits: the address range, the name prefix, paths, worker counts.

Apart from :mod:`lab.core` so every part of the lab (boot, inventories, faults,
the CLI, tests) can use them without importing the ``Lab`` class: this module
imports nothing from the lab, so it can never be part of an import cycle.
"""

from __future__ import annotations

import ipaddress
import os
import re

LAB_NET = ipaddress.ip_network("198.18.0.0/24")
CONTROLLER = "198.18.0.1"


def _prefix() -> str:
    """Name prefix of everything the lab makes; ``MULTIALL_LAB_PREFIX`` gives a private lab.

    ``lab/instance.sh K`` runs a command against lab K: its own controller network
    namespace (so the same 198.18.0.0/24 addresses and bridge name do not clash),
    state dir and this prefix for the globally named network namespaces and mounts.
    """
    prefix = os.environ.get("MULTIALL_LAB_PREFIX", "ma-")
    if not re.fullmatch(r"ma[0-9]?-", prefix):
        raise SystemExit(f"MULTIALL_LAB_PREFIX={prefix!r}: expected 'ma-' or 'maK-' (K a digit)")
    return prefix


PREFIX = _prefix()
BRIDGE = f"{PREFIX}br0"
DEFAULT_STATE = "/run/multiall-lab"
BOOT_WORKERS = 24
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# The kernel's IPv4 neighbour (ARP) table is one for every network namespace, capped
# by these sysctls (Linux defaults 128 / 512 / 1024). A lab of N nodes where every node
# talks to every other (Serf gossips with random members) needs ~N^2 entries: 64 nodes
# are 4 032, more than the cap, and the kernel then drops packets to peers it cannot
# resolve ("neighbor table overflow" in dmesg). Serf then marked live members failed
# and joins timed out, which is what kept 64-node labs from converging.
NEIGH_LIMITS = {"gc_thresh1": 4096, "gc_thresh2": 32768, "gc_thresh3": 65536}
