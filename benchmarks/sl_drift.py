"""Benchmark: SL-SA drift report for a 20-node pool vs ``ansible -m package_facts``.

A 20-node lab (each node's own dpkg database: the machine's ~740 packages)
runs real connectors; the pool expects 40 of those packages. Timed, end to end:

* ``multiall sl drift --json`` run inside n1 (CLI start, control socket, facts of
  every member over Serf, matrix): cold (n1 has no peer facts yet), fresh
  (``--fresh``: every member asked again, as cold, repeated), warm (peers' ``sl``
  tags unchanged: served from cache), and after one member changed (``dpkg -i``
  on n7: only that member is fetched again);
* reference, same run: ``ansible pool_web -m package_facts -f 20`` on the same nodes.

Also a no-op converge on 5 nodes: ``pkg_converge`` (facts, plan, nothing to do)
vs a plain ``ansible.builtin.apt`` play for the same packages, both ``-f 5``.

Goals: drift report <= 2 s and >= 10x faster than package_facts.

    .venv/bin/python benchmarks/sl_drift.py [--quick] [--nodes 20] [--serf-limit 16384]

``--serf-limit`` is the connectors' ``serf.query_response_size_limit`` (how
many bytes of facts one answer carries: 1024 = Serf's default, 13 answers per
node here; 16384 = the connector's default, one answer).

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from connector.ansible_env import ansible_env
from lab.connector import (
    NODE_SOCKET,
    connected_lab,
    install_connector,
    start_connector,
    wait_converged,
    wait_for,
)
from lab.sl_repo import APT_OPTIONS, NODE_REPO, build_repo, install_repo

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"


def host_packages(count: int) -> list[str]:
    """COUNT packages this machine (so every lab node) has installed."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = sorted(line.split()[0] for line in out.splitlines() if line.endswith(" installed"))
    step = max(1, len(names) // count)
    return names[::step][:count]


def model(nodes: int, packages: list[str]) -> str:
    data = {
        "plugin": "takelan.multiall.pools",
        "defaults": {"ssh_user": "root", "python": "/usr/bin/python3"},
        "nodes": {
            f"n{i}": {"address": f"198.18.0.{10 + i}", "pools": ["web"]}
            for i in range(1, nodes + 1)
        },
        "pools": {"web": {"packages": {p: {} for p in packages}}},
    }
    return yaml.safe_dump(data, sort_keys=False)


def drift_cli(lab, node: str = "n1", fresh: bool = False) -> tuple[float, dict]:
    """Seconds for ``multiall sl drift --json [--fresh]`` inside NODE, and its report."""
    argv = [sys.executable, "-m", "connector", "sl", "drift", "--json", "--socket", NODE_SOCKET]
    start = time.monotonic()
    proc = lab.exec(
        node,
        argv + (["--fresh"] if fresh else []),
        check=False,
        timeout=120,
    )
    took = time.monotonic() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"multiall sl drift failed: {proc.stderr}")
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict) or "rows" not in report:
        # Kept as a figure (an incomplete report), with what came, instead of a traceback.
        sys.stderr.write(f"sl drift: no report: {proc.stdout[:500]!r} {proc.stderr[-500:]!r}\n")
        report = {"rows": [], "unreachable": {"?": proc.stderr[-300:]}, "stale": {}, "drift": True}
    return took, report


def cli_start(lab, node: str = "n1") -> float:
    """Seconds for ``multiall sl drift --help`` inside NODE: the CLI's own start, no query."""
    start = time.monotonic()
    lab.exec(node, [sys.executable, "-m", "connector", "sl", "drift", "--help"])
    return time.monotonic() - start


def facts_of(lab, node: str) -> dict:
    """NODE's own SL facts, read inside it."""
    argv = [sys.executable, "-m", "connector", "sl", "facts", "--json", "--socket", NODE_SOCKET]
    return json.loads(lab.exec(node, argv).stdout)


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=900)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv[:4])} failed: {proc.stdout[-2000:]} {proc.stderr[-1000:]}"
        )
    return took


def missing(runs: list[tuple[float, dict]]) -> list[dict]:
    """Per incomplete report: which members were not heard, and why (for the reading)."""
    return [
        {node: str(why)[:120] for node, why in {**r["unreachable"], **r["stale"]}.items()}
        for _t, r in runs
        if r["unreachable"] or r["stale"]
    ]


def compare_limit(lab, limit: int, reps: int) -> dict:
    """Every connector restarted with Serf answers of at most LIMIT bytes: cold + fresh reports.

    The same lab, right after the main figures: the answer size is the only change
    (the load of the machine may differ, hence the load average beside it).
    """
    for node in lab.nodes:
        lab.service_stop(node, "connector")
        install_connector(lab, node, serf={"query_response_size_limit": limit})
        start_connector(lab, node)
    wait_converged(lab, timeout=240)
    for node in lab.nodes:
        wait_for(lambda n=node: facts_of(lab, n)["packages"], 120, f"{node}'s facts")
    load = os.getloadavg()[0]
    cold, report = drift_cli(lab)
    fresh = [drift_cli(lab, fresh=True) for _rep in range(reps + 1)]
    return {
        "serf_limit": limit,
        "drift_cold_s": round(cold, 3),
        "cold_incomplete": bool(report["unreachable"] or report["stale"]),
        "drift_fresh_s": [round(t, 3) for t, _r in fresh],
        "drift_fresh_median_s": round(statistics.median(t for t, _r in fresh), 3),
        "fresh_incomplete": sum(bool(r["unreachable"] or r["stale"]) for _t, r in fresh),
        "fresh_missing": missing(fresh),
        "load_1min": [round(load, 1), round(os.getloadavg()[0], 1)],
    }


