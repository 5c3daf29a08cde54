"""FS-SA live path on a 3-node lab: real connectors, inotify, sshd, rsync and rrsync.

Every change is made inside a node (so its inotify sees it) and checked by
reading every node's tree: content hash, type, mode and owner of every path.
Nothing here asserts how fast it happens (``benchmarks/fs_sync.py`` does).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import ssh_argv

from lab.connector import control, start_all, start_connector, wait_converged, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow]
TREE = "/srv/share"
NODES = ("n1", "n2", "n3")
MODEL = f"""\
plugin: takelan.multiall.pools
defaults:
  ssh_user: root
  python: /usr/bin/python3
nodes:
  n1: {{address: 198.18.0.31, pools: [web]}}
  n2: {{address: 198.18.0.32, pools: [web]}}
  n3: {{address: 198.18.0.33, pools: [web]}}
pools:
  web:
    description: three servers sharing one live tree
    files:
      {TREE}: {{exclude: ["*.tmp"]}}
"""
# Prints {path: [sha256, mode, uid, gid]} of the tree (conflict copies included, *.tmp not).
SNAPSHOT = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]; out = {}
for base, dirs, files in os.walk(root):
    for name in dirs + files:
        if name.endswith('.tmp'):
            continue  # excluded from the tree: each node keeps its own
        full = os.path.join(base, name); st = os.lstat(full)
        rel = os.path.relpath(full, root)
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(open(full, 'rb').read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            digest = 'link:' + os.readlink(full)
        else:
            digest = 'dir'
        out[rel] = [digest, oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lab(lab_module, tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("fs")) / "pools.yml"
    path.write_text(MODEL)
    lab = lab_module(pools_file=str(path))
    start_all(lab, fs={"rescan": 30})
    wait_converged(lab, timeout=90)
    return lab


def sh(lab, node: str, script: str) -> str:
    return lab.exec(node, ["sh", "-ec", script], timeout=120).stdout


def tree(lab, node: str) -> dict[str, list]:
    return json.loads(lab.exec(node, ["python3", "-c", SNAPSHOT, TREE]).stdout)


def identical(lab, nodes=NODES, timeout: float = 90) -> dict[str, list]:
    """Wait until every node's tree is the same; return it."""

    def same():
        trees = [tree(lab, n) for n in nodes]
        return trees[0] if all(t == trees[0] for t in trees[1:]) else None

    try:
        return wait_for(same, timeout, "identical trees", interval=0.5)
    except Exception:
        for n in nodes:
            print(n, json.dumps(tree(lab, n))[:3000])
            print(n, json.dumps(control(lab, n, {"op": "fs"}), indent=1))
            print(lab.service_log(n, "connector")[-3000:])
        raise


def fs_status(lab, node: str) -> dict:
    return control(lab, node, {"op": "fs"})["trees"][TREE]


def revive(lab, node: str) -> None:
    lab.revive(node)
    start_connector(lab, node)
    wait_converged(lab, timeout=90)


def test_create_modify_rename_delete_chmod_chown_propagate(lab):
    sh(lab, "n1", f"mkdir -p {TREE}/a/b && echo one > {TREE}/a/b/f.txt && echo keep > {TREE}/k")
    sh(lab, "n2", f"echo scratch > {TREE}/x.tmp")  # excluded: stays where it is
    identical(lab)
    sh(
        lab,
        "n1",
        f"echo two >> {TREE}/a/b/f.txt; mv {TREE}/k {TREE}/a/k2; chmod 0600 {TREE}/a/k2;"
        f" chown 1234:2345 {TREE}/a/b/f.txt; ln -s b/f.txt {TREE}/a/link",
    )
    sh(lab, "n3", f"mkdir {TREE}/from3 && echo three > {TREE}/from3/g")
    sh(lab, "n2", f"rm {TREE}/x.tmp; echo gone > {TREE}/del && sleep 0.5 && rm {TREE}/del")
    final = identical(lab)
    assert sh(lab, "n3", f"cat {TREE}/a/b/f.txt") == "one\ntwo\n"
    assert final["a/k2"][1:] == ["0o600", 0, 0]
    assert final["a/b/f.txt"][2:] == [1234, 2345]
    assert final["a/link"][0] == "link:b/f.txt"
    assert "k" not in final and "del" not in final and "from3/g" in final
    # Every queue drains (a push is acknowledged just after its files land).
    for node in NODES:
        wait_for(
            lambda node=node: all(
                p["pending"] == 0 for p in fs_status(lab, node)["peers"].values()
            ),
            60,
            f"{node}'s queues to drain",
        )


