"""TakeConnector: the per-node daemon (``multiall daemon``).

It supervises the node's Serf agent, follows membership over Serf RPC, probes
pool peers directly, computes each pool's topology with the shared logic in
``module_utils/tns.py``, journals every topology event, answers the control
socket, and hands events to the watcher, which runs playbooks.

asyncio end to end: Serf and the probes are network I/O on the loop. Blocking
work runs in threads kept apart so that one stuck part cannot starve another:
SBM checks in threads of their own (one per rule at most, see sbm_scheduler),
the journal in its own thread, playbooks in the watcher's pool, and the loop's
default pool is left to DNS. A fault of the journal or of Serf's RPC is
logged, shown by ``multiall status`` and retried; it never stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections import deque
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModel, load
from ansible_collections.takelan.multiall.plugins.module_utils.tns import (
    PoolTopology,
    SerfMember,
    maintenance_tag,
    parse_maintenance_tag,
    pool_topology,
    topology_events,
)

from . import __version__, sbm_answer
from .config import ConnectorConfig, require_secrets
from .control import ControlServer
from .db_agent import DbAgent
from .dns_reconciler import DnsReconciler
from .fs_agent import FsAgent
from .health import Fault
from .journal import Journal, JournalError
from .metrics import Metrics
from .probe import Prober, next_epoch
from .sbm_scheduler import SbmScheduler
from .serf import SerfClient, SerfError, join_targets, rtt_ms
from .sl_agent import SlAgent
from .watcher import Watcher

log = logging.getLogger("multiall.connector")
COORDS_PER_REFRESH = 8  # Vivaldi coordinates fetched per 10 s, in rotation
serf_log = logging.getLogger("multiall.serf")

# How long an event waits for its journal row before it is published without
# one: a hung disk must not hold up the topology loop (and DNS failover).
JOURNAL_WAIT = 2.0
# Lines of the Serf agent's stderr kept for the "agent exited" message.
SERF_STDERR_TAIL = 20
# An agent just (re)started refuses RPC until it listens: no warning for that.
SERF_START_GRACE = 5.0
# After a topology pass of C CPU seconds, wait C x this before the next (at least 20 ms).
RECOMPUTE_SHARE = 9
# Seconds between Serf joins while some pool peer is not alive in Serf (else poll_interval).
JOIN_RETRY = 0.5
JOIN_TIMEOUT = 30.0


class JsonFormatter(logging.Formatter):
    """Structured logs: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        return json.dumps(data)


