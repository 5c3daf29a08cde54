"""``make demo``: the MultiAll story on a 3-node lab, told step by step.

Every step says in one sentence what it shows, then shows it for real: real
network namespaces, real sshd, real ansible-playbook over SSH. The lab is torn
down at the end, also on Ctrl-C or error.

    .venv/bin/python -m lab.demo [--keep] [--fast]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from connector.ansible_env import ansible_env
from lab import Lab, demo_sl
from lab.connector import NODE_SOCKET, control, start_all, wait_converged
from lab.db import cli as db_cli
from lab.db import install_capture
from lab.db import sql as db_sql
from lab.dns import served
from lab.failover import Failover, kill_and_time, revive

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = ROOT / "inventory" / "lab" / "pools.yml"
NS = "198.18.0.10"
ZONES = {"web": "web.pool.example.test", "db": "db.pool.example.test"}
LOG_WIDTH = 120  # columns when stdout is not a terminal


def make_console() -> Console:
    """The demo's console: when piped or logged (``make demo | tee``), rich would
    assume 80 columns and wrap or cut panels and tables there; use a log-friendly
    width instead (``COLUMNS`` still wins when set)."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console(highlight=False)
    return Console(highlight=False, width=LOG_WIDTH)


console = make_console()


def step(number: int, title: str, why: str) -> None:
    """A heading a newcomer can follow."""
    console.print()
    console.print(Panel(f"[bold]{title}[/bold]\n{why}", title=f"step {number}", expand=False))


def run(
    argv: list[str],
    show: bool = True,
    check: bool = True,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a command the way a user would, echoing it first."""
    # shlex.join: the echoed line can be pasted into a shell as it stands.
    console.print(f"[dim]$ {escape(shlex.join(argv))}[/dim]", soft_wrap=True)
    proc = subprocess.run(
        argv,
        env={**ansible_env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if show:
        out = (proc.stdout + proc.stderr).rstrip()
        if out:
            show_output(out)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: command failed ({proc.returncode}): {' '.join(argv)}")
    return proc


def show_output(text: str) -> None:
    """A command's own output, verbatim: no markup, never re-wrapped by rich."""
    console.print(text, markup=False, soft_wrap=True)


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


@contextlib.contextmanager
def live_view(renderable: RenderableType, refresh_per_second: float) -> Iterator[Live]:
    """rich ``Live``; piped or logged it prints only the final state, and then
    without a line break (rich adds one only on a terminal): add it here."""
    with Live(renderable, console=console, refresh_per_second=refresh_per_second) as live:
        yield live
    if not console.is_terminal:
        console.line()


def watch(lab: Lab, pools: dict[str, list[str]], seconds: float, note: str) -> None:
    """Refresh the status table live for a few seconds."""
    with live_view(status_table(lab, pools, note), refresh_per_second=4) as live:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.5)
            live.update(status_table(lab, pools, note))


def pool_members(inventory: str) -> dict[str, list[str]]:
    proc = run([str(BIN / "ansible-inventory"), "-i", inventory, "--list"], show=False)
    data = json.loads(proc.stdout)
    return {g[5:]: sorted(data[g].get("hosts", [])) for g in data if g.startswith("pool_")}


def show_status(lab: Lab, node: str) -> None:
    """`multiall status` as run on the node itself."""
    proc = lab.exec(
        node,
        [str(BIN / "multiall"), "status", "--socket", NODE_SOCKET],
        check=False,
        timeout=20,
    )
    console.print(f"[dim]{node}$ multiall status[/dim]")
    show_output(proc.stdout.rstrip() or proc.stderr.rstrip())


def race(lab: Lab, victim: str, observers: list[str], dns_pool: str | None = None) -> None:
    """Kill a node and show, live, when each observer's connector and Serf call it failed.

    With ``dns_pool``, also when ns1 stops handing the victim out for that pool.
    """
    address = lab.nodes[victim]

    def view(seen: Failover | None = None) -> Group:
        tbl = Table(title=f"after lab kill {victim}", expand=False)
        for col in ("observer", "connector verdict", "Serf's own verdict"):
            tbl.add_column(col)
        for obs in observers:
            conn = seen.connector.get(obs) if seen else None
            serf = seen.serf.get(obs) if seen else None
            tbl.add_row(
                obs,
                f"[red]failed[/red] after {conn:.2f} s" if conn else "alive ...",
                f"[red]failed[/red] after {serf:.2f} s" if serf else "alive ...",
            )
        # A line of its own below the table: a caption would wrap at the table's width.
        lines: list[Table | str] = [tbl]
        if dns_pool:
            gone = seen.dns_gone if seen else None
            lines.append(
                f"{ZONES[dns_pool]} stopped answering {address} after {gone:.2f} s"
                if gone
                else f"{ZONES[dns_pool]} still answers {address} ..."
            )
        return Group(*lines)

    with live_view(view(), refresh_per_second=10) as live:
        kill_and_time(
            lab,
            victim,
            observers,
            dns=(NS, ZONES[dns_pool]) if dns_pool else None,
            limit=15,
            interval=0.05,
            on_poll=lambda seen: live.update(view(seen)),
        )


