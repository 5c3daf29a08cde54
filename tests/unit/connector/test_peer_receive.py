"""The forced command confines a pool's key to the trees that pool declares.

Real rsync and Debian's rrsync on both ends; only ssh is replaced by a script
that hands the command over as sshd would (``SSH_ORIGINAL_COMMAND``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(
    not (shutil.which("rsync") and os.path.exists("/usr/bin/rrsync")), reason="needs rsync"
)


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A model where pool web declares <tmp>/dst on n2, and a fake ssh into n2."""
    dst, outside = tmp_path / "dst", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("untouched\n")
    pools = tmp_path / "pools.yml"
    pools.write_text(
        "nodes:\n"
        "  n1: {address: 198.18.0.11, pools: [web, db]}\n"
        "  n2: {address: 198.18.0.12, pools: [web, db]}\n"
        "pools:\n"
        f"  web: {{files: {{{dst}: {{}}}}}}\n"
        "  db: {}\n"
    )
    fake = tmp_path / "fakessh"
    fake.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do case "$1" in -l|-i|-o|-p|-F) shift 2;; --) shift; break;;'
        " -*) shift;; *) break;; esac; done\n"
        'shift\nexport SSH_ORIGINAL_COMMAND="$*"\n'
        f"cd {REPO} && exec {sys.executable} -m connector peer-receive --pool ${{POOL:-web}}"
        f" --node n2 --pools-file {pools}\n"
    )
    fake.chmod(0o755)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("a\n")
    (src / "sub" / "b").write_text("b\n")
    return {"dst": dst, "outside": outside, "pools": pools, "fake": fake, "src": src}


def _push(site: dict[str, Path], dest: str, *extra: str, pool: str = "web"):
    argv = ["rsync", "-a", "--no-devices", "--no-specials", "--safe-links", *extra]
    argv += ["-e", str(site["fake"]), f"{site['src']}/", f"peer:{dest}"]
    env = dict(os.environ, POOL=pool)
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False)


def _receive(site: dict[str, Path], command: str, pool: str = "web"):
    env = dict(os.environ, SSH_ORIGINAL_COMMAND=command)
    argv = [sys.executable, "-m", "connector", "peer-receive", "--pool", pool, "--node", "n2"]
    argv += ["--pools-file", str(site["pools"])]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, check=False)


def test_a_peer_pushes_into_a_declared_tree(site: dict[str, Path]) -> None:
    proc = _push(site, f"{site['dst']}/")
    assert proc.returncode == 0, proc.stderr
    assert (site["dst"] / "sub" / "b").read_text() == "b\n"


def test_undeclared_paths_and_other_pools_are_refused(site: dict[str, Path]) -> None:
    proc = _push(site, f"{site['outside']}/")
    assert proc.returncode != 0
    assert f"{site['outside']}/ is not inside a tree pool web declares for n2" in proc.stderr
    # Pool db declares no tree: its key cannot write web's tree.
    proc = _push(site, f"{site['dst']}/", pool="db")
    assert "pool db" in proc.stderr and proc.returncode != 0
    assert not site["dst"].exists() and sorted(os.listdir(site["outside"])) == ["keep"]


@pytest.mark.parametrize(
    "path, why",
    [
        ("{dst}/../outside", "contains '..'"),
        ("/etc", "is not inside a tree"),
        ("relative/x", "must be absolute"),
    ],
)
def test_forged_escapes_are_refused_with_one_line(site: dict[str, Path], path: str, why: str):
    path = path.format(dst=site["dst"])
    proc = _receive(site, f"rsync --server -logtpre.iLsfxCIvu . {path}")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and why in proc.stderr
    assert proc.stderr.startswith("multiall-peer-receive: pool web: ")


def test_a_symlink_leading_out_of_the_tree_is_refused(site: dict[str, Path]) -> None:
    site["dst"].mkdir()
    (site["dst"] / "link").symlink_to(site["outside"])
    proc = _receive(site, f"rsync --server -logtpre.iLsfxCIvu . {site['dst']}/link/")
    assert proc.returncode == 1 and "leads outside tree" in proc.stderr
    assert sorted(os.listdir(site["outside"])) == ["keep"]


def test_devices_unknown_requests_and_empty_commands_are_refused(site: dict[str, Path]) -> None:
    proc = _receive(site, f"rsync --server -vlogDtpre.iLsfxCIvu . {site['dst']}/")
    assert proc.returncode == 1 and "devices and special files" in proc.stderr
    proc = _receive(site, "sh -c id")
    assert proc.returncode == 1 and "'sh' is not a peer request" in proc.stderr
    proc = _receive(site, "")
    assert proc.returncode == 1 and "no command" in proc.stderr


def test_an_unknown_rsync_option_is_refused_by_rrsync(site: dict[str, Path]) -> None:
    proc = _receive(site, f"rsync --server --rsh=evil -logtpre.iLsfxCIvu . {site['dst']}/")
    assert proc.returncode == 1 and "rrsync" in proc.stderr


def test_a_missing_handler_module_is_a_clear_refusal(site, monkeypatch) -> None:
    from connector import peer_receive

    monkeypatch.setitem(peer_receive.HANDLERS, "multiall-x", "connector.no_such:serve")
    with pytest.raises(peer_receive.Refused, match="not available on this node"):
        peer_receive.resolve("multiall-x")
