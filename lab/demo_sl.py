"""Demo step 15 (SL-SA): a package removed by hand on one node, caught and put back.

Kept out of ``lab/demo.py`` (already long); the demo calls :func:`story_step`
with its own printing helpers. The repair uses the real ``pkg_converge``
module over SSH with a local ``file:`` repository (``lab/sl_repo.py``'s
``install_repo``) holding the host's cached ``.deb`` of the package, so the
demo never needs the network; without such a ``.deb`` the repair is skipped
and said so.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.ansible_env import ansible_env
from lab.connector import NODE_SOCKET
from lab.sl_repo import APT_OPTIONS, install_repo

MULTIALL = str(Path(sys.executable).with_name("multiall"))
ANSIBLE = str(Path(sys.executable).with_name("ansible"))
PACKAGE = "rsync"  # the demo model's web pool expects it on n1 and n2


def drift(lab: Any, observer: str, pool: str) -> tuple[int, dict[str, Any]]:
    """``multiall sl drift POOL --json`` inside OBSERVER: exit status and report."""
    proc = lab.exec(
        observer,
        [MULTIALL, "sl", "drift", pool, "--json", "--socket", NODE_SOCKET],
        check=False,
        timeout=60,
    )
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise SystemExit(f"demo: multiall sl drift failed: {proc.stderr.strip()}") from None


def package_ok(report: dict[str, Any], node: str, name: str) -> bool | None:
    """Whether NODE's cell for package NAME is in sync (None: no such row, no facts, or
    only its last known facts, marked stale)."""
    for row in report.get("rows", []):
        if (row.get("kind"), row.get("name")) == ("packages", name):
            cell = row.get("cells", {}).get(node)
            return None if cell is None or cell.get("stale") else bool(cell.get("ok"))
    return None


def wait_for(lab: Any, observer: str, pool: str, node: str, ok: bool, limit: float = 60) -> float:
    """Seconds until OBSERVER's report says NODE's package is (not) in sync."""
    started = time.monotonic()
    while package_ok(drift(lab, observer, pool)[1], node, PACKAGE) is not ok:
        if time.monotonic() - started > limit:
            state = "in sync" if ok else "drifting"
            raise SystemExit(f"demo: {node}'s {PACKAGE} not reported {state} within {limit:g} s")
        time.sleep(0.5)
    return time.monotonic() - started


def cached_deb(name: str) -> Path | None:
    """The host's apt-cached .deb of NAME at its installed version (nodes copy the host's)."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, check=False
    )
    version = proc.stdout.strip().split(":")[-1]  # an epoch is not in the file name
    found = glob.glob(f"/var/cache/apt/archives/{name}_{version}_*.deb") if version else []
    return Path(found[0]) if found else None


def repair(lab: Any, node: str, deb: Path) -> str:
    """pkg_converge on NODE with a one-package file: repository; its one-line result."""
    with tempfile.TemporaryDirectory(prefix="demo-sl-") as tmp:
        repo = Path(tmp)
        (repo / deb.name).write_bytes(deb.read_bytes())
        index = subprocess.run(
            ["dpkg-scanpackages", "."], cwd=repo, capture_output=True, text=True, check=True
        )
        (repo / "Packages").write_text(index.stdout)
        install_repo(lab, node, repo)
    args = json.dumps({"node": node, "update_cache": True, "apt_options": APT_OPTIONS})
    inventory = str(lab.inventory_path)
    proc = subprocess.run(
        [ANSIBLE, node, "-i", inventory, "-m", "takelan.multiall.pkg_converge", "-a", args, "-o"],
        capture_output=True,
        text=True,
        env=ansible_env(),
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise SystemExit(f"demo: pkg_converge failed on {node}: {proc.stdout[-1500:]}")
    return proc.stdout.strip()[:300]


def story_step(
    lab: Any, show: Callable[[str], None], say: Callable[[str], None], node: str = "n2"
) -> None:
    """Remove PACKAGE by hand on NODE, show n1's drift report catch it, converge it back."""
    say(f"[dim]{node}$ dpkg --remove --force-depends {PACKAGE}    # by hand, outside Ansible[/dim]")
    lab.exec(node, ["dpkg", "--remove", "--force-depends", PACKAGE])
    seen = wait_for(lab, "n1", "web", node, ok=False)
    say(f"  n1's report shows it {seen:.1f} s later (dpkg watched, digest gossiped by Serf)")
    say("[dim]n1$ multiall sl drift web[/dim]")
    proc = lab.exec("n1", [MULTIALL, "sl", "drift", "web", "--socket", NODE_SOCKET], check=False)
    show(proc.stdout.rstrip() + f"\n(exit status {proc.returncode}: drift)")
    deb = cached_deb(PACKAGE)
    if deb is None:
        say(f"  (no cached {PACKAGE} .deb on this host: the pkg_converge repair is skipped)")
        return
    say(f"[dim]ansible {node} -m takelan.multiall.pkg_converge   # local file: repository[/dim]")
    show(repair(lab, node, deb))
    back = wait_for(lab, "n1", "web", node, ok=True)
    say(f"  n1's report says web is in sync again {back:.1f} s after the converge")
