"""The connector's link to its Serf agent: run it, follow it, talk to it.

A part of :class:`connector.daemon.Connector` (a mixin: it works on the
connector's own state), kept apart because it is one concern with its own
failure modes: the agent is supervised and restarted with backoff, its
member table is followed over RPC (events applied in place, a poll as belt
and braces), joins run on their own RPC connection so a slow join to a dead
address never holds up member reads, and the node's tags (``maint``, ``sbm``,
``sl``) and SBM queries go through it. Every fault is logged, shown by
``multiall status`` and retried; none stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections import deque
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.tns import (
    SerfMember,
)

from . import __version__, sbm_answer
from .serf import SerfClient, SerfError, join_targets
from .serf_pidfile import record_agent, stop_stale_agent
from .state_files import write_private

log = logging.getLogger("multiall.connector")
serf_log = logging.getLogger("multiall.serf")

# Lines of the Serf agent's stderr kept for the "agent exited" message.
SERF_STDERR_TAIL = 20
# An agent just (re)started refuses RPC until it listens: no warning for that.
SERF_START_GRACE = 5.0
# Seconds between Serf joins while some pool peer is not alive in Serf (else poll_interval).
JOIN_RETRY = 0.5
JOIN_RETRY_MAX = 4.0  # ... doubling while joins bring no progress, up to this
JOIN_TIMEOUT = 30.0
COORDS_PER_REFRESH = 8  # Vivaldi coordinates fetched per 10 s, in rotation
# The tags a topology pass reads; a change of another (``sl``, ``ver``) needs no pass.
TOPOLOGY_TAGS = ("maint", "sbm")


def changes_topology(old: SerfMember | None, new: SerfMember | None) -> bool:
    """Whether a member's new record can change a pool's topology.

    A whole pool's software facts change at once (its start, an upgrade run on
    every node): one ``sl`` tag update per member reaches every member, and a
    topology pass for each made that wave cost O(N) per node, O(N^2) per pool,
    in the middle of a start. The table still takes every update.
    """
    if old is None or new is None:
        return old is not new
    return (old.status, old.address) != (new.status, new.address) or any(
        old.tags.get(t) != new.tags.get(t) for t in TOPOLOGY_TAGS
    )


def join_step(alive: int, alive_before: int, peers: int, wait: float) -> tuple[bool, float]:
    """Whether to join now, and the wait before the next member poll while peers are missing.

    Join only when gossip brought no new alive peer since the last poll, and then
    back off (doubling up to ``JOIN_RETRY_MAX``); all present resets the wait.
    Every node joining every 0.5 s for as long as one peer was missing (each join
    a TCP push/pull of the whole member table) kept Serf busy for a minute at a
    start of 128 nodes on a small machine.
    """
    if alive >= peers:
        return False, JOIN_RETRY
    if alive > alive_before:
        return False, wait
    return True, min(wait * 2, JOIN_RETRY_MAX)


class SerfLink:
    """Serf supervision, membership following, tags and queries of one connector."""

    def _tns_ip(self, node: str) -> str:
        """The IPv4 address TNS uses for NODE (the model guarantees one per pool member)."""
        view = self.model.effective(node)
        return view.ip or view.address

    def _serf_argv(self) -> list[str]:
        os.makedirs(self.cfg.state_dir, exist_ok=True)
        conf = {
            "rpc_auth": self.cfg.serf.get("rpc_auth", ""),
            "query_response_size_limit": self.cfg.serf["query_response_size_limit"],
        }
        if self.cfg.serf.get("encrypt_key"):
            conf["encrypt_key"] = self.cfg.serf["encrypt_key"]
        path = os.path.join(self.cfg.state_dir, "serf.json")
        write_private(path, json.dumps(conf))
        return [
            self.cfg.serf["binary"],
            "agent",
            "-node",
            self.node,
            "-bind",
            f"{self.address}:{self.cfg.serf['port']}",
            "-rpc-addr",
            f"127.0.0.1:{self.cfg.serf['rpc_port']}",
            "-profile",
            self.cfg.serf["profile"],
            "-config-file",
            path,
            "-log-level",
            "warn",
            "-tag",
            f"pools={','.join(self.pools)}",
            "-tag",
            f"maint={self.maint_tag}",
            "-tag",
            f"sbm={self.sbm_tag}",
            "-tag",
            f"sl={self.sl.digest[:8]}",
            "-tag",
            f"ver={__version__}",
        ]

    async def supervise_serf(self) -> None:
        """Run the Serf agent; restart it (with backoff) whenever it dies."""
        backoff = 0.5
        self.serf_started = time.monotonic()  # RPC refusals until it runs are no fault
        await self.sl.first_facts()  # its digest goes in the agent's initial tags
        while not self.stopping:
            stale = await asyncio.to_thread(stop_stale_agent, self.cfg.state_dir, self.node)
            if stale:
                log.warning(
                    "stopped the serf agent a previous connector left running",
                    extra={"fields": {"pid": stale}},
                )
            self.serf_proc = await asyncio.create_subprocess_exec(
                *self._niced(self._serf_argv()),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            record_agent(self.cfg.state_dir, self.serf_proc.pid)
            log.info("serf agent started", extra={"fields": {"pid": self.serf_proc.pid}})
            started = self.serf_started = time.monotonic()
            assert self.serf_proc.stderr is not None and self.serf_proc.stdout is not None
            tail, said = await asyncio.gather(
                _read_lines(self.serf_proc.stderr, self.serf_proc.pid, logged=True),
                _read_lines(self.serf_proc.stdout, self.serf_proc.pid, logged=False),
            )
            await self.serf_proc.wait()
            if self.stopping:
                return
            log.warning(
                "serf agent exited; restarting",
                extra={
                    "fields": {
                        "rc": self.serf_proc.returncode,
                        "stderr": "\n".join(tail),
                        "output": "\n".join(said),
                    }
                },
            )
            if self.rpc:
                await self.rpc.close()
                self.rpc = None
            backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, 10)
            await asyncio.sleep(backoff)

    def _niced(self, argv: list[str]) -> list[str]:
        """ARGV run ``serf.nice`` steps below the connector's own CPU priority (0: same).

        TNS no longer waits for Serf (a member is alive by its probes,
        module_utils/tns.py ``with_probed``): on a busy node an admin may let the
        connector's probe rounds, where a round late by ``dead_after`` is a false
        alert, win the CPU over Serf's gossip. Through ``nice(1)``, so every thread
        the Go runtime starts inherits it: lowering the agent's pid after the start
        reaches its main thread only (Linux priorities are per thread), and a
        128-node lab start with only the main threads lowered did not converge in
        150 s. Not the default: on the lab's 2 cores, +10 gave 42 s and 111 s where
        the same priority gave 77-81 s (benchmarks/RESULTS.md), and it slows Serf's
        own convergence (tags, queries) on a busy node.
        """
        nice = int(self.cfg.serf.get("nice", 0))
        binary = shutil.which("nice")
        if not nice or binary is None:
            return argv
        return [binary, "-n", str(nice), *argv]

    async def follow_serf(self) -> None:
        """Keep an RPC connection, the member table and the event stream alive."""
        while not self.stopping:
            rpc = SerfClient(
                "127.0.0.1", int(self.cfg.serf["rpc_port"]), self.cfg.serf.get("rpc_auth")
            )
            try:
                await rpc.connect(timeout=2)
                self.rpc = rpc
                await self._refresh_members()
                await self._publish_tags(rpc)
                # Joining waits on peers' agents (seconds, under load): the member
                # table and the event stream must not wait for it.
                self._join_soon()
                self.serf_rpc.ok()
                poll = asyncio.create_task(self._poll_members(), name="serf-poll")
                try:
                    types = (
                        "member-join,member-leave,member-failed,member-update,member-reap,"
                        "query:multiall-sbm,query:multiall-sl"
                    )
                    async for event in rpc.stream(types):
                        if event.get("Event") == "query" and event.get("Name") == "multiall-sl":
                            await self.sl.answer(rpc, event)
                        elif event.get("Event") == "query":
                            await self._answer_query(rpc, event)
                        else:
                            self._apply_member_event(event)
                finally:
                    poll.cancel()
            except (SerfError, OSError) as exc:
                # The agent is restarting, or refuses us (a wrong rpc_auth): say so
                # (once, then every 30 s), and retry.
                if time.monotonic() - self.serf_started < SERF_START_GRACE:
                    log.debug("serf rpc (agent starting): %s", exc)
                else:
                    self.serf_rpc.failed(
                        f"serf rpc at 127.0.0.1:{self.cfg.serf['rpc_port']}: {exc}"
                        " (is the agent running, and is serf.rpc_auth the agent's?)"
                    )
            finally:
                # Every attempt's connection is closed, whatever failed: no socket leaks per retry.
                if self.rpc is rpc:
                    self.rpc = None
                await rpc.close()
            await asyncio.sleep(0.3)

    def _lacking(self, wanted: dict[str, str]) -> dict[str, str]:
        """The tags of WANTED that this node's agent does not have (yet) with that value.

        Only those are set: every tag update is a new alive message that Serf
        gossips to the whole cluster and that every peer's connector handles as
        an event. Setting all tags on each connection cost a pool of 128 a wave
        of 128 updates at every start.
        """
        own = self.serf_members.get(self.node)
        return {k: v for k, v in wanted.items() if own is None or own.tags.get(k) != v}

    async def _publish_tags(self, rpc: SerfClient) -> None:
        """Give the agent the tags it lacks (after a restart of either side)."""
        stale = self._lacking(
            {"maint": self.maint_tag, "sbm": self.sbm_tag, "sl": self.sl.digest[:8]}
        )
        if stale:
            await rpc.set_tags(stale)

    def _join_soon(self) -> None:
        """Start a join in the background unless one is under way."""
        if self._joining is None or self._joining.done():
            self._joining = asyncio.create_task(self._join(), name="serf-join")

    async def _join(self) -> None:
        """Ask Serf to join a few missing peers, over a connection of its own.

        Serf answers one RPC connection's requests in order and a join waits on
        the peers' agents (10 s and more at a busy start of many nodes): on the
        main connection it held up the member polls and the event stream.
        """
        if not self.rpc or not self.peers:
            return
        alive = {n for n, m in self.serf_members.items() if m.status == "alive"}
        targets = [f"{a}:{self.cfg.serf['port']}" for a in join_targets(self.peers, alive)]
        if not targets:
            return
        rpc = SerfClient("127.0.0.1", int(self.cfg.serf["rpc_port"]), self.cfg.serf.get("rpc_auth"))
        try:  # on failure the next poll tries again
            await rpc.connect(timeout=2)
            await rpc.join(targets, timeout=JOIN_TIMEOUT)
        except (SerfError, OSError) as exc:
            log.debug("serf join %s: %s", targets, exc)
        finally:
            await rpc.close()

    async def _poll_members(self) -> None:
        """Belt and braces: the stream may coalesce; poll members every ``poll_interval``.

        A failed poll is reported and the next one tried: this task is nobody's
        to watch, so it must not end on the first error.
        """
        missing, alive_before, wait, polled = True, 0, JOIN_RETRY, 0.0
        while True:
            # While peers are missing (start-up, a partition) look and join sooner.
            await asyncio.sleep(min(self.poll_interval, wait) if missing else self.poll_interval)
            try:
                # Progress is read from the table the events keep; the whole member
                # list only every poll_interval. Asked every 0.5 s while peers were
                # missing, it cost a pool of 128 starting at once 256 lists of 128
                # members a second, encoded by Serf and decoded here.
                if time.monotonic() - polled >= self.poll_interval:
                    polled = time.monotonic()
                    await self._refresh_members()
                alive = sum(
                    1
                    for n, m in self.serf_members.items()
                    if m.status == "alive" and n != self.node
                )
                missing = alive < len(self.peers)
                join, wait = join_step(alive, alive_before, len(self.peers), wait)
                if join:
                    self._join_soon()
                alive_before = alive
            except (SerfError, OSError) as exc:
                self.serf_rpc.failed(f"serf rpc: polling members failed: {exc}")
            else:
                self.serf_rpc.ok()

    def _apply_member_event(self, event: dict[str, Any]) -> None:
        """Apply a member event's members to the table, without asking Serf for all of them.

        An event carries the members it is about, with status and tags. Asking
        for the whole member list on each one made a start of N nodes cost every
        node N events x N members (O(N^2) per node, O(N^3) for the pool); the
        poll every ``poll_interval`` still catches anything a stream missed.
        """
        reaped = event.get("Event") == "member-reap"
        changes = {}
        for m in event.get("Members") or []:
            new = None if reaped else SerfMember(m.name, m.address, m.status, m.tags)
            if self.serf_members.get(m.name) != new:
                changes[m.name] = new
        if changes:
            # Replaced, never changed in place (_maint_seen keys its cache on the object).
            table = dict(self.serf_members)
            for name, member in changes.items():
                if member is None:
                    table.pop(name, None)
                else:
                    table[name] = member
            if any(changes_topology(self.serf_members.get(n), m) for n, m in changes.items()):
                self.dirty.set()
            self.serf_members = table

    async def _refresh_members(self) -> None:
        if not self.rpc:
            return
        members = await self.rpc.members()
        fresh = {m.name: SerfMember(m.name, m.address, m.status, m.tags) for m in members}
        if time.monotonic() - self._coords_at > 10:
            # Vivaldi coordinates move slowly: refresh them every 10 s only.
            self._coords_at = time.monotonic()
            # A few peers per refresh, in rotation: the cost stays flat as pools grow.
            names = sorted(self.peers)
            start = self._coords_next % max(1, len(names))
            self._coords_next = start + COORDS_PER_REFRESH
            for name in [*(names[start:] + names[:start])[:COORDS_PER_REFRESH], self.node]:
                with contextlib.suppress(SerfError):
                    self.coords[name] = await self.rpc.coordinate(name)
        if fresh != self.serf_members:
            names = set(fresh) | set(self.serf_members)
            if any(changes_topology(self.serf_members.get(n), fresh.get(n)) for n in names):
                self.dirty.set()
            self.serf_members = fresh

    async def _answer_query(self, rpc: SerfClient, event: dict[str, Any]) -> None:
        """``multiall-sbm``: any node may ask for this node's per-rule SBM detail."""
        data = sbm_answer.pack(self.node, self.sbm.report())
        with contextlib.suppress(SerfError):
            await rpc.respond(event["ID"], data)

    async def query_sbm(self, node: str, timeout: float = 2.0) -> dict[str, Any]:
        """Another node's SBM detail through a Serf query."""
        if node == self.node:
            return {"ok": True, "node": self.node, **self.sbm.report()}
        if node not in self.model.nodes:
            raise ValueError(f"no node {node!r} in the pool model")
        if not self.rpc:
            raise SerfError("the Serf agent is not connected yet")
        answers: list = []
        for _attempt in range(2):  # a query is one UDP exchange: one lost packet is no verdict
            answers = await self.rpc.query("multiall-sbm", b"", nodes=[node], timeout=timeout)
            if answers:
                break
        if not answers:
            raise SerfError(
                f"{node} did not answer twice within {timeout:g} s (down or partitioned?)"
            )
        try:
            data = sbm_answer.unpack(node, answers[0]["payload"])
        except ValueError as exc:
            raise SerfError(str(exc)) from None
        return {"ok": True, **data}

    async def set_tag(self, name: str, value: str) -> None:
        """Set one Serf tag now (when connected; the next connection sets it anyway),
        unless the agent has it already (``_lacking``)."""
        stale = self._lacking({name: value})
        if self.rpc and stale:
            with contextlib.suppress(SerfError):
                await self.rpc.set_tags(stale)

    async def _publish_sbm(self, code: str) -> None:
        """Publish the node's SBM status as the Serf tag ``sbm`` (peers see it by gossip)."""
        self.sbm_tag = code  # also carried by the next probe packets (within one interval)
        if self.rpc:
            with contextlib.suppress(SerfError):
                await self.rpc.set_tags({"sbm": code})
        self.dirty.set()

    def _maint_seen(self) -> dict[str, str]:
        """The ``maint`` tag of every member as this node's topology last applied it
        (carried in probe packets: the acknowledgement ``maintenance`` waits for).

        Taken from the last recompute, not from Serf's live member list: a peer that
        echoed a tag before its own topology applied it would let ``maintenance``
        return while that peer still showed (and served DNS for) the member as alive.
        Built once per recompute, not once per packet.
        """
        return self._maint


async def _read_lines(stream: asyncio.StreamReader, pid: int, *, logged: bool) -> list[str]:
    """Read the agent's output as it comes; log each line when LOGGED; return the last few.

    stderr is logged: Serf runs with ``-log-level warn``, so what it writes
    there matters now (a bad key, a port in use), not when it exits. stdout is
    only kept: it holds the start-up banner, and also why the agent could not
    start ("==> Failed to start the Serf agent: ... address already in use"),
    which goes into the "agent exited" warning. A long-lived agent must not
    grow a buffer in memory: only the tail is kept.
    """
    tail: deque[str] = deque(maxlen=SERF_STDERR_TAIL)
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # asyncio drops a line longer than its limit (64 KiB): say so
            if logged:
                serf_log.warning("serf agent: (a stderr line over 64 KiB was dropped)")
            continue
        if not raw:
            return list(tail)
        line = raw.decode(errors="replace").rstrip()
        if line:
            tail.append(line[:1000])
            if logged:
                serf_log.warning("serf agent: %s", line[:4000], extra={"fields": {"pid": pid}})
