"""dns_zone against a real served zone: a small authoritative stand-in on loopback.

The stand-in answers UDP/TCP queries from a dict and applies TSIG-signed
RFC 2136 updates (refusing a wrong secret with BADSIG, as BIND does), so the
module is exercised through its real dnspython client code: what it reads,
what it sends, and that check mode sends nothing.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import pytest
from ansible_collections.takelan.multiall.plugins.modules import dns_zone
from module_harness import ModuleFail

ZONE = "web.pool.example.test"
KEY_NAME = "multiall-test"
SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OMIT = object()  # an option left out of the task, unlike an explicit null
ADDRESSES = {"n1": "198.18.0.11", "n2": "198.18.0.12", "n3": "198.18.0.13"}

MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web]}
  n2: {address: 198.18.0.12, pools: [web]}
  n3: {address: 198.18.0.13, pools: [web]}
pools:
  web:
    dns: {zone: web.pool.example.test, server: 127.0.0.1, ttl: 5}
"""


class ZoneStandIn:
    """One authoritative zone on 127.0.0.1 (UDP and TCP on one port)."""

    def __init__(self, records: dict[tuple[str, str], tuple[int, list[str]]]) -> None:
        self.origin = dns.name.from_text(ZONE)
        self.keyring = dns.tsigkeyring.from_text({KEY_NAME: ("hmac-sha256", SECRET)})
        self.records = dict(records)
        self.updates = 0
        self.udp, self.tcp = _bind_pair()
        self.port = self.udp.getsockname()[1]
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -------------------------------------------------------------- protocol
    def handle(self, wire: bytes) -> bytes:
        """One request in, one response out (signed when the request was)."""
        try:
            request = dns.message.from_wire(wire, keyring=self.keyring)
        except dns.tsig.BadSignature:
            request = dns.message.from_wire(wire, keyring=False)
            response = dns.message.make_response(request)
            response.set_rcode(dns.rcode.NOTAUTH)
            response.use_tsig(self.keyring[request.keyname], tsig_error=dns.rcode.BADSIG, fudge=300)
            response.request_mac = request.mac
            return response.to_wire()
        response = dns.message.make_response(request)
        if request.opcode() == dns.opcode.UPDATE:
            self._apply(request)
        else:
            question = request.question[0]
            key = (self._relative(question.name), dns.rdatatype.to_text(question.rdtype))
            if key in self.records:
                ttl, values = self.records[key]
                response.answer.append(
                    dns.rrset.from_text_list(question.name, ttl, "IN", key[1], values)
                )
        return response.to_wire()

    def _relative(self, name: dns.name.Name) -> str:
        return name.relativize(self.origin).to_text()

    def _apply(self, update: dns.message.Message) -> None:
        """RFC 2136 section 3.4.2, for the operations dnspython's replace/delete send."""
        self.updates += 1
        for rrset in update.update:
            key = (self._relative(rrset.name), dns.rdatatype.to_text(rrset.rdtype))
            if rrset.deleting == dns.rdataclass.ANY:
                self.records.pop(key, None)
            elif rrset.deleting == dns.rdataclass.NONE:
                ttl, values = self.records.get(key, (0, []))
                gone = {r.to_text() for r in rrset}
                self.records[key] = (ttl, [v for v in values if v not in gone])
            else:
                _ttl, values = self.records.get(key, (rrset.ttl, []))
                added = [r.to_text() for r in rrset if r.to_text() not in values]
                self.records[key] = (rrset.ttl, values + added)

    def values(self, name: str, rtype: str = "A") -> list[str]:
        """What the zone serves now for ``name``/``rtype``, sorted."""
        return sorted(self.records.get((name, rtype), (0, []))[1])

    # ------------------------------------------------------------- transport
    def _serve_udp(self) -> None:
        while True:
            try:
                wire, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            if not wire:  # shutdown by stop()
                return
            self.udp.sendto(self.handle(wire), peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _peer = self.tcp.accept()
            except OSError:
                return
            with conn:
                while header := _recv_exact(conn, 2):
                    wire = _recv_exact(conn, struct.unpack("!H", header)[0])
                    reply = self.handle(wire)
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

    def stop(self) -> None:
        """Close both sockets (shutdown wakes the blocked accept/recv)."""
        for sock in (self.tcp, self.udp):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same free loopback port."""
    for _attempt in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(4)
        return udp, tcp
    raise RuntimeError("no free loopback port for both UDP and TCP")


def served_now(*members: str) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """A zone that already serves the node names and ``members`` in the pool record."""
    records = {(n, "A"): (5, [a]) for n, a in ADDRESSES.items()}
    records[("@", "A")] = (5, [ADDRESSES[m] for m in members])
    records[("@", "SOA")] = (5, [f"ns.{ZONE}. admin.{ZONE}. 7 3600 600 86400 5"])
    return records


@pytest.fixture
def zone() -> Iterator[ZoneStandIn]:
    """The pool's zone serving n1, n2 and n3 (all three in the pool record)."""
    server = ZoneStandIn(served_now("n1", "n2", "n3"))
    yield server
    server.stop()


@pytest.fixture
def args(tmp_path, zone: ZoneStandIn) -> dict[str, Any]:
    """Arguments aimed at the stand-in, with the test TSIG key given inline."""
    path = tmp_path / "pools.yml"
    path.write_text(MODEL)
    return {
        "pool": "web",
        "pools_file": str(path),
        "server": "127.0.0.1",
        "port": zone.port,
        "key_name": KEY_NAME,
        "key_secret": SECRET,
        "timeout": 2,
    }


def test_a_member_that_left_is_removed_with_one_signed_update(run_module, zone, args):
    result = run_module(dns_zone, dict(args, members=["n1", "n2"]), diff=True)
    assert result["changed"] is True
    assert result["records"] == ["- @ IN A 198.18.0.13"]
    assert result["members"] == ["n1", "n2"]
    assert zone.values("@") == ["198.18.0.11", "198.18.0.12"]
    assert zone.updates == 1 and result["update_ms"] >= 0
    assert "@ 5 IN A 198.18.0.13" in result["diff"]["before"]
    assert "@ 5 IN A 198.18.0.13" not in result["diff"]["after"]
    assert result["changes"] == [
        {
            "name": "@",
            "type": "A",
            "ttl": 5,
            "add": [],
            "remove": ["198.18.0.13"],
            "values": ["198.18.0.11", "198.18.0.12"],
        }
    ]
    # The second run finds the zone as wanted: nothing is sent.
    again = run_module(dns_zone, dict(args, members=["n1", "n2"]))
    assert again["changed"] is False and again["records"] == []
    assert zone.updates == 1


def test_check_mode_shows_the_change_and_sends_nothing(run_module, zone, args):
    result = run_module(dns_zone, dict(args, members=["n1"]), check_mode=True, diff=True)
    assert result["changed"] is True
    assert sorted(result["records"]) == ["- @ IN A 198.18.0.12", "- @ IN A 198.18.0.13"]
    assert result["diff"]["after"].count("@ 5 IN A") == 1
    assert "update_ms" not in result
    assert zone.updates == 0
    assert zone.values("@") == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]


