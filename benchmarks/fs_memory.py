"""Benchmark: FS-SA connector memory at 100 000 files, without a lab (issue 12).

Why: the idle-RSS goal (< 150 MB watching 100 000 files) is decided by what the
connector builds in memory around the index, not by the watching itself. Each case
runs in a fresh process on the same tree and reports its peak RSS (VmHWM):

* ``steady``: index the tree (start-up rescan) and watch every directory;
* ``push``: + one push batch for each of 4 peers at once (entries, inline data,
  the JSON request), at the connector's batch size; reference: 20 000 (the old size);
* ``offer``: + comparing the whole index with a returning peer, in slices of
  ``OFFER_SLICE``; reference: one message with every entry (the old offer).

    .venv/bin/python benchmarks/fs_memory.py [--quick] [--dir DIR]   (DIR keeps the tree for the next run)

The last line of output is one JSON object with the figures (MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile

from ansible_collections.takelan.multiall.plugins.module_utils._fs_apply import attach_inline
from ansible_collections.takelan.multiall.plugins.module_utils.fsindex import Index

from connector import fs_agent
from connector.fs_watch import TreeWatcher

PEERS = ["n2", "n3", "n4", "n5"]


def status_mb(field: str) -> int:
    with open("/proc/self/status") as handle:
        line = next(x for x in handle if x.startswith(field))
    return int(line.split()[1]) // 1024


def make_tree(tree: str, count: int) -> None:
    for i in range(count):
        d = os.path.join(tree, f"d{i // 1000:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06d}"), "w") as h:
            h.write(str(i).ljust(64, "x"))


def case(base: str, name: str, size: int) -> dict[str, int]:
    """One case in this (fresh) process: its peak and final RSS in MB."""
    db = os.path.join(base, f"{name}-{size}.db")
    index = Index(db, os.path.join(base, "tree"), "n1", [])
    index.rescan(PEERS)
    fs_agent.trim_heap()

    async def watch() -> None:
        TreeWatcher({index.tree: []}, lambda t, p: None, lambda: None).start()

    asyncio.run(watch())
    if name == "push":
        requests = []
        for peer in PEERS:  # four pushers hold their batch at the same time
            items = index.pending(peer, size)
            entries = [e.as_dict() for e in index.entries([item[0] for item in items])]
            attach_inline(index.tree, entries)
            requests.append(json.dumps({"op": "apply", "entries": entries}).encode())
        del requests, entries, items
    elif name == "offer":
        after = None
        while True:
            rows = [e.as_dict() for e in index.entries_range(after, None, size)]
            message = json.dumps({"op": "offer", "entries": rows}).encode()
            if len(rows) < size:
                break
            after = rows[-1]["path"]
        del rows, message
    fs_agent.trim_heap()
    return {"peak_mb": status_mb("VmHWM"), "after_mb": status_mb("VmRSS")}


def run_case(base: str, name: str, size: int) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--case", name, "--size", str(size), "--dir", base],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 000 files instead of 100 000")
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.dir, args.case, args.size)))
        return 0
    files = 20_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(dir=args.dir) as base:
        # With --dir, the tree is kept there and reused (making 100 000 files is slow).
        kept = os.path.join(args.dir, f"tree-{files}") if args.dir else ""
        if not os.path.isdir(kept):
            make_tree(kept or os.path.join(base, "tree"), files)
        if kept:
            os.symlink(kept, os.path.join(base, "tree"))
        batch, sliced = int(fs_agent.DEFAULTS["batch"]), fs_agent.OFFER_SLICE
        fig: dict = {"benchmark": "fs_memory", "files": files}
        fig["steady"] = run_case(base, "steady", 0)
        fig[f"push_4x{batch}"] = run_case(base, "push", batch)
        fig["ref_push_4x20000"] = run_case(base, "push", 20_000)
        fig[f"offer_slices_{sliced}"] = run_case(base, "offer", sliced)
        fig["ref_offer_whole"] = run_case(base, "offer", files + 1)
        for key, value in fig.items():
            if isinstance(value, dict):
                print(f"{key}: peak {value['peak_mb']} MB, after {value['after_mb']} MB")
    fig["goal_met"] = (
        max(v["peak_mb"] for k, v in fig.items() if k.startswith(("push_", "offer_"))) < 150
    )
    print(json.dumps(fig))
    return 0 if fig["goal_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
