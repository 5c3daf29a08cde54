"""Benchmark: how fast every pool peer's connector calls a killed node failed.

A 5-node lab with three overlapping pools (n3 is in all three) runs real Serf
agents and connectors. For each kill, two clocks start at ``lab kill``:

* connector: until *every* surviving pool peer's connector reports ``failed``;
* reference, in the same run: until every one of them has Serf itself report
  the member ``failed`` (Serf's own member-failed, ``-profile=local``).

Goals: connector p50 <= 1.5 s, p99 <= 3 s, >= 3x faster than Serf alone.
Also: no false ``member_failed`` while one node's link drops 5 % of packets at
random, and the connector's idle CPU (< 1 % of a core) and RSS (< 80 MB) on
the node in three pools.

    .venv/bin/python benchmarks/failover_detect.py [--quick] [--kills 10] [--loss-seconds 300]

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from lab import Lab
from lab.connector import connected_lab, control
from lab.failover import kill_and_time, percentile, revive

MODEL = """\
plugin: takelan.multiall.pools
defaults: {ssh_user: root, python: /usr/bin/python3}
nodes:
  n1: {address: 198.18.0.11, pools: [a, c]}
  n2: {address: 198.18.0.12, pools: [a, b]}
  n3: {address: 198.18.0.13, pools: [a, b, c]}
  n4: {address: 198.18.0.14, pools: [a, c]}
  n5: {address: 198.18.0.15, pools: [b, c]}
pools: {a: {}, b: {}, c: {}}
"""
POOLS = {"a": ["n1", "n2", "n3", "n4"], "b": ["n2", "n3", "n5"], "c": ["n1", "n3", "n4", "n5"]}


def pool_peers(victim: str) -> list[str]:
    """Every node that shares a pool with the victim: the ones that must notice."""
    return sorted(
        {m for members in POOLS.values() if victim in members for m in members} - {victim}
    )


def one_kill(lab: Lab, victim: str, limit: float = 20.0) -> tuple[float, float]:
    """Seconds until every pool peer's connector, and Serf, call the victim failed."""
    seen = kill_and_time(lab, victim, pool_peers(victim), limit=limit)
    if not seen.complete:
        raise SystemExit(
            f"kill {victim}: not every peer saw it within {limit} s: {seen.connector} {seen.serf}"
        )
    return max(seen.connector.values()), max(seen.serf.values())


def loss_soak(lab: Lab, node: str, pct: float, seconds: float) -> dict[str, int]:
    """Random loss on one node's link; count member_failed events anywhere."""
    marks = {
        n: max([e["id"] for e in control(lab, n, {"op": "events", "limit": 1})["events"]] or [0])
        for n in lab.nodes
    }
    lab.loss(node, pct)
    try:
        time.sleep(seconds)
    finally:
        lab.loss(node, 0)
    false_failed = 0
    suspect_events = 0
    for n in lab.nodes:
        for event in control(lab, n, {"op": "events", "since": marks[n], "limit": 10000})["events"]:
            if event["type"] == "member_failed":
                false_failed += 1
            suspect_events += 1
    return {"false_member_failed": false_failed, "events_during_loss": suspect_events}


def idle_usage(lab: Lab, node: str, seconds: float) -> dict[str, float]:
    """CPU (% of one core) and RSS of the node's connector (and its Serf agent) while idle."""
    services = {s["name"]: s["pid"] for s in lab.service_status(node)}
    pid = services["connector"]
    serf_pid = lab.exec(node, ["pgrep", "-x", "serf"]).stdout.split()[0]

    def sample(p: str | int) -> tuple[float, float]:
        stat = lab.exec(node, ["cat", f"/proc/{p}/stat"]).stdout.rsplit(")", 1)[1].split()
        ticks = int(stat[11]) + int(stat[12])
        rss_kb = next(
            int(line.split()[1])
            for line in lab.exec(node, ["cat", f"/proc/{p}/status"]).stdout.splitlines()
            if line.startswith("VmRSS:")
        )
        return ticks / 100.0, rss_kb / 1024

    c0 = sample(pid)[0]
    s0 = sample(serf_pid)[0]
    t0 = time.monotonic()
    time.sleep(seconds)
    c1, rss = sample(pid)
    s1, serf_rss = sample(serf_pid)
    elapsed = time.monotonic() - t0
    return {
        "connector_cpu_pct": round(100 * (c1 - c0) / elapsed, 2),
        "connector_rss_mb": round(rss, 1),
        "serf_cpu_pct": round(100 * (s1 - s0) / elapsed, 2),
        "serf_rss_mb": round(serf_rss, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 kills, 20 s loss soak (under 2 minutes)"
    )
    parser.add_argument("--kills", type=int)
    parser.add_argument("--loss-seconds", type=float)
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    args = parser.parse_args()
    kills = args.kills or (3 if args.quick else 10)
    loss_seconds = args.loss_seconds or (20.0 if args.quick else 300.0)

    connector_times: list[float] = []
    serf_times: list[float] = []
    with connected_lab(MODEL) as lab:
        usage = idle_usage(lab, "n3", args.idle_seconds)
        print(f"idle on n3 (3 pools): {usage}", flush=True)
        victims = ["n1", "n2", "n3", "n4", "n5"]
        for i in range(kills):
            victim = victims[i % len(victims)]
            conn, serf = one_kill(lab, victim)
            connector_times.append(conn)
            serf_times.append(serf)
            print(
                f"kill {i + 1}/{kills} {victim}: connector {conn:.2f} s, serf {serf:.2f} s",
                flush=True,
            )
            revive(lab, victim, converge_timeout=90)
        soak = loss_soak(lab, "n2", 5, loss_seconds)
        print(f"5% loss on n2 for {loss_seconds:.0f} s: {soak}", flush=True)

    p50, p99 = percentile(connector_times, 50), percentile(connector_times, 99)
    serf_p50 = percentile(serf_times, 50)
    figures = {
        "benchmark": "failover_detect",
        "kills": kills,
        "connector_p50_s": round(p50, 3),
        "connector_p99_s": round(p99, 3),
        "connector_max_s": round(max(connector_times), 3),
        "serf_p50_s": round(serf_p50, 3),
        "serf_p99_s": round(percentile(serf_times, 99), 3),
        "speedup_p50": round(serf_p50 / p50, 2),
        "loss_pct": 5,
        "loss_seconds": loss_seconds,
        **soak,
        **usage,
        "connector_mean_s": round(statistics.mean(connector_times), 3),
    }
    figures["goals_met"] = bool(
        p50 <= 1.5
        and p99 <= 3.0
        and figures["speedup_p50"] >= 3
        and soak["false_member_failed"] == 0
        and usage["connector_cpu_pct"] < 1.0
        and usage["connector_rss_mb"] < 80
    )
    print(json.dumps(figures))
    return 0 if figures["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
