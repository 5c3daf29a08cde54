"""The SL facts answer: chunks that fit a Serf query, reassembled and checked on the other side."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import msgpack
import pytest

from connector import sl_agent


def facts(n: int) -> dict:
    return {
        "node": "n1",
        "at": 1.0,
        "digest": "abcdef0123456789",
        "packages": {f"package-number-{i}": [f"{i}.0-{i % 7}+deb12u1", 0] for i in range(n)},
        "services": {"ssh": ["started", True]},
        "libraries": {f"libthing{i}.so.{i % 3}": f"libthing{i}" for i in range(n)},
    }


def test_facts_of_500_packages_travel_in_answers_under_serf_limit():
    answers = sl_agent.pack(facts(500))
    assert all(len(a) <= 1000 for a in answers)  # Serf answers are capped at 1024 bytes
    parts = [sl_agent.split("n1", a) for a in answers]
    assert [h["i"] for h, _c in parts] == list(range(len(answers)))
    assert sl_agent.unpack("n1", [c for _h, c in parts]) == json.loads(json.dumps(facts(500)))


def test_corrupt_or_foreign_answers_are_rejected_with_the_node_named():
    with pytest.raises(ValueError, match="n2 sent a malformed SL facts answer"):
        sl_agent.split("n2", b"not json\nxx")
    _header, chunk = sl_agent.split("n2", sl_agent.pack(facts(3))[0])
    with pytest.raises(ValueError, match="n2 sent SL facts that do not decompress"):
        sl_agent.unpack("n2", [chunk[:-5]])


def serf_message_size(node: str, answer: bytes) -> int:
    """Size Serf checks against query_response_size_limit: type byte + messageQueryResponse."""
    body = {"LTime": 2**40, "ID": 2**31, "From": node, "Flags": 0, "Payload": answer}
    return 1 + len(msgpack.packb(body, use_bin_type=False))


def test_every_chunk_fits_serf_response_limit_with_long_node_names():
    # An oversized answer is refused by Serf (the responder only gets an RPC error), so the
    # asker saw two timeouts for that chunk: the limit must hold for real node names too.
    node = "web-frontend-eu-west-1-node-017.example.org"
    answers = sl_agent.pack(facts(800) | {"digest": "f" * 16})
    assert len(answers) > 10  # two-digit part numbers: the longest headers
    assert max(serf_message_size(node, a) for a in answers) <= sl_agent.SERF_LIMIT


class FakeRpc:
    """Serf RPC stand-in: each target node answers the part asked from its packed facts."""

    def __init__(self, facts_of: dict[str, dict], garble: dict[str, int] | None = None) -> None:
        self.answers = {node: sl_agent.pack(f) for node, f in facts_of.items()}
        self.garble = dict(garble or {})  # node -> how many of its answers arrive garbled
        self.silent: set[str] = set()  # nodes whose answers are lost
        self.after_part0: dict[str, dict] = {}  # node -> facts it has once its part 0 is sent
        self.queries: list[tuple[int, list[str]]] = []

    async def query(self, name, payload, nodes, timeout, expect, on_answer=None):
        part = json.loads(payload)["part"]
        self.queries.append((part, list(nodes)))
        out = [{"from": "intruder", "payload": b"not asked"}]
        for node in nodes:
            if node in self.silent:
                continue
            answers = self.answers[node]
            data = answers[min(part, len(answers) - 1)]
            if part == 0 and node in self.after_part0:  # it re-collects right after
                self.answers[node] = sl_agent.pack(self.after_part0.pop(node))
            if self.garble.get(node):
                self.garble[node] -= 1
                data = b"\x00" + data[:30]
            out.append({"from": node, "payload": data})
        for answer in out:
            if on_answer is not None and on_answer(answer):
                break
        return out


def agent_with(rpc: FakeRpc) -> sl_agent.SlAgent:
    connector = SimpleNamespace(node="n1", rpc=rpc, serf_members={})
    return sl_agent.SlAgent(connector, {})  # type: ignore[arg-type]


def test_a_pool_is_read_with_one_query_per_part_not_one_per_node_and_part():
    # 247 per-node queries (19 peers x 13 parts) overflowed Serf's gossip under load.
    peers = {f"n{i}": facts(300 + 50 * i) | {"node": f"n{i}"} for i in range(2, 8)}
    rpc = FakeRpc(peers)
    got = asyncio.run(agent_with(rpc).fetch_many(sorted(peers)))
    assert got == json.loads(json.dumps(peers))
    most = max(len(sl_agent.pack(f)) for f in peers.values())
    assert len(rpc.queries) == most
    assert rpc.queries[0] == (0, sorted(peers))  # part 0 of everybody in one query


def test_a_garbled_answer_is_asked_again_not_reported_as_drift():
    peers = {"n2": facts(50), "n3": facts(60)}
    rpc = FakeRpc(peers, garble={"n2": 1})
    got = asyncio.run(agent_with(rpc).fetch_many(["n2", "n3"]))
    assert got == json.loads(json.dumps(peers))
    assert rpc.queries[:2] == [(0, ["n2", "n3"]), (0, ["n2"])]  # only n2 asked again


def test_an_answer_garbled_twice_is_an_error_that_shows_what_came():
    rpc = FakeRpc({"n2": facts(50), "n3": facts(60)}, garble={"n2": 2})
    got = asyncio.run(agent_with(rpc).fetch_many(["n2", "n3"]))
    assert isinstance(got["n3"], dict)
    assert isinstance(got["n2"], ValueError)
    assert "n2 sent a malformed SL facts answer (31 bytes: b'\\x00{" in str(got["n2"])


def test_a_member_that_recollects_while_being_read_is_read_again():
    old, new = facts(400), facts(401) | {"digest": "1234567890abcdef"}
    rpc = FakeRpc({"n2": old, "n3": facts(60)})
    rpc.after_part0["n2"] = new
    got = asyncio.run(agent_with(rpc).fetch_many(["n2", "n3"]))
    assert got["n2"] == json.loads(json.dumps(new))  # not "did not answer"


MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web]}
  n2: {address: 198.18.0.12, pools: [web]}
  n3: {address: 198.18.0.13, pools: [web]}
pools:
  web:
    packages: {package-number-1: "1.0-1+deb12u1"}
"""


