"""DB-SA live path for one database: ship own changes to every pool peer.

Store and forward, as SymmetricDS does it: the capture triggers keep every
local change in ``multiall_changelog`` (the cache table); for each peer this
node keeps an ack watermark (db_acks.py) and sends the changes after it in
batches over a persistent session (db_link.py). The peer applies a batch in
one transaction and answers its new watermark for this origin, which becomes
the ack. A change is pruned only once EVERY peer of the database acked it,
so a peer that is down, partitioned away or in maintenance simply has a
backlog, replayed when TNS sees it alive again.

Nothing is lost or duplicated when either side dies mid-batch: a batch
lands entirely or not at all, the peer's per-origin watermark skips changes
it already holds, and the ack is written only after the peer's answer - so
the worst case is a resend that the peer skips.

A schema mismatch on one table (the peer lacks a column, has another primary
key) blocks that table towards that peer: batches stop just before its
first change (the peer's watermark is per origin, so nothing after it may
be acknowledged while it waits), the error shows in ``multiall db status``
and as a ``db_schema_mismatch`` event, and it is retried every
``SCHEMA_RETRY`` seconds, so fixing the schema resumes the sync by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.changelog import (
    encode_columns,
    open_db,
)

from .db_acks import AckStore
from .db_link import LinkError, PeerLink
from .db_metrics import DbMetrics
from .db_model import policy

log = logging.getLogger("multiall.db")

BATCH = 5000
WINDOW = 2  # batches in flight per peer: the next travels while the peer applies
POLL = 0.05  # realtime: how often the local change sequence is read
SCHEMA_RETRY = 10.0
DB_RETRY = 2.0  # a database that cannot be read is tried again this often
BACKOFF_MAX = 10.0
BATCH_CACHE = 8  # full encoded batches kept for the other peers replaying the same range
CONFLICT_EVENTS = 20  # per batch; the count is always in status


def _being_cancelled() -> bool:
    """Whether the running task was asked to stop (``Task.cancelling``, Python 3.11+)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def hlc_wall(hlc: str | None) -> float | None:
    """Wall-clock seconds of an HLC stamp (its leading milliseconds field)."""
    if not hlc:
        return None
    digits = ""
    for char in str(hlc):
        if not char.isdigit():
            break
        digits += char
    return int(digits) / 1000.0 if digits else None


