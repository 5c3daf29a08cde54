"""Benchmark: FS-SA live sync on a 5-node lab (n1 writes, n2..n5 receive).

Figures, each with its reference measured in the same run:

* one small file written on n1 -> identical on the 4 peers: p50/p99 seconds
  (goal p50 <= 0.5 s, p99 <= 1.5 s); reference: one plain rsync of one small
  file to one peer over a warm SSH master (the same key and forced command);
* 10 files changed in a large tree (quick 20 000 files, full 100 000): seconds
  until the 4 peers hold them vs ``rsync -a`` of the whole tree to the same 4
  peers in parallel (goal >= 20x);
* a burst of new files (quick 2 000, full 10 000): files/s until on all 4 peers
  vs ``rsync -a`` of the same files (into an excluded directory) to the 4 peers;
* a 1-byte change in a large file (quick 20 MB, full 100 MB): bytes n1 sends per
  peer (its link's tx+rx counters minus the background rate, divided by 4) vs one rsync of the same change to one
  peer (goal <= 1.2x);
* the idle connector watching the tree: CPU % of one core and RSS over 10 s; reference:
  the same connector right after start, its tree still empty (TNS, SBM and FS-SA's
  own polling: what watching the files adds is the difference).

Peers are polled through their root file systems from the host every 10 ms.

    .venv/bin/python benchmarks/fs_sync.py [--quick] [--samples N] [--files N] [--burst N]
        [--large-mb N] [--stages one,burst,ten,byte,idle]

``--samples 20`` keeps the 100 000-file tree and the 100 MB file of the full run with
fewer one-file repeats; ``--stages`` runs a subset (the goals of the others are not judged).

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import rsync_argv

from lab import Lab
from lab.connector import control, start_all, wait_converged, wait_for
from lab.failover import percentile

TREE = "/srv/bench"
PEERS = ["n2", "n3", "n4", "n5"]
MODEL = f"""\
plugin: takelan.multiall.pools
defaults: {{ssh_user: root, python: /usr/bin/python3}}
nodes:
{"".join(f"  n{i}: {{address: 198.18.0.4{i}, pools: [bench]}}{chr(10)}" for i in range(1, 6))}\
pools:
  bench:
    files:
      {TREE}: {{exclude: ["ref-*"]}}
"""
MAKE_FILES = """
import os, sys
root, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    d = os.path.join(root, f"d{i // 1000:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}"), "w") as h:
        h.write(str(i).ljust(size, "x"))
"""


def peer_path(lab: Lab, node: str, rel: str) -> Path:
    return lab.node_root(node) / TREE.lstrip("/") / rel


def wait_on_peers(lab: Lab, rels: list[str], content: str | None, limit: float) -> float:
    """Seconds (from now) until every peer holds every REL (with CONTENT when given)."""
    start = time.monotonic()
    missing = {(p, r) for p in PEERS for r in rels}
    while missing and time.monotonic() - start < limit:
        for peer, rel in list(missing):
            path = peer_path(lab, peer, rel)
            try:
                if content is None or path.read_text() == content:
                    missing.discard((peer, rel))
            except OSError:
                pass
        if missing:
            time.sleep(0.01)
    if missing:
        raise SystemExit(f"not on every peer within {limit} s: {sorted(missing)[:5]}")
    return time.monotonic() - start


def synced(lab: Lab, limit: float) -> None:
    """Wait until n1 has nothing queued for any peer (a batch may still be landing)."""

    def done() -> bool:
        peers = control(lab, "n1", {"op": "fs"})["trees"][TREE]["peers"]
        return all(p["pending"] == 0 for p in peers.values())

    wait_for(done, limit, "n1's queues to empty", interval=0.5)
    time.sleep(1)


def wire_bytes(lab: Lab, node: str) -> int:
    """Bytes NODE has sent and received on its lab link so far."""
    stats = "/sys/class/net/eth0/statistics"
    out = lab.exec(node, ["cat", f"{stats}/tx_bytes", f"{stats}/rx_bytes"]).stdout.split()
    return int(out[0]) + int(out[1])


def background_rate(lab: Lab, seconds: float = 3.0) -> float:
    """Bytes/s n1's link carries when nothing is synced (TNS probes, Serf gossip)."""
    before, t0 = wire_bytes(lab, "n1"), time.monotonic()
    time.sleep(seconds)
    return (wire_bytes(lab, "n1") - before) / (time.monotonic() - t0)


