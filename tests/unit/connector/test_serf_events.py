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


class TagRecorder:
    """Stands in for the agent's RPC: records each tag update (each one is gossiped)."""

    def __init__(self) -> None:
        self.updates: list[dict] = []

    async def set_tags(self, tags: dict, delete: list | None = None) -> None:
        self.updates.append(dict(tags))


def test_only_tags_the_agent_lacks_are_set_each_update_is_gossiped_to_every_member(tmp_path):
    connector = make_connector(tmp_path)
    rpc = TagRecorder()
    own = {"maint": connector.maint_tag, "sbm": connector.sbm_tag, "sl": ""}
    connector.serf_members = {
        connector.node: Member(connector.node, "198.18.0.1", 7946, "alive", own)
    }
    asyncio.run(connector._publish_tags(rpc))
    assert rpc.updates == []  # the agent started with these tags: no update on connecting
    connector.maint_tag = "1:drain"
    asyncio.run(connector._publish_tags(rpc))
    assert rpc.updates == [{"maint": "1:drain"}]  # only the one that differs

    connector.rpc = rpc
    asyncio.run(connector.set_tag("sl", ""))
    assert len(rpc.updates) == 1  # the agent has it already
    asyncio.run(connector.set_tag("sl", "9d8e6099"))
    assert rpc.updates[-1] == {"sl": "9d8e6099"}


def test_a_fresh_agent_without_a_member_record_gets_every_tag(tmp_path):
    connector = make_connector(tmp_path)
    rpc = TagRecorder()
    connector.serf_members = {}
    asyncio.run(connector._publish_tags(rpc))
    assert rpc.updates and set(rpc.updates[0]) == {"maint", "sbm", "sl"}


def test_a_software_facts_tag_update_needs_no_topology_pass(tmp_path):
    # Every member's ``sl`` tag changes at once when a pool starts or is upgraded:
    # a topology pass for each update cost the pool O(N^2) in the middle of it.
    connector = make_connector(tmp_path)
    connector._apply_member_event(event("member-join", ("n2", "alive")))
    connector.dirty.clear()
    tagged = Member("n2", "198.18.0.1", 7946, "alive", {"maint": "0", "sl": "9d8e6099"})
    connector._apply_member_event({"Event": "member-update", "Members": [tagged]})
    assert connector.serf_members["n2"].tags["sl"] == "9d8e6099"  # the table has it
    assert not connector.dirty.is_set()
    drained = Member("n2", "198.18.0.1", 7946, "alive", {"maint": "1:x", "sl": "9d8e6099"})
    connector._apply_member_event({"Event": "member-update", "Members": [drained]})
    assert connector.dirty.is_set()  # maintenance does change the topology


class MemberLister:
    """Stands in for the agent's RPC: counts whole member lists asked for."""

    def __init__(self, members: list) -> None:
        self.members_asked = 0
        self.list = members

    async def members(self) -> list:
        self.members_asked += 1
        return self.list

    async def coordinate(self, name: str) -> dict:
        raise SerfError("no coordinates in this test")


def test_progress_is_read_from_the_event_table_not_by_asking_for_every_member(
    tmp_path, monkeypatch
):
    # While peers are missing the connector looks every JOIN_RETRY s. Asking Serf for
    # the whole member list each time cost a pool of 128 starting at once 256 lists of
    # 128 members a second; the events keep the table, the list is belt and braces.
    from connector import serf_link

    monkeypatch.setattr(serf_link, "JOIN_RETRY", 0.02)
    connector = make_connector(tmp_path)
    connector.poll_interval = 1.0
    rpc = MemberLister([Member("n2", "198.18.0.1", 7946, "alive", {"maint": "0"})])
    connector.rpc = rpc
    connector._join_soon = lambda: None

    async def main() -> None:
        poll = asyncio.create_task(connector._poll_members())
        await asyncio.sleep(0.3)  # ~15 looks
        poll.cancel()

    asyncio.run(main())
    assert rpc.members_asked == 1
    assert "n2" in connector.serf_members


def test_a_member_serf_has_not_reported_is_alive_by_its_probes(tmp_path):
    """Before Serf gossips n3 to n1, n1's topology counts it by its signed probes
    (maintenance included), echoes its tag (the acknowledgement maintenance waits
    for) and takes the view as the baseline events diff from."""
    connector = make_connector(tmp_path)
    connector._apply_member_event(event("member-join", ("n2", "alive")))
    connector.prober.probed = lambda pool: {"n3": "1:kernel"}  # type: ignore[method-assign]

    async def scenario():
        task = asyncio.create_task(connector.recompute())
        connector.dirty.set()
        while "web" not in connector.topology:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    members = connector.topology["web"].members
    assert {n: m.state for n, m in members.items()} == {
        "n1": "alive",
        "n2": "alive",
        "n3": "maintenance",
    }
    assert connector._maint_seen()["n3"] == "1:kernel"
    assert connector.baseline  # every member seen: by Serf, or by its probes