class DbSync:
    """Shipping of one database to its peers (one task per peer)."""

    def __init__(
        self,
        node: str,
        name: str,
        spec: dict[str, Any],
        peer_pool: dict[str, str],
        acks: AckStore,
        argv_for: Callable[[str, str, str], list[str]],
        peer_state: Callable[[str], str],
        publish: Callable[[dict[str, Any]], Awaitable[None]],
        batch: int = BATCH,
        poll: float = POLL,
        metrics: DbMetrics | None = None,
    ) -> None:
        self.node, self.name, self.spec = node, name, spec
        self.peer_pool, self.acks = peer_pool, acks
        self.peers = sorted(peer_pool)
        self.pools = sorted(set(peer_pool.values()))
        peers = self.peers
        self.argv_for, self.peer_state, self.publish = argv_for, peer_state, publish
        self.batch, self.poll = batch, poll
        self.metrics = metrics or DbMetrics(False)
        self.policy = policy(spec)
        self.tables = list(spec.get("tables") or [])
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"db-{name}")
        self.handle: Any = None
        self.local_seq = 0
        self.pruned = 0
        self.db_error: str | None = None
        self.kick = {p: asyncio.Event() for p in peers}
        self.links = {p: PeerLink(argv_for(self._pool_of(p), p, name), p) for p in peers}
        self.peer = {
            p: {
                "acked": acks.get(name, p),
                "error": None,
                "last_ship": None,
                "shipped": 0,
                "conflicts": 0,
                "state": "unknown",
            }
            for p in peers
        }
        # (peer, table) -> {"error", "since", "retry_at"}
        self.blocked: dict[tuple[str, str], dict[str, Any]] = {}
        self.last_applied: dict[str, float] = {}
        self.batches: dict[int, tuple[int, bytes, int, set[str]]] = {}  # after -> batch
        self.synced = asyncio.Condition()
        # (ack, local seq) -> (backlog per table, oldest change): db status's last scans
        self.scans: dict[tuple[int, int], tuple[dict[str, int], Any]] = {}

    def _pool_of(self, peer: str) -> str:
        """The pool whose peer key reaches PEER for this database (first shared pool)."""
        return self.peer_pool[peer]

    # -------------------------------------------------------- database thread
    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run FN(handle, *args) in this database's own thread (one connection)."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self._with_handle, fn, args
        )

    def _with_handle(self, fn: Callable[..., Any], args: tuple) -> Any:
        if self.handle is None:
            self.handle = open_db(self.name, self.spec, self.node).__enter__()
        try:
            return fn(self.handle, *args)
        except Exception:
            # A broken connection is reopened next time; the caller reports the error.
            with contextlib.suppress(Exception):
                self.handle.__exit__(None, None, None)
            self.handle = None
            raise

    def _read(self, handle: Any, peer: str, after: int) -> tuple[int, bytes, int, set[str]]:
        """(count, encoded batch, last seq, tables) of PEER's next batch after AFTER.

        Peers replaying the same backlog ask for the same batches: one read and
        one encoding serve them all (a small cache keyed by AFTER), unless the
        peer has a blocked table and so needs its own cut.
        """
        now = time.monotonic()
        blocked = {t for (p, t), b in self.blocked.items() if p == peer and now < b["retry_at"]}
        if not blocked and after in self.batches:
            return self.batches[after]
        columns = handle.read_batch(after, self.batch)
        for index, table in enumerate(columns["table"]):
            if table in blocked:
                columns = {name: values[:index] for name, values in columns.items()}
                break
        count = len(columns["seq"])
        if not count:
            return 0, b"", after, set()
        batch = count, encode_columns(columns), columns["seq"][-1], set(columns["table"])
        if not blocked and count == self.batch:  # a full batch never changes
            self.batches[after] = batch
            while len(self.batches) > BATCH_CACHE:
                self.batches.pop(next(iter(self.batches)))
        return batch

    # ------------------------------------------------------------------- loop
    async def run(self) -> None:
        """Poll the local sequence, kick peers, ship; until cancelled.

        The peers' ship tasks are awaited with the watch loop: one that ends (a
        bug: each catches its failures and retries) ends this database's run, so
        the daemon logs it as a core task that stopped and exits to be restarted,
        instead of that peer's backlog waiting forever with no error.
        """
        tasks = [asyncio.create_task(self._ship(p), name=f"db-{self.name}-{p}") for p in self.peers]
        try:
            await asyncio.gather(self._watch(), *tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for link in self.links.values():
                await link.close()
            self.executor.submit(self._close_handle)
            self.executor.shutdown(wait=False)

    def _close_handle(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(Exception):
                self.handle.__exit__(None, None, None)
            self.handle = None

    async def _watch(self) -> None:
        """Decide when each peer is worth a shipping round, by policy and by TNS."""
        mode = self.policy["mode"]
        period = self.poll if mode == "realtime" else float(self.policy["interval"])
        next_round = 0.0
        while True:
            now = time.monotonic()
            recovered = []
            for peer, info in self.peer.items():
                state = self.peer_state(peer)
                if state != info["state"]:
                    if state == "alive":
                        recovered.append(peer)
                    elif info["state"] == "alive":
                        # Gone: fail the in-flight batch now instead of waiting for a timeout.
                        await self.links[peer].close()
                    info["state"] = state
            if mode != "manual" and (now >= next_round or recovered):
                next_round = now + period
                try:
                    self.local_seq = await self.db(lambda h: h.max_seq())
                    self.db_error = None
                    acks = {p: i["acked"] for p, i in self.peer.items()}
                    self.metrics.local_seq(self.name, acks, self.local_seq)
                except Exception as exc:  # any engine error: shown, retried
                    self._db_failed(exc)
                    next_round = now + DB_RETRY
                for peer, info in self.peer.items():
                    if info["state"] == "alive" and self.local_seq > info["acked"]:
                        self.kick[peer].set()
            if mode != "manual":
                for peer in recovered:
                    self.kick[peer].set()  # opens the session now, before the next write needs it
            await asyncio.sleep(min(self.poll, period))

    def _db_failed(self, exc: Exception) -> None:
        message = f"database {self.name}: {exc}"
        if message != self.db_error:
            log.error(message)
        self.db_error = message

    async def sync_now(self, timeout: float) -> dict[str, Any]:
        """``multiall db sync``: ship to every alive peer now; wait until each acked all."""
        self.local_seq = await self.db(lambda h: h.max_seq())
        target = self.local_seq
        for peer in self.peer:
            if self.peer_state(peer) == "alive":
                self.kick[peer].set()
        deadline = time.monotonic() + timeout
        async with self.synced:
            while time.monotonic() < deadline:
                waiting = [
                    p
                    for p, info in self.peer.items()
                    if self.peer_state(p) == "alive"
                    and info["acked"] < target
                    and not info["error"]
                ]
                if not waiting:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.synced.wait(), deadline - time.monotonic())
        return {
            p: {
                "state": self.peer_state(p),
                "acked": info["acked"],
                "target": target,
                "done": info["acked"] >= target,
                "error": info["error"],
            }
            for p, info in self.peer.items()
        }

    async def _ship(self, peer: str) -> None:
        """Ship PEER's backlog whenever kicked; back off on failures."""
        backoff = 0.5
        while True:
            await self.kick[peer].wait()
            self.kick[peer].clear()
            if self.peer_state(peer) != "alive":
                continue
            try:
                more = await self._ship_round(peer)
                self.peer[peer]["error"] = None
                backoff = 0.5
                if more:
                    self.kick[peer].set()
            except LinkError as exc:
                if self.peer_state(peer) != "alive":
                    # TNS already says why (failed, maintenance): not an error of ours.
                    self.peer[peer]["error"] = None
                    continue
                backoff = await self._retry_later(peer, str(exc), backoff)
            except Exception as exc:  # an engine error: shown, retried
                backoff = await self._retry_later(peer, f"{type(exc).__name__}: {exc}", backoff)
            except asyncio.CancelledError:
                if _being_cancelled():
                    raise
                # Not meant for this task (a helper task it awaited was cancelled): this
                # peer's shipping must go on, or its backlog waits forever with no error.
                backoff = await self._retry_later(peer, "internal: a step was cancelled", backoff)
            finally:
                async with self.synced:
                    self.synced.notify_all()

    async def _retry_later(self, peer: str, message: str, backoff: float) -> float:
        """Show MESSAGE as PEER's error, wait BACKOFF, kick again; the next backoff."""
        self._peer_failed(peer, message)
        await asyncio.sleep(backoff)
        self.kick[peer].set()
        return min(backoff * 2, BACKOFF_MAX)

    def _peer_failed(self, peer: str, message: str) -> None:
        if self.peer[peer]["error"] != message:
            log.warning("db %s -> %s: %s", self.name, peer, message)
        self.peer[peer]["error"] = message

    async def _ship_round(self, peer: str) -> bool:
        """Send batches after PEER's ack, WINDOW in flight; True when a table waits (retry)."""
        link = self.links[peer]
        info = self.peer[peer]
        if not link.open:
            # A fresh session proves itself (SSH, key, receiver) before any batch,
            # and the peer's watermark may be ahead of our ack (an ack lost with
            # the state dir): nothing it already holds is sent again.
            await link.start()
            reply = await link.request("watermark")
            if not reply.get("ok"):
                raise LinkError(f"refused by {peer}: {reply.get('error')}")
            if int(reply["watermark"]) > info["acked"]:
                info["acked"] = await asyncio.to_thread(
                    self.acks.advance, self.name, peer, int(reply["watermark"])
                )
        after = info["acked"]
        inflight: list[tuple[asyncio.Future, int, int, set[str]]] = []
        exhausted = False
        while True:
            while not exhausted and len(inflight) < WINDOW:
                count, payload, last, tables = await self.db(self._read, peer, after)
                if not count:
                    exhausted = True
                    break
                inflight.append((link.send("apply", payload), last, count, tables))
                after = last
                if count < self.batch:
                    exhausted = True
            if not inflight:
                return False
            future, last, count, tables = inflight.pop(0)
            reply = await link.wait(future)
            if not reply.get("ok"):
                await link.close()  # what is in flight after a refusal is resent later
                return await self._refused(peer, reply)
            info["acked"] = await asyncio.to_thread(
                self.acks.advance, self.name, peer, int(reply["watermark"])
            )
            info["last_ship"] = time.time()
            info["shipped"] += int(reply.get("applied", count))
            self.metrics.acked_batch(
                self.name, peer, info["acked"], self.local_seq, int(reply.get("applied", count))
            )
            for table in tables:
                self.last_applied[table] = info["last_ship"]
                self.blocked.pop((peer, table), None)
            if reply.get("conflict_count"):
                await self._conflicts(peer, reply)
            await self._prune()

    async def _refused(self, peer: str, reply: dict[str, Any]) -> bool:
        """A refused batch: a schema mismatch blocks its table; anything else is an error."""
        error = str(reply.get("error") or "refused")
        table = reply.get("table")
        if reply.get("kind") == "schema" and table:
            first = (peer, table) not in self.blocked
            self.blocked[(peer, table)] = {
                "error": error,
                "since": time.time(),
                "retry_at": time.monotonic() + SCHEMA_RETRY,
            }
            if first:
                log.error("db %s table %s -> %s: %s", self.name, table, peer, error)
                await self.publish(
                    {
                        "type": "db_schema_mismatch",
                        "pool": self._pool_of(peer),
                        "member": peer,
                        "db": self.name,
                        "table": table,
                        "error": error,
                    }
                )
            return True  # the other tables go on, up to the blocked table's first change
        raise LinkError(f"refused by {peer}: {error}")

    async def _conflicts(self, peer: str, reply: dict[str, Any]) -> None:
        self.peer[peer]["conflicts"] += int(reply["conflict_count"])
        self.metrics.conflict(self.name, peer, int(reply["conflict_count"]))
        for conflict in (reply.get("conflicts") or [])[:CONFLICT_EVENTS]:
            detail = conflict if isinstance(conflict, dict) else {"detail": conflict}
            await self.publish(
                {
                    "type": "db_conflict",
                    "pool": self._pool_of(peer),
                    "member": peer,
                    "db": self.name,
                    **{k: v for k, v in detail.items() if k not in ("type", "pool", "member")},
                }
            )

    async def _prune(self) -> None:
        """Drop own changes every peer of the database has acknowledged."""
        upto = min((info["acked"] for info in self.peer.values()), default=0)
        if upto > self.pruned:
            await self.db(lambda h: h.prune(upto))
            self.pruned = upto

    # ----------------------------------------------------------------- status
    def _scan(self, handle: Any) -> dict[str, Any]:
        """Backlog per peer and table, lag, and the oldest unacknowledged change.

        Counted in SQL per distinct ack (peers replaying together share one): a
        status poll during a 100 000-row replay must not read the backlog's rows
        in the thread that ships them.
        """
        local = handle.max_seq()
        now = time.time()
        tables: dict[str, dict[str, Any]] = {
            t: {"backlog": {p: 0 for p in self.peer}, "last_applied": self.last_applied.get(t)}
            for t in self.tables
        }
        # Committed changes in (acked, local] never change (prune only drops what
        # every peer acked), so a scan is reused until its ack or the sequence moves.
        scans = {k: v for k, v in self.scans.items() if k[1] == local}
        peers = {}
        for peer, info in self.peer.items():
            acked = info["acked"]
            if (acked, local) not in scans:
                scans[(acked, local)] = handle.backlog(acked) if local > acked else ({}, None)
            counts, oldest = scans[(acked, local)]
            for table, count in counts.items():
                tables.setdefault(table, {"backlog": {}, "last_applied": None})
                tables[table]["backlog"][peer] = count
            wall = hlc_wall(oldest.hlc) if oldest else None
            peers[peer] = {
                **info,
                "backlog": max(local - acked, 0),
                "lag_s": round(max(now - wall, 0.0), 3) if wall else 0.0,
                "oldest_unacked": {"seq": oldest.seq, "table": oldest.table, "hlc": oldest.hlc}
                if oldest
                else None,
            }
        self.scans = {
            k: v for k, v in scans.items() if k[0] in {i["acked"] for i in peers.values()}
        }
        for (peer, table), block in self.blocked.items():
            tables.setdefault(table, {"backlog": {}, "last_applied": None})
            tables[table].setdefault("blocked", {})[peer] = block["error"]
        return {
            "local_seq": local,
            "pruned_upto": self.pruned,
            "peers": peers,
            "tables": tables,
        }

    async def status(self) -> dict[str, Any]:
        """This database's part of ``multiall db status``."""
        out: dict[str, Any] = {
            "engine": self.spec.get("engine"),
            "policy": self.policy,
            "pools": self.pools,
            "error": self.db_error,
        }
        try:
            out.update(await self.db(self._scan))
        except Exception as exc:  # shown as the database's error
            self._db_failed(exc)
            out["error"] = self.db_error
            out["peers"] = {p: dict(i) for p, i in self.peer.items()}
        return out
