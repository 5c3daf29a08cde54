"""DNS-SA in the lab: BIND 9 on the DNS node through the real ``dns_sa`` role.

Tests, the demo and ``benchmarks/failover_dns.py`` share these helpers: the
role is run with the real ``ansible-playbook`` over the lab's SSH, named runs
under the node's supervisor, and answers are read with plain DNS queries.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ansible_collections.takelan.multiall.plugins.module_utils.dns import served_rrsets

from .core import Lab, LabError, checkout_env

ROOT = Path(__file__).resolve().parents[1]


def install_dns(lab: Lab, *extra: str) -> str:
    """Run ``playbooks/dns.yml`` against the lab; returns ansible's output."""
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(lab.inventory_path),
        str(ROOT / "playbooks" / "dns.yml"),
        "-e",
        f"dns_sa_lab_src={ROOT}",
        "-e",
        f"dns_sa_lab_python={sys.executable}",
        *extra,
    ]
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=checkout_env(), timeout=300, check=False
    )
    if proc.returncode != 0:
        raise LabError(f"playbooks/dns.yml failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def served(server: str, zone: str, name: str = "@", rtype: str = "A") -> list[str]:
    """What BIND answers now for ``name`` in ``zone`` (sorted values)."""
    return list(served_rrsets(server, zone, [(name, rtype)], timeout=1.0)[(name, rtype)].values)
