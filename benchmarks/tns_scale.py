"""Benchmark: TNS cost and speed as one pool grows (8, 32, 64, 128 members).

For each size a fresh lab runs one pool of N members with real Serf agents and
connectors (pools above ``probe.bounded_above`` members are probed in the
bounded mode of connector/probe_ring.py), and the benchmark records:

* start -> converged: from starting the connectors until every connector sees
  every member alive (each node's first converged moment; the last of them);
* idle cost per node over ``--idle-seconds``, once every Serf agent has seen
  every member too (TNS converges first; ``serf_s``): connector CPU (% of one core)
  and RSS, Serf agent CPU, probe packets/s and bytes/s sent and received, the
  largest probe packet (the connectors' own counters, ``probe_traffic``);
* kill -> failed: ``lab kill`` of a member, then each survivor's journaled
  ``member_failed`` time (the event's wall-clock stamp: every node shares the
  machine's clock) -> p50/p99 over all survivors and the time by which *every*
  survivor said so; Serf's own member-failed in the same run, polled on a
  sample of survivors (the reference);
* false ``member_failed`` anywhere while one node's link drops ``--loss`` % of
  packets at random (nftables) for ``--loss-seconds``.

The load average is recorded beside every size: on a shared machine the
larger sizes are contended (N connectors and N Serf agents on the machine's
cores), so compare sizes within one run.

    .venv/bin/python benchmarks/tns_scale.py [--quick] [--sizes 8,32,64,128]

``--quick``: sizes 8 and 64, one kill, 20 s of loss. The last line of output
is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import ControlError

from lab import Lab
from lab.connector import control, start_all
from lab.failover import percentile

WORKERS = 16


def model(size: int) -> str:
    nodes = "\n".join(
        f"  n{i}: {{address: 198.18.0.{10 + i}, pools: [big]}}" for i in range(1, size + 1)
    )
    return (
        "plugin: takelan.multiall.pools\n"
        "defaults: {ssh_user: root, python: /usr/bin/python3}\n"
        f"nodes:\n{nodes}\npools: {{big: {{}}}}\n"
    )


def load() -> float:
    return os.getloadavg()[0]


def each(lab: Lab, nodes: list[str], fn: Any) -> dict[str, Any]:
    """FN(node) on every node, several at once (one control socket each)."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return dict(zip(nodes, pool.map(fn, nodes), strict=True))


def converged(status: dict[str, Any]) -> bool:
    """Every member of every pool alive, from a brief status (``multiall status --brief``)."""
    pools = status["pools"].values()
    return bool(status["pools"]) and all(
        topo["states"].get("alive", 0) == topo["declared"] for topo in pools
    )


BRIEF = {"op": "status", "brief": True}  # the full status of 128 nodes twice a second cost a core


