"""Probe packets: per-pool keys, no replay, clock skew reported (connector/probe.py).

Two real Prober objects talk through a recording transport: the datagrams a
test replays are the very bytes a sender produced, as a capture would hold.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import pytest

from connector import probe, tns_cmd
from connector.probe import Prober, next_epoch, open_packet, seal

WEB, DB = b"w" * 64, b"d" * 64
ADDR = {"n1": "198.18.0.11", "n2": "198.18.0.12", "n3": "198.18.0.13"}
# web = n1 n2 n3, db = n1 n3: n2 holds the web key only.
POOLS = {"web": ["n1", "n2", "n3"], "db": ["n1", "n3"]}


class Wire:
    """A transport that keeps every datagram sent, by destination address."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr[0]))

    def last_to(self, node: str) -> bytes:
        return [d for d, a in self.sent if a == ADDR[node]][-1]


def make(node: str, epoch: int = 1, sbm: str = "0", maint: dict | None = None) -> Prober:
    pools = {p: m for p, m in POOLS.items() if node in m}
    keys = {"web": WEB, "db": DB}
    peers = {n: ADDR[n] for m in pools.values() for n in m if n != node}
    state = {"sbm": sbm, "maint": maint or {}}
    prober = Prober(
        node,
        peers,
        7947,
        {p: keys[p] for p in pools},
        pools,
        0.2,
        0.3,
        lambda: None,
        lambda: state["maint"],
        lambda: state["sbm"],
        epoch=epoch,
    )
    prober.state = state  # type: ignore[attr-defined]
    prober.connection_made(Wire())  # type: ignore[arg-type]
    prober._refresh()  # in the start-up grace every peer counts as reachable
    return prober


def ping(sender: Prober, to: str) -> bytes:
    sender._send("ping", to)
    return sender.transport.last_to(to)  # type: ignore[union-attr]


def deliver(receiver: Prober, packet: bytes, sender: str) -> None:
    receiver.datagram_received(packet, (ADDR[sender], 7947))


def past_grace(prober: Prober) -> None:
    prober.started -= 10


# ------------------------------------------------------------------ replay
def test_replayed_packet_does_not_keep_a_dead_peer_reachable():
    n1, n2 = make("n1"), make("n2")
    past_grace(n1)
    captured = ping(n2, "n1")
    deliver(n1, captured, "n2")
    n1._refresh()
    assert n1.observations(pool="web")["n1"]["n2"] is True
    # n2 dies; an attacker re-sends the captured packet (from n2's address) to keep it "up".
    n1.heard["web"]["n2"] -= 1.0
    deliver(n1, captured, "n2")
    n1._refresh()
    assert n1.replayed == 1
    assert n1.observations(pool="web")["n1"]["n2"] is False
    assert n1.last_heard["n2"] < time.monotonic() - 0.9


def test_replayed_packet_does_not_reassert_an_old_sbm_critical():
    n1, n2 = make("n1"), make("n2", sbm="2")
    critical = ping(n2, "n1")
    deliver(n1, critical, "n2")
    assert n1.sbm("web") == {"n2": "2"}
    n2.state["sbm"] = "0"  # type: ignore[attr-defined]
    deliver(n1, ping(n2, "n1"), "n2")
    deliver(n1, critical, "n2")
    assert n1.sbm("web") == {"n2": "0"} and n1.replayed == 1


def test_replayed_packet_does_not_fake_a_maintenance_acknowledgement():
    tag = "1:kernel"
    n1, n2 = make("n1"), make("n2", maint={"n1": tag})
    old_ack = ping(n2, "n1")  # n2 saw n1 in maintenance once
    n2.state["maint"] = {"n1": "0"}  # type: ignore[attr-defined]
    deliver(n1, ping(n2, "n1"), "n2")
    deliver(n1, old_ack, "n2")  # n1 enters maintenance again; the old ack is replayed
    assert n1.peer_maint_seen["n2"]["n1"] == "0"