def dig(pool: str) -> list[str]:
    """The pool name's A record as ns1 answers it, shown like ``dig +short``."""
    answer = served(NS, ZONES[pool])
    console.print(
        f"[dim]$ dig +short @{NS} {ZONES[pool]}[/dim]  ->  {' '.join(answer) or '(none)'}"
    )
    return answer


def wait_dns(pool: str, address: str, present: bool, limit: float = 30) -> float:
    """Seconds until ``address`` is (or is no longer) in the pool record."""
    start = time.monotonic()
    while (address in served(NS, ZONES[pool])) != present and time.monotonic() - start < limit:
        time.sleep(0.02)
    return time.monotonic() - start


def story(lab: Lab, fast: bool) -> None:
    pause = 2 if fast else 4
    step(
        1,
        "Three servers, two pools, one name server",
        "The lab builds 4 real nodes (own network, /etc, sshd) from the pool model.",
    )
    show_output(MODEL.read_text())
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
    show_output(recap)
    watch(lab, pools, pause, "(converged)")

    step(
        6,
        "Every node runs TakeConnector",
        "Serf (encrypted gossip) + direct peer probes give each node a live view of its pools: states, leader, quorum.",
    )
    start_all(
        lab,
        rules=[{"events": ["member_failed", "member_recovered"], "playbook": "tns_reaction.yml"}],
    )
    wait_converged(lab, timeout=60)
    show_status(lab, "n2")

    step(
        7,
        "Pool DNS follows the topology",
        "The dns_sa role sets up BIND 9 on ns1 (a zone per pool, TSIG key, rndc); each pool's "
        "leader keeps its zone in step with RFC 2136 updates signed with that key.",
    )
    run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            inventory,
            str(ROOT / "playbooks" / "dns.yml"),
            # The lab has no systemd: named runs under the node's supervisor.
            "-e",
            f"dns_sa_lab_src={ROOT} dns_sa_lab_python={BIN / 'python'}",
        ],
        show=False,
    )
    console.print("playbooks/dns.yml: named runs on ns1, the key is on every pool node")
    for pool in ZONES:
        wait_dns(pool, lab.nodes["n2"], True)
        dig(pool)
    sock = ["--socket", NODE_SOCKET]
    proc = lab.exec("n2", [str(BIN / "multiall"), "dns", "db", *sock], check=False)
    console.print("[dim]n2$ multiall dns db[/dim]")
    show_output(proc.stdout.rstrip())

    step(
        8,
        "A server dies",
        "lab kill n3: its pool peers call it failed within a second (Serf alone needs about 5 s), "
        "and the db leader takes it out of DNS at once.",
    )
    race(lab, "n3", observers=["n2"], dns_pool="db")
    console.print()
    dig("db")
    # The ad-hoc default (minimal) callback, results as YAML: `-o` and the oneline
    # callback it selects are deprecated (removed in ansible-core 2.23).
    run(
        [str(BIN / "ansible"), "-i", inventory, "pool_db", "-m", "ansible.builtin.ping"],
        check=False,
        extra_env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml"},
    )

    step(
        9,
        "It comes back",
        "lab revive n3: same disk and host key; its connector rejoins, peers report member_recovered, "
        "and DNS takes it back only after a hold-down (3 s), so a flapping server gets no clients.",
    )
    revived = time.monotonic()
    revive(lab, "n3")
    wait_dns("db", lab.nodes["n3"], True)
    console.print(
        f"  n3 back in db.pool.example.test {time.monotonic() - revived:.1f} s after lab revive"
    )
    dig("db")
    wait_converged(lab, timeout=60)
    for event in control(lab, "n2", {"op": "events"})["events"][-4:]:
        console.print(f"  n2 saw: {event['pool']:4} {event['type']:18} {event.get('member', '')}")
    for item in control(lab, "n2", {"op": "runs"})["runs"][-2:]:
        console.print(f"  n2 (leader of db) ran {item['playbook']}: {item['status']}")

    step(
        10,
        "A health check fails",
        "SBM runs each node's Baseline Rules 24/7; a failing Nagios-style check makes n3 CRITICAL and n2 sees it within a second.",
    )
    lab.exec("n3", ["touch", "/run/sbm-fail"])
    t0 = time.monotonic()
    while (
        control(lab, "n2", {"op": "status"})["pools"]["db"]["members"]["n3"]["sbm"] != "2"
        and time.monotonic() - t0 < 10
    ):
        time.sleep(0.05)
    console.print(
        f"  n2 sees n3's SBM status 2 (CRITICAL) {time.monotonic() - t0:.2f} s after the condition"
    )
    sbm_table = lab.exec("n2", [str(BIN / "multiall"), "sbm", "n3", "--socket", NODE_SOCKET])
    console.print("[dim]n2$ multiall sbm n3[/dim]")
    show_output(sbm_table.stdout)
    wait_dns("db", lab.nodes["n3"], False)
    console.print("  a CRITICAL server gets no clients either:")
    dig("db")
    lab.exec("n3", ["rm", "-f", "/run/sbm-fail"])

    step(
        11,
        "Planned maintenance",
        "n1 enters maintenance; the call returns only once every pool peer has seen it and "
        "no pool record hands n1 out any more (drained).",
    )
    reply = control(lab, "n1", {"op": "maintenance", "action": "enter", "reason": "kernel upgrade"})
    console.print(
        f"  maintenance enter returned after {reply['waited_s']} s, acknowledged by all: {reply['ok']}, "
        f"DNS: {reply.get('dns')}"
    )
    dig("web")
    show_status(lab, "n2")
    control(lab, "n1", {"op": "maintenance", "action": "exit"})

    step(
        12,
        "A network partition",
        "lab partition n1 | n2,n3: web (n1,n2) has no majority on either side, so nobody may "
        "rewrite its DNS; db (n1,n2,n3) keeps its quorum on the n2,n3 side.",
    )
    lab.partition(["n1"], ["n2", "n3"])
    time.sleep(1.5)
    show_status(lab, "n2")
    lab.heal()
    wait_converged(lab, timeout=60)
    console.print("healed: every connector sees every member alive again")

    step(
        13,
        "A file written on one node appears on its peers",
        "FS-SA: n1's connector sees the write (inotify), indexes it and pushes only that file "
        "to n2 with rsync over the web pool's pinned SSH key, confined to /srv/www on n2.",
    )
    page = lab.node_root("n2") / "srv/www/index.html"
    written = time.monotonic()
    lab.exec("n1", ["sh", "-c", "echo '<h1>hello from n1</h1>' > /srv/www/index.html"])
    while not (page.exists() and "n1" in page.read_text()) and time.monotonic() - written < 15:
        time.sleep(0.01)
    console.print(
        f"  n2 has /srv/www/index.html {time.monotonic() - written:.2f} s after n1 wrote it"
    )
    fs = lab.exec(
        "n2", [str(BIN / "multiall"), "fs", "status", "--socket", NODE_SOCKET], check=False
    )
    console.print("[dim]n2$ multiall fs status[/dim]")
    show_output(fs.stdout.rstrip())

    step(
        14,
        "A DB row written during a partition is replayed after heal",
        "Pool db keeps app.db (SQLite) in sync: triggers keep every write in multiall_changelog "
        "until every peer acknowledged it; n3 is cut off, takes an order, and ships it on heal.",
    )
    demo_db_replay(lab)

    step(
        15,
        "Software drift on one node is caught and converged back",
        "SL-SA: every connector publishes its dpkg facts over Serf; a package removed by hand "
        "on n2 shows up in n1's `multiall sl drift`, and pkg_converge puts it back.",
    )
    demo_sl.story_step(lab, show_output, console.print)

    console.print()
    console.print(
        Panel(
            "That was every part on real daemons: TNS and SBM followed failures, maintenance "
            "and a partition, DNS-SA kept clients away from dead nodes, FS-SA carried files "
            "and DB-SA replayed rows; SL-SA caught a package changed by hand (docs/sl.md).",
            title="the end",
            expand=False,
        )
    )