def test_members_come_from_the_connector_with_quorum(run_module, zone, args, connector):
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        pool = {"quorum": True, "fresh_majority": True}
        pool["members"] = {"members": ["n2", "n3"], "kept_last": []}
        return {"ok": True, "node": "n2", "pools": {"web": pool}}

    control = connector(answer)
    result = run_module(dns_zone, dict(args, socket=control.path))
    assert control.requests == [{"op": "dns", "pool": "web"}]
    assert result["members"] == ["n2", "n3"] and result["kept_last"] == []
    assert zone.values("@") == ["198.18.0.12", "198.18.0.13"]


def test_without_quorum_dns_is_left_alone(run_module, zone, args, connector):
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        pool = {"quorum": False, "members": {"members": ["n1"], "kept_last": []}}
        return {"ok": True, "node": "n1", "pools": {"web": pool}}

    control = connector(answer)
    with pytest.raises(ModuleFail) as failed:
        run_module(dns_zone, dict(args, socket=control.path))
    assert "has no quorum in n1's view" in failed.value.result["msg"]
    assert failed.value.result["changed"] is False
    assert zone.updates == 0


def test_a_wrong_tsig_secret_fails_clearly_and_changes_nothing(run_module, zone, args):
    wrong = base64.b64encode(b"not-the-secret-of-the-server-!!!").decode()
    with pytest.raises(ModuleFail) as failed:
        run_module(dns_zone, dict(args, members=["n1"], key_secret=wrong))
    assert (
        "rejected the signature of TSIG key 'multiall-test' (BADSIG)"
        in (failed.value.result["msg"])
    )
    assert zone.values("@") == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"members": []}, "members is empty: DNS never removes the last member"),
        ({"members": ["n9"]}, "not members of the pool: n9"),
        ({"pool": "db"}, "no pool 'db' in the pool model"),
        ({"key_secret": "not base64!"}, "key_secret: the secret of TSIG key"),
        ({"key_name": OMIT}, "parameters are required together: key_name, key_secret"),
        ({"key_name": None}, "missing parameter(s) required by 'key_secret': key_name"),
        (
            {"key_name": None, "key_secret": None, "key_file": "/nonexistent/dns.key"},
            "/nonexistent/dns.key: cannot read the TSIG key",
        ),
        ({"mode": "axfr"}, "value of mode must be one of: update, rebuild, push, got: axfr"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(run_module, zone, args, change, needle):
    given = {k: v for k, v in {**args, "members": ["n1"], **change}.items() if v is not OMIT}
    with pytest.raises(ModuleFail) as failed:
        run_module(dns_zone, given)
    assert needle in failed.value.result["msg"]
    assert zone.updates == 0


def test_the_server_not_answering_is_named(run_module, zone, args):
    port = zone.port
    zone.stop()
    with pytest.raises(ModuleFail) as failed:
        run_module(dns_zone, dict(args, members=["n1"], port=port, timeout=0.3))
    assert f"DNS server 127.0.0.1:{port} does not answer" in failed.value.result["msg"]


def test_without_dnspython_the_module_asks_for_it(run_module, args, monkeypatch):
    monkeypatch.setattr(dns_zone, "HAS_DNSPYTHON", False)
    with pytest.raises(ModuleFail) as failed:
        run_module(dns_zone, dict(args, members=["n1"]))
    assert "Failed to import the required Python library (dnspython" in failed.value.result["msg"]


def test_rebuild_in_check_mode_renders_a_newer_serial_and_writes_nothing(
    run_module, zone, args, tmp_path
):
    zone_file = tmp_path / "web.zone"
    result = run_module(
        dns_zone,
        dict(args, members=["n1"], mode="rebuild", zone_file=str(zone_file)),
        check_mode=True,
    )
    assert result["changed"] is True
    assert result["serial"] > 7  # the served SOA serial was 7
    assert "zone_file" not in result and not zone_file.exists()
    assert zone.updates == 0


def test_rebuild_into_an_unwritable_place_fails_with_what_to_do(run_module, zone, args, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with pytest.raises(ModuleFail) as failed:
        run_module(
            dns_zone,
            dict(args, members=["n1"], mode="rebuild", zone_file=str(blocker / "web.zone")),
        )
    msg = failed.value.result["msg"]
    assert "cannot write a new zone file in" in msg and "not-a-directory" in msg
    assert "become: true" in msg and "the live zone is unchanged" in msg


def test_key_file_is_the_pools_own(run_module, zone, args, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "web.key").write_text(
        f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'
    )
    pooled = dict(args, key_name=None, key_secret=None, key_file=str(keys / "{pool}.key"))
    result = run_module(dns_zone, dict(pooled, members=["n1", "n2"]))
    assert result["changed"] is True and zone.values("@") == ["198.18.0.11", "198.18.0.12"]
    # Another pool's file is not read for web.
    (keys / "web.key").rename(keys / "db.key")
    with pytest.raises(ModuleFail) as failed:
        run_module(dns_zone, dict(pooled, members=["n1"]))
    assert f"{keys}/web.key: cannot read the TSIG key" in failed.value.result["msg"]


def test_push_mode_check_mode_diffs_against_the_pushed_file(run_module, zone, args, tmp_path):
    push_dir = tmp_path / "dns-push"
    model = MODEL.replace("ttl: 5}", f"ttl: 5, mode: push, push_dir: {push_dir}}}")
    (tmp_path / "pools.yml").write_text(model + f"    files: {{{push_dir}: {{}}}}\n")
    result = run_module(dns_zone, dict(args, members=["n1", "n2"]), check_mode=True)
    assert result["changed"] is True and not push_dir.exists()  # check mode writes nothing
    assert result["diff"]["before"] == "" and "@ 5 IN A 198.18.0.12" in result["diff"]["after"]
    assert result["diff"]["before_header"].endswith(f"{ZONE}.zone (pushed)")
    done = run_module(dns_zone, dict(args, members=["n1", "n2"]))
    pushed = push_dir / f"{ZONE}.zone"
    assert done["changed"] and pushed.read_text() == result["diff"]["after"].replace(
        str(result["serial"]), str(done["serial"])
    )
    again = run_module(dns_zone, dict(args, members=["n1", "n2"]), check_mode=True)
    assert again["changed"] is False and again["diff"]["before"] == pushed.read_text()
    assert zone.updates == 0  # push mode never sends a dynamic update
