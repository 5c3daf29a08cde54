"""tns_maintenance against a connector stand-in that speaks the real control protocol."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.takelan.multiall.plugins.modules import tns_maintenance
from module_harness import ModuleFail


class FakeConnector:
    """Keeps the node's ``maint`` tag the way the daemon does (``0`` or ``1:<reason>``)."""

    def __init__(self, tag: str = "0", not_acknowledged_by: list[str] | None = None) -> None:
        self.tag = tag
        self.not_acknowledged_by = not_acknowledged_by or []

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "status":
            return {"ok": True, "node": "n1", "maintenance": self.tag}
        if request["op"] == "maintenance":
            enter = request["action"] == "enter"
            self.tag = f"1:{request['reason']}" if enter else "0"
            return {
                "ok": not self.not_acknowledged_by,
                "maintenance": enter,
                "reason": request["reason"],
                "waited_s": 0.25,
                "not_acknowledged_by": self.not_acknowledged_by,
                "dns": {"web": "drained"} if enter else {},
                "not_drained": [],
            }
        return {"ok": False, "error": f"unknown op {request['op']!r}"}


@pytest.fixture
def fake(connector):
    """A FakeConnector served on a real unix socket; ``fake.server.path`` is the socket."""
    state = FakeConnector()
    state.server = connector(state.answer)
    return state


def test_entering_maintenance_sets_the_flag_and_reports_the_drain(run_module, fake):
    result = run_module(
        tns_maintenance,
        {"socket": fake.server.path, "reason": "kernel upgrade", "timeout": 3},
        diff=True,
    )
    assert result["changed"] is True
    assert result["maintenance"] is True and result["reason"] == "kernel upgrade"
    assert result["diff"] == {
        "before": {"maintenance": False, "reason": ""},
        "after": {"maintenance": True, "reason": "kernel upgrade"},
    }
    assert result["dns"] == {"web": "drained"} and result["waited"] == 0.25
    assert fake.tag == "1:kernel upgrade"
    sent = fake.server.requests[-1]
    assert sent == {
        "op": "maintenance",
        "action": "enter",
        "reason": "kernel upgrade",
        "timeout": 3,
    }


def test_same_flag_and_reason_again_changes_nothing(run_module, fake):
    fake.tag = "1:kernel upgrade"
    result = run_module(tns_maintenance, {"socket": fake.server.path, "reason": "kernel upgrade"})
    assert result["changed"] is False
    assert result["maintenance"] is True and result["reason"] == "kernel upgrade"
    assert fake.server.ops() == ["status"]


def test_check_mode_predicts_the_change_and_sends_none(run_module, fake):
    result = run_module(
        tns_maintenance,
        {"socket": fake.server.path, "reason": "disk swap"},
        check_mode=True,
        diff=True,
    )
    assert result["changed"] is True
    assert result["diff"]["after"] == {"maintenance": True, "reason": "disk swap"}
    assert fake.server.ops() == ["status"]
    assert fake.tag == "0"


def test_a_new_reason_updates_the_flag(run_module, fake):
    fake.tag = "1:kernel upgrade"
    result = run_module(tns_maintenance, {"socket": fake.server.path, "reason": "disk swap"})
    assert result["changed"] is True
    assert result["diff"]["before"] == {"maintenance": True, "reason": "kernel upgrade"}
    assert fake.tag == "1:disk swap"


def test_leaving_maintenance_clears_the_flag_once(run_module, fake):
    fake.tag = "1:kernel upgrade"
    result = run_module(tns_maintenance, {"socket": fake.server.path, "state": "absent"})
    assert result["changed"] is True and result["maintenance"] is False
    assert fake.tag == "0"
    again = run_module(tns_maintenance, {"socket": fake.server.path, "state": "absent"})
    assert again["changed"] is False


def test_peers_that_do_not_acknowledge_fail_the_task_by_name(run_module, fake):
    fake.not_acknowledged_by = ["n3"]
    with pytest.raises(ModuleFail) as failed:
        run_module(tns_maintenance, {"socket": fake.server.path, "reason": "r"})
    result = failed.value.result
    assert result["msg"] == "maintenance flag set on n1, but not yet seen by: n3"
    assert result["not_acknowledged_by"] == ["n3"] and result["not_drained"] == []
    assert result["changed"] is True  # the flag is set and stays set


def test_no_connector_is_a_clear_failure(run_module, tmp_path):
    missing = str(tmp_path / "absent.sock")
    with pytest.raises(ModuleFail) as failed:
        run_module(tns_maintenance, {"socket": missing})
    assert f"cannot reach the connector at {missing}" in failed.value.result["msg"]


def test_a_wrong_state_names_the_choices(run_module, fake):
    with pytest.raises(ModuleFail) as failed:
        run_module(tns_maintenance, {"socket": fake.server.path, "state": "on"})
    assert "value of state must be one of: present, absent, got: on" in failed.value.result["msg"]
    assert fake.server.requests == []