def wait_all_converged(
    lab: Lab, start: float, limit: float
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Seconds from START until each node's connector first saw every member alive.

    Also, per node, the milestones on the way (where start-up time goes): its
    control socket answering (``up``) and its Serf agent showing every member
    alive (``serf``).
    """
    first: dict[str, float] = {}
    steps: dict[str, dict[str, float]] = {"up": {}, "serf": {}}
    # Each node's latest count of members per state: what a start is waiting for.
    views: dict[str, dict[str, int]] = {}
    nodes = list(lab.nodes)
    size = len(nodes)
    shown = 0.0
    while len(first) < len(nodes) and time.monotonic() - start < limit:
        now = time.monotonic() - start
        if now - shown >= 5:  # where the start is: a line every 5 s
            shown = now
            states: dict[str, int] = {}
            for counts in views.values():
                for state, count in counts.items():
                    states[state] = states.get(state, 0) + count
            print(
                f"[{size}] t={now:5.1f} s: up {len(steps['up'])}, serf complete "
                f"{len(steps['serf'])}, converged {len(first)}; members in the pending"
                f" nodes' views: {dict(sorted(states.items()))}",
                flush=True,
            )

        def probe(node: str) -> bool:
            try:
                status = control(lab, node, BRIEF, timeout=10)
            except (OSError, ValueError, KeyError, ControlError):  # still starting
                return False
            now = time.monotonic() - start
            steps["up"].setdefault(node, now)
            if status.get("serf_alive", 0) >= size:
                steps["serf"].setdefault(node, now)
            done = converged(status)
            counts: dict[str, int] = {}
            for topo in status["pools"].values():
                for state, count in topo["states"].items():
                    counts[state] = counts.get(state, 0) + count
            views[node] = {} if done else counts
            return done

        pending = [n for n in nodes if n not in first]
        for node, ok in each(lab, pending, probe).items():
            if ok:
                first[node] = time.monotonic() - start
        time.sleep(0.5)  # polling 128 nodes is load too
    return first, steps


def wait_serf_complete(lab: Lab, start: float, limit: float) -> float | None:
    """Seconds from START until every node's Serf agent showed every member alive.

    None when that did not happen within LIMIT: the idle figures then include
    Serf's convergence, and the caller says so.
    """
    size = len(lab.nodes)
    pending = set(lab.nodes)

    def complete(node: str) -> bool:
        try:
            return control(lab, node, BRIEF, timeout=10).get("serf_alive", 0) >= size
        except (OSError, ValueError, KeyError, ControlError):
            return False

    while pending and time.monotonic() - start < limit:
        pending -= {n for n, ok in each(lab, sorted(pending), complete).items() if ok}
        if pending:
            time.sleep(2)  # polling 128 nodes is load too
    return None if pending else round(time.monotonic() - start, 1)


def proc_usage(lab: Lab) -> dict[int, tuple[str, float, float]]:
    """pid -> (connector|serf, CPU seconds, RSS MB) of this lab's processes."""
    nodes_dir = str(lab.state_dir / "nodes") + "/"
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            root = os.readlink(entry / "root")
            if not root.startswith(nodes_dir):
                continue
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            kind = (
                "connector"
                if b"connector" in cmd and b"daemon" in cmd
                else "serf"
                if cmd[0].endswith(b"serf")
                else None
            )
            if kind is None:
                continue
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            rss = int(stat[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            out[int(entry.name)] = (kind, (int(stat[11]) + int(stat[12])) / 100.0, rss)
        except OSError:
            continue
    return out


PROFILE_IN_NODE = "/var/lib/multiall/profile"


def profile_dump(lab: Lab, out: Path, name: str) -> None:
    """SIGUSR1 every connector (connector/daemon.py ``_profiled``) and merge their profiles.

    The merged statistics of all nodes go to OUT/NAME.pstats and the top of
    them (by own time) to OUT/NAME.txt: what a connector spends its CPU on.
    """
    import pstats
    import signal

    pids = [pid for pid, (kind, _c, _r) in proc_usage(lab).items() if kind == "connector"]
    counts = {}
    for node in lab.nodes:
        folder = lab.node_root(node) / PROFILE_IN_NODE.lstrip("/")
        counts[node] = len(list(folder.parent.glob(folder.name + ".*")))
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGUSR1)
    time.sleep(2)
    files = []
    for node in lab.nodes:
        path = lab.node_root(node) / f"{PROFILE_IN_NODE.lstrip('/')}.{counts[node] + 1}"
        if path.exists():
            files.append(str(path))
    if not files:
        return
    out.mkdir(parents=True, exist_ok=True)
    stats = pstats.Stats(*files)
    stats.dump_stats(str(out / f"{name}.pstats"))
    with open(out / f"{name}.txt", "w") as handle:
        handle.write(f"{len(files)} connectors merged\n")
        pstats.Stats(*files, stream=handle).sort_stats("tottime").print_stats(40)
        pstats.Stats(*files, stream=handle).sort_stats("cumulative").print_stats(40)


def idle(lab: Lab, seconds: float) -> dict[str, Any]:
    """Per-node averages over SECONDS of idle running."""
    nodes = list(lab.nodes)
    before = proc_usage(lab)
    traffic0 = each(lab, nodes, lambda n: control(lab, n, BRIEF)["probe_traffic"])
    load0, t0 = load(), time.monotonic()
    time.sleep(seconds)
    after = proc_usage(lab)
    elapsed = time.monotonic() - t0
    traffic1 = each(lab, nodes, lambda n: control(lab, n, BRIEF)["probe_traffic"])

    def cpu(kind: str) -> float:
        used = [after[p][1] - before[p][1] for p in after if p in before and after[p][0] == kind]
        return 100 * sum(used) / elapsed / max(1, len(used))

    rss = [v[2] for v in after.values() if v[0] == "connector"]

    def rate(key: str) -> float:
        return statistics.mean(
            (traffic1[n][key] - traffic0[n][key])
            / (traffic1[n]["seconds"] - traffic0[n]["seconds"])
            for n in nodes
        )

    return {
        "connector_cpu_pct": round(cpu("connector"), 2),
        "serf_cpu_pct": round(cpu("serf"), 2),
        "connector_rss_mb": round(statistics.mean(rss), 1) if rss else None,
        "packets_sent_per_s": round(rate("sent"), 1),
        "packets_received_per_s": round(rate("received"), 1),
        "bytes_sent_per_s": round(rate("sent_bytes")),
        "bytes_received_per_s": round(rate("received_bytes")),
        "largest_packet": max(t["largest"] for t in traffic1.values()),
        # Topology recomputations per node per second: ~0 in an idle, settled pool.
        "topology_passes_per_s": round(rate("topology_passes"), 2),
        "probe_targets": max(t["targets"] for t in traffic1.values()),
        "bounded": bool(traffic1[nodes[0]]["bounded"]),
        "load_avg": round((load0 + load()) / 2, 1),
    }


def marks(lab: Lab, nodes: list[str]) -> dict[str, int]:
    def mark(node: str) -> int:
        events = control(lab, node, {"op": "events", "limit": 1})["events"]
        return max([e["id"] for e in events] or [0])

    return each(lab, nodes, mark)


def events_since(lab: Lab, since: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    def fetch(node: str) -> list[dict[str, Any]]:
        req = {"op": "events", "since": since[node], "limit": 10000}
        return control(lab, node, req)["events"]

    return each(lab, list(since), fetch)


def one_kill(
    lab: Lab, victim: str, down: list[str], serf_sample: int, limit: float
) -> dict[str, Any]:
    """Kill VICTIM; each survivor's member_failed time, and Serf's on a sample.

    Earlier victims (DOWN) stay down: the pool keeps its majority, and each kill
    starts from a settled pool without a revive cycle.
    """
    survivors = [n for n in lab.nodes if n != victim and n not in down]
    since = marks(lab, survivors)
    sample = survivors[:: max(1, len(survivors) // serf_sample)][:serf_sample]
    serf: dict[str, float] = {}
    wall0, start = time.time(), time.monotonic()
    lab.kill(victim)
    while len(serf) < len(sample) and time.monotonic() - start < limit:
        for node in sample:
            if node not in serf:
                status = control(lab, node, {**BRIEF, "member": victim})
                if status["member"]["serf"] == "failed":
                    serf[node] = time.monotonic() - start
        time.sleep(0.1)
    seen: dict[str, float] = {}
    for node, events in events_since(lab, since).items():
        for event in events:
            if event["type"] == "member_failed" and event.get("member") == victim:
                seen.setdefault(node, event["ts"] - wall0)
    return {"victim": victim, "connector": seen, "serf": serf, "survivors": len(survivors)}


def loss_soak(lab: Lab, node: str, nodes: list[str], pct: float, seconds: float) -> int:
    """member_failed events on NODES while NODE's link drops PCT % of packets."""
    since = marks(lab, nodes)
    lab.loss(node, pct)
    try:
        time.sleep(seconds)
    finally:
        lab.loss(node, 0)
    return sum(
        1
        for events in events_since(lab, since).values()
        for e in events
        if e["type"] == "member_failed"
    )


def run_size(size: int, args: argparse.Namespace) -> dict[str, Any]:
    lab = Lab()
    with tempfile.TemporaryDirectory(prefix="tns-scale-") as tmp:
        path = Path(tmp) / "pools.yml"
        path.write_text(model(size))
        figures: dict[str, Any] = {"size": size, "load_avg_before": round(load(), 1)}
        try:
            t = time.monotonic()
            lab.up(pools_file=str(path), force=True)
            figures["lab_up_s"] = round(time.monotonic() - t, 1)
            start = time.monotonic()
            start_all(lab)
            figures["connectors_started_s"] = round(time.monotonic() - start, 1)
            first, steps = wait_all_converged(lab, start, args.converge_limit)
            for step, seen in steps.items():
                # The last node to reach each milestone: where start-up time went.
                figures[f"{step}_s"] = round(max(seen.values()), 1) if seen else None
            if len(first) < size:
                raise SystemExit(f"size {size}: only {len(first)} of {size} converged; {figures}")
            figures["converged_s"] = round(max(first.values()), 1)
            figures["converged_p50_s"] = round(statistics.median(first.values()), 1)
            # The protocol's own part: from the moment the last daemon answered (N Python
            # processes starting on the machine's few cores come before that) to converged.
            if figures.get("up_s") is not None:
                figures["converged_after_up_s"] = round(figures["converged_s"] - figures["up_s"], 1)
            figures["load_avg_converged"] = round(load(), 1)
            print(
                f"[{size}] up {figures['lab_up_s']} s, sockets {figures['up_s']} s,"
                f" serf {figures['serf_s']} s, converged {figures['converged_s']} s",
                flush=True,
            )
            if args.profile:
                profile_dump(lab, Path(args.profile), f"{size}-startup")
            # TNS converges before Serf now (a member is alive by its probes): "idle" is
            # measured once Serf has converged too, not while its gossip still runs.
            figures["serf_s"] = wait_serf_complete(lab, start, args.converge_limit)
            print(f"[{size}] serf complete on every node at {figures['serf_s']} s", flush=True)
            time.sleep(args.settle)
            if args.profile:
                profile_dump(lab, Path(args.profile), f"{size}-settle")
            figures.update(idle(lab, args.idle_seconds))
            if args.profile:
                profile_dump(lab, Path(args.profile), f"{size}-idle")
            print(f"[{size}] idle: {figures}", flush=True)
            if args.no_faults:
                return figures
            conn_all: list[float] = []
            every: list[float] = []
            first: list[float] = []
            serf_all: list[float] = []
            missing = 0
            down: list[str] = []
            names = sorted(lab.nodes)
            for k in range(args.kills):
                victim = names[(k * 7 + 2) % size]
                kill = one_kill(lab, victim, down, args.serf_sample, args.kill_limit)
                down.append(victim)
                times = list(kill["connector"].values())
                missing += kill["survivors"] - len(times)
                conn_all += times
                if times:
                    every.append(max(times))
                    first.append(min(times))
                serf_all += list(kill["serf"].values())
                print(
                    f"[{size}] kill {victim}: {len(times)}/{kill['survivors']} said failed,"
                    # The first survivor: when the victim's observers had agreed (the
                    # rest is the alert flood and each node's topology pass).
                    f" first {min(times) if times else None},"
                    f" p50 {percentile(times, 50) if times else None},"
                    f" all by {max(times) if times else None}, serf {kill['serf']}",
                    flush=True,
                )
            figures.update(
                {
                    "kills": args.kills,
                    "detect_p50_s": round(percentile(conn_all, 50), 3) if conn_all else None,
                    "detect_p99_s": round(percentile(conn_all, 99), 3) if conn_all else None,
                    "detect_every_peer_max_s": round(max(every), 3) if every else None,
                    "detect_first_peer_max_s": round(max(first), 3) if first else None,
                    "detect_missing": missing,
                    "serf_p50_s": round(percentile(serf_all, 50), 3) if serf_all else None,
                    "serf_p99_s": round(percentile(serf_all, 99), 3) if serf_all else None,
                    "load_avg_kills": round(load(), 1),
                }
            )
            figures["false_member_failed"] = loss_soak(
                lab, names[1], [n for n in names if n not in down], args.loss, args.loss_seconds
            )
            figures["loss_pct"], figures["loss_seconds"] = args.loss, args.loss_seconds
            figures["load_avg_loss"] = round(load(), 1)
            print(f"[{size}] {figures}", flush=True)
        finally:
            t = time.monotonic()
            lab.down()
            figures["lab_down_s"] = round(time.monotonic() - t, 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 8 and 64, 1 kill, 20 s loss")
    parser.add_argument("--sizes", help="comma-separated pool sizes (default 8,32,64,128)")
    parser.add_argument("--kills", type=int)
    parser.add_argument("--loss", type=float, default=5.0)
    parser.add_argument("--loss-seconds", type=float)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--serf-sample", type=int, default=6)
    parser.add_argument("--kill-limit", type=float, default=15.0)
    parser.add_argument("--converge-limit", type=float, default=180.0)
    parser.add_argument(
        "--no-faults",
        action="store_true",
        help="start-up and idle cost only: no kills, no loss (for profiling start-up)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="profile every connector (cProfile): start-up, settle and idle statistics in DIR",
    )
    args = parser.parse_args()
    if args.profile:
        os.environ["MULTIALL_PROFILE"] = PROFILE_IN_NODE  # read by lab/connector.py
    sizes = [int(s) for s in (args.sizes or ("8,64" if args.quick else "8,32,64,128")).split(",")]
    args.kills = args.kills or (1 if args.quick else 3)
    args.loss_seconds = args.loss_seconds or (20.0 if args.quick else 60.0)
    if args.quick:
        args.idle_seconds = min(args.idle_seconds, 10.0)
    results = [run_size(size, args) for size in sizes]
    by_size = {r["size"]: r for r in results}
    small, large = by_size[min(by_size)], by_size[max(by_size)]
    goals = {
        "cpu_le_1pct": large["connector_cpu_pct"] <= 1.0,
        "cpu_within_1_5x_of_smallest": large["connector_cpu_pct"]
        <= 1.5 * max(small["connector_cpu_pct"], 0.01),
        "detect_p50_le_1s": all((r.get("detect_p50_s") or 99) <= 1.0 for r in results),
        "detect_p99_le_2s": all((r.get("detect_p99_s") or 99) <= 2.0 for r in results),
        "no_false_failed": all(r.get("false_member_failed") == 0 for r in results),
        "converged_le_10s": all(r["converged_s"] <= 10 for r in results),
        "nobody_missed": all(r.get("detect_missing") == 0 for r in results),
    }
    print(
        json.dumps(
            {
                "benchmark": "tns_scale",
                "quick": args.quick,
                "sizes": results,
                "goals": goals,
                "goals_met": all(goals.values()),
                "note": "shared machine: see load_avg_* beside each size",
            }
        )
    )
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
