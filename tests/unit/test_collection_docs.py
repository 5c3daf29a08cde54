"""Every plugin of the collection documents itself the way ansible-doc expects.

Stands in for ``ansible-test sanity`` (validate-modules/ansible-doc), which
cannot run offline here: it bootstraps pip from a CI download host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from connector.ansible_env import ansible_env

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__"
)
INVENTORY = sorted(
    p.stem for p in (ROOT / "plugins" / "inventory").glob("*.py") if p.stem != "__init__"
)


def ansible_doc(kind: str, name: str) -> dict:
    env = ansible_env()
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-doc"),
            "-t",
            kind,
            "--json",
            f"takelan.multiall.{name}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)[f"takelan.multiall.{name}"]


@pytest.mark.parametrize("name", MODULES)
def test_module_has_full_documentation(name):
    doc = ansible_doc("module", name)
    assert doc["doc"]["short_description"]
    assert doc["doc"]["description"]
    assert doc["doc"]["attributes"]["check_mode"]["support"] in ("full", "partial")
    assert "diff_mode" in doc["doc"]["attributes"]
    for option, spec in doc["doc"]["options"].items():
        assert spec.get("description"), f"option {option} has no description"
        assert spec.get("type"), f"option {option} has no type"
    examples = yaml.safe_load(doc["examples"])
    assert isinstance(examples, list) and examples
    assert all(
        any(k.startswith("takelan.multiall.") or k.startswith("ansible.builtin.") for k in task)
        for task in examples
    )
    assert doc["return"], "RETURN is empty"


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_check_mode_support(name):
    source = (ROOT / "plugins" / "modules" / f"{name}.py").read_text()
    assert "supports_check_mode=True" in source


@pytest.mark.parametrize("name", INVENTORY)
def test_inventory_plugin_has_documentation(name):
    doc = ansible_doc("inventory", name)
    assert doc["doc"]["options"]["plugin"]["choices"] == [f"takelan.multiall.{name}"]
    assert yaml.safe_load(doc["examples"])
