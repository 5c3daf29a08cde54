"""FS-SA converge path on a 3-node lab: fs_sync over the real peer transport.

Real sshd with the per-pool key and its forced command, real rsync/rrsync on
every node. One lab for the module: converge, idempotence, check mode, then
forged requests through the forced command that must change nothing.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
    rsync_argv,
    ssh_argv,
)

from connector.ansible_env import ansible_env
from lab.peer_keys import install_peer_keys

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
pytestmark = [pytest.mark.lab]
TREE = "/srv/www"
MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web]}
  n2: {address: 198.18.0.12, pools: [web]}
  n3: {address: 198.18.0.13, pools: [web]}
pools:
  web:
    files:
      /srv/www: {delete: true}
"""


@pytest.fixture(scope="module")
def lab(lab_module, tmp_path_factory):
    path = tmp_path_factory.mktemp("fs") / "pools.yml"
    path.write_text(MODEL)
    lab = lab_module(pools_file=str(path))
    install_peer_keys(lab)
    lab.exec(
        "n1",
        [
            "sh",
            "-c",
            f"mkdir -p {TREE}/css && echo '<h1>hi</h1>' > {TREE}/index.html"
            f" && echo 'body{{}}' > {TREE}/css/site.css && chmod 0640 {TREE}/css/site.css"
            f" && ln -s /etc {TREE}/etc-link && ln -s css/site.css {TREE}/style.css"
            f" && mkfifo {TREE}/pipe",
        ],
    )
    return lab


def playbook(lab, *extra: str) -> str:
    proc = subprocess.run(
        [BIN / "ansible-playbook", "-i", lab.inventory_path, ROOT / "playbooks" / "fs.yml", *extra],
        capture_output=True,
        text=True,
        env=ansible_env(),
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout


def changed(output: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r"^(n\d)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}


def listing(lab, node: str) -> str:
    """Every entry of the tree with type, mode and content checksum."""
    script = (
        f"cd {TREE} && find . -printf '%y %m %p %l\\n' | sort"
        " && find . -type f -exec sha256sum {} + | sort -k2"
    )
    return lab.exec(node, ["sh", "-c", script]).stdout


def test_fs_sync_converges_the_pool_and_a_second_run_changes_nothing(lab) -> None:
    out = playbook(lab, "--diff")
    assert changed(out) == {"n1": 1, "n2": 0, "n3": 0}
    assert f"+ n2:{TREE}/index.html" in out
    want = [
        line
        for line in listing(lab, "n1").splitlines()
        if "pipe" not in line and "etc-link" not in line
    ]
    for peer in ("n2", "n3"):
        got = listing(lab, peer)
        assert "f 644 ./index.html" in got and "f 640 ./css/site.css" in got
        assert "l 777 ./style.css css/site.css" in got
        # Not carried: the fifo and the symlink that leads out of the tree.
        assert "./pipe" not in got and "etc-link" not in got
        assert want == got.splitlines()
    assert changed(playbook(lab)) == {"n1": 0, "n2": 0, "n3": 0}


def test_check_mode_reports_the_change_and_writes_nothing(lab) -> None:
    lab.exec("n1", ["sh", "-c", f"echo v2 > {TREE}/index.html"])
    before = listing(lab, "n2")
    out = playbook(lab, "--check", "--diff")
    assert changed(out)["n1"] == 1 and f"~ n2:{TREE}/index.html" in out
    assert listing(lab, "n2") == before
    playbook(lab)
    assert lab.exec("n2", ["cat", f"{TREE}/index.html"]).stdout == "v2\n"


def test_consensus_puts_back_the_copy_one_node_changed_by_hand(lab) -> None:
    playbook(lab)
    lab.exec("n3", ["sh", "-c", f"echo edited-by-hand > {TREE}/index.html"])
    # The default source (n1) and n2 agree; n3's copy is the odd one, whatever its name.
    out = playbook(lab, "-e", "fs_from=consensus", "--diff")
    assert changed(out) == {"n1": 1, "n2": 0, "n3": 0}
    assert f"~ n3:{TREE}/index.html" in out
    for node in ("n1", "n2", "n3"):
        assert lab.exec(node, ["cat", f"{TREE}/index.html"]).stdout == "v2\n"
    # The digests come through each peer's forced command, as the pool key allows.
    proc = lab.exec("n1", [*ssh_argv("web", "198.18.0.13"), f"multiall-fs disk-digest {TREE}"])
    assert '"digest"' in proc.stdout and '"files": 2' in proc.stdout
    assert changed(playbook(lab, "-e", "fs_from=consensus")) == {"n1": 0, "n2": 0, "n3": 0}


def _etc_state(lab) -> str:
    return lab.exec("n2", ["sh", "-c", "ls -la /etc && sha256sum /etc/passwd"]).stdout


@pytest.mark.parametrize(
    "target, why",
    [
        (f"{TREE}/../../etc", "contains '..'"),
        ("/etc", "is not inside a tree pool web declares for n2"),
    ],
)
def test_forged_paths_through_the_forced_command_are_refused(lab, target: str, why: str) -> None:
    before = _etc_state(lab)
    forged = f"rsync --server -logtpre.iLsfxCIvu . {target}"
    proc = lab.exec("n1", [*ssh_argv("web", "198.18.0.12"), forged], check=False)
    assert proc.returncode == 1 and why in proc.stderr
    # A real rsync client aimed at the same place is refused the same way.
    lab.exec("n1", ["sh", "-c", "mkdir -p /tmp/evil && echo pwned > /tmp/evil/passwd"])
    argv = rsync_argv("web", "198.18.0.12", TREE, source="/tmp/evil")
    argv[-1] = f"198.18.0.12:{target}/"
    proc = lab.exec("n1", argv, check=False)
    assert proc.returncode != 0 and why in proc.stderr
    assert _etc_state(lab) == before


def test_a_symlink_leading_out_of_a_tree_is_not_followed(lab) -> None:
    lab.exec("n2", ["ln", "-sfn", "/etc", f"{TREE}/escape"])
    before = _etc_state(lab)
    lab.exec("n1", ["sh", "-c", "mkdir -p /tmp/evil && echo pwned > /tmp/evil/passwd"])
    argv = rsync_argv("web", "198.18.0.12", TREE, source="/tmp/evil")
    argv[-1] = f"198.18.0.12:{TREE}/escape/"
    proc = lab.exec("n1", argv, check=False)
    assert proc.returncode != 0 and "leads outside tree /srv/www" in proc.stderr
    assert _etc_state(lab) == before
    lab.exec("n2", ["rm", f"{TREE}/escape"])


def test_the_key_runs_nothing_but_peer_transfers(lab) -> None:
    proc = lab.exec("n1", [*ssh_argv("web", "198.18.0.12"), "id; cat /etc/shadow"], check=False)
    assert proc.returncode == 1 and "is not a peer request" in proc.stderr
    assert "root" not in proc.stdout
    ssh = shlex.join(ssh_argv("web", "198.18.0.12"))
    proc = lab.exec("n1", ["sh", "-c", f"{ssh} -t bash </dev/null"], check=False)
    assert proc.returncode != 0