class Connector:
    """One node's daemon."""

    def __init__(self, cfg: ConnectorConfig) -> None:
        self.cfg = cfg
        self.model: PoolModel = load(cfg.pools_file)
        if cfg.node not in self.model.nodes:
            raise SystemExit(f"{cfg.source}: node {cfg.node!r} is not in {cfg.pools_file}")
        self.node = cfg.node
        # TNS speaks IPv4 and compares a probe's source with the peer's address,
        # so it uses the model's ``ip`` (``address`` when that is already IPv4).
        self.address = cfg.bind or self._tns_ip(self.node)
        self.pools = self.model.node_pools(self.node)
        self.peers = {
            n: self._tns_ip(n) for p in self.pools for n in self.model.members(p) if n != self.node
        }
        self.journal = Journal(os.path.join(cfg.state_dir, "connector.db"))
        self.journal_hung = Fault(log, "journal", logging.ERROR)
        self.serf_rpc = Fault(serf_log, "serf rpc")
        self.poll_interval = 2.0
        self.serf_started = -SERF_START_GRACE  # monotonic time the agent was last started
        self.serf_members: dict[str, SerfMember] = {}
        self.coords: dict[str, Any] = {}
        self.topology: dict[str, PoolTopology] = {}
        self.dirty = asyncio.Event()
        self.subscribers: set[asyncio.Queue] = set()
        self.maint_tag = maintenance_tag(False)
        self.rpc: SerfClient | None = None
        self.serf_proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.exit_code = 0
        self.started = time.monotonic()
        self.baseline = False  # no events until the first full view of every pool
        self._coords_at = 0.0
        self._coords_next = 0
        self._maint: dict[str, str] = {}  # maint tags as of the last applied topology
        self._joining: asyncio.Task | None = None
        self._rtts_of: dict[str, Any] | None = None
        self._rtt_cache: dict[str, float] = {}
        self.passes = 0  # topology passes since start (status: what idle costs)
        # Keys: gossip encrypted, one probe key per pool, Serf RPC never open
        # (docs/security.md). The RPC token is the daemon's own secret: when the
        # config gives none, a random one per start (the daemon is its only client).
        require_secrets(cfg, self.pools)
        cfg.serf["rpc_auth"] = cfg.serf.get("rpc_auth") or secrets.token_urlsafe(32)
        self.prober = Prober(
            self.node,
            self.peers,
            int(cfg.probe["port"]),
            {p: str(k).encode() for p, k in cfg.probe["keys"].items()},
            {p: self.model.members(p) for p in self.pools},
            float(cfg.probe["interval"]),
            float(cfg.probe["dead_after"]),
            self.dirty.set,
            self._maint_seen,
            lambda: self.sbm_tag,
            epoch=next_epoch(cfg.state_dir),
            bounded_above=int(cfg.probe["bounded_above"]),
            rings=int(cfg.probe["rings"]),
        )
        self.watcher = Watcher(self, cfg.watcher, self.journal)
        self.sbm_tag = "3"
        self.sbm = SbmScheduler(
            self.model.effective(self.node).settings["baseline"],
            self._publish_sbm,
            hold_down=float(cfg.sbm.get("hold_down", 0)),
            default_interval=float(cfg.sbm.get("interval", 10)),
            reachable_peers=lambda: len(self._reachable_peers()),
        )
        self.metrics = Metrics(cfg.metrics)
        self.control = ControlServer(self)
        self.dns = DnsReconciler(
            self.node,
            self.model,
            self.pools,
            cfg.dns,
            last_heard=lambda pool: dict(self.prober.heard.get(pool, {})),
            fresh=float(cfg.probe["dead_after"]),
            on_change=self.publish,
        )
        # FS-SA live path: this node's live trees pushed to their alive pool peers.
        self.fs = FsAgent(
            self.node,
            self.model,
            cfg.state_dir,
            cfg.fs,
            on_event=self.publish,
            metrics=self.metrics,
        )
        self.sl = SlAgent(self, cfg.sl)
        self.control.ops["sl"] = self.sl.control
        # DB-SA: ships this node's database changes to its pool peers (connector/db_*.py).
        self.db = DbAgent(
            self.node,
            self.model,
            cfg.state_dir,
            cfg.db,
            lambda: self.topology,
            self.publish,
            metrics=bool(cfg.metrics),
        )
        self.control.ops.update(self.db.control_ops())

    # ------------------------------------------------------------------ serf
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
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(conf, handle)
        os.replace(path + ".tmp", path)
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
            f"ver={__version__}",
        ]

    async def supervise_serf(self) -> None:
        """Run the Serf agent; restart it (with backoff) whenever it dies."""
        backoff = 0.5
        while not self.stopping:
            self.serf_proc = await asyncio.create_subprocess_exec(
                *self._serf_argv(),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            log.info("serf agent started", extra={"fields": {"pid": self.serf_proc.pid}})
            started = self.serf_started = time.monotonic()
            assert self.serf_proc.stderr is not None
            tail = await _log_lines(self.serf_proc.stderr, self.serf_proc.pid)
            await self.serf_proc.wait()
            if self.stopping:
                return
            log.warning(
                "serf agent exited; restarting",
                extra={"fields": {"rc": self.serf_proc.returncode, "stderr": "\n".join(tail)}},
            )
            if self.rpc:
                await self.rpc.close()
                self.rpc = None
            backoff = 0.5 if time.monotonic() - started > 30 else min(backoff * 2, 10)
            await asyncio.sleep(backoff)

    async def follow_serf(self) -> None:
        """Keep an RPC connection, the member table and the event stream alive."""
        while not self.stopping:
            rpc = SerfClient(
                "127.0.0.1", int(self.cfg.serf["rpc_port"]), self.cfg.serf.get("rpc_auth")
            )
            try:
                await rpc.connect(timeout=2)
                self.rpc = rpc
                await rpc.set_tags(
                    {"maint": self.maint_tag, "sbm": self.sbm_tag, "sl": self.sl.digest[:8]}
                )
                await self._refresh_members()
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
        missing = True
        while True:
            # While peers are missing (start-up, a partition) join again sooner.
            await asyncio.sleep(
                min(self.poll_interval, JOIN_RETRY) if missing else self.poll_interval
            )
            try:
                await self._refresh_members()
                alive = [
                    n
                    for n, m in self.serf_members.items()
                    if m.status == "alive" and n != self.node
                ]
                missing = len(alive) < len(self.peers)
                if missing:
                    self._join_soon()
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
            self.serf_members = table
            self.dirty.set()

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
            self.serf_members = fresh
            self.dirty.set()

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
        """Set one Serf tag now (when connected; the next connection sets it anyway)."""
        if self.rpc:
            with contextlib.suppress(SerfError):
                await self.rpc.set_tags({name: value})

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

    # ------------------------------------------------------------- topology
    async def recompute(self) -> None:
        """Recalculate every pool on each change and publish what changed."""
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            cpu = time.thread_time()
            serf = dict(self.serf_members)
            if self.node not in serf:
                serf[self.node] = SerfMember(
                    self.node, self.address, "alive", {"maint": self.maint_tag, "sbm": self.sbm_tag}
                )
            self.passes += 1
            rtts = self._rtts()
            emit = self.baseline
            if not self.baseline:
                # Until Serf has reported every declared member once, absence
                # means "not joined yet", not "failed": record silently; the
                # first complete view is the baseline later events diff from.
                declared = {n for p in self.pools for n in self.model.members(p)}
                self.baseline = (
                    declared <= set(self.serf_members) or time.monotonic() - self.started > 15
                )
            for pool in self.pools:
                # Only what was signed with this pool's key decides this pool.
                observations = self.prober.observations(pool=pool)
                new = pool_topology(
                    pool,
                    self.model.members(pool),
                    self._probe_sbm(serf, pool),
                    observations,
                    rtts,
                    me=self.node,
                    reach=self.prober.reach(pool),
                )
                events = topology_events(self.topology.get(pool), new) if emit else []
                self.topology[pool] = new
                self.dns.observe(pool, new)
                self.fs.observe(pool, new)
                for event in events:
                    await self.publish(event)
                self.metrics.topology(new, self.prober.rtt_ms)
            self._maint = {n: m.tags.get("maint", maintenance_tag(False)) for n, m in serf.items()}
            # Coalesce bursts, and more so when a pass is costly: a start of many
            # nodes changes views many times a second on every node, and a pass
            # costs O(pool); this keeps recomputing under ~1/RECOMPUTE_SHARE of
            # a core. An idle pool's pass takes ~1 ms, so a verdict still waits 20 ms.
            cost = time.thread_time() - cpu
            await asyncio.sleep(max(0.02, cost * RECOMPUTE_SHARE))

    def _rtts(self) -> dict[str, float]:
        """Serf's RTT estimate per peer, computed again only when coordinates changed.

        Coordinates move every 10 s; topology passes come many times a second
        while views change, and this was a third of a pass at 32 members.
        """
        if self._rtts_of != self.coords:
            self._rtts_of = dict(self.coords)
            mine = self.coords.get(self.node)
            rtts = {n: rtt_ms(mine, self.coords.get(n)) for n in self.peers}
            self._rtt_cache = {n: v for n, v in rtts.items() if v is not None}
        return self._rtt_cache

    def _probe_sbm(self, serf: dict[str, SerfMember], pool: str) -> dict[str, SerfMember]:
        """SERF with each peer's fresh SBM status from its probes of POOL, which beats
        the gossiped tag (Serf coalesces tag updates for ~1 s)."""
        out = dict(serf)
        for peer, code in self.prober.sbm(pool).items():
            member = out.get(peer)
            if member is not None and member.tags.get("sbm") != code:
                out[peer] = SerfMember(
                    member.name, member.address, member.status, {**member.tags, "sbm": code}
                )
        return out

    async def publish(self, event: dict[str, Any]) -> None:
        """Journal an event, stream it to followers, hand it to the watcher, count it."""
        event["ts"] = time.time()
        event["observer"] = self.node
        event["id"] = await self._journal_event(event)
        log.info("tns event", extra={"fields": event})
        for queue in list(self.subscribers):
            queue.put_nowait(event)
        self.watcher.submit(event)
        self.metrics.event(event)

    async def _journal_event(self, event: dict[str, Any]) -> int | None:
        """EVENT's journal id, or None when the journal fails or hangs.

        The journal is a record: when its disk fails the event still reaches
        the log, followers, the watcher and DNS; the fault is logged by the
        journal and shown by ``multiall status``. A write that hangs is left to
        finish in the journal's thread, so nothing written is lost.
        """
        write = asyncio.ensure_future(self.journal.offload(self.journal.add_event, dict(event)))
        write.add_done_callback(lambda f: f.cancelled() or f.exception())  # a late fault: seen
        try:
            event_id = await asyncio.wait_for(asyncio.shield(write), JOURNAL_WAIT)
        except TimeoutError:
            self.journal_hung.failed(
                f"journal {self.journal.path}: a write has taken more than {JOURNAL_WAIT:g} s "
                "(disk hung?); events are published without a journal id meanwhile"
            )
            return None
        except JournalError:
            return None  # logged and kept by the journal itself
        self.journal_hung.ok()
        return event_id

    def health(self) -> dict[str, Any]:
        """Faults the daemon is living with (empty when all is well), for ``multiall status``."""
        out: dict[str, Any] = {}
        journal = self.journal.fault.as_dict() or self.journal_hung.as_dict()
        if journal:
            out["journal"] = {"path": self.journal.path, **journal}
        if self.journal.moved_aside:
            out["journal_corrupt"] = {
                "error": f"the journal was corrupt at start-up: kept as {self.journal.moved_aside},"
                " a new one started (salvage with: sqlite3 <that file> .recover)",
                "path": self.journal.moved_aside,
            }
        if self.serf_rpc.as_dict():
            out["serf_rpc"] = self.serf_rpc.as_dict()
        return out

    def status(self) -> dict[str, Any]:
        """``multiall status``: this node's view of every pool it is in."""
        return {
            "node": self.node,
            "address": self.address,
            "version": __version__,
            "pools": {p: t.as_dict() for p, t in sorted(self.topology.items())},
            "serf_members": len(self.serf_members),
            "serf": {n: m.status for n, m in sorted(self.serf_members.items())},
            "probe_rtt_ms": self.prober.rtt_ms,
            "probe_rejected": self.prober.rejected,
            "probe_replayed": self.prober.replayed,
            # Traffic since start, for the cost model (benchmarks/tns_scale.py).
            "probe_traffic": {**self.prober.traffic(), "topology_passes": self.passes},
            # Seconds since each peer's last accepted probe packet (any shared pool).
            "probe_heard_s": {
                peer: round(time.monotonic() - when, 3)
                for peer, when in sorted(self.prober.last_heard.items())
            },
            # Peers whose probes are refused because the clocks disagree: {peer: seconds ahead}.
            "probe_clock_skew": self.prober.skewed(),
            "maintenance": self.maint_tag,
            "faults": self.health(),
            "sl": self.sl.status(),
        }

    # ----------------------------------------------------------- maintenance
    async def maintenance(self, enter: bool, reason: str, timeout: float = 15.0) -> dict[str, Any]:
        """Set the maint tag; return once every reachable pool peer has seen it."""
        tag = maintenance_tag(enter, reason)
        reason = parse_maintenance_tag(tag)[1]
        start = time.monotonic()
        self.maint_tag = tag
        if not self.rpc:
            raise SerfError("the Serf agent is not connected yet")
        await self.rpc.set_tags({"maint": tag})
        await self.sbm.set_maintenance(enter)
        self.dirty.set()
        waiting: list[str] = []
        while time.monotonic() - start < timeout:
            waiting = [
                peer
                for peer, state in self._reachable_peers().items()
                # In a bounded pool only ring neighbours send to this node.
                if self.prober.speaks_to(peer)
                and self.prober.peer_maint_seen.get(peer, {}).get(self.node) != tag
            ]
            if not waiting:
                break
            await asyncio.sleep(0.05)
        # Drain: return only once no pool record hands this node out any more
        # (or it is kept because no other member can take the clients).
        dns = await self.dns.wait_drained(self.node, start + timeout) if enter else {}
        not_drained = sorted(
            p for p, v in dns.items() if v != "drained" and not v.startswith("kept")
        )
        return {
            "ok": not waiting and not not_drained,
            "maintenance": enter,
            "reason": reason,
            "waited_s": round(time.monotonic() - start, 3),
            "not_acknowledged_by": waiting,
            "dns": dns,
            "not_drained": not_drained,
        }

    def _reachable_peers(self) -> dict[str, str]:
        out = {}
        for topo in self.topology.values():
            for name, member in topo.members.items():
                if name != self.node and member.state in ("alive", "suspect", "maintenance"):
                    out[name] = member.state
        return out

    # ------------------------------------------------------------------- main
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sock_path = self.cfg.control_socket
        os.makedirs(os.path.dirname(sock_path), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self.control.handle, path=sock_path)
        finally:
            os.umask(old_umask)
        os.chmod(sock_path, 0o600)
        transport, _protocol = await loop.create_datagram_endpoint(
            lambda: self.prober,
            local_addr=(self.address, int(self.cfg.probe["port"])),
            family=socket.AF_INET,
        )
        self.metrics.start()
        tasks = [
            asyncio.create_task(self.supervise_serf(), name="serf"),
            asyncio.create_task(self.follow_serf(), name="rpc"),
            asyncio.create_task(self.prober.run(), name="probe"),
            asyncio.create_task(self.recompute(), name="topology"),
            asyncio.create_task(self.watcher.run(), name="watcher"),
            asyncio.create_task(self.sbm.run(), name="sbm"),
            asyncio.create_task(self.dns.run(), name="dns"),
            asyncio.create_task(self.fs.run(), name="fs"),
            asyncio.create_task(self.sl.run(), name="sl"),
            asyncio.create_task(self.db.run(), name="db"),
        ]
        log.info(
            "connector started",
            extra={"fields": {"node": self.node, "pools": self.pools, "peers": self.peers}},
        )
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _pending = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        crashed = [t for t in done if t is not stopper]
        for task in crashed:
            # A core task must never die quietly: log it and exit non-zero so
            # the service manager (systemd, the lab supervisor) restarts us.
            exc = task.exception() if not task.cancelled() else None
            log.error("core task %s stopped: %r", task.get_name(), exc)
            self.exit_code = 1
        log.info("connector stopping")
        self.stopping = True
        server.close()
        transport.close()
        for task in tasks:
            task.cancel()
        if self.serf_proc and self.serf_proc.returncode is None:
            self.serf_proc.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.serf_proc.wait(), 5)
        await asyncio.gather(*tasks, return_exceptions=True)
        self.journal.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)


