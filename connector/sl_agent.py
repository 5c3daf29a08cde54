"""SL-SA in the connector: this node's software facts, published so any node answers for the pool.

Collected at start (before the Serf agent starts: ``SlAgent.first_facts``), when
dpkg's database changes (``/var/lib/dpkg/status`` or the linker cache changes: an
mtime poll every ``poll`` seconds, cheaper than inotify on a file dpkg replaces by
rename) and every ``interval`` seconds for services. The facts' digest is the
Serf tag ``sl``, so every peer learns by gossip that a node's software changed;
the body (about 11 KB compressed for ~740 packages and ~550 libraries) is
fetched with the ``multiall-sl`` Serf query in chunks that fit Serf's answer
limit (one chunk under the connector's 16 KB), and cached by digest: a drift
report for a pool reuses every peer's facts it already has, so it costs no SSH
and, when nothing changed, no network.

A change that makes this node drift from the model raises an ``sl_drift`` event
(one per pool of the node) with the differences.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import zlib
from typing import TYPE_CHECKING, Any

from ansible_collections.takelan.multiall.plugins.module_utils.slfacts import (
    DPKG_STATUS,
    FactsError,
    check_facts,
    collect,
    drift_matrix,
    node_drift,
)

from .serf import SerfError

if TYPE_CHECKING:
    from .daemon import Connector

log = logging.getLogger("multiall.sl")

QUERY = "multiall-sl"
# Serf refuses (and the RPC only logs) an answer whose encoded gossip message
# (payload + LTime, ID, From, Flags and their keys: ~50 bytes + the node name)
# exceeds query_response_size_limit (Serf's default 1024). The header line is ~45
# bytes; 850 leaves room for node names up to ~60 characters instead of silently
# losing a chunk. The connector raises the limit (``serf.query_response_size_limit``,
# 16384: memberlist reads UDP packets of up to 64 KB, IP fragments them on the
# wire) so that a node's facts fit in one answer: every further part was one more
# query and one more chance to lose a packet and wait a whole query timeout.
SERF_LIMIT = 1024
CHUNK = 850
OVERHEAD = SERF_LIMIT - CHUNK
WATCHED = (DPKG_STATUS, "/etc/ld.so.cache")
# How long the Serf agent's first start waits for the first collection (its digest is
# then in the agent's initial tags, see SlAgent.first_facts).
FIRST_FACTS_WAIT = 5.0


def chunk_size(limit: int) -> int:
    """The chunk that fits an answer under Serf's ``query_response_size_limit`` LIMIT."""
    return max(CHUNK, int(limit) - OVERHEAD)


class FactsChanged(SerfError):
    """A member's facts changed between two parts of one read: read it again, it is alive."""


def pack(facts: dict[str, Any], chunk: int = CHUNK) -> list[bytes]:
    """Facts -> the answers to parts 0..n-1: ``{"d","n","i"}`` header line + a chunk."""
    body = zlib.compress(json.dumps(facts, separators=(",", ":")).encode(), 9)
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    return [
        json.dumps({"d": facts["digest"], "n": len(chunks), "i": i}, separators=(",", ":")).encode()
        + b"\n"
        + chunk
        for i, chunk in enumerate(chunks)
    ]


def split(node: str, answer: bytes) -> tuple[dict[str, Any], bytes]:
    """One answer -> (header, chunk); ValueError names the node when it is malformed."""
    head, sep, chunk = answer.partition(b"\n")
    try:
        header = json.loads(head) if sep else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or not {"d", "n", "i"} <= set(header):
        raise ValueError(
            f"{node} sent a malformed SL facts answer ({len(answer)} bytes: {answer[:40]!r})"
        )
    return header, chunk


def unpack(node: str, chunks: list[bytes]) -> dict[str, Any]:
    """The chunks of one digest, in order -> checked facts (ValueError when corrupt)."""
    try:
        data = json.loads(zlib.decompress(b"".join(chunks)))
    except (zlib.error, ValueError):
        raise ValueError(f"{node} sent SL facts that do not decompress or parse") from None
    return check_facts(node, data)


