"""Benchmark: SBM cost per cycle and time from a condition to the tag a peer sees.

1. CPU of one cycle of 200 Baseline Rules evaluated in-process by
   ``module_utils/sbm.py`` (disk, load, memory, swap, port, file, process, tcp),
   median of several cycles. Reference, same run: the same 200 checks done the
   hand-rolled way, as 200 shell one-liners (what cron + Nagios-style scripts
   cost), CPU of the children. Goal: < 50 ms of CPU per 200-rule cycle.
2. On a 3-node lab with real connectors: time from creating a failure marker on
   n2 (a ``command`` rule, interval 1 s) until n1's connector shows n2's ``sbm``
   tag as 2. Goal: p50 <= interval + 1 s.

    .venv/bin/python benchmarks/sbm.py [--quick]

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ansible_collections.takelan.multiall.plugins.module_utils.sbm import evaluate_all

from lab.connector import connected_lab, control

INTERVAL = 1.0
MODEL = f"""\
plugin: takelan.multiall.pools
defaults: {{ssh_user: root, python: /usr/bin/python3}}
nodes:
  n1: {{address: 198.18.0.11, pools: [web]}}
  n2: {{address: 198.18.0.12, pools: [web]}}
  n3: {{address: 198.18.0.13, pools: [web]}}
pools:
  web:
    baseline:
      marker: {{kind: command, command: "test ! -e /run/sbm-bench || exit 2", interval: {INTERVAL}, timeout: 2}}
"""


def rules_200(tmp: Path) -> tuple[dict, list[str]]:
    """200 rules, and the equivalent shell one-liners for the reference."""
    (tmp / "f").write_text("x")
    rules: dict = {}
    shell: list[str] = []
    mix = [
        (60, {"kind": "disk", "mount": "/", "warn": 90, "crit": 95}, "df -P / >/dev/null"),
        (40, {"kind": "load", "warn": 50, "crit": 100}, "cat /proc/loadavg >/dev/null"),
        (30, {"kind": "memory", "warn": 90, "crit": 95}, "free >/dev/null"),
        (20, {"kind": "swap", "warn": 90, "crit": 95}, "free >/dev/null"),
        (20, {"kind": "port", "port": 7}, "grep -q ':0007 ' /proc/net/tcp"),
        (20, {"kind": "file", "path": str(tmp / "f"), "max_age": 3600}, f"test -f {tmp / 'f'}"),
        (5, {"kind": "process", "name": "init"}, "pgrep -x init >/dev/null"),
        (5, {"kind": "tcp", "host": "127.0.0.1", "port": 9, "timeout": 0.2}, "true"),
    ]
    for count, rule, line in mix:
        for i in range(count):
            rules[f"{rule['kind']}_{i}"] = dict(rule)
            shell.append(line)
    return rules, shell


def cpu_of_cycle(rules: dict, cycles: int) -> list[float]:
    out = []
    for _cycle in range(cycles):
        start = time.process_time()
        evaluate_all(rules)
        out.append((time.process_time() - start) * 1000)
    return out


def cpu_of_shell(lines: list[str], cycles: int) -> list[float]:
    out = []
    for _cycle in range(cycles):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for line in lines:
            subprocess.run(["/bin/sh", "-c", line], check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append(((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000)
    return out


def propagation(trials: int) -> list[float]:
    times = []
    with connected_lab(MODEL) as lab:
        for _trial in range(trials):
            start = time.monotonic()
            lab.exec("n2", ["touch", "/run/sbm-bench"])
            while (
                control(lab, "n1", {"op": "status"})["pools"]["web"]["members"]["n2"]["sbm"] != "2"
            ):
                if time.monotonic() - start > 20:
                    raise SystemExit("n1 never saw n2 CRITICAL")
                time.sleep(0.02)
            times.append(time.monotonic() - start)
            lab.exec("n2", ["rm", "-f", "/run/sbm-bench"])
            while (
                control(lab, "n1", {"op": "status"})["pools"]["web"]["members"]["n2"]["sbm"] != "0"
            ):
                time.sleep(0.05)
            time.sleep(0.3)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer cycles and trials (under 2 minutes)"
    )
    args = parser.parse_args()
    cycles, trials = (3, 5) if args.quick else (10, 20)
    with tempfile.TemporaryDirectory() as tmp:
        rules, shell = rules_200(Path(tmp))
        ours = cpu_of_cycle(rules, cycles)
        reference = cpu_of_shell(shell, max(1, cycles // 2))
    print(
        f"200 rules: {statistics.median(ours):.1f} ms CPU per cycle in-process; "
        f"same checks as shell one-liners: {statistics.median(reference):.0f} ms",
        flush=True,
    )
    prop = propagation(trials)
    p50 = statistics.median(prop)
    figures = {
        "benchmark": "sbm",
        "rules": len(rules),
        "cycle_cpu_ms_p50": round(statistics.median(ours), 2),
        "cycle_cpu_ms_max": round(max(ours), 2),
        "shell_reference_cpu_ms": round(statistics.median(reference), 1),
        "interval_s": INTERVAL,
        "trials": trials,
        "condition_to_peer_p50_s": round(p50, 3),
        "condition_to_peer_max_s": round(max(prop), 3),
    }
    figures["goals_met"] = figures["cycle_cpu_ms_p50"] < 50 and p50 <= INTERVAL + 1
    print(json.dumps(figures))
    return 0 if figures["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
