"""``make demo``: the MultiAll story on a 3-node lab, told step by step.

Every step says in one sentence what it shows, then shows it for real: real
network namespaces, real sshd, real ansible-playbook over SSH. The lab is torn
down at the end, also on Ctrl-C or error.

    .venv/bin/python -m lab.demo [--keep] [--fast]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from lab import Lab

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = ROOT / "inventory" / "lab" / "pools.yml"
console = Console(highlight=False)


def env() -> dict[str, str]:
    """Environment for ansible/multiall commands run from the checkout."""
    out = dict(os.environ)
    out.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collection"),
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{BIN}:{out.get('PATH', '')}",
    )
    return out


def step(number: int, title: str, why: str) -> None:
    """A heading a newcomer can follow."""
    console.print()
    console.print(Panel(f"[bold]{title}[/bold]\n{why}", title=f"step {number}", expand=False))


def run(argv: list[str], show: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command the way a user would, echoing it first."""
    console.print(f"[dim]$ {' '.join(argv)}[/dim]")
    proc = subprocess.run(argv, env=env(), capture_output=True, text=True, cwd=ROOT)
    if show:
        out = (proc.stdout + proc.stderr).rstrip()
        if out:
            console.print(out, markup=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: command failed ({proc.returncode}): {' '.join(argv)}")
    return proc


def ssh_up(address: str, timeout: float = 0.3) -> bool:
    """Is the node's sshd answering? (TCP connect to port 22 on its lab address)."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            return sock.recv(4).startswith(b"SSH")
    except OSError:
        return False


def status_table(lab: Lab, pools: dict[str, list[str]], note: str = "") -> Table:
    """One row per node: address, pools, sshd reachable, config installed."""
    table = Table(title=f"lab status {note}".strip(), expand=False)
    for col in ("node", "address", "pools", "sshd", "/etc/multiall/node.yml"):
        table.add_column(col)
    for name, address in sorted(lab.nodes.items()):
        up = ssh_up(address)
        installed = "-"
        if up:
            probe = lab.exec(name, ["test", "-s", "/etc/multiall/node.yml"], check=False, timeout=5)
            installed = "[green]yes[/green]" if probe.returncode == 0 else "[yellow]no[/yellow]"
        member_of = ", ".join(p for p, members in pools.items() if name in members)
        table.add_row(
            name,
            address,
            member_of,
            "[green]up[/green]" if up else "[red]DOWN[/red]",
            installed,
        )
    return table


def watch(lab: Lab, pools: dict[str, list[str]], seconds: float, note: str) -> None:
    """Refresh the status table live for a few seconds."""
    with Live(status_table(lab, pools, note), console=console, refresh_per_second=4) as live:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.5)
            live.update(status_table(lab, pools, note))


def pool_members(inventory: str) -> dict[str, list[str]]:
    proc = run([str(BIN / "ansible-inventory"), "-i", inventory, "--list"], show=False)
    data = json.loads(proc.stdout)
    return {g[5:]: sorted(data[g].get("hosts", [])) for g in data if g.startswith("pool_")}


def story(lab: Lab, fast: bool) -> None:
    pause = 2 if fast else 4
    step(
        1,
        "Three servers, two pools",
        "The lab builds 3 real nodes (own network, /etc, sshd) from the pool model.",
    )
    console.print(MODEL.read_text(), markup=False)
    started = time.monotonic()
    lab.up(pools_file=str(MODEL))
    console.print(f"lab up: {len(lab.nodes)} nodes in {time.monotonic() - started:.1f} s")
    inventory = str(lab.inventory_path)

    step(
        2,
        "The model is checked",
        "Every key is validated; errors would name file, line and column.",
    )
    run([str(BIN / "multiall"), "pools", "check", inventory])
    run([str(BIN / "ansible-inventory"), "-i", inventory, "--graph"])
    pools = pool_members(inventory)

    step(
        3,
        "A node in two pools carries both",
        "n2 is in 'web' and 'db': lists are unioned, maps merged, each value says where it came from.",
    )
    run([str(BIN / "multiall"), "pools", "show", "n2", inventory])

    step(
        4,
        "Pools that disagree are never silently merged",
        "Pin one package to two versions in two pools: the model names both pools and lines.",
    )
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "conflict.pools.yml"
        bad.write_text(
            "nodes:\n  n2: {address: 198.18.0.12, pools: [web, db]}\n"
            'pools:\n  web:\n    packages: {nginx: "1.22*"}\n'
            '  db:\n    packages: {nginx: "1.24*"}\n'
        )
        run([str(BIN / "multiall"), "pools", "check", str(bad)], check=False)
        bad.write_text(
            bad.read_text()
            + "exceptions:\n  - {node: n2, pool: web, remove: {packages: [nginx]}, reason: db needs 1.24}\n"
        )
        console.print("[dim]... add an exception for n2 and check again:[/dim]")
        run([str(BIN / "multiall"), "pools", "check", str(bad)])

    step(
        5,
        "Ansible converges every node over SSH",
        "playbooks/site.yml runs the multiall_node role; a second run changes nothing.",
    )
    watch(lab, pools, pause, "(before)")
    run(
        [str(BIN / "ansible-playbook"), "-i", inventory, str(ROOT / "playbooks" / "site.yml")],
        show=False,
    )
    second = run(
        [str(BIN / "ansible-playbook"), "-i", inventory, str(ROOT / "playbooks" / "site.yml")],
        show=False,
    )
    recap = second.stdout[second.stdout.find("PLAY RECAP") :].strip()
    console.print(recap, markup=False)
    watch(lab, pools, pause, "(converged)")

    step(
        6,
        "A server dies",
        "lab kill n3: all its processes die and its link goes down; a play on pool_db now reaches only n2.",
    )
    lab.kill("n3")
    watch(lab, pools, pause, "(n3 killed)")
    run(
        [str(BIN / "ansible"), "-i", inventory, "pool_db", "-m", "ansible.builtin.ping", "-o"],
        check=False,
    )

    step(7, "It comes back", "lab revive n3: same host key (pinned), same node, reachable again.")
    lab.revive("n3")
    watch(lab, pools, pause, "(n3 revived)")
    run([str(BIN / "ansible"), "-i", inventory, "pool_db", "-m", "ansible.builtin.ping", "-o"])

    step(
        8,
        "A network partition",
        "lab partition n1 | n2,n3: n1 cannot reach its web peer n2; n2 and n3 still talk.",
    )
    lab.partition(["n1"], ["n2", "n3"])
    for src, dst in (("n1", "198.18.0.12"), ("n2", "198.18.0.13")):
        probe = lab.exec(src, ["ping", "-c1", "-W1", dst], check=False, timeout=5)
        verdict = "[green]reaches[/green]" if probe.returncode == 0 else "[red]cannot reach[/red]"
        console.print(f"{src} {verdict} {dst}")
    lab.heal()
    probe = lab.exec("n1", ["ping", "-c1", "-W1", "198.18.0.12"], check=False, timeout=5)
    console.print(
        f"after heal: n1 {'reaches' if probe.returncode == 0 else 'cannot reach'} 198.18.0.12"
    )

    console.print()
    console.print(
        Panel(
            "Next in the story (coming with the TNS, SBM, FS-SA, DB-SA and DNS-SA issues): "
            "a file written on one node appears on its peers; a DB row written during a "
            "partition is replayed after heal; a killed node leaves DNS and returns after it "
            "catches up.",
            title="what's next",
            expand=False,
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="Play the MultiAll demo on a 3-node lab.")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--fast", action="store_true", help="shorter pauses")
    args = parser.parse_args()
    if os.geteuid() != 0:
        console.print("make demo needs root: the lab creates network namespaces and mounts.")
        return 2
    lab = Lab()
    try:
        story(lab, args.fast)
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    finally:
        if not args.keep:
            console.print("[dim]tearing the lab down ...[/dim]")
            lab.down()
    console.print("[bold green]demo finished[/bold green]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
