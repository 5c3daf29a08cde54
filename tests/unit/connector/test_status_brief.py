"""``multiall status --brief``: counts per state, cheap enough to poll many nodes."""

from __future__ import annotations

import argparse
import asyncio
import json

from ansible_collections.takelan.multiall.plugins.module_utils.tns import SerfMember, pool_topology
from test_daemon_faults import make_connector

from connector import tns_cmd
from connector.control import ControlServer


def test_brief_status_counts_states_and_names_who_is_not_alive(tmp_path, capsys, monkeypatch):
    conn = make_connector(tmp_path)
    serf = {
        "n1": SerfMember("n1", "198.18.0.11", "alive", {}),
        "n2": SerfMember("n2", "198.18.0.12", "failed", {}),
        "n3": SerfMember("n3", "198.18.0.13", "alive", {}),
    }
    conn.serf_members = serf
    conn.topology["web"] = pool_topology("web", ["n1", "n2", "n3"], serf, {}, me="n1")
    control = ControlServer(conn)
    brief = asyncio.run(control.dispatch({"op": "status", "brief": True, "member": "n2"}))
    web = brief["pools"]["web"]
    assert web["states"] == {"alive": 2, "failed": 1}
    assert web["declared"] == 3 and web["not_alive"] == ["n2"] and web["quorum"]
    assert brief["serf_alive"] == 2 and brief["serf_members"] == 3
    assert brief["member"] == {"name": "n2", "serf": "failed", "pools": {"web": "failed"}}
    assert "members" not in web  # the per-member details are what makes the full one costly
    full = asyncio.run(control.dispatch({"op": "status"}))
    assert set(full["pools"]["web"]["members"]) == {"n1", "n2", "n3"}

    monkeypatch.setattr(tns_cmd, "control_request", lambda _path, req: {"ok": True, **brief})
    args = argparse.Namespace(socket="/x", json=False, command="status", brief=True)
    assert tns_cmd.cmd_status(args) == 0
    out = capsys.readouterr().out
    assert "pool web: 3 declared: 2 alive, 1 failed; leader n1, quorum yes (not alive: n2)" in out
    args.json = True
    tns_cmd.cmd_status(args)
    assert json.loads(capsys.readouterr().out)["pools"]["web"]["states"]["failed"] == 1


def test_full_status_marks_members_counted_by_their_probes_alone(capsys, monkeypatch):
    """Serf has not reported n3 yet: TNS counts it alive by its probes, and says so."""
    member = {"state": "alive", "sbm": "0", "rtt_ms": None, "reason": "", "down_votes": 0}
    reply = {
        "node": "n1",
        "address": "198.18.0.11",
        "version": "1",
        "probe_rtt_ms": {},
        "serf": {"n1": "alive", "n2": "alive"},
        "pools": {
            "web": {
                "leader": "n1",
                "quorum": True,
                "declared": 3,
                "members": {n: {**member, "observers": 2} for n in ("n1", "n2", "n3")},
            }
        },
    }
    monkeypatch.setattr(tns_cmd, "control_request", lambda *_a, **_k: reply)
    args = argparse.Namespace(socket="/x", json=False, command="status", brief=False)
    assert tns_cmd.cmd_status(args) == 0
    lines = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:3] == "  n"
    }
    assert lines["n3"].endswith("judged by probes alone (not in Serf yet)")
    assert "Serf" not in lines["n1"] and "Serf" not in lines["n2"]
