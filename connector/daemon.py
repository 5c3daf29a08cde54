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
import sys
import time
from collections import defaultdict
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModel, load
from ansible_collections.takelan.multiall.plugins.module_utils.tns import (
    PoolTopology,
    SerfMember,
    maintenance_tag,
    parse_maintenance_tag,
    pool_topology,
    topology_events,
    with_probed,
)

from . import __version__
from .config import ConnectorConfig, require_secrets
from .control import ControlServer
from .db_agent import DbAgent
from .dns_reconciler import DnsReconciler
from .fs_agent import FsAgent
from .health import Fault
from .journal import Journal, JournalError
from .metrics import Metrics
from .probe import Prober, next_epoch
from .profiling import profiled
from .sbm_scheduler import SbmScheduler
from .serf import SerfClient, SerfError, rtt_ms
from .serf_link import SERF_START_GRACE, SerfLink, serf_log
from .sl_agent import SlAgent
from .udp_endpoint import open_endpoint
from .watcher import Watcher

log = logging.getLogger("multiall.connector")

# How long an event waits for its journal row before it is published without
# one: a hung disk must not hold up the topology loop (and DNS failover).
JOURNAL_WAIT = 2.0
# After a topology pass of C CPU seconds, wait C x this before the next (at least 20 ms).
RECOMPUTE_SHARE = 9
BRIEF_NAMES = 20  # members named per pool in a brief status


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


class Connector(SerfLink):
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
        # The event stream carries every change; the poll is belt and braces (a stream
        # dropped under load) and costs a whole member table per call at 128 members.
        self.poll_interval = 5.0
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
        # maint tags as of the last applied topology; its own from the start (probe
        # packets carry it: peers count this node alive by them before Serf gossips it).
        self._maint: dict[str, str] = {self.node: self.maint_tag}
        # Per pool: members counted alive by probes that Serf has not reported yet
        # (tns.with_probed: when their evidence stops, they are failed, not left).
        self._probed_seen: dict[str, dict[str, str]] = defaultdict(dict)
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
            # Only what was signed with this pool's key decides this pool.
            probed = {pool: self.prober.probed(pool) for pool in self.pools}
            if not self.baseline:
                # Until every declared member has been seen once (by Serf, or alive by
                # its probes), absence means "not joined yet", not "failed": record
                # silently; the first complete view is the baseline events diff from.
                declared = {n for p in self.pools for n in self.model.members(p)}
                seen = set(serf).union(*probed.values())
                self.baseline = declared <= seen or time.monotonic() - self.started > 15
            maint = {n: m.tags.get("maint", maintenance_tag(False)) for n, m in serf.items()}
            for pool in self.pools:
                members, promoted = with_probed(serf, probed[pool], self._probed_seen[pool])
                maint.update(promoted)
                observations = self.prober.observations(pool=pool)
                new = pool_topology(
                    pool,
                    self.model.members(pool),
                    self._probe_sbm(members, pool),
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
            self._maint = maint
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

    def status_brief(self, member: str | None = None) -> dict[str, Any]:
        """``multiall status --brief``: per pool the count of members in each state.

        What a monitor or a script polling many nodes needs (benchmarks/tns_scale.py
        polls 128 nodes twice a second while they converge): the full status lists
        every member with its details and cost ~2 ms a call at 128 members, which
        at that rate was a core of the machine the lab's nodes share.
        """
        pools = {}
        for pool, topo in sorted(self.topology.items()):
            states: dict[str, int] = {}
            for view in topo.members.values():
                states[view.state] = states.get(view.state, 0) + 1
            pools[pool] = {
                "leader": topo.leader,
                "quorum": topo.quorum,
                "declared": topo.declared,
                "states": states,
                # The first few members that are not alive, by name: enough to act on.
                "not_alive": sorted(n for n, v in topo.members.items() if v.state != "alive")[
                    :BRIEF_NAMES
                ],
            }
        reply: dict[str, Any] = {
            "node": self.node,
            "version": __version__,
            "brief": True,
            "pools": pools,
            "serf_members": len(self.serf_members),
            "serf_alive": sum(1 for m in self.serf_members.values() if m.status == "alive"),
            "probe_traffic": {**self.prober.traffic(), "topology_passes": self.passes},
            "maintenance": self.maint_tag,
            "faults": self.health(),
        }
        if member is not None:
            known = self.serf_members.get(member)
            reply["member"] = {
                "name": member,
                "serf": known.status if known else None,
                "pools": {
                    p: t.members[member].state
                    for p, t in sorted(self.topology.items())
                    if member in t.members
                },
            }
        return reply

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
        transport = open_endpoint(self.prober, self.address, int(self.cfg.probe["port"]))
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
    with profiled(os.environ.get("MULTIALL_PROFILE")):
        asyncio.run(connector.run())
    return connector.exit_code
