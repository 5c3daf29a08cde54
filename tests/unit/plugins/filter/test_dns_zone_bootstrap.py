"""The dns_sa role's bootstrap zone comes from the collection's filter, under real Ansible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.takelan.multiall.plugins.filter.dns_zone_bootstrap import FilterModule

ROOT = Path(__file__).resolve().parents[4]


def test_a_dns_section_without_zone_is_refused_with_what_was_given():
    bootstrap = FilterModule().filters()["dns_zone_bootstrap"]
    with pytest.raises(AnsibleFilterError, match=r"expected a pool's dns section with a zone"):
        bootstrap({"ttl": 5}, "198.18.0.10")
    with pytest.raises(AnsibleFilterError, match=r"zone web\.test: .*invalid literal"):
        bootstrap({"zone": "web.test", "ttl": "five"}, "198.18.0.10")


def test_the_role_task_writes_the_zone_through_real_ansible(tmp_path):
    """The role's own task shape: ``copy`` with the filter's text, ``force: false``."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collection"))
    env.pop("ANSIBLE_CONFIG", None)
    dest = tmp_path / "web.pool.example.test.zone"
    section = "{'zone': 'web.pool.example.test', 'ttl': 7}"
    content = f"{{{{ {section} | takelan.multiall.dns_zone_bootstrap('198.18.0.10') }}}}"
    args = json.dumps({"content": content, "dest": str(dest), "force": False})
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-m",
            "ansible.builtin.copy",
            "-a",
            args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = dest.read_text()
    assert "$ORIGIN web.pool.example.test.\n$TTL 7\n" in text
    assert "ns.web.pool.example.test. 7 IN A 198.18.0.10\n" in text