def measured(lab: Lab, action: Any, rate: float) -> int:
    """Bytes on n1's link while ACTION runs, minus the background for that long."""
    before, t0 = wire_bytes(lab, "n1"), time.monotonic()
    action()
    return int(wire_bytes(lab, "n1") - before - rate * (time.monotonic() - t0))


def one_byte_change(lab: Lab, size_mb: int) -> tuple[int, int]:
    """Bytes n1 sends for a 1-byte change in a SIZE_MB file: FS-SA per peer, one rsync."""
    make = (
        f"head -c {size_mb}M /dev/urandom > {{0}};"
        " printf A | dd of={0} bs=1 seek=12345 conv=notrunc status=none"
    )
    lab.exec("n1", ["sh", "-c", make.format(f"{TREE}/large.bin")], timeout=300)
    wait_on_peers(lab, ["large.bin"], None, 600)
    synced(lab, 600)
    flip = "printf Z | dd of={0} bs=1 seek=12345 conv=notrunc status=none"
    rate = background_rate(lab)

    def fs_push() -> None:
        lab.exec("n1", ["sh", "-c", flip.format(f"{TREE}/large.bin")])

        def flipped(peer: str) -> bool:
            with open(peer_path(lab, peer, "large.bin"), "rb") as handle:
                handle.seek(12345)
                return handle.read(1) == b"Z"

        wait_for(lambda: all(flipped(p) for p in PEERS), 600, "the changed byte on every peer")
        synced(lab, 600)

    fs_bytes = measured(lab, fs_push, rate) // len(PEERS)
    # Reference: the same change on an excluded copy, one rsync to one peer.
    ref = f"{TREE}/ref-large"
    lab.exec("n1", ["sh", "-c", f"mkdir -p {ref} && cp {TREE}/large.bin {ref}/large.bin"])
    lab.exec("n1", ["sh", "-c", rsync_cmd(lab.nodes["n2"], source=ref, dest=ref)], timeout=600)
    lab.exec("n1", ["sh", "-c", flip.format(f"{ref}/large.bin")])
    cmd = rsync_cmd(lab.nodes["n2"], source=ref, dest=ref)
    return fs_bytes, measured(lab, lambda: lab.exec("n1", ["sh", "-c", cmd], timeout=600), rate)


def timed_in_node(lab: Lab, node: str, script: str) -> float:
    """Seconds a shell script takes inside NODE, timed there (no nsenter overhead)."""
    out = lab.exec(
        node,
        ["sh", "-c", f"a=$(date +%s%N); {script} >/dev/null; b=$(date +%s%N); echo $((b-a))"],
        timeout=900,
    ).stdout
    return int(out.strip().splitlines()[-1]) / 1e9


def rsync_cmd(peer_ip: str, *, source: str, dest: str, files: str | None = None) -> str:
    argv = rsync_argv("bench", peer_ip, dest, source=source, itemize=False, files_from=files)
    return " ".join(f"'{a}'" for a in argv)


def latency(lab: Lab, samples: int) -> list[float]:
    times = []
    for i in range(samples):
        body = f"sample {i} {time.time()}\n"
        start = time.monotonic()
        lab.exec("n1", ["sh", "-c", f"printf '{body}' > {TREE}/lat/s{i % 5}"])
        wait_on_peers(lab, [f"lat/s{i % 5}"], body, 30)
        times.append(time.monotonic() - start)
        time.sleep(0.2)
    return times


def ref_one_file(lab: Lab, runs: int) -> list[float]:
    lab.exec(
        "n1",
        [
            "sh",
            "-c",
            f"mkdir -p {TREE}/ref-one && echo x > {TREE}/ref-one/f && "
            f"printf 'f\\n' > /tmp/one.list",
        ],
    )
    cmd = rsync_cmd(
        lab.nodes["n2"], source=f"{TREE}/ref-one", dest=f"{TREE}/ref-one", files="/tmp/one.list"
    )
    out = []
    for i in range(runs):
        lab.exec("n1", ["sh", "-c", f"echo {i} > {TREE}/ref-one/f"])
        out.append(timed_in_node(lab, "n1", cmd))
    return out


