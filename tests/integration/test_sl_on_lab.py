"""SL-SA on a 3-node lab: real dpkg/apt in each node's own database, real connectors and Serf.

Packages come from a local ``file:`` repository of tiny .debs built here
(``lab/sl_repo.py``: versions, a dependency, a conflict, an unsatisfiable
dependency, a library whose soname changes). The pool model is
``inventory/lab-sl/pools.yml``; converge runs the real ``pkg_converge``
module through ``ansible-playbook``; drift is read with the real
``multiall sl drift`` inside a node, answered from the facts every member
publishes over Serf.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from connector.ansible_env import ansible_env
from lab.connector import NODE_SOCKET, control, start_all, wait_converged, wait_for
from lab.sl_repo import APT_OPTIONS, NODE_REPO, build_repo, install_repo

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
MODEL = ROOT / "inventory" / "lab-sl" / "pools.yml"
pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def sl_lab(lab_module, tmp_path_factory):
    lab = lab_module(pools_file=str(MODEL))
    repo = build_repo(tmp_path_factory.mktemp("sl-repo"))
    for node in lab.nodes:
        install_repo(lab, node, repo)
    start_all(lab, sl={"poll": 0.5})
    wait_converged(lab, timeout=90)
    first = converge(lab, "pool_web", update_cache=True)
    assert all(r["changed"] for r in first.values()), first
    return lab


def converge(lab, hosts: str, check: bool = False, **options) -> dict[str, dict]:
    """Run pkg_converge on HOSTS with the real ansible-playbook; per-host results."""
    task = {
        "takelan.multiall.pkg_converge": {
            "node": "{{ inventory_hostname }}",
            "apt_options": APT_OPTIONS,
            **options,
        },
        "ignore_errors": True,
        "register": "sl",
    }
    out = lab.state_dir / "sl-results"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    save = {
        "delegate_to": "localhost",
        "ansible.builtin.copy": {
            "content": "{{ sl | to_json }}",
            "dest": f"{out}/{{{{ inventory_hostname }}}}.json",
        },
        "check_mode": False,
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
    }
    play = [{"hosts": hosts, "gather_facts": False, "tasks": [task, save]}]
    path = lab.state_dir / "sl-test.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(lab.inventory_path), str(path)]
        + (["--check", "--diff"] if check else []),
        capture_output=True,
        text=True,
        env=ansible_env(),
        check=False,
        timeout=300,
    )
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    wanted = set(lab.nodes) if hosts == "pool_web" else {hosts}
    assert set(results) == wanted, proc.stdout[-4000:] + proc.stderr[-2000:]
    return results


def drift(lab, node: str = "n1") -> tuple[int, dict]:
    """``multiall sl drift --json`` inside NODE: exit status and report."""
    proc = lab.exec(
        node,
        [sys.executable, "-m", "connector", "sl", "drift", "--json", "--socket", NODE_SOCKET],
        check=False,
        timeout=60,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def in_sync(lab, node: str = "n1") -> dict | None:
    """The drift report when it says "in sync" (exit 0), else None."""
    status, report = drift(lab, node)
    return report if status == 0 else None


def cell(report: dict, kind: str, name: str, node: str) -> dict | None:
    """One matrix cell; None while NODE's facts are unknown (not collected or not answered)."""
    return next(r for r in report["rows"] if (r["kind"], r["name"]) == (kind, name))["cells"][node]