def play(lab, name: str, hosts: str, tasks: list) -> Path:
    path = lab.state_dir / f"sl-bench-{name}.yml"
    path.write_text(yaml.safe_dump([{"hosts": hosts, "gather_facts": False, "tasks": tasks}]))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 2 min)")
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--serf-limit", type=int, default=16384)
    parser.add_argument(
        "--compare-limit",
        type=int,
        default=1024,
        help="then restart every connector with this limit and time cold/fresh reports again "
        "(0: skip)",
    )
    args = parser.parse_args()
    reps = 2 if args.quick else 5
    packages = host_packages(40)
    env = ansible_env()
    out: dict = {
        "benchmark": "sl_drift",
        "nodes": args.nodes,
        "expected_packages": len(packages),
        "serf_limit": args.serf_limit,
    }
    loads = [os.getloadavg()[0]]
    serf = {"query_response_size_limit": args.serf_limit}
    with connected_lab(model(args.nodes, packages), converge_timeout=240, serf=serf) as lab:
        repo = build_repo(lab.state_dir / "sl-repo")
        for node in lab.nodes:
            install_repo(lab, node, repo)
        for node in lab.nodes:  # every member has collected once (the cold run is n1's cache)
            wait_for(lambda n=node: facts_of(lab, n)["packages"], 120, f"{node}'s facts")
        took, report = drift_cli(lab)
        out["cold_unreachable"] = report["unreachable"]
        out["installed_packages_per_node"] = len(facts_of(lab, "n1")["packages"])
        out["drift_cold_s"] = round(took, 3)
        out["in_sync"] = not report["drift"]
        loads.append(os.getloadavg()[0])
        fresh_runs = [drift_cli(lab, fresh=True) for _rep in range(reps + 1)]
        out["drift_fresh_s"] = [round(t, 3) for t, _r in fresh_runs]
        out["drift_fresh_median_s"] = round(statistics.median(t for t, _r in fresh_runs), 3)
        out["fresh_incomplete"] = sum(bool(r["unreachable"] or r["stale"]) for _t, r in fresh_runs)
        out["fresh_missing"] = missing(fresh_runs)
        out["cli_start_s"] = round(statistics.median(cli_start(lab) for _rep in range(reps)), 3)
        loads.append(os.getloadavg()[0])
        warm_runs = [drift_cli(lab) for _rep in range(reps)]
        warm = [t for t, _r in warm_runs]
        out["warm_unreachable"] = warm_runs[-1][1]["unreachable"]
        out["drift_warm_s"] = round(statistics.median(warm), 3)
        lab.exec("n7", ["dpkg", "-i", f"{NODE_REPO}/sl-base_1.0.deb"])
        wait_for(lambda: "sl-base" in facts_of(lab, "n7")["packages"], 20, "n7 recollected")
        time.sleep(1.5)  # the new digest reaches n1 by gossip (Serf tag)
        out["drift_after_change_s"] = round(drift_cli(lab)[0], 3)
        facts = play(lab, "facts", "pool_web", [{"ansible.builtin.package_facts": {}}])
        ref = [
            timed(
                [
                    str(BIN / "ansible-playbook"),
                    "-i",
                    str(lab.inventory_path),
                    "-f",
                    "20",
                    str(facts),
                ],
                env,
            )
            for _rep in range(max(1, reps // 2))
        ]
        out["package_facts_s"] = round(statistics.median(ref), 3)
        out["speedup_vs_package_facts"] = round(out["package_facts_s"] / out["drift_warm_s"], 1)
        out["speedup_cold_vs_package_facts"] = round(
            out["package_facts_s"] / out["drift_cold_s"], 1
        )
        five = "n1:n2:n3:n4:n5"
        converge = play(
            lab,
            "converge",
            five,
            [
                {
                    "takelan.multiall.pkg_converge": {
                        "node": "{{ inventory_hostname }}",
                        "apt_options": APT_OPTIONS,
                    },
                }
            ],
        )
        apt = play(
            lab, "apt", five, [{"ansible.builtin.apt": {"name": packages, "state": "present"}}]
        )
        base = [str(BIN / "ansible-playbook"), "-i", str(lab.inventory_path), "-f", "5"]
        out["noop_converge_5_s"] = round(
            statistics.median(
                [timed([*base, str(converge)], env) for _rep in range(max(1, reps // 2))]
            ),
            3,
        )
        out["noop_apt_play_5_s"] = round(
            statistics.median([timed([*base, str(apt)], env) for _rep in range(max(1, reps // 2))]),
            3,
        )
        if args.compare_limit:
            loads.append(os.getloadavg()[0])
            out["compare"] = compare_limit(lab, args.compare_limit, reps)
    loads.append(os.getloadavg()[0])
    out["load_1min"] = [round(x, 1) for x in loads]
    out["goal_2s"] = out["drift_warm_s"] <= 2 and out["drift_cold_s"] <= 2
    out["goal_2s_fresh"] = out["drift_fresh_median_s"] <= 2
    out["goal_10x"] = out["speedup_vs_package_facts"] >= 10
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