def idle(lab: Lab, seconds: float = 10.0) -> tuple[float, float]:
    pid = lab.service_status("n1", "connector")["pid"]

    def ticks() -> int:
        fields = lab.exec("n1", ["cat", f"/proc/{pid}/stat"]).stdout.rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    before, t0 = ticks(), time.monotonic()
    time.sleep(seconds)
    after, t1 = ticks(), time.monotonic()
    status = lab.exec("n1", ["cat", f"/proc/{pid}/status"]).stdout
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    return 100.0 * (after - before) / 100.0 / (t1 - t0), rss_kb / 1024


STAGES = ("one", "burst", "ten", "byte", "idle")


def keep_logs(lab: Lab, where: Path) -> None:
    """Copy each node's connector log to WHERE (the lab's own copies go with it)."""
    where.mkdir(parents=True, exist_ok=True)
    for node in lab.nodes:
        log = lab.ctl_path(node) / "logs" / "connector.log"
        if log.exists():
            (where / f"{node}-connector.log").write_bytes(log.read_bytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller trees (under ~2 minutes)")
    parser.add_argument("--samples", type=int, help="one-file samples (quick 20, full 100)")
    parser.add_argument("--files", type=int, help="large tree size (quick 20 000, full 100 000)")
    parser.add_argument("--burst", type=int, help="burst size (quick 2 000, full 10 000)")
    parser.add_argument("--large-mb", type=int, help="large file for 1 byte (quick 20, full 100)")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}"
    )
    parser.add_argument("--keep-logs", help="copy every node's connector log here at the end")
    args = parser.parse_args()
    samples = args.samples or (20 if args.quick else 100)
    big = args.files or (20_000 if args.quick else 100_000)
    burst = args.burst or (2_000 if args.quick else 10_000)
    large_mb = args.large_mb or (20 if args.quick else 100)
    stages = set(args.stages.split(","))
    if not stages <= set(STAGES):
        parser.error(f"--stages: choose among {', '.join(STAGES)}")
    if "burst" not in stages:
        burst = 0  # the large tree is made in one go
    lab = Lab()
    fig: dict = {"benchmark": "fs_sync", "quick": args.quick, "stages": sorted(stages)}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "pools.yml"
        model.write_text(MODEL)
        try:
            lab.up(pools_file=str(model), force=True)
            start_all(lab, fs={"rescan": 600})
            wait_converged(lab, timeout=120)
            time.sleep(5)
            ref_cpu, ref_rss = idle(lab, 20.0)  # reference: the same connector, empty tree
            lab.exec("n1", ["mkdir", "-p", f"{TREE}/lat"])
            wait_on_peers(lab, ["lat"], None, 60)
            if "one" in stages:
                stage_one_file(lab, fig, samples)
            if burst:
                stage_burst(lab, fig, burst)
            if "ten" in stages:
                stage_ten(lab, fig, big, burst)
            if "byte" in stages:
                fs_b, ref_b = one_byte_change(lab, large_mb)
                fig.update(
                    large_file_mb=large_mb,
                    one_byte_fs_bytes_per_peer=fs_b,
                    one_byte_ref_rsync_bytes=ref_b,
                    one_byte_ratio=round(fs_b / max(ref_b, 1), 2),
                )
                print(f"1 byte in a large file: FS-SA {fs_b} B/peer, rsync {ref_b} B", flush=True)
            if "idle" in stages:
                cpu, rss = idle(lab, 20.0)
                fig.update(
                    idle_cpu_percent=round(cpu, 2),
                    idle_rss_mb=round(rss, 1),
                    idle_ref_empty_tree_cpu_percent=round(ref_cpu, 2),
                    idle_ref_empty_tree_rss_mb=round(ref_rss, 1),
                )
            fig["load_average"] = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
        finally:
            if args.keep_logs:
                keep_logs(lab, Path(args.keep_logs))
            lab.down()
    goals = {
        "one": fig.get("one_file_p50_s", 1e9) <= 0.5 and fig.get("one_file_p99_s", 1e9) <= 1.5,
        "ten": fig.get("ten_changed_speedup", 0) >= 20,
        "byte": fig.get("one_byte_ratio", 1e9) <= 1.2,
        "idle": fig.get("idle_cpu_percent", 1e9) < 1 and fig.get("idle_rss_mb", 1e9) < 150,
    }
    fig["goals_met"] = all(ok for stage, ok in goals.items() if stage in stages)
    print(json.dumps(fig))
    return 0 if fig["goals_met"] else 1


