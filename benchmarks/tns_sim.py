"""Benchmark: the prober's own CPU per node as one pool grows, on a simulated network.

Real ``connector.probe.Prober`` objects (bounded mode above 12 members, as in
production) exchange the very datagrams they produce through the simulated
wire of tests/unit/connector/test_probe_ring.py: no lab, no other processes,
so the figure is the probing work alone (build, sign, verify, merge, refresh),
free of the machine's load. The reference is the 8-member pool (all-to-all) in
the same run: the goal is a per-node cost that does not grow with the pool
(issue 15: <= 1.5x the 8-member value).

    .venv/bin/python benchmarks/tns_sim.py [--quick] [--sizes 8,32,64,128,256]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "unit" / "connector")]

from test_probe_ring import INTERVAL, Lab


def cost(size: int, rounds: int) -> dict[str, float]:
    """CPU per node (% of one core) and packets per node per second over ROUNDS rounds."""
    patch = pytest.MonkeyPatch()
    try:
        lab = Lab(patch, size)
        lab.rounds(15)  # settled: start-up alerts are relayed for MAX_AGE (10 rounds)
        sent0 = sum(n.counts["sent"] for n in lab.nodes.values())
        bytes0 = sum(n.counts["sent_bytes"] for n in lab.nodes.values())
        cpu0 = time.process_time()
        lab.rounds(rounds)
        cpu = time.process_time() - cpu0
        seconds = rounds * INTERVAL
        sent = sum(n.counts["sent"] for n in lab.nodes.values()) - sent0
        sent_bytes = sum(n.counts["sent_bytes"] for n in lab.nodes.values()) - bytes0
        return {
            "size": size,
            "bounded": bool(lab.nodes[lab.names[0]].bounded),
            "cpu_pct_per_node": round(100 * cpu / seconds / size, 3),
            "packets_per_s_per_node": round(sent / seconds / size, 1),
            "bytes_per_s_per_node": round(sent_bytes / seconds / size),
            "largest_packet": lab.largest,
        }
    finally:
        patch.undo()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 8, 64 and 128, 25 rounds")
    parser.add_argument("--sizes", help="comma-separated pool sizes (default 8,32,64,128,256)")
    parser.add_argument("--rounds", type=int, default=50, help="probe rounds measured per size")
    args = parser.parse_args()
    sizes = [
        int(s) for s in (args.sizes or ("8,64,128" if args.quick else "8,32,64,128,256")).split(",")
    ]
    rounds = 25 if args.quick else args.rounds
    results = []
    for size in sizes:
        results.append(cost(size, rounds))
        print(results[-1], flush=True)
    reference = next(r for r in results if r["size"] == min(sizes))
    largest = max(results, key=lambda r: r["size"])
    ratio = largest["cpu_pct_per_node"] / max(reference["cpu_pct_per_node"], 1e-9)
    print(
        json.dumps(
            {
                "benchmark": "tns_sim",
                "rounds": rounds,
                "sizes": results,
                "largest_vs_smallest": round(ratio, 2),
                "goals": {"flat_within_1_5x": ratio <= 1.5},
            }
        )
    )
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
