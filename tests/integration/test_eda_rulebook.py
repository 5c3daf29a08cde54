"""The EDA source ``takelan.multiall.tns`` under the real ansible-rulebook, on the lab.

A rulebook follows the pool leader's connector, reacts to ``member_failed`` by
running a playbook on the surviving pool members, then shuts itself down.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from connector.ansible_env import ansible_env
from lab.connector import start_all, wait_converged, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow]
RULEBOOK_BIN = Path(sys.executable).parent / "ansible-rulebook"

# Runs on every pool member except the one that failed; names it in a marker file.
PLAYBOOK = """\
- name: Record on the survivors which member TNS reported failed
  hosts: "pool_{{ ansible_eda.event.tns.pool }}:!{{ ansible_eda.event.tns.member }}"
  gather_facts: false
  tasks:
    - name: Write the marker
      ansible.builtin.copy:
        content: "{{ ansible_eda.event.tns.pool }} {{ ansible_eda.event.tns.member }}\\n"
        dest: /var/lib/multiall/eda-member-failed
        mode: "0644"
"""


def rulebook(socket: Path, playbook: Path) -> list[dict]:
    """React to the first member_failed of pool ``lab``, then end (bounded by design)."""
    return [
        {
            "name": "TNS failures run a playbook",
            "hosts": "all",
            "sources": [
                {"takelan.multiall.tns": {"socket": str(socket), "types": ["member_failed"]}}
            ],
            "rules": [
                {
                    "name": "A pool member failed",
                    "condition": 'event.tns.type == "member_failed" and event.tns.pool == "lab"',
                    "actions": [
                        {"run_playbook": {"name": str(playbook)}},
                        {"shutdown": {"delay": 0, "message": "reacted once"}},
                    ],
                }
            ],
        }
    ]


@pytest.fixture(scope="module")
def eda_lab(lab_module):
    if not shutil.which("java"):
        pytest.fail(
            "ansible-rulebook needs Java 17 on PATH: apt-get install openjdk-17-jre-headless"
        )
    lab = lab_module(n=3)
    start_all(lab)
    wait_converged(lab, timeout=60)
    return lab


def test_rulebook_runs_a_playbook_on_the_survivors_when_a_member_fails(eda_lab, tmp_path):
    lab = eda_lab
    # The playbook sits alone in its directory: run_playbook copies the directory.
    (tmp_path / "playbooks").mkdir()
    playbook = tmp_path / "playbooks" / "mark_failed.yml"
    playbook.write_text(PLAYBOOK)
    rules = tmp_path / "rulebook.yml"
    socket = lab.ctl_path("n1") / "connector.sock"  # n1 leads pool "lab"
    rules.write_text(yaml.safe_dump(rulebook(socket, playbook), sort_keys=False))
    out = tmp_path / "ansible-rulebook.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [str(RULEBOOK_BIN), "--rulebook", str(rules), "-i", str(lab.inventory_path), "-v"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ansible_env(),
            cwd=tmp_path,
        )
    try:
        # The source says when it follows the connector: from then on no event is missed.
        wait_for(
            lambda: proc.poll() is None and b"following TNS events" in out.read_bytes(),
            90,
            "ansible-rulebook to follow n1's connector",
            interval=0.2,
        )
        lab.kill("n3")
        rc = proc.wait(timeout=180)
        text = out.read_text(errors="replace")
        assert rc == 0, text[-4000:]
        assert " - ERROR - " not in text, text[-4000:]
        for survivor in ("n1", "n2"):
            marker = lab.node_root(survivor) / "var/lib/multiall/eda-member-failed"
            assert marker.read_text() == "lab n3\n", text[-4000:]
        assert not (lab.node_root("n3") / "var/lib/multiall/eda-member-failed").exists()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