class SlAgent:
    """One per connector: collects, publishes, fetches peers' facts and reports drift."""

    def __init__(self, connector: Connector, cfg: dict[str, Any]) -> None:
        self.connector = connector
        self.node = connector.node
        self.poll = float(cfg.get("poll", 2.0))
        self.interval = float(cfg.get("interval", 300.0))
        self.timeout = float(cfg.get("timeout", 2.0))
        self.retry_after = min(float(cfg.get("retry_after", 0.5)), self.timeout)
        serf_cfg = getattr(getattr(connector, "cfg", None), "serf", None) or {}
        self.chunk = chunk_size(serf_cfg.get("query_response_size_limit", SERF_LIMIT))
        self.facts: dict[str, Any] | None = None
        self.answers: list[bytes] = []
        self.error: str | None = None
        self.cache: dict[str, dict[str, Any]] = {}  # node -> facts (any digest)
        self.drift: list[dict[str, Any]] = []
        self._stamps: tuple[float, ...] = ()
        self._refresh = asyncio.Event()
        self._collected = asyncio.Event()  # set after the first attempt, even a failed one

    @property
    def digest(self) -> str:
        """This node's facts digest ('' until collected): the Serf tag ``sl``."""
        return self.facts["digest"] if self.facts else ""

    # ------------------------------------------------------------ collection
    def _mtimes(self) -> tuple[float, ...]:
        out = []
        for path in WATCHED:
            try:
                out.append(os.stat(path).st_mtime)
            except OSError:
                out.append(0.0)
        return tuple(out)

    async def collect_now(self) -> None:
        """Collect (in a thread: dpkg -S reads every file list), publish, raise sl_drift."""
        self._stamps = self._mtimes()
        try:
            facts = await asyncio.to_thread(collect, self.node)
        except (FactsError, OSError) as exc:  # OSError: a file that went away mid-read
            self.error = str(exc)
            log.error("sl facts: %s", exc)
            self._collected.set()  # the agent starts without a digest; the next try sets it
            return
        self.error = None
        changed = facts["digest"] != self.digest
        self.facts = facts
        self.answers = pack(facts, self.chunk)
        self._collected.set()
        if changed:
            await self.connector.set_tag("sl", facts["digest"][:8])
            await self._check_drift()

    async def _check_drift(self) -> None:
        assert self.facts is not None
        settings = self.connector.model.effective(self.node).settings
        drift = node_drift(settings, self.facts)
        if drift and drift != self.drift:
            for pool in self.connector.pools:
                await self.connector.publish(
                    {
                        "type": "sl_drift",
                        "pool": pool,
                        "member": self.node,
                        "count": len(drift),
                        "drift": drift[:20],
                    }
                )
        self.drift = drift

    async def first_facts(self) -> str:
        """The digest tag of the first collection, waited for at most ``FIRST_FACTS_WAIT`` s
        ('' if it is not there by then): what the Serf agent's first start carries.

        Published after the agent started, the digest was one tag update per
        member that every member's agent gossips: when a whole pool starts at
        once, an O(N^2) wave in the seconds where Serf converges (at 128 members
        on the lab's two cores the start took ~85-93 s with it, ~61 s without).
        In the agent's initial tags it rides on the join.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._collected.wait(), FIRST_FACTS_WAIT)
        return self.digest[:8]

    async def run(self) -> None:
        """Collect at start, on a dpkg change and every ``interval`` s; never ends on an error."""
        last = 0.0
        while True:
            if self._mtimes() != self._stamps or time.monotonic() - last >= self.interval:
                last = time.monotonic()
                try:
                    await self.collect_now()
                except (SerfError, OSError) as exc:
                    log.error("sl facts: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), self.poll)
            self._refresh.clear()

    # --------------------------------------------------------- serf answers
    async def answer(self, rpc: Any, event: dict[str, Any]) -> None:
        """``multiall-sl`` with payload ``{"part": i}``: chunk i of this node's facts."""
        try:
            part = int(json.loads(event.get("Payload") or b"{}").get("part", 0))
        except (ValueError, TypeError, AttributeError):
            part = 0
        if not self.answers:
            return  # nothing collected yet: no answer beats a wrong one
        data = self.answers[min(max(part, 0), len(self.answers) - 1)]
        with contextlib.suppress(SerfError):
            await rpc.respond(event["ID"], data)

    async def _ask_many(self, nodes: list[str], part: int) -> dict[str, Any]:
        """Part PART of every node in NODES with ONE Serf query: node -> (header, chunk) or error.

        One query per part, filtered to the nodes that still need it, instead of
        one per node and part: Serf gossips every query to every member, so 19
        peers x 13 parts were 247 broadcasts that overflowed the gossip queues
        under load (answers lost, 2 s timeouts: the slow cold report).

        A lost UDP answer or a garbled one is no verdict: the members that have
        not answered well after ``retry_after`` seconds are asked again by a
        second query while the first one still listens (an answer to either
        counts), so a lost answer costs ``retry_after``, not a whole ``timeout``.
        """
        rpc = self.connector.rpc
        if rpc is None:
            raise SerfError("the Serf agent is not connected yet")
        payload = json.dumps({"part": part}).encode()
        wanted = set(nodes)
        got: dict[str, Any] = {}
        complete = asyncio.Event()

        def take(answer: dict[str, Any]) -> bool:
            node = answer["from"]
            if node in wanted and not isinstance(got.get(node), tuple):
                try:
                    header, chunk = split(node, answer["payload"])
                    index = int(header["i"])
                except (ValueError, TypeError) as exc:
                    got[node] = exc if isinstance(exc, ValueError) else ValueError(str(exc))
                    log.warning("sl facts: %s (asking again)", exc)
                else:
                    got[node] = (
                        (header, chunk)
                        if index == part
                        else FactsChanged(f"{node}'s facts changed while being read")
                    )
                if all(isinstance(got.get(n), tuple) for n in nodes):
                    complete.set()
            return complete.is_set()  # only a node's own answer is its facts

        def ask(targets: list[str]) -> asyncio.Task:
            return asyncio.create_task(
                rpc.query(
                    QUERY,
                    payload,
                    nodes=targets,
                    timeout=self.timeout,
                    expect=len(targets),
                    on_answer=take,
                )
            )

        waiter = asyncio.create_task(complete.wait())
        queries = [ask(list(nodes))]
        try:
            await asyncio.wait(
                {queries[0], waiter}, timeout=self.retry_after, return_when="FIRST_COMPLETED"
            )
            missing = [n for n in nodes if not isinstance(got.get(n), tuple)]
            if missing:
                queries.append(ask(missing))
            while not complete.is_set() and not all(q.done() for q in queries):
                pending = {q for q in queries if not q.done()}
                await asyncio.wait({*pending, waiter}, return_when="FIRST_COMPLETED")
        finally:
            for task in (*queries, waiter):
                task.cancel()
            await asyncio.gather(*queries, waiter, return_exceptions=True)
        errors = [q.exception() for q in queries if not q.cancelled() and q.exception()]
        if errors and not got:
            raise errors[0]
        for node in nodes:
            got.setdefault(
                node, SerfError(f"{node} did not answer the SL facts query (down or partitioned?)")
            )
        return got

    async def fetch_many(self, nodes: list[str], fresh: bool = False) -> dict[str, Any]:
        """Each node's facts (or the error why not); a member whose facts changed while
        they were read (it was re-collecting) is read once more instead of being reported
        as not answering. FRESH: ask every peer, whatever the cache holds."""
        out = await self._fetch_round(nodes, fresh)
        again = [n for n in nodes if isinstance(out[n], FactsChanged)]
        if again:
            out.update(await self._fetch_round(again, fresh))
        return out

    async def _fetch_round(self, nodes: list[str], fresh: bool) -> dict[str, Any]:
        """From cache when a node's ``sl`` tag says its facts are current, else part 0 of
        all of them in one query, then each further part in one."""
        out: dict[str, Any] = {}
        todo = []
        for node in nodes:
            if node == self.node:
                if self.facts is None:
                    try:
                        await self.collect_now()
                    except (SerfError, OSError) as exc:
                        out[node] = exc
                        continue
                out[node] = self.facts or SerfError(self.error or "no facts collected")
                continue
            cached = self.cache.get(node)
            member = self.connector.serf_members.get(node)
            tag = member.tags.get("sl") if member else None
            if cached and tag and cached["digest"].startswith(tag) and not fresh:
                out[node] = cached
            else:
                todo.append(node)
        if not todo:
            return out
        first = await self._ask_many(todo, 0)
        wanted: dict[int, list[str]] = {}
        for node in todo:
            if not isinstance(first[node], tuple):
                out[node] = first[node]
                continue
            header = first[node][0]
            cached = self.cache.get(node)
            if cached and cached["digest"] == header["d"] and not fresh:
                out[node] = cached
                continue
            for i in range(1, int(header["n"])):
                wanted.setdefault(i, []).append(node)
        rounds = await asyncio.gather(*(self._ask_many(ns, i) for i, ns in wanted.items()))
        parts = dict(zip(wanted, rounds, strict=True))
        for node in todo:
            if node in out:
                continue
            header, chunk = first[node]
            chunks = [chunk]
            for i in range(1, int(header["n"])):
                answer = parts[i][node]
                if not isinstance(answer, tuple):
                    out[node] = answer
                    break
                if answer[0]["d"] != header["d"]:
                    out[node] = FactsChanged(f"{node}'s facts changed while being read")
                    break
                chunks.append(answer[1])
            else:
                try:
                    out[node] = self.cache[node] = unpack(node, chunks)
                except ValueError as exc:
                    out[node] = exc
        return out

    async def fetch(self, node: str) -> dict[str, Any]:
        """NODE's facts (cached or queried); raises the SerfError/ValueError saying why not."""
        result = (await self.fetch_many([node]))[node]
        if isinstance(result, BaseException):
            raise result
        return result

    # --------------------------------------------------------------- reports
    async def report(self, pool: str | None, fresh: bool = False) -> dict[str, Any]:
        """The drift matrix of POOL (default: every pool of this node), facts fetched in
        parallel; FRESH reads every peer's facts again instead of trusting the cache."""
        model = self.connector.model
        if pool is not None and pool not in model.pools:
            raise ValueError(f"no pool {pool!r}; pools: {', '.join(model.pool_names())}")
        pools = [pool] if pool else list(self.connector.pools)
        nodes = sorted({n for p in pools for n in model.members(p)})
        results = await self.fetch_many(nodes, fresh)
        facts: dict[str, dict[str, Any] | None] = {}
        errors: dict[str, str] = {}
        stale: dict[str, str] = {}
        for node in nodes:
            result = results[node]
            if isinstance(result, (SerfError, ValueError, OSError)):
                # An admin would rather see the member's last known facts, marked stale
                # with the reason, than an empty column: it still counts as drift.
                cached = self.cache.get(node) if node != self.node else None
                if cached is not None:
                    facts[node], stale[node] = cached, str(result)
                else:
                    facts[node], errors[node] = None, str(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                facts[node] = result
        matrix = await asyncio.to_thread(drift_matrix, model, nodes, facts, errors, stale)
        return {"ok": True, "pools": pools, "observer": self.node, **matrix}

    async def control(self, req: dict[str, Any]) -> dict[str, Any]:
        """Control-socket op ``sl``: ``action`` drift (``pool``), facts (``node``) or refresh."""
        action = req.get("action", "drift")
        if action == "drift":
            pool = str(req["pool"]) if req.get("pool") else None
            return await self.report(pool, bool(req.get("fresh")))
        if action == "facts":
            node = str(req.get("node") or self.node)
            if node not in self.connector.model.nodes:
                raise ValueError(f"no node {node!r} in the pool model")
            return {"ok": True, "facts": await self.fetch(node)}
        if action == "refresh":
            await self.collect_now()
            return {"ok": True, "digest": self.digest, "error": self.error}
        raise ValueError(f"unknown sl action {action!r}; actions: drift, facts, refresh")

    def status(self) -> dict[str, Any]:
        """For ``multiall status``: digest, drift count, last error."""
        return {"digest": self.digest, "drift": len(self.drift), "error": self.error}
