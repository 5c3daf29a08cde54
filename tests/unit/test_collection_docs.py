"""Every plugin of the collection documents itself the way ansible-doc expects.

Stands in for ``ansible-test sanity`` (validate-modules/ansible-doc), which
cannot run offline here: it bootstraps pip from a CI download host.
"""

from __future__ import annotations

import functools
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


@functools.cache
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
        check=False,
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


def _spec_view(spec: dict[str, Any]) -> dict[str, Any]:
    """What an argument spec says about one option, in the terms DOCUMENTATION uses."""
    return {
        "type": spec.get("type", "str"),
        "elements": spec.get("elements"),
        "default": spec.get("default"),
        "choices": list(spec.get("choices") or []),
        "required": bool(spec.get("required", False)),
        "aliases": sorted(spec.get("aliases") or []),
    }


@pytest.mark.parametrize("name", MODULES)
def test_argument_spec_matches_the_documentation(name):
    """Options, types, defaults, choices, required and aliases agree, fragments merged.

    The documentation is what ``ansible-doc`` shows a user (doc fragments
    merged); the spec is what the module passes to ``AnsibleModule``.
    """
    module = importlib.import_module(f"ansible_collections.takelan.multiall.plugins.modules.{name}")
    spec = module.argument_spec().argument_spec
    documented = ansible_doc("module", name)["doc"]["options"]
    assert sorted(spec) == sorted(documented), "options differ between spec and DOCUMENTATION"
    for option, doc in documented.items():
        assert _spec_view(spec[option]) == _spec_view(doc), f"{name}: option {option}"


def test_doc_fragments_state_the_defaults_the_code_uses():
    """The socket and model paths are typed once in code; the fragments must say the same."""
    from ansible_collections.takelan.multiall.plugins.doc_fragments import connector, pools
    from ansible_collections.takelan.multiall.plugins.module_utils._control import DEFAULT_SOCKET
    from ansible_collections.takelan.multiall.plugins.module_utils.pools import DEFAULT_PATH

    socket_doc = yaml.safe_load(connector.ModuleDocFragment.DOCUMENTATION)["options"]["socket"]
    assert socket_doc["default"] == DEFAULT_SOCKET
    model_doc = yaml.safe_load(pools.ModuleDocFragment.DOCUMENTATION)["options"]["pools_file"]
    assert model_doc["default"] == DEFAULT_PATH


@pytest.mark.parametrize("name", MODULES)
def test_modules_share_one_name_for_the_model_and_the_socket(name):
    """``pools_file`` (alias ``path``) and ``socket`` mean the same in every module."""
    documented = ansible_doc("module", name)["doc"]["options"]
    assert "path" not in documented, "the model path is pools_file (path is its alias)"
    if "pools_file" in documented:
        assert documented["pools_file"]["aliases"] == ["path"]
    if "socket" in documented:
        assert "connector" in documented["socket"]["description"][0].lower()