def dpkg_state(lab, node: str) -> str:
    return lab.exec(
        node, ["dpkg-query", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n"]
    ).stdout


def variant(lab, node: str, name: str, pools: dict, members: dict) -> str:
    """Write another pool model into NODE (the module reads it with pools_file)."""
    model = yaml.safe_load(MODEL.read_text())
    model["pools"] = pools
    for member, listed in members.items():
        model["nodes"][member]["pools"] = listed
    path = lab.node_root(node) / "etc" / "multiall" / f"{name}.yml"
    path.write_text(yaml.safe_dump(model))
    return f"/etc/multiall/{name}.yml"


def test_converged_pool_shows_no_drift_and_a_second_run_changes_nothing(sl_lab):
    again = converge(sl_lab, "pool_web")
    assert {n: r["changed"] for n, r in again.items()} == {"n1": False, "n2": False, "n3": False}
    report = wait_for(lambda: in_sync(sl_lab), 20, "no drift")
    assert report["drift"] is False
    assert cell(report, "libraries", "libsldemo.so.1", "n3")["installed"] == "libsldemo"
    assert cell(report, "packages", "sl-base", "n2")["installed"] == "1.0"


def test_hand_change_is_drift_with_an_event_and_converge_fixes_it(sl_lab):
    sl_lab.exec("n2", ["dpkg", "-i", f"{NODE_REPO}/sl-base_2.0.deb"])

    def drifted():
        status, report = drift(sl_lab, "n3")  # any member answers for the pool
        got = cell(report, "packages", "sl-base", "n2")
        # None: n2 not heard yet; stale: its last facts, from before the change. Not yet.
        fresh = got is not None and not got.get("stale")
        return report if status == 1 and fresh and got["installed"] == "2.0" else None

    report = wait_for(drifted, 20, "n2's hand change in the drift report")
    assert cell(report, "packages", "sl-base", "n2") == {
        "installed": "2.0",
        "held": False,
        "expected": "1.0",
        "ok": False,
    }
    assert report["drifted"] == {"n1": 0, "n2": 1, "n3": 0}
    events = control(sl_lab, "n2", {"op": "events"})["events"]
    assert any(e["type"] == "sl_drift" and e["member"] == "n2" for e in events)

    # Going back to 1.0 is a downgrade: refused (nothing changes) until forced.
    before = dpkg_state(sl_lab, "n2")
    refused = converge(sl_lab, "n2")["n2"]
    assert refused["failed"] and "would downgrade sl-base 2.0 -> 1.0" in refused["refused"]
    assert dpkg_state(sl_lab, "n2") == before
    forced = converge(sl_lab, "n2", force=True)["n2"]
    assert forced["changed"] and not forced.get("failed"), forced
    assert converge(sl_lab, "n2")["n2"]["changed"] is False
    wait_for(lambda: in_sync(sl_lab), 20, "the pool back in sync")


UNSAFE = {
    # node: (what its pools add, what the refusal must say)
    "n1": ({"sl-conflict": {}}, "would remove sl-app 1.0, which the model does not remove"),
    "n2": ({"sl-needy": {}}, "apt cannot satisfy the request"),
    "n3": (
        {"libsldemo": "2.0"},
        "libsldemo.so.1 disappears (libsldemo upgraded to 2.0) but is needed by "
        "(the pool's libraries), sl-app",
    ),
}


def test_unsafe_plans_are_refused_and_change_nothing(sl_lab):
    """Removal on n1, unsatisfiable dependency on n2, dropped soname on n3: one run."""
    before = {}
    for node, (packages, _said) in UNSAFE.items():
        web = yaml.safe_load(MODEL.read_text())["pools"]["web"]
        web["packages"].update(packages)
        path = variant(sl_lab, node, "sl-unsafe", {"web": web}, {})
        before[node] = dpkg_state(sl_lab, node)
    results = converge(sl_lab, "pool_web", pools_file=path)
    for node, (_packages, said) in UNSAFE.items():
        result = results[node]
        assert result["failed"], result
        assert any(said in r for r in result["refused"]), result["refused"]
        assert "nothing changed" in result["msg"]
        assert dpkg_state(sl_lab, node) == before[node]


def test_two_pools_wanting_different_versions_on_one_node_are_refused(sl_lab):
    web = yaml.safe_load(MODEL.read_text())["pools"]["web"]
    api = {"packages": {"sl-base": "2.0"}}
    path = variant(sl_lab, "n3", "sl-conflict", {"web": web, "api": api}, {"n3": ["web", "api"]})
    result = converge(sl_lab, "n3", pools_file=path)["n3"]
    assert result["failed"]
    assert "packages.sl-base.version: pools disagree" in result["refused"][0]
    assert "pool 'api'" in result["refused"][0] and "pool 'web'" in result["refused"][0]
    check = subprocess.run(
        [str(BIN / "multiall"), "pools", "check", str(sl_lab.node_root("n3")) + path],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    assert check.returncode == 1 and "sl-base" in check.stdout + check.stderr


def test_a_service_started_but_not_enabled_is_enabled_by_converge(sl_lab):
    """The lab supervisor is n2's service manager: enabled = restarted when it exits."""
    sl_lab.service_start("n2", "sl-demo", ["sleep", "86400"], restart=False)  # "started by hand"
    try:
        web = yaml.safe_load(MODEL.read_text())["pools"]["web"]
        web["services"] = {"sl-demo": {"state": "started", "enabled": True}}
        path = variant(sl_lab, "n2", "sl-services", {"web": web}, {})
        checked = converge(sl_lab, "n2", check=True, pools_file=path)["n2"]
        assert checked["changed"] and checked["plan"]["enable"] == {"sl-demo": True}, checked
        assert checked["diff"]["before"] == "service sl-demo: started disabled\n"
        assert checked["diff"]["after"] == "service sl-demo: started enabled\n"
        assert sl_lab.service_status("n2", "sl-demo")["restart"] is False  # check mode
        applied = converge(sl_lab, "n2", pools_file=path)["n2"]
        assert applied["commands"] == ["lab supervisor: enable sl-demo"], applied
        assert sl_lab.service_status("n2", "sl-demo")["restart"] is True
        assert converge(sl_lab, "n2", pools_file=path)["n2"]["changed"] is False
    finally:
        sl_lab.service_stop("n2", "sl-demo")