def test_a_member_whose_answer_is_lost_is_shown_from_its_last_facts_marked_stale():
    from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModel

    peers = {n: facts(20) | {"node": n, "at": 1764000000.0} for n in ("n2", "n3")}
    rpc = FakeRpc(peers)
    connector = SimpleNamespace(
        node="n1", rpc=rpc, serf_members={}, model=PoolModel.from_text(MODEL), pools=["web"]
    )
    agent = sl_agent.SlAgent(connector, {})  # type: ignore[arg-type]
    agent.facts = facts(20)
    first = asyncio.run(agent.report("web"))
    assert first["drift"] is False and first["stale"] == {}
    rpc.silent.add("n3")
    report = asyncio.run(agent.report("web"))
    cell = report["rows"][0]["cells"]["n3"]
    assert cell == {
        "installed": "1.0-1+deb12u1",
        "held": False,
        "expected": "1.0-1+deb12u1",
        "ok": True,
        "stale": True,
    }
    assert report["stale"]["n3"]["at"] == 1764000000.0
    assert "n3 did not answer" in report["stale"]["n3"]["error"]
    assert report["unreachable"] == {}
    assert report["drift"] is True  # last known is not "in sync"


def test_with_the_connectors_16k_serf_limit_a_nodes_facts_are_one_answer():
    # One answer per member: no further query per part, no further chance to lose one.
    node = "web-frontend-eu-west-1-node-017.example.org"
    chunk = sl_agent.chunk_size(16384)
    answers = sl_agent.pack(facts(800) | {"digest": "f" * 16}, chunk)
    assert len(answers) == 1
    assert serf_message_size(node, answers[0]) <= 16384
    assert sl_agent.chunk_size(1024) == sl_agent.CHUNK  # Serf's default: as before
    big = sl_agent.pack(facts(6000), chunk)
    assert all(serf_message_size(node, a) <= 16384 for a in big) and len(big) > 1