def test_peer_killed_during_a_burst_catches_up_identical(lab):
    burst = threading.Thread(
        target=sh,
        args=(
            lab,
            "n1",
            f"mkdir -p {TREE}/burst; for i in $(seq 1 2000); do echo $i > {TREE}/burst/f$i; done;"
            f" chmod 0640 {TREE}/burst/f7; rm {TREE}/burst/f9",
        ),
    )
    burst.start()
    time.sleep(0.5)
    lab.kill("n3")
    burst.join()
    identical(lab, ["n1", "n2"])
    assert fs_status(lab, "n1")["peers"]["n3"]["pending"] > 0  # kept for the dead peer
    revive(lab, "n3")
    final = identical(lab)
    assert len([p for p in final if p.startswith("burst/")]) == 1999
    assert final["burst/f7"][1] == "0o640" and "burst/f9" not in final


def test_partitioned_pair_edit_the_same_file_one_winner_one_copy_everywhere(lab):
    sh(lab, "n1", f"echo base > {TREE}/shared.conf")
    identical(lab)
    lab.partition(["n1"], ["n2", "n3"])
    try:
        wait_for(lambda: not fs_status(lab, "n1")["peers"]["n2"]["alive"], 30, "n1 to lose n2")
        sh(lab, "n1", f"echo from-n1 > {TREE}/shared.conf")
        sh(lab, "n2", f"sleep 0.2; echo from-n2 > {TREE}/shared.conf")
        time.sleep(1)
    finally:
        lab.heal()
    final = identical(lab)
    copies = sorted(p for p in final if p.startswith("shared.conf.multiall-conflict-"))
    assert len(copies) == 1 and copies[0].startswith("shared.conf.multiall-conflict-n1-")
    assert sh(lab, "n3", f"cat {TREE}/shared.conf") == "from-n2\n"  # newer mtime wins
    assert sh(lab, "n3", f"cat {TREE}/{copies[0]}") == "from-n1\n"
    for node in NODES:
        listed = control(lab, node, {"op": "fs", "what": "conflicts"})["trees"][TREE]
        assert [c["copy"] for c in listed] == copies
    # The node that kept the copy journals an fs_conflict event (published within ~2 s).
    wait_for(
        lambda: any(
            e["type"] == "fs_conflict" and e.get("path") == "shared.conf"
            for n in NODES
            for e in control(lab, n, {"op": "events", "limit": 500})["events"]
        ),
        30,
        "an fs_conflict event",
        interval=0.5,
    )


def test_connector_killed_mid_queue_loses_nothing(lab):
    lab.kill("n3")
    sh(
        lab,
        "n1",
        f"mkdir -p {TREE}/queued; for i in $(seq 1 300); do echo $i > {TREE}/queued/q$i; done",
    )
    wait_for(lambda: fs_status(lab, "n1")["peers"]["n3"]["pending"] >= 300, 60, "n3's queue")
    pid = lab.service_status("n1", "connector")["pid"]
    lab.exec("n1", ["kill", "-9", str(pid)])  # the supervisor starts it again
    wait_for(lambda: fs_status(lab, "n1")["peers"]["n3"]["pending"] >= 300, 60, "queue kept")
    revive(lab, "n3")
    final = identical(lab)
    assert len([p for p in final if p.startswith("queued/")]) == 300
    assert not [p for p in final if "multiall-conflict" in p and p.startswith("queued")]


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "a/../../etc/passwd"])
def test_peer_data_naming_a_path_outside_the_tree_is_refused(lab, bad):
    before = sh(lab, "n2", "sha256sum /etc/passwd")
    request = {"from": "n1", "entries": [{"path": bad, "deleted": True, "vv": {"n1": 99}}]}
    argv = ssh_argv("web", "198.18.0.32")
    proc = lab.exec(
        "n1", [*argv, "multiall-fs", "apply", TREE], check=False, input=json.dumps(request)
    )
    assert proc.returncode == 1
    assert "refused path" in proc.stderr and bad in proc.stderr
    assert sh(lab, "n2", "sha256sum /etc/passwd") == before
    forged = lab.exec("n1", [*argv, "multiall-fs", "apply", "/etc"], check=False, input="{}")
    assert forged.returncode == 1 and "not declared" in forged.stderr
