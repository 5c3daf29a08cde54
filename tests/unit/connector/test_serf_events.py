"""Serf member events update the daemon's member table by themselves (no member poll).

At start-up every node sees one event per member joining; answering each by
asking Serf for the whole member list cost a pool of N nodes N^3 member reads.
"""

from __future__ import annotations

import asyncio

import msgpack
from test_daemon_faults import make_connector

from connector.serf import Member, SerfClient, SerfError


def event(kind: str, *members: tuple[str, str]) -> dict:
    return {
        "Event": kind,
        "Members": [Member(n, "198.18.0.1", 7946, status, {"maint": "0"}) for n, status in members],
    }


def test_member_events_apply_without_asking_serf(tmp_path):
    connector = make_connector(tmp_path)
    assert connector.rpc is None  # nothing to ask: the events alone must do it
    connector._apply_member_event(event("member-join", ("n2", "alive"), ("n3", "alive")))
    first = connector.serf_members
    assert {n: m.status for n, m in first.items()} == {"n2": "alive", "n3": "alive"}
    assert connector.dirty.is_set()

    connector.dirty.clear()
    connector._apply_member_event(event("member-failed", ("n2", "failed")))
    assert connector.serf_members["n2"].status == "failed"
    assert first["n2"].status == "alive"  # replaced, not changed in place
    assert connector.dirty.is_set()

    connector.dirty.clear()
    connector._apply_member_event(event("member-update", ("n3", "alive")))
    assert not connector.dirty.is_set()  # nothing changed: no recompute

    connector._apply_member_event(event("member-reap", ("n2", "failed")))
    assert set(connector.serf_members) == {"n3"} and connector.dirty.is_set()


def test_a_late_answer_is_dropped_and_the_connection_goes_on():
    """A request that timed out gets its answer later: its body must not be read as a header."""

    async def handle(reader, writer):
        unpacker = msgpack.Unpacker(raw=False)
        late = None
        while chunk := await reader.read(65536):
            unpacker.feed(chunk)
            for item in unpacker:
                if "Command" not in item:
                    continue  # a request body
                seq = item["Seq"]
                if item["Command"] == "members" and late is None:
                    late = seq  # answered only with the next request, after the timeout
                    continue
                answer = b""
                if late is not None:
                    answer += msgpack.packb({"Seq": late, "Error": ""})
                    answer += msgpack.packb({"Members": []})
                    late = None
                answer += msgpack.packb({"Seq": seq, "Error": ""})
                if item["Command"] == "members":
                    answer += msgpack.packb({"Members": [{"Name": "n2", "Status": "alive"}]})
                writer.write(answer)
        writer.close()

    async def scenario():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        client = SerfClient("127.0.0.1", server.sockets[0].getsockname()[1])
        await client.connect()
        try:
            await client.request("members", timeout=0.2)
        except SerfError:
            pass
        else:
            raise AssertionError("the first request should have timed out")
        members = await client.members()
        await client.close()
        server.close()
        return members

    members = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert [m.name for m in members] == ["n2"]