def test_a_restarted_sender_is_accepted_and_its_old_packets_never_are():
    n1, before = make("n1"), make("n2", epoch=100)
    old = ping(before, "n1")
    deliver(n1, ping(before, "n1"), "n2")
    restarted = make("n2", epoch=101)  # seq starts again at 1, epoch is newer
    deliver(n1, ping(restarted, "n1"), "n2")
    assert n1.accepted[("n2", "web")] == (101, 1) and n1.replayed == 0
    deliver(n1, old, "n2")
    assert n1.replayed == 1 and n1.accepted[("n2", "web")] == (101, 1)


def test_a_replay_older_than_the_skew_window_is_a_replay_not_clock_skew(monkeypatch):
    n1, n2 = make("n1"), make("n2")
    old = ping(n2, "n1")
    deliver(n1, ping(n2, "n1"), "n2")
    real = time.time
    monkeypatch.setattr(probe.time, "time", lambda: real() + 60)  # a minute later
    deliver(n1, old, "n2")
    assert n1.replayed == 1 and n1.skewed() == {}


def test_epoch_grows_at_every_start_even_when_the_clock_went_back(tmp_path, monkeypatch):
    first = next_epoch(str(tmp_path))
    monkeypatch.setattr(probe.time, "time", lambda: 1000.0)  # clock set back by years
    second = next_epoch(str(tmp_path))
    assert second == first + 1 and next_epoch(str(tmp_path)) == first + 2
    assert (tmp_path / probe.EPOCH_FILE).stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------- clock skew
def test_clock_skew_refusal_is_reported_and_logged_once(caplog, monkeypatch):
    n1, n2 = make("n1"), make("n2")
    real = time.time
    monkeypatch.setattr(probe.time, "time", lambda: real() + 45)  # n2's clock runs ahead
    ahead = [ping(n2, "n1") for _round in range(3)]
    monkeypatch.setattr(probe.time, "time", real)
    with caplog.at_level(logging.WARNING, logger="multiall.probe"):
        for packet in ahead:
            deliver(n1, packet, "n2")
    assert "n2" not in n1.views["web"]
    assert 44 < n1.skewed()["n2"] < 46
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "clock is 45.0 s ahead of this node's" in warnings[0]
    deliver(n1, ping(n2, "n1"), "n2")  # clocks agree again: the warning clears
    assert n1.skewed() == {}


def test_status_table_says_when_a_peer_is_refused_for_clock_skew(monkeypatch, capsys):
    reply: dict[str, Any] = {
        "node": "n1",
        "address": "198.18.0.11",
        "version": "1",
        "pools": {},
        "probe_rtt_ms": {},
        "probe_clock_skew": {"n2": -42.5},
    }
    monkeypatch.setattr(tns_cmd, "control_request", lambda *_a, **_k: reply)
    args = argparse.Namespace(socket="/x", json=False, command="status")
    assert tns_cmd.cmd_status(args) == 0
    assert "probes from n2 are refused: its clock is 42.5 s behind" in capsys.readouterr().out
    args.json = True
    tns_cmd.cmd_status(args)
    assert json.loads(capsys.readouterr().out)["probe_clock_skew"] == {"n2": -42.5}


# ---------------------------------------------------------- per-pool keys
def test_one_packet_per_peer_carries_one_signed_section_per_shared_pool():
    n1, n3 = make("n1"), make("n3")
    packet = ping(n3, "n1")
    assert len(n3.transport.sent) == 1  # type: ignore[union-attr]
    msg, verified = open_packet({"web": WEB, "db": DB}, packet)
    assert sorted(msg["pools"]) == verified == ["db", "web"]
    deliver(n1, packet, "n3")
    assert "n3" in n1.observations(pool="web") and "n3" in n1.observations(pool="db")
    # n2 shares only web with n1: it is told nothing about db.
    n1.connection_made(Wire())  # type: ignore[arg-type]
    msg, _pools = open_packet({"web": WEB, "db": DB}, ping(n1, "n2"))
    assert list(msg["pools"]) == ["web"]