def stage_one_file(lab: Lab, fig: dict, samples: int) -> None:
    """One small file written on n1 until on the 4 peers; one plain rsync as reference."""
    lat = latency(lab, samples)
    ref = ref_one_file(lab, 5)
    fig.update(
        one_file_p50_s=round(percentile(lat, 50), 3),
        one_file_p99_s=round(percentile(lat, 99), 3),
        ref_rsync_one_file_s=round(statistics.median(ref), 3),
        one_file_samples_s=[round(x, 3) for x in lat],
    )
    print(
        f"one file: p50 {fig['one_file_p50_s']} p99 {fig['one_file_p99_s']}"
        f" (one rsync {fig['ref_rsync_one_file_s']})",
        flush=True,
    )


def stage_burst(lab: Lab, fig: dict, burst: int) -> None:
    """BURST new files into the live tree, and the same files by ``rsync -a``."""
    t0 = time.monotonic()
    lab.exec("n1", ["python3", "-c", MAKE_FILES, f"{TREE}/burst", str(burst), "64"], timeout=600)
    last = f"burst/d{(burst - 1) // 1000:03d}/f{burst - 1:06d}"
    wait_on_peers(lab, [last], None, 900)
    wait_for(
        lambda: all(len(list((peer_path(lab, p, "burst")).rglob("f*"))) == burst for p in PEERS),
        900,
        "the whole burst",
        interval=0.5,
    )
    fs_burst = time.monotonic() - t0
    synced(lab, 600)
    lab.exec(
        "n1", ["python3", "-c", MAKE_FILES, f"{TREE}/ref-burst", str(burst), "64"], timeout=600
    )
    cmds = " & ".join(
        rsync_cmd(lab.nodes[p], source=f"{TREE}/ref-burst", dest=f"{TREE}/ref-burst") for p in PEERS
    )
    ref_burst = timed_in_node(lab, "n1", f"{cmds} & wait")
    fig.update(
        burst_files=burst,
        burst_fs_files_per_s=round(burst / fs_burst, 1),
        burst_ref_rsync_files_per_s=round(burst / ref_burst, 1),
    )
    print(
        f"burst {burst}: FS-SA {fig['burst_fs_files_per_s']} files/s,"
        f" rsync -a {fig['burst_ref_rsync_files_per_s']} files/s",
        flush=True,
    )


def stage_ten(lab: Lab, fig: dict, big: int, burst: int) -> None:
    """10 files changed in a BIG-file tree vs ``rsync -a`` of the whole tree to the 4 peers."""
    t0 = time.monotonic()
    lab.exec(
        "n1", ["python3", "-c", MAKE_FILES, f"{TREE}/big", str(big - burst), "32"], timeout=900
    )
    last = f"big/d{(big - burst - 1) // 1000:03d}/f{big - burst - 1:06d}"
    wait_on_peers(lab, [last], None, 1800)
    synced(lab, 1800)
    fig["tree_fill_s"] = round(time.monotonic() - t0, 1)
    time.sleep(5)  # the peers' own watchers settle (what they just received)
    rels = [f"big/d000/f{i:06d}" for i in range(0, 1000, 100)]
    # The clock starts inside n1 just before the first write (as the reference is timed
    # inside n1): starting a process in the node costs ~0.1-0.3 s under load here.
    writes = "; ".join(f"echo changed > {TREE}/{r}" for r in rels)
    out = lab.exec("n1", ["sh", "-c", f"date +%s%N; {writes}"]).stdout
    wait_on_peers(lab, rels, "changed\n", 600)
    fs_ten = time.time() - int(out.split()[0]) / 1e9
    cmds = " & ".join(rsync_cmd(lab.nodes[p], source=TREE, dest=TREE) for p in PEERS)
    ref_ten = timed_in_node(lab, "n1", f"{cmds} & wait")
    fig.update(
        tree_files=big,
        ten_changed_fs_s=round(fs_ten, 3),
        ten_changed_ref_rsync_a_s=round(ref_ten, 3),
        ten_changed_speedup=round(ref_ten / fs_ten, 1),
    )
    print(f"10 of {big}: FS-SA {fs_ten:.2f} s, rsync -a {ref_ten:.2f} s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
