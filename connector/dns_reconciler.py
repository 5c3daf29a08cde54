"""In-process DNS-SA: the pool leader keeps the pool's records in step with TNS.

Why in-process and not only the watcher's playbook: a signed RFC 2136 update
takes about 2 ms, an ansible-runner run about 1-2 s before its first task
(see docs/dns.md for the figures). The failover goal (clients off a dead node
within 2.5 s of the kill, with detection itself taking ~1 s) leaves no room for
the playbook, so the leader applies the same ``module_utils/_dns_*.py`` logic the
``dns_zone`` module uses, and the ``dns_reaction.yml`` playbook reconciles
after it (and finds nothing to do).

Rules: only the leader with quorum writes; hold-down before a recovered member
returns; never an empty pool record; no removal on an unsettled view (a
leader that just regained quorum, e.g. when a partition heals, first hears
from the members it would remove, see ``keep_unsettled``); every failure is logged, kept in
``multiall dns`` and retried with backoff, since the state (not a queue of
changes) is what gets applied, nothing is lost while the server is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._dns_members import (
    DEFAULT_HOLD_DOWN,
    HoldDown,
    MemberChoice,
    choose_members,
    keep_unsettled,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_reconcile import reconcile
from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import (
    RRset,
    address_type,
    compare,
    owned_keys,
    rrset_lines,
    served_members,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_tsig import (
    DEFAULT_KEY_FILE,
    TsigKey,
    load_key_file,
    pool_key_file,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_update import served_rrsets
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import (
    DnsError,
    pool_addresses,
    zone_settings,
)
from ansible_collections.takelan.multiall.plugins.module_utils.tns import PoolTopology

from .dns_push_installer import PushInstaller

log = logging.getLogger("multiall.dns")


class DnsReconciler:
    """One per connector; acts for the pools this node leads."""

    def __init__(
        self,
        node: str,
        model: Any,
        pools: list[str],
        cfg: dict[str, Any],
        last_heard: Callable[[str], dict[str, float]] = lambda pool: {},
        fresh: float = 1.0,
        on_change: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.node = node
        self.last_heard, self.fresh, self.on_change = last_heard, fresh, on_change
        self.settings = {p: zone_settings(model, p) for p in pools if model.pools[p].get("dns")}
        self.addresses = {p: pool_addresses(model, p) for p in self.settings}
        self.hold = {p: HoldDown() for p in self.settings}
        self.hold_down = float(cfg.get("hold_down", DEFAULT_HOLD_DOWN))
        self.timeout = float(cfg.get("timeout", 1.0))
        self.resync = float(cfg.get("resync", 2.0))
        # One key per pool ({pool} in the path): a pool's key updates only its own zone.
        self.key_file = str(cfg.get("key_file", DEFAULT_KEY_FILE))
        self.keys: dict[str, TsigKey] = {}
        self.topology: dict[str, PoolTopology] = {}
        # Since when (monotonic) each pool has had quorum and fresh contact with a
        # majority without a break, in this node's view; None while it has not.
        self.settled_since: dict[str, float | None] = {p: None for p in self.settings}
        self.kick = asyncio.Event()
        # push mode: this node installs the zones FS-SA brings when it is their server.
        self.pushed = PushInstaller(
            {
                p: s
                for p, s in self.settings.items()
                if s["mode"] == "push" and s.get("server") == self.addresses[p].get(node)
            }
        )
        self.state: dict[str, dict[str, Any]] = {
            p: {
                "applied": None,
                "checked": 0.0,
                "error": None,
                "retry_at": 0.0,
                "last": None,
                "served": None,
            }
            for p in self.settings
        }

    # ------------------------------------------------------------ decisions
    def observe(self, pool: str, topo: PoolTopology) -> None:
        """Called by the topology loop with every new view of a pool."""
        if pool not in self.settings:
            return
        self.hold[pool].observe(topo.members, time.monotonic())
        self.topology[pool] = topo
        self._track_settled(pool)
        self.kick.set()

    def _track_settled(self, pool: str) -> bool:
        """Whether this node's view of the pool has been backed by quorum for ``fresh`` s.

        Quorum is regained packet by packet when a partition heals: the first
        fresh packets restore it while verdicts on the members not heard yet
        are still the ones from the partition. ``fresh`` (``dead_after``) is
        long enough to hear from every reachable member a few times.
        """
        now = time.monotonic()
        topo = self.topology.get(pool)
        if topo is None or not topo.quorum or not self.fresh_majority(pool):
            self.settled_since[pool] = None
            return False
        since = self.settled_since[pool]
        if since is None:
            self.settled_since[pool] = since = now
        return now - since >= self.fresh

    def choice(self, pool: str) -> MemberChoice:
        """Who belongs in the pool record in this node's view, now."""
        topo = self.topology.get(pool)
        if topo is None:
            return MemberChoice([])
        served = self.state[pool]["served"] or set()
        hold = self.hold[pool]
        now = time.monotonic()
        chosen = choose_members(
            topo.members, hold.held(now, self.hold_down, served), served, hold.was_down
        )
        heard = {n for n, t in self.last_heard(pool).items() if now - t <= self.fresh}
        return keep_unsettled(
            chosen, topo.members, served, heard | {self.node}, self._track_settled(pool)
        )

    def acting(self, pool: str) -> tuple[bool, str]:
        """Whether this node writes the pool's zone, and why (not)."""
        topo = self.topology.get(pool)
        mode = self.settings[pool]["mode"]
        if topo is None:
            return False, "no topology yet"
        if topo.leader != self.node:
            return False, f"not the leader ({topo.leader or 'none'} is)"
        if not topo.quorum:
            return False, "no quorum: a minority never rewrites the zone"
        if not self.fresh_majority(pool):
            return False, "no fresh contact with a majority of the pool (partitioned?)"
        if mode == "rebuild":
            return False, "mode rebuild: applied by the dns_reaction playbook on the DNS server"
        if mode not in ("update", "push"):
            return False, f"mode {mode}: not supported"
        if not self.settings[pool].get("server"):
            return False, "no dns.server in the pool model"
        return True, "leader with quorum"

    def fresh_majority(self, pool: str) -> bool:
        """A majority of the pool (this node included) was heard from just now.

        TNS quorum decays member by member when this node is cut off: the
        first peer to time out is "failed" while the others still count, and
        a leader acting on that would remove healthy members from DNS. Every
        write needs fresh packets from a majority, which a cut-off node lacks.
        """
        now = time.monotonic()
        # Only packets signed with this pool's key count: a peer heard in
        # another shared pool says nothing about this pool's partition.
        heard = self.last_heard(pool)
        declared = list(self.addresses[pool])
        fresh = 1 + sum(
            1 for n in declared if n != self.node and now - heard.get(n, -1e9) <= self.fresh
        )
        return fresh * 2 > len(declared)

    # ---------------------------------------------------------------- loop
    async def run(self) -> None:
        """Reconcile on every change, on hold-down expiry, after errors and every ``resync``."""
        while True:
            wait = 1.0
            for pool in self.settings:
                held = self.hold[pool].held(
                    time.monotonic(), self.hold_down, self.state[pool]["served"] or set()
                )
                if held:
                    wait = min(wait, max(0.02, min(held.values())))
                since = self.settled_since[pool]
                if since is not None and time.monotonic() - since < self.fresh:
                    # Wake when the view settles: removals held back may be due then.
                    wait = min(wait, max(0.02, since + self.fresh - time.monotonic()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.kick.wait(), wait)
            self.kick.clear()
            await self.pushed.poll()
            for pool in self.settings:
                try:
                    await self._step(pool)
                except Exception as exc:  # the loop must outlive any bug
                    log.exception("dns reconcile of %s crashed", pool)
                    self.state[pool]["error"] = f"internal error: {exc!r}"

    async def _step(self, pool: str) -> None:
        state = self.state[pool]
        if not self.acting(pool)[0]:
            state.update(applied=None, served=None)  # re-read the server when leading again
            return
        if state["served"] is None:
            # Learn what is served before choosing: hold-down keeps served members.
            try:
                self._note_served(pool, await self._read_served(pool))
            except DnsError as exc:
                state["error"] = str(exc)
                return
        choice = self.choice(pool)
        members = choice.members
        now = time.monotonic()
        due = (
            tuple(members) != state["applied"]
            or now - state["checked"] > self.resync
            or (state["error"] and now >= state["retry_at"])
        )
        if not due or (state["error"] and now < state["retry_at"]):
            return
        try:
            key = self.keys.get(pool)
            if key is None and self.settings[pool]["mode"] == "update":
                path = pool_key_file(self.key_file, pool)
                key = self.keys[pool] = await asyncio.to_thread(load_key_file, path)
            settings = self.settings[pool]
            result = await asyncio.to_thread(
                reconcile,
                settings,
                self.addresses[pool],
                members,
                settings["server"],
                key=key,
                timeout=self.timeout,
            )
        except DnsError as exc:
            backoff = min(5.0, max(0.25, 2 * (state.get("backoff") or 0.125)))
            state.update(error=str(exc), retry_at=now + backoff, backoff=backoff, applied=None)
            self.keys.pop(pool, None)  # re-read on retry: the key file may have been fixed
            log.warning("dns: %s", exc, extra={"fields": {"pool": pool}})
            return
        state.update(
            applied=tuple(members),
            served=set(members),
            checked=now,
            error=None,
            backoff=None,
            retry_at=0.0,
        )
        if result["changed"]:
            change = {
                "type": "dns_changed",
                "pool": pool,
                "zone": result["zone"],
                "changes": result["diff"],
                "members": result["members"],
                "update_ms": result.get("update_ms"),
            }
            state["last"] = {**change, "ts": time.time()}
            log.info("dns updated", extra={"fields": {**change, "choice": choice.as_dict()}})
            if self.on_change is not None:
                # Journaled like topology events: `multiall events` tells what DNS did when.
                await self.on_change(change)

    async def _read_served(self, pool: str) -> dict[tuple[str, str], RRset]:
        """Ask the server for every record set MultiAll owns in the pool's zone."""
        settings = self.settings[pool]
        return await asyncio.to_thread(
            served_rrsets,
            str(settings.get("server") or ""),
            settings["zone"],
            owned_keys(settings, self.addresses[pool]),
            53,
            self.timeout,
        )

    def _adopt_served(
        self,
        pool: str,
        served: dict[tuple[str, str], RRset],
        acting: bool,
        applied: tuple[str, ...] | None,
    ) -> None:
        """Make the report (and the next choice) start from what the server really serves.

        The leader remembers what it applied and chooses from that, but it is
        not the only writer: the ``dns_reaction.yml`` playbook's ``dns_zone``
        applies the choice it read a moment earlier (a member may have changed
        since), and an operator may run the module too. The report then
        claimed ``kept_last: [n1]`` from memory while BIND served n2 until the
        next resync. When the server disagrees with what was applied, the
        leader takes the server's word and reconciles now.
        """
        state = self.state[pool]
        if not acting or state["served"] is None:
            # Not writing: the server is the only record. Or leading again (a healed
            # partition) before the loop's first step has read the server: choosing
            # from nothing held back every member the majority's leader had put in
            # (hold-down gates adding), and a dns_reaction run applied that choice,
            # pulling the majority out of DNS (test_partitions_on_lab).
            self._note_served(pool, served)
            return
        if state["applied"] != applied:
            return  # the leader wrote while we read: its record is the newer one
        now_served = served_members(self.settings[pool], self.addresses[pool], served)
        if now_served != set(applied or ()):
            log.warning(
                "dns: the server serves what this leader did not apply; reconciling",
                extra={
                    "fields": {
                        "pool": pool,
                        "applied": list(applied or ()),
                        "served": sorted(now_served),
                    }
                },
            )
            state.update(served=now_served, applied=None)
            self.kick.set()

    def _note_served(self, pool: str, served: dict[tuple[str, str], RRset]) -> None:
        """Remember which members the pool record hands out (hold-down keeps those)."""
        self.state[pool]["served"] = served_members(
            self.settings[pool], self.addresses[pool], served
        )

    # -------------------------------------------------------------- reports
    async def report(self, pool: str | None = None) -> dict[str, Any]:
        """``multiall dns``: what the server serves vs what the topology wants."""
        if pool is not None and pool not in self.settings:
            raise ValueError(
                f"pool {pool!r} has no DNS on this node; DNS pools here: "
                f"{', '.join(self.settings) or 'none'}"
            )
        out = {}
        for name in [pool] if pool else list(self.settings):
            settings = self.settings[name]
            topo = self.topology.get(name)
            acting, why = self.acting(name)
            served, served_error = None, None
            applied = self.state[name]["applied"]
            try:
                served = await self._read_served(name)
                self._adopt_served(name, served, acting, applied)
            except DnsError as exc:
                served_error = str(exc)
            choice = self.choice(name)
            entry: dict[str, Any] = {
                "zone": settings["zone"],
                "server": settings.get("server"),
                "mode": settings["mode"],
                "ttl": settings["ttl"],
                "leader": topo.leader if topo else None,
                "quorum": topo.quorum if topo else False,
                "fresh_majority": self.fresh_majority(name),
                "acting": acting,
                "why": why,
                "members": choice.as_dict(),
                "last_change": self.state[name]["last"],
                "error": self.state[name]["error"],
                "in_sync": False,
            }
            if served is None:
                entry["served_error"] = served_error
            else:
                found = compare(
                    settings, self.addresses[name], choice.members, served, str(settings["server"])
                )
                entry["wanted"] = rrset_lines(found["wanted"])
                entry["served"] = rrset_lines(found["served"])
                entry["diff"] = found["diff"]
                entry["in_sync"] = not found["changes"]
            out[name] = entry
        return {"ok": True, "node": self.node, "pools": out}

    async def wait_drained(self, node: str, deadline: float) -> dict[str, str]:
        """After ``maintenance enter``: wait until no pool record still hands out ``node``."""
        outcome: dict[str, str] = {}
        for pool, settings in self.settings.items():
            address = self.addresses[pool].get(node)
            if address is None or not settings.get("server"):
                continue
            outcome[pool] = "timeout"
            key = (settings["record"], address_type(node, address))
            while time.monotonic() < deadline:
                choice = self.choice(pool)
                if node in choice.kept_last:
                    outcome[pool] = "kept: no other member can take the clients"
                    break
                try:
                    served = await asyncio.to_thread(
                        served_rrsets, settings["server"], settings["zone"], [key], 53, self.timeout
                    )
                except DnsError as exc:
                    outcome[pool] = f"unknown: {exc}"
                    await asyncio.sleep(0.1)
                    continue
                if address not in served[key].values:
                    outcome[pool] = "drained"
                    break
                await asyncio.sleep(0.02)
        return outcome