def test_a_node_of_one_pool_cannot_speak_for_another_pool():
    n1 = make("n1")
    now = time.time()
    # n2 (web key only) forges a packet from n3's address claiming n1 is down in db,
    # signing the db section with the web key it holds.
    forged = {
        "t": "ping",
        "from": "n3",
        "ep": 1,
        "seq": 1,
        "ts": now,
        "pools": {"web": {"view": {"n1": True}}, "db": {"view": {"n1": False}, "sbm": "2"}},
    }
    body = seal({"web": WEB, "db": WEB}, forged)
    deliver(n1, body, "n3")
    assert "n3" not in n1.observations(pool="db") and n1.sbm("db") == {}
    # The web section verified, but only web members' claims count there.
    assert n1.observations(pool="web")["n3"] == {"n1": True}
    # n2 itself is no db member: even a correctly signed db section from it is ignored.
    claim = {"t": "ping", "from": "n2", "ep": 1, "seq": 2, "ts": now}
    deliver(n1, seal({"db": DB}, {**claim, "pools": {"db": {"view": {"n3": False}}}}), "n2")
    assert "n2" not in n1.observations(pool="db") and n1.rejected == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p.replace(b'"n1":true', b'"n1":false'),  # tampered body
        lambda p: p.rpartition(b".")[0],  # unsigned
        lambda p: p.rpartition(b".")[0] + b"." + b"0" * 64,  # signed with another key
        lambda p: b"[" * 100000,  # not a packet at all
    ],
)
def test_tampered_unsigned_or_foreign_packets_are_rejected(mangle):
    n1, n2 = make("n1"), make("n2")
    deliver(n1, mangle(ping(n2, "n1")), "n2")
    assert n1.rejected == 1 and "n2" not in n1.views["web"]


def test_a_signed_packet_with_a_nan_timestamp_is_rejected():
    n1 = make("n1")
    nan = {"t": "ping", "from": "n2", "ep": 1, "seq": 1, "ts": float("nan")}
    deliver(n1, seal({"web": WEB}, {**nan, "pools": {"web": {"view": {"n1": False}}}}), "n2")
    assert n1.rejected == 1 and "n2" not in n1.views["web"]


def test_spoofed_source_address_and_unknown_senders_are_rejected():
    n1, n2 = make("n1"), make("n2")
    n1.datagram_received(ping(n2, "n1"), ("198.18.0.99", 7947))
    unknown = seal(
        {"web": WEB},
        {"t": "ping", "from": "n9", "ep": 1, "seq": 1, "ts": time.time(), "pools": {"web": {}}},
    )
    n1.datagram_received(unknown, ("198.18.0.12", 7947))
    assert n1.rejected == 2 and "n2" not in n1.views["web"]
    deliver(n1, ping(n2, "n1"), "n2")
    assert n1.rejected == 2 and n1.observations(pool="web")["n2"] == {"n1": True, "n3": True}


def test_a_silent_peer_is_unreachable_after_dead_after():
    n1, n2 = make("n1"), make("n2")
    past_grace(n1)
    deliver(n1, ping(n2, "n1"), "n2")
    n1._refresh()
    assert n1.observations(pool="web")["n1"]["n2"] is True
    n1.heard["web"]["n2"] -= 1.0
    n1._refresh()
    assert n1.observations(pool="web")["n1"]["n2"] is False


def test_a_peer_heard_directly_is_probed_with_its_own_maintenance_tag(monkeypatch):
    """All-to-all: what lets tns.with_probed count a peer alive before Serf has it."""
    n1, n2 = make("n1"), make("n2", maint={"n2": "1:kernel", "n1": "0"})
    past_grace(n1)
    assert n1.probed("web") == {}  # no evidence yet: nobody, whatever the grace says
    deliver(n1, ping(n2, "n1"), "n2")
    assert n1.probed("web") == {"n2": "1:kernel"}
    assert n1.probed("db") == {}  # n2 is not in db: its web section says nothing there
    n1.heard["web"]["n2"] -= 2.5  # silent for longer than the 2 s observers count for
    assert n1.probed("web") == {}