async def _log_lines(stream: asyncio.StreamReader, pid: int) -> list[str]:
    """Log each line the Serf agent writes to stderr as it comes; return the last few.

    Serf runs with ``-log-level warn``: what it writes matters now (a bad key,
    a port in use), not when it exits, and a long-lived agent must not grow a
    buffer in memory.
    """
    tail: deque[str] = deque(maxlen=SERF_STDERR_TAIL)
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # asyncio drops a line longer than its limit (64 KiB): say so
            serf_log.warning("serf agent: (a stderr line over 64 KiB was dropped)")
            continue
        if not raw:
            return list(tail)
        line = raw.decode(errors="replace").rstrip()
        if line:
            tail.append(line[:1000])
            serf_log.warning("serf agent: %s", line[:4000], extra={"fields": {"pid": pid}})


def main(config_path: str) -> int:
    """Entry point of ``multiall daemon``."""
    from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModelError

    from .config import load_config

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        cfg = load_config(config_path)
        connector = Connector(cfg)
    except PoolModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    with _profiled(os.environ.get("MULTIALL_PROFILE")):
        asyncio.run(connector.run())
    return connector.exit_code


@contextlib.contextmanager
def _profiled(path: str | None) -> Any:
    """With ``MULTIALL_PROFILE=PATH``, profile the daemon's loop with cProfile.

    Where a connector spends its CPU at start-up and idle (benchmarks/tns_scale.py
    ``--profile``): every SIGUSR1 writes the statistics gathered since the last one
    to ``PATH.<n>`` (n = 1, 2, ...) and starts afresh, so start-up and idle are
    apart. Off (and free) without the variable.
    """
    if not path:
        yield
        return
    import cProfile

    # CPU time, not wall time: on a loaded machine the wall clock would charge
    # the time a process waits for a core to whatever it was doing.
    def profile() -> cProfile.Profile:
        return cProfile.Profile(time.process_time)

    state = {"profile": profile(), "n": 0}

    def dump(_signum: int, _frame: Any) -> None:
        state["n"] += 1
        state["profile"].dump_stats(f"{path}.{state['n']}")  # also stops it
        state["profile"] = profile()
        state["profile"].enable()

    signal.signal(signal.SIGUSR1, dump)
    state["profile"].enable()
    try:
        yield
    finally:
        state["profile"].disable()