def test_the_agent_cuts_its_answers_for_the_configured_serf_limit():
    connector = SimpleNamespace(
        node="n1",
        rpc=None,
        serf_members={},
        cfg=SimpleNamespace(serf={"query_response_size_limit": 4096}),
    )
    agent = sl_agent.SlAgent(connector, {})  # type: ignore[arg-type]
    assert agent.chunk == 4096 - sl_agent.OVERHEAD


class LossyRpc(FakeRpc):
    """The first answer of each node in ``lost`` never comes: Serf waits out the timeout."""

    def __init__(self, facts_of: dict[str, dict], lost: set[str]) -> None:
        super().__init__(facts_of)
        self.lost, self.cancelled = set(lost), 0

    async def query(self, name, payload, nodes, timeout, expect, on_answer=None):
        dropped = self.silent = {n for n in nodes if n in self.lost}
        self.lost -= dropped
        out = await super().query(name, payload, nodes, timeout, expect, on_answer)
        if dropped:
            try:
                await asyncio.sleep(timeout)  # Serf's "done" only at the end of the timeout
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return out


def test_a_lost_answer_is_asked_again_early_while_the_first_query_still_listens():
    peers = {"n2": facts(50), "n3": facts(60)}
    rpc = LossyRpc(peers, lost={"n3"})
    connector = SimpleNamespace(node="n1", rpc=rpc, serf_members={})
    agent = sl_agent.SlAgent(connector, {"timeout": 30, "retry_after": 0.05})  # type: ignore[arg-type]
    got = asyncio.run(asyncio.wait_for(agent.fetch_many(["n2", "n3"]), 10))
    assert got == json.loads(json.dumps(peers))
    assert rpc.queries == [(0, ["n2", "n3"]), (0, ["n3"])]
    assert rpc.cancelled == 1  # the first query was not waited out


def test_the_serf_agent_starts_with_the_first_facts_digest(monkeypatch):
    # Published after the agent started, the digest was a tag update per member that
    # every agent gossips: at a whole pool's start, an O(N^2) wave while Serf converges.
    facts = {"digest": "9d8e6099aabbccdd", "packages": {}, "services": {}, "libraries": {}}
    monkeypatch.setattr(sl_agent, "collect", lambda node: facts)
    published = []

    async def set_tag(name, value):
        published.append((name, value))

    connector = SimpleNamespace(node="n1", rpc=None, serf_members={}, set_tag=set_tag)
    connector.model = SimpleNamespace(effective=lambda node: SimpleNamespace(settings={}))
    connector.pools = []
    agent = sl_agent.SlAgent(connector, {})  # type: ignore[arg-type]

    async def main() -> str:
        waiting = asyncio.create_task(agent.first_facts())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # nothing collected yet: the agent waits
        await agent.collect_now()
        return await asyncio.wait_for(waiting, 2)

    assert asyncio.run(main()) == "9d8e6099"


@pytest.mark.parametrize(
    "error",
    [sl_agent.FactsError("dpkg-query -W failed (exit 2)"), FileNotFoundError(2, "gone")],
)
def test_the_serf_agent_does_not_wait_for_facts_that_fail(monkeypatch, error):
    """Neither a failed command nor an OSError holds the agent's start for 5 s."""

    def broken(node):
        raise error

    monkeypatch.setattr(sl_agent, "collect", broken)
    connector = SimpleNamespace(node="n1", rpc=None, serf_members={})
    agent = sl_agent.SlAgent(connector, {})  # type: ignore[arg-type]

    async def main() -> str:
        await agent.collect_now()
        return await asyncio.wait_for(agent.first_facts(), 1)

    assert asyncio.run(main()) == ""
    assert agent.error
