"""Benchmark: from ``lab kill`` to BIND no longer handing out the dead node.

A lab with one BIND node (ns1, set up by the real ``dns_sa`` role) and a 4-node
pool ``web`` (inventory/lab-dns/pools.yml) runs real Serf agents and
connectors; the pool leader updates the zone with RFC 2136 + TSIG. Per kill,
two clocks start at ``lab kill``:

* DNS: until ns1's answer for the pool name (queried every 10 ms, straight at
  the authoritative server) no longer contains the victim's address;
* reference, in the same run: until a surviving peer's **Serf** reports the
  member ``failed`` (Serf's own member-failed).

Victims rotate through n1..n4, so the leader itself dies every fourth kill.
Then the maintenance drain: after ``maintenance enter`` returns, 1000 queries
must never contain the node. Last, why in-process: the same change through
ansible-runner (a ``dns_zone`` playbook run), measured side by side with the
connector's own RFC 2136 update time.

Goals: DNS p50 <= 2.5 s, p99 <= 4 s; 0 drained answers containing the node.

    .venv/bin/python benchmarks/failover_dns.py [--quick] [--kills 10]

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from connector.ansible_env import ansible_env
from lab import Lab
from lab.connector import control, start_all, wait_converged, wait_for
from lab.dns import install_dns, served
from lab.failover import kill_and_time, percentile, revive

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "inventory" / "lab-dns" / "pools.yml"
NS, ZONE = "198.18.0.10", "web.pool.example.test"
WEB = ["n1", "n2", "n3", "n4"]
HOLD_DOWN = 1.0


def one_kill(lab: Lab, victim: str, limit: float = 20.0) -> tuple[float, float]:
    """Seconds until BIND stops answering the victim, and until Serf calls it failed."""
    witness = next(n for n in WEB if n != victim)
    seen = kill_and_time(lab, victim, [witness], dns=(NS, ZONE), limit=limit, interval=0.01)
    if not seen.complete or seen.dns_gone is None:
        raise SystemExit(
            f"kill {victim}: dns {seen.dns_gone}, serf {seen.serf.get(witness)} within {limit} s"
        )
    return seen.dns_gone, seen.serf[witness]


def back_in_dns(lab: Lab, victim: str) -> None:
    """Revive the victim, wait for the pool to settle and for DNS to take it back."""
    revive(lab, victim, converge_timeout=90)
    wait_for(lambda: lab.nodes[victim] in served(NS, ZONE), 30, f"{victim} back in DNS")


def drain(lab: Lab, node: str, queries: int) -> dict[str, float]:
    """``maintenance enter``, then count answers that still contain the node."""
    address = lab.nodes[node]
    start = time.monotonic()
    reply = control(lab, node, {"op": "maintenance", "action": "enter", "reason": "bench"})
    took = time.monotonic() - start
    try:
        hits = sum(address in served(NS, ZONE) for _query in range(queries))
    finally:
        control(lab, node, {"op": "maintenance", "action": "exit"})
    wait_for(lambda: address in served(NS, ZONE), 30, f"{node} back after maintenance")
    return {"hits": hits, "enter_s": took, "ok": bool(reply.get("ok"))}


def runner_reference(lab: Lab, runs: int) -> list[float]:
    """Seconds for the same reconcile as an ansible-runner playbook run (dns_zone)."""
    import ansible_runner

    key = lab.state_dir / "bench-dns.key"
    key.write_text((lab.node_root("ns1") / "etc/bind/multiall/keys/multiall-web.key").read_text())
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [
                {
                    "takelan.multiall.dns_zone": {
                        "pool": "web",
                        "pools_file": str(lab.inventory_path),
                        "members": WEB,
                        "key_file": str(key),
                    }
                }
            ],
        }
    ]
    times = []
    with tempfile.TemporaryDirectory(prefix="multiall-runner-") as tmp:
        playbook = Path(tmp) / "dns.yml"
        playbook.write_text(json.dumps(play))
        env = {
            k: v
            for k, v in ansible_env().items()
            if k.startswith("ANSIBLE_") or k in ("PATH", "HOME")
        }
        for _run in range(runs):
            start = time.monotonic()
            result = ansible_runner.run(
                private_data_dir=tmp, playbook=str(playbook), envvars=env, quiet=True
            )
            times.append(time.monotonic() - start)
            if result.rc != 0:
                raise SystemExit(f"ansible-runner reference failed: rc={result.rc}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 kills, 1 drain (under 2 minutes)")
    parser.add_argument("--kills", type=int)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    kills = args.kills or (3 if args.quick else 12)
    drains = 1 if args.quick else 3

    lab = Lab()
    dns_times: list[float] = []
    serf_times: list[float] = []
    drained: list[dict[str, float]] = []
    try:
        lab.up(pools_file=str(MODEL), force=True)
        install_dns(lab)
        start_all(lab, dns={"hold_down": HOLD_DOWN})
        wait_converged(lab, timeout=90)
        wait_for(lambda: served(NS, ZONE) == sorted(lab.nodes[n] for n in WEB), 30, "all in DNS")
        for i in range(kills):
            victim = WEB[i % len(WEB)]
            gone, serf = one_kill(lab, victim)
            dns_times.append(gone)
            serf_times.append(serf)
            print(f"kill {i + 1}/{kills} {victim}: DNS {gone:.2f} s, serf {serf:.2f} s", flush=True)
            back_in_dns(lab, victim)
        for i in range(drains):
            node = WEB[(i + 1) % len(WEB)]
            result = drain(lab, node, args.queries)
            drained.append(result)
            print(f"drain {node}: {result}", flush=True)
        updates = [
            control(lab, n, {"op": "dns", "pool": "web"})["pools"]["web"]["last_change"]
            for n in WEB
        ]
        update_ms = [u["update_ms"] for u in updates if u and u.get("update_ms")]
        runner = runner_reference(lab, 2 if args.quick else 5)
        print(f"ansible-runner dns_zone runs: {[round(t, 2) for t in runner]}", flush=True)
    finally:
        lab.down()

    p50, p99 = percentile(dns_times, 50), percentile(dns_times, 99)
    figures = {
        "benchmark": "failover_dns",
        "kills": kills,
        "dns_p50_s": round(p50, 3),
        "dns_p99_s": round(p99, 3),
        "dns_max_s": round(max(dns_times), 3),
        "dns_mean_s": round(statistics.mean(dns_times), 3),
        "serf_p50_s": round(percentile(serf_times, 50), 3),
        "serf_p99_s": round(percentile(serf_times, 99), 3),
        "drains": len(drained),
        "drain_queries_each": args.queries,
        "drain_hits": int(sum(d["hits"] for d in drained)),
        "drain_enter_max_s": round(max(d["enter_s"] for d in drained), 3),
        "rfc2136_update_ms": update_ms,
        "ansible_runner_s_p50": round(statistics.median(runner), 3),
        "hold_down_s": HOLD_DOWN,
    }
    figures["goals_met"] = bool(
        p50 <= 2.5 and p99 <= 4.0 and figures["drain_hits"] == 0 and all(d["ok"] for d in drained)
    )
    print(json.dumps(figures))
    return 0 if figures["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
