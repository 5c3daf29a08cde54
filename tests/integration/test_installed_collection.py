"""takelan.multiall works installed from its tarball, not only from a checkout.

As a new user would: ``ansible-galaxy collection build`` -> ``ansible-galaxy
collection install`` into a clean path -> a project outside the checkout whose
playbook deploys the connector with the ``multiall_node`` and ``tns`` roles by
FQCN, on lab nodes listed by the ``takelan.multiall.pools`` inventory plugin.
Nothing of the checkout is on the collections path, and the nodes' Python
cannot import the checkout either: the connector runs from the installed
collection (lab nodes see the host's disk, so ``tns_src`` is the install path
and the role's copy step, ~2 s per file here, is skipped). A node kill then
makes the leader's watcher run ``tns_reaction.yml`` from that collection.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import yaml

from lab.connector import control, wait_converged, wait_for

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.lab, pytest.mark.slow]
SOCKET = "/run/lab/connector.sock"  # the lab's host reaches it as ctl_path(node)/connector.sock
DEPLOY = """\
- name: Deploy MultiAll from the installed collection
  hosts: all
  gather_facts: true
  roles:
    - role: takelan.multiall.multiall_node
    - role: takelan.multiall.tns
"""


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    """Run a command; fail the test with its output if it fails."""
    proc = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def node_venv(path: Path) -> Path:
    """A venv standing in for the one ``tns_make_venv`` makes from requirements.txt.

    Lab nodes have no network, so its packages come from the controller's venv,
    added as a plain path: the controller venv's own ``.pth`` files (the editable
    install of this checkout) are not processed, so the checkout stays unreachable.
    """
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(path), "platbase": str(path)})["purelib"])
    (site / "_multiall_requirements.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for script in ("ansible", "ansible-playbook"):  # what the watcher's ansible-runner starts
        body = (BIN / script).read_text().split("\n", 1)[1]
        target = path / "bin" / script
        target.write_text(f"#!{path}/bin/python\n{body}")
        target.chmod(0o755)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def installed():
    """Build, install into a clean path, and lay out a user project; all outside the checkout.

    Under /var/tmp, not /tmp: lab nodes see the host's disk (their /tmp is their own)
    and the venv must be made before the lab boots.
    """
    base = Path(tempfile.mkdtemp(prefix="multiall-installed-", dir="/var/tmp"))
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        clean["PATH"] = f"{BIN}:{clean.get('PATH', '/usr/bin:/bin')}"
        run(
            [
                str(BIN / "ansible-galaxy"),
                "collection",
                "build",
                "--output-path",
                str(base / "dist"),
                str(ROOT),
            ],
            clean,
            base,
        )
        (tarball,) = (base / "dist").glob("takelan-multiall-*.tar.gz")
        inst = base / "collections"
        # Only the clean path is a collections path: an install elsewhere on the
        # machine (~/.ansible/collections) or the checkout on sys.path (the venv's
        # multiall-collection.pth) must not make this one a no-op.
        run(
            [str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(inst), str(tarball)],
            dict(
                clean, ANSIBLE_COLLECTIONS_PATH=str(inst), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false"
            ),
            base,
        )
        collection = inst / "ansible_collections" / "takelan" / "multiall"
        assert (collection / "connector" / "watcher.py").is_file()
        assert not (collection / "collection").exists(), "the checkout's link was shipped"
        project = base / "project"
        project.mkdir()
        (project / "ansible.cfg").write_text(
            "[defaults]\n"
            f"collections_path = {inst}\n"
            "collections_scan_sys_path = false\n"
            "host_key_checking = true\n"
            "[inventory]\n"
            "enable_plugins = takelan.multiall.pools\n"
        )
        (project / "deploy.yml").write_text(DEPLOY)
        env = dict(
            clean,
            ANSIBLE_CONFIG=str(project / "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=str(inst),
            ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
            ANSIBLE_FORCE_COLOR="0",
        )
        yield {
            "base": base,
            "collections": inst,
            "collection": collection,
            "project": project,
            "env": env,
            "python": node_venv(base / "venv"),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def deployed(installed, lab_module):
    """The lab, with the connector deployed by the installed roles."""
    lab = lab_module(n=3)
    # The nodes' Python sees the requirements but none of the checkout's code.
    probe = lab.exec("n1", [str(installed["python"]), "-c", "import connector"], check=False)
    assert probe.returncode != 0 and "No module named 'connector'" in probe.stderr, probe
    extra = {
        "tns_src": str(installed["collection"]),
        "tns_copy_src": False,
        "tns_make_venv": False,
        "tns_python": str(installed["python"]),
        "tns_service_manager": "lab",
        "tns_control_socket": SOCKET,
        "tns_rules": [
            {"events": ["member_failed"], "playbook": "tns_reaction.yml", "scope": "pool"}
        ],
    }
    (installed["project"] / "lab.yml").write_text(yaml.safe_dump(extra))
    run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(lab.inventory_path),
            "deploy.yml",
            "-e",
            "@lab.yml",
        ],
        installed["env"],
        installed["project"],
        timeout=600,
    )
    wait_converged(lab, timeout=60)
    return lab


def test_only_the_installed_collection_is_on_the_collections_path(installed):
    out = run(
        [str(BIN / "ansible-galaxy"), "collection", "list", "takelan.multiall", "--format", "json"],
        installed["env"],
        installed["project"],
    )
    assert list(json.loads(out)) == [str(installed["collections"] / "ansible_collections")]


def test_the_installed_inventory_plugin_lists_the_pools(installed, deployed):
    graph = run(
        [str(BIN / "ansible-inventory"), "-i", str(deployed.inventory_path), "--graph"],
        installed["env"],
        installed["project"],
    )
    assert "@pool_lab:" in graph
    assert all(f"|--{node}" in graph for node in ("n1", "n2", "n3"))


def test_the_connector_runs_the_installed_collection_on_every_node(installed, deployed):
    collection = str(installed["collection"])
    for node in ("n1", "n2", "n3"):
        ready = next(
            json.loads(line)
            for line in deployed.service_log(node, "connector").splitlines()
            if '"watcher ready"' in line
        )
        assert ready["collection"] == collection
        assert ready["collections_path"] == str(installed["collections"])
        assert ready["module_utils"] == f"{collection}/plugins/module_utils"


def test_an_installed_module_honours_check_mode_on_a_node(installed, deployed):
    out = run(
        [str(BIN / "ansible"), "-i", str(deployed.inventory_path), "n2", "--check",
         "-m", "takelan.multiall.tns_maintenance",
         "-a", f"state=present reason=disk-swap socket={SOCKET}"],
        dict(installed["env"], ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
             ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal"),
        installed["project"],
    )  # fmt: skip
    result = json.loads(out[out.index("n2 | ") :].split(" => ", 1)[1])
    assert result["changed"] is True, result
    member = control(deployed, "n1", {"op": "status"})["pools"]["lab"]["members"]["n2"]
    assert member["state"] == "alive", member


def test_a_killed_node_makes_the_leader_run_the_installed_reaction_playbook(installed, deployed):
    lab = deployed
    lab.kill("n3")
    run_ = wait_for(
        lambda: next(
            (
                r
                for r in control(lab, "n1", {"op": "runs"})["runs"]
                if r["status"] in ("successful", "failed")
                and any(e.get("member") == "n3" for e in r["events"])
            ),
            None,
        ),
        120,
        "the leader's watcher run for n3",
    )
    assert run_["status"] == "successful", (run_, lab.service_log("n1", "connector")[-3000:])
    assert run_["playbook"] == "tns_reaction.yml" and run_["pool"] == "lab"
    # The playbook ran from the installed collection and read the model through its module.
    log = (lab.node_root("n1") / "var/lib/multiall/reactions.log").read_text()
    assert "lab member_failed n3 (reactor n1 of lab)" in log
    # ... and the run is journaled where an operator looks: `multiall runs` on the leader.
    shown = lab.exec(
        "n1",
        [
            "/usr/bin/env",
            f"--chdir={installed['collection']}",
            str(installed["python"]),
            "-m",
            "connector",
            "runs",
            "--socket",
            SOCKET,
            "--json",
        ],
    ).stdout
    runs = json.loads(shown)
    assert any(r["id"] == run_["id"] and r["status"] == "successful" for r in runs), runs