def demo_db_replay(lab: Lab) -> None:
    """Step 14: an order taken on a cut-off node reaches its peers once the link is back."""
    schema = (
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER);"
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);"
    )
    for node in ("n1", "n2", "n3"):
        install_capture(lab, node, "app", schema)
    lab.partition(["n3"], ["n1", "n2"])
    time.sleep(1.5)
    console.print('[dim]n3$ sqlite3 /var/lib/multiall/app.db "INSERT INTO orders ..."[/dim]')
    db_sql(lab, "n3", "app", "INSERT INTO orders VALUES (1, 'espresso machine', 2);")
    for node in ("n1", "n3"):
        rows = db_sql(lab, node, "app", "SELECT * FROM orders;").strip() or "(no rows)"
        console.print(f"  {node}: orders = {rows}")
    console.print("[dim]n3$ multiall db status[/dim]")
    show_output(db_cli(lab, "n3", "db", "status").stdout.rstrip())
    lab.heal()
    healed = time.monotonic()
    while not all(
        "espresso" in db_sql(lab, node, "app", "SELECT * FROM orders;") for node in ("n1", "n2")
    ):
        if time.monotonic() - healed > 60:
            raise SystemExit("demo: the order did not reach n1 and n2 within 60 s of the heal")
        time.sleep(0.1)
    console.print(f"healed: the order reached n1 and n2 {time.monotonic() - healed:.1f} s later")
    console.print("[dim]n1$ multiall db verify[/dim]")
    show_output(db_cli(lab, "n1", "db", "verify").stdout.rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description="Play the MultiAll demo on a 3-node lab.")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--fast", action="store_true", help="shorter pauses")
    args = parser.parse_args()
    if os.geteuid() != 0:
        console.print("make demo needs root: the lab creates network namespaces and mounts.")
        return 2
    lab = Lab()
    # `timeout`, CI or a closed terminal send SIGTERM/SIGHUP: tear down all the same.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
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
