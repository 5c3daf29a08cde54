"""Benchmark: the pools inventory plugin against an equivalent static YAML inventory.

A generated model of 1000 nodes in 50 pools (each node in 1-3 pools) is parsed
by ``ansible-inventory --list``. The reference, measured in the same run, is the
same inventory written out as a plain static YAML inventory (same hosts, same
``pool_*`` groups, same host variables including the merged settings), parsed
by the same ``ansible-inventory``. Goal: the plugin adds under 1 s.

Also reported: the plugin's own model time (load + validate + merge of all
nodes, in-process), which is what the plugin adds besides handing data to
Ansible.

    .venv/bin/python benchmarks/inventory.py [--quick] [--nodes 1000 --pools 50 --runs 5]

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModel

ROOT = Path(__file__).resolve().parents[1]

from connector.ansible_env import ansible_env


def generate_model(nodes: int, pools: int, seed: int = 7) -> dict:
    """A conflict-free model: every pool sets its own packages/files/rules/vars,
    plus a shared rule and package that all pools set identically (so merging
    has real agreement work to do, not just disjoint unions)."""
    rng = random.Random(seed)
    pool_names = [f"pool{p:02d}" for p in range(pools)]
    model: dict = {
        "plugin": "takelan.multiall.pools",
        "defaults": {"ssh_user": "root", "python": "/usr/bin/python3"},
        "nodes": {},
        "pools": {},
    }
    for index, name in enumerate(pool_names):
        model["pools"][name] = {
            "description": f"generated pool {index}",
            "packages": {
                **{f"pkg-{name}-{k}": {"version": f"{k}.0*"} for k in range(5)},
                "rsync": {},
            },
            "services": {f"svc-{name}": {"state": "started", "enabled": True}},
            "files": {
                f"/srv/{name}/data": {"source": f"/srv/{name}/data", "mode": "0755"},
                f"/etc/{name}": {"source": f"/etc/{name}", "exclude": ["*.tmp"]},
            },
            "baseline": {
                "root_disk": {"kind": "disk", "mount": "/", "warn": 85, "crit": 95},
                f"port_{name}": {"kind": "port", "port": 8000 + index},
                f"proc_{name}": {"kind": "process", "name": f"svc-{name}", "min": 1},
            },
            "dns": {"zone": f"{name}.pool.example.test", "ttl": 5},
            "vars": {f"{name}_port": 8000 + index, f"{name}_role": "member"},
        }
    for n in range(nodes):
        count = rng.randint(1, 3)
        model["nodes"][f"node{n:04d}"] = {
            # Benchmark range (RFC 2544, 198.18.0.0/15): parsed only, never contacted.
            "address": f"198.18.{1 + n // 250}.{1 + n % 250}",
            "pools": sorted(rng.sample(pool_names, count)),
        }
    return model


def static_equivalent(model_path: Path) -> dict:
    """The same inventory as a static YAML inventory, built from the plugin's data."""
    model = PoolModel.load(str(model_path))
    hosts: dict = {}
    groups: dict = {}
    for name in model.node_names():
        view = model.effective(name)
        hostvars = dict(view.connection)
        hostvars.update(view.settings.get("vars") or {})
        hostvars.update(
            multiall_node=name, multiall_pools=view.pools, multiall_settings=view.settings
        )
        hosts[name] = hostvars
        for pool in view.pools:
            groups.setdefault(f"pool_{pool}", {"hosts": {}})["hosts"][name] = None
    return {"all": {"hosts": hosts, "children": groups}}


def minimal_static(full: dict) -> dict:
    """Hosts, groups and connection variables only: the least any inventory carries."""
    hosts = {
        name: {k: v for k, v in hv.items() if k.startswith("ansible_")}
        for name, hv in full["all"]["hosts"].items()
    }
    return {"all": {"hosts": hosts, "children": full["all"]["children"]}}


def time_inventory(path: Path, runs: int, env: dict) -> list[float]:
    """Wall time of ``ansible-inventory -i PATH --list`` (output discarded)."""
    exe = str(Path(sys.executable).parent / "ansible-inventory")
    times = []
    for _run in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(
            [exe, "-i", str(path), "--list", "--output", os.devnull],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"ansible-inventory failed on {path}:\n{proc.stderr[-2000:]}")
        times.append(elapsed)
    return times


def time_model(path: Path, runs: int) -> list[float]:
    """In-process: load + validate + merge every node (the plugin's own work)."""
    times = []
    for _run in range(runs):
        start = time.perf_counter()
        model = PoolModel.load(str(path))
        for name in model.node_names():
            model.effective(name)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (well under 2 minutes)")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pools", type=int, default=50)
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement")
    args = parser.parse_args()
    runs = args.runs or (2 if args.quick else 5)

    env = ansible_env({"ANSIBLE_INVENTORY_ENABLED": "takelan.multiall.pools,yaml"})

    with tempfile.TemporaryDirectory(prefix="multiall-bench-") as tmp:
        model_path = Path(tmp) / "generated.pools.yml"
        model_path.write_text(
            yaml.safe_dump(generate_model(args.nodes, args.pools), sort_keys=False)
        )
        static_path = Path(tmp) / "static.yml"
        full = static_equivalent(model_path)
        static_path.write_text(yaml.safe_dump(full, sort_keys=False))
        minimal_path = Path(tmp) / "minimal.yml"
        minimal_path.write_text(yaml.safe_dump(minimal_static(full), sort_keys=False))

        memberships = sum(
            len(n["pools"]) for n in yaml.safe_load(model_path.read_text())["nodes"].values()
        )
        print(
            f"model: {args.nodes} nodes, {args.pools} pools, {memberships} memberships; "
            f"{model_path.stat().st_size // 1024} KiB model, {static_path.stat().st_size // 1024} KiB static"
        )

        # Interleave so machine noise hits both sides alike.
        plugin_times: list[float] = []
        static_times: list[float] = []
        minimal_times: list[float] = []
        for _round in range(runs):
            static_times += time_inventory(static_path, 1, env)
            minimal_times += time_inventory(minimal_path, 1, env)
            plugin_times += time_inventory(model_path, 1, env)
        model_times = time_model(model_path, runs)

    plugin = statistics.median(plugin_times)
    static = statistics.median(static_times)
    minimal = statistics.median(minimal_times)
    figures = {
        "benchmark": "inventory",
        "nodes": args.nodes,
        "pools": args.pools,
        "memberships": memberships,
        "runs": runs,
        "plugin_total_s": round(plugin, 3),
        "static_reference_s": round(static, 3),
        "plugin_overhead_s": round(plugin - static, 3),
        "plugin_vs_static_ratio": round(plugin / static, 3),
        "minimal_static_s": round(minimal, 3),
        "plugin_over_minimal_s": round(plugin - minimal, 3),
        "model_parse_merge_s": round(statistics.median(model_times), 3),
        "goal_overhead_s": 1.0,
        "goal_met": (plugin - static) < 1.0,
    }
    print(
        f"ansible-inventory --list: plugin {plugin:.2f}s vs static YAML {static:.2f}s "
        f"(overhead {plugin - static:+.2f}s); minimal static (no settings) {minimal:.2f}s; "
        f"model load+merge {figures['model_parse_merge_s']:.2f}s"
    )
    print(json.dumps(figures))
    return 0 if figures["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
