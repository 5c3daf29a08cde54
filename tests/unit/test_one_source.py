"""Facts that YAML and stand-alone files must state as text stay equal to their one source.

Python code imports ``DEFAULT_SOCKET``, ``EVENT_TYPES`` and the model path from
``module_utils``; role defaults, playbooks and the EDA source's documentation
cannot, so these tests fail the moment a copy drifts from the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml
from ansible_collections.takelan.multiall.plugins.module_utils._control import DEFAULT_SOCKET
from ansible_collections.takelan.multiall.plugins.module_utils.pools import DEFAULT_PATH
from ansible_collections.takelan.multiall.plugins.module_utils.tns import EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
EDA = ROOT / "extensions/eda/plugins/event_source"


def _yaml(path: str) -> object:
    return yaml.safe_load((ROOT / path).read_text())


def _module_constant(path: Path, name: str) -> object:
    """A module-level constant read without importing the file."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path}: no {name}")


def test_every_stated_control_socket_is_the_module_utils_default() -> None:
    stated = {
        "EDA source constant": _module_constant(EDA / "tns.py", "DEFAULT_SOCKET"),
        "EDA source doc": _yaml("extensions/eda/plugins/event_source/tns.yml")["DOCUMENTATION"][
            "options"
        ]["socket"]["default"],
        "tns role default": _yaml("roles/tns/defaults/main.yml")["tns_control_socket"],
        "dns_reaction.yml": _yaml("playbooks/dns_reaction.yml")[0]["vars"]["multiall_socket"],
    }
    assert stated == dict.fromkeys(stated, DEFAULT_SOCKET)


def test_dns_reaction_playbook_reads_the_default_model_path() -> None:
    play = _yaml("playbooks/dns_reaction.yml")[0]
    assert play["vars"]["multiall_pools_file"] == DEFAULT_PATH


def test_eda_source_documents_every_event_type() -> None:
    doc = " ".join(
        _yaml("extensions/eda/plugins/event_source/tns.yml")["DOCUMENTATION"]["description"]
    )
    docstring = ast.get_docstring(ast.parse((EDA / "tns.py").read_text())) or ""
    for event_type in EVENT_TYPES:
        assert event_type in doc, f"tns.yml does not mention {event_type}"
        assert event_type in docstring, f"tns.py's docstring does not mention {event_type}"


def test_the_fs_sa_role_writes_the_peer_transport_where_the_code_reads_it() -> None:
    from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
        PEER_DIR,
        RECEIVE_WRAPPER,
    )

    assert _yaml("roles/fs_sa/defaults/main.yml")["fs_sa_peer_dir"] == PEER_DIR
    tasks = (ROOT / "roles/fs_sa/tasks/main.yml").read_text()
    assert f"dest: {RECEIVE_WRAPPER}\n" in tasks
