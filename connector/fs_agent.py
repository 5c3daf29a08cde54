"""In-process FS-SA: push every change of a live tree to every alive pool peer.

Flow: inotify (``fs_watch``) -> debounce (50 ms) -> the index records what
really changed and queues it for every peer of the tree (one SQLite
transaction, so a change is never recorded without being queued) -> one pusher
per (tree, peer), all in parallel: ``multiall-fs apply`` (the receiver indexes
the versions before they land, applies deletes, resolves conflicts) then one
``rsync --files-from`` of the accepted paths over the pool's persistent SSH
master, then the queue rows are acknowledged. A peer that is down, in
maintenance or unreachable keeps its rows (the queue survives restarts); when
TNS sees it come back, the two compare indexes (``multiall-fs offer``) and each
queues for the other what it missed: no full rsync. Applying is idempotent
(version vectors), so a push cut short and repeated applies nothing twice.

Blocking work (SQLite, hashing) runs in one thread of its own; rsync and ssh
are subprocesses. Every failure is logged, shown by ``multiall fs status``
and retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._fs_apply import (
    attach_inline,
    resolve_lost,
)
from ansible_collections.takelan.multiall.plugins.module_utils._fs_digest import digest_slices
from ansible_collections.takelan.multiall.plugins.module_utils._pools_files import (
    tree_peers,
    trees_for,
)
from ansible_collections.takelan.multiall.plugins.module_utils.fsindex import (
    Index,
    index_path,
)
from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
    CONTROL_DIR,
    PEER_DIR,
)

from .fs_transport import FsTransport, PeerError
from .fs_watch import FsWatchError, TreeWatcher

log = logging.getLogger("multiall.fs")

DEFAULTS: dict[str, Any] = {
    "debounce": 0.05,
    "rescan": 3600.0,
    # Paths per push: 20 000 held ~25 MB per pusher (entries as dicts, inline data,
    # the JSON), four pushers at once; 5 000 keeps a 10 000-file burst to 2 runs.
    "batch": 5_000,
    "timeout": 120.0,
    "key_dir": PEER_DIR,
    "control_dir": CONTROL_DIR,
    "catch_up_every": 60.0,
}
# TNS states a peer is pushed to. ``suspect`` (probes late, not declared failed) as
# for DNS-SA: on a loaded machine peers go suspect every few seconds, and holding
# their pushes (then comparing indexes on the way back) made 10 changes take
# seconds; a push to a peer that really is gone fails and stays queued.
PUSHABLE = frozenset({"alive", "suspect"})
# How often a pusher looks at its queue without a kick: rows the receiving
# process queued for us (a conflict's winner, an offer) are found this way.
POLL = 2.0
# Entries per ``offer`` message when comparing indexes with a returning peer.
OFFER_SLICE = 5_000
# A push of at least this many paths gives its memory back afterwards (trim_heap).
TRIM_AFTER = 1_000
_LIBC: Any = None


def trim_heap() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``).

    Why: after a large push or catch-up the freed batch stays in the process's
    heap (glibc keeps it for reuse), so an idle connector would report the RSS
    of its largest batch for ever. Elsewhere than glibc this does nothing.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


class FsAgent:
    """One per connector: watches this node's live trees and keeps its peers up to date."""

    def __init__(
        self,
        node: str,
        model: Any,
        state_dir: str,
        cfg: dict[str, Any] | None = None,
        on_event: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        metrics: Any = None,
    ) -> None:
        self.node, self.model, self.state_dir = node, model, state_dir
        self.cfg = {**DEFAULTS, **(cfg or {})}
        self.on_event, self.metrics = on_event, metrics
        self.trees = {p: t for p, t in trees_for(model, node).items() if t.get("live", True)}
        self.peers = {t: tree_peers(model, node, t) for t in self.trees}
        self.indexes: dict[str, Index] = {}
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fs-index")
        # Reports read through connections and a thread of their own (WAL lets them
        # read while a long scan or push holds the index thread): status never waits.
        self.readers: dict[str, Index] = {}
        self.read_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fs-report")
        self.dirty: dict[str, set[str]] = {t: set() for t in self.trees}
        self.changed = asyncio.Event()
        self.rescan_now = asyncio.Event()
        self.kicks: dict[tuple[str, str], asyncio.Event] = {
            (t, p): asyncio.Event() for t in self.trees for p in self.peers[t]
        }
        # Who is alive, per pool: a tree's peers are judged by its own pool's view only
        # (a node in two pools could be alive in one view and not in the other; one
        # shared set would flip between them and start a comparison at every view).
        self.alive: dict[str, set[str]] = {}
        self.catching_up: set[tuple[str, str]] = set()
        self.caught_up: dict[tuple[str, str], float] = {}
        self.peer_state: dict[tuple[str, str], dict[str, Any]] = {
            k: {"last_sync": None, "error": None, "pushed": 0} for k in self.kicks
        }
        self.link = FsTransport(node, model, self.cfg)
        self.watcher: TreeWatcher | None = None
        self.ready = asyncio.Event()
        self.error: str | None = None

    # ------------------------------------------------------------ helpers
    async def _do(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn, *args)

    # -------------------------------------------------------------- topology
    def observe(self, pool: str, topo: Any) -> None:
        """Called with every new view of a pool: who is alive to receive now.

        Only a real transition (failed, in maintenance or unknown -> alive or
        suspect in this pool's view) starts an index comparison; the same view
        seen again costs a set comparison.
        """
        before = self.alive.get(pool, set())
        alive = {n for n, m in topo.members.items() if n != self.node and m.state in PUSHABLE}
        self.alive[pool] = alive
        for name in sorted(alive - before):
            self._returned(name, pool)

    def _is_alive(self, tree: str, peer: str) -> bool:
        return peer in self.alive.get(self.trees[tree]["pool"], ())

    def _returned(self, peer: str, pool: str) -> None:
        """PEER is reachable again (or for the first time): compare indexes, then push.

        A peer that flaps (a loaded machine, a lossy link) would otherwise make
        this node dump its whole index every few seconds: one comparison runs
        at a time per peer, and not again within ``catch_up_every`` seconds of the
        last one that succeeded (the queue covers this node's own changes meanwhile).
        """
        now = time.monotonic()
        for tree, peers in self.peers.items():
            key = (tree, peer)
            if peer not in peers or key in self.catching_up or self.trees[tree]["pool"] != pool:
                continue
            if now - self.caught_up.get(key, -1e9) < float(self.cfg["catch_up_every"]):
                self.kicks[key].set()
                continue
            self.catching_up.add(key)
            task = asyncio.get_running_loop().create_task(self._catch_up(tree, peer))
            task.add_done_callback(lambda f, key=key: self._caught_up(key, f))

    def _caught_up(self, key: tuple[str, str], task: asyncio.Future) -> None:
        self.catching_up.discard(key)
        if not task.cancelled() and task.exception() is None and task.result():
            self.caught_up[key] = time.monotonic()

    async def _catch_up(self, tree: str, peer: str) -> bool:
        """Compare indexes with PEER (``offer``); True once done."""
        state = self.peer_state[(tree, peer)]
        await self.ready.wait()
        for attempt in range(5):
            if not self._is_alive(tree, peer):
                return False
            try:
                sent, got = await self._offer(tree, peer)
                log.info(
                    "fs %s: compared indexes with %s",
                    tree,
                    peer,
                    extra={"fields": {"to_send": sent, "to_get": got}},
                )
                self.kicks[(tree, peer)].set()
                return True
            except (PeerError, OSError, sqlite3.Error) as exc:
                state["error"] = str(exc)
                await asyncio.sleep(min(2**attempt, 10))
        return False

    async def _offer(self, tree: str, peer: str) -> tuple[int, int]:
        """Compare indexes with PEER; (paths it wants, paths it queued for us).

        Digests first: both sides sum a per-row number over the same path slices
        of ``OFFER_SLICE`` entries (one round trip, no entry sent), and only the
        slices whose sums differ are offered entry by entry. A peer that merely
        flapped in TNS (the usual case under load) costs two indexed sums, not a
        serialisation of the whole index. Why slices at all: the whole index of
        100 000 files as one message cost ~150 MB of RSS; a slice covers the paths
        after the previous slice up to its own last one (the last: to the end), so
        the peer still finds every path this node lacks.
        """
        index, sent, got = self.indexes[tree], 0, 0
        slices = await self._do(digest_slices, index, OFFER_SLICE)
        uptos = [upto for upto, _count, _sum in slices]
        try:
            reply = await self.link.ask(tree, peer, "digest", {"uptos": uptos})
            theirs = [tuple(d) for d in reply.get("digests", [])]
        except PeerError as exc:
            if "unknown request" not in str(exc):
                raise
            theirs = []  # a peer without digests: offer every slice
        after: str | None = None
        for i, (upto, count, total) in enumerate(slices):
            if i < len(theirs) and theirs[i] == (count, total):
                after = upto
                continue
            rows = await self._do(
                lambda a=after, u=upto: [e.as_dict() for e in index.entries_range(a, u)]
            )
            data = {"entries": rows, "after": after, "upto": upto}
            reply = await self.link.ask(tree, peer, "offer", data)
            wanted = [str(p) for p in reply.get("send_me", [])]
            if wanted:
                await self._do(self._enqueue, tree, wanted, peer)
            sent, got = sent + len(wanted), got + int(reply.get("queued") or 0)
            after = upto
        if sent or got:
            await self._do(trim_heap)
        return sent, got

    def _enqueue(self, tree: str, paths: list[str], peer: str) -> None:
        index = self.indexes[tree]
        with index.tx() as db:
            index.enqueue(db, [p for p in paths if index.get(p)], [peer], requeue=False)

    # ---------------------------------------------------------------- local
    def on_paths(self, tree: str, paths: set[str]) -> None:
        """From the watcher: paths that may have changed."""
        self.dirty[tree] |= paths
        self.changed.set()

    def _observe_local(self, tree: str, paths: set[str]) -> list[str]:
        index = self.indexes[tree]
        expanded: set[str] = set()
        for rel in paths:
            if rel.endswith("/"):  # a directory left: everything indexed below it
                expanded |= set(index.under(rel.rstrip("/")))
            else:
                expanded.add(rel)
        return index.observe(sorted(expanded), self.peers[tree])

    async def _debounce(self) -> None:
        while True:
            await self.changed.wait()
            await asyncio.sleep(self.cfg["debounce"])
            self.changed.clear()
            for tree in self.trees:
                paths, self.dirty[tree] = self.dirty[tree], set()
                if not paths:
                    continue
                try:
                    changed = await self._do(self._observe_local, tree, paths)
                except sqlite3.Error as exc:
                    # The index stayed locked past the busy timeout (a receiver's long
                    # transaction on a loaded machine): keep the paths, try again.
                    log.warning("fs %s: index busy (%s): %d paths retried", tree, exc, len(paths))
                    self.dirty[tree] |= paths
                    self.changed.set()
                    await asyncio.sleep(1)
                    continue
                if changed:
                    self._kick(tree)

    def _kick(self, tree: str) -> None:
        for peer in self.peers[tree]:
            self.kicks[(tree, peer)].set()

    async def _rescan_loop(self) -> None:
        every = float(self.cfg["rescan"])
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.rescan_now.wait(), every if every > 0 else None)
            self.rescan_now.clear()
            for tree in self.trees:
                try:
                    changed = await self._do(self.indexes[tree].rescan, self.peers[tree])
                except sqlite3.Error as exc:
                    log.warning("fs %s: rescan put off, index busy (%s)", tree, exc)
                    asyncio.get_running_loop().call_later(30, self.rescan_now.set)
                    continue
                if changed:
                    log.info("fs %s: rescan found %d changes", tree, len(changed))
                    self._kick(tree)
            await self._do(trim_heap)  # the walk's sets of every path are garbage now

    # ----------------------------------------------------------------- push
    async def _pusher(self, tree: str, peer: str) -> None:
        kick, state = self.kicks[(tree, peer)], self.peer_state[(tree, peer)]
        backoff = 0.5
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), POLL)
            kick.clear()
            if not self._is_alive(tree, peer):
                continue  # queued on disk until TNS sees it alive again
            try:
                items = await self._do(self.indexes[tree].pending, peer, int(self.cfg["batch"]))
                if self.metrics is not None:
                    self.metrics.fs_queue(tree, peer, len(items))
                if not items:
                    continue
                await self._push(tree, peer, items)
            except (PeerError, OSError, sqlite3.Error) as exc:
                state["error"] = str(exc)
                log.warning("fs %s: push to %s failed: %s (kept queued)", tree, peer, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
                kick.set()
                continue
            backoff = 0.5
            state.update(error=None, last_sync=time.time())
            state["pushed"] += len(items)
            kick.set()  # more may be queued (a batch limit, a change meanwhile)

    async def _push(self, tree: str, peer: str, items: list[tuple[str, int]]) -> None:
        index = self.indexes[tree]
        paths = [p for p, _seq in items]
        entries = await self._do(lambda: [e.as_dict() for e in index.entries(paths)])
        await self._do(attach_inline, tree, entries)
        started = time.monotonic()
        reply = await self.link.ask(tree, peer, "apply", {"entries": entries})
        if reply.get("lost"):
            copies = await self._do(
                resolve_lost,
                index,
                reply["lost"],
                reply.get("winners", []),
                self.peers[tree],
                self.trees[tree]["conflict"],
            )
            await self.link.ask(tree, peer, "want", {"paths": [e["path"] for e in reply["lost"]]})
            if copies:
                self._kick(tree)
        accept = [str(p) for p in reply.get("accept", [])]
        if accept:
            await self.link.rsync(tree, peer, accept)
        await self._do(index.ack, peer, items)
        if len(items) >= TRIM_AFTER:
            await self._do(trim_heap)
        if self.metrics is not None:
            self.metrics.fs_push(tree, peer, len(items), time.monotonic() - started)

    # --------------------------------------------------------- conflicts
    async def _conflict_events(self) -> None:
        """Publish every conflict this node resolved (by itself or as a receiver) once."""
        while True:
            await asyncio.sleep(POLL)
            for tree in self.trees:
                try:
                    rows = await self._do(self._new_conflicts, tree)
                except sqlite3.Error as exc:
                    log.warning("fs %s: conflicts not read, index busy (%s)", tree, exc)
                    continue
                for row in rows:
                    event = {
                        "type": "fs_conflict",
                        "pool": self.trees[tree]["pool"],
                        "tree": tree,
                        "member": self.node,
                        **row,
                    }
                    if self.on_event:
                        await self.on_event(event)

    def _new_conflicts(self, tree: str) -> list[dict[str, Any]]:
        index = self.indexes[tree]
        last = int(index.meta("conflicts_published") or 0)
        rows = index.db.execute(
            "SELECT id, path, copy, winner, loser, policy FROM conflicts WHERE id>? ORDER BY id",
            (last,),
        ).fetchall()
        if rows:
            index.meta("conflicts_published", str(rows[-1][0]))
        keys = ("id", "path", "copy", "winner", "loser", "policy")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ------------------------------------------------------------------ run
    def _open(self) -> None:
        for tree, spec in self.trees.items():
            os.makedirs(tree, mode=0o755, exist_ok=True)
            index = Index(index_path(self.state_dir, tree), tree, self.node, spec["exclude"])
            self.indexes[tree] = index
            self.readers[tree] = Index(index.path, tree, self.node, spec["exclude"])
            self.readers[tree].skipped = index.skipped  # found by the writer's scans
            # rsync's temporary files are found by the rescan's own walk (never
            # indexed) and removed after it, before any transfer of ours runs: a
            # node killed mid-transfer would otherwise keep them forever (one of a
            # peer's pushes still in flight just fails and is retried).
            debris: list[str] = []
            changed = index.rescan(self.peers[tree], debris)
            for rel in debris:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(tree, rel))
            if debris:
                debris.sort()
                log.info(
                    "fs %s: removed %d partial transfer(s) left by a crash",
                    tree,
                    len(debris),
                    extra={"fields": {"paths": debris[:20]}},
                )
            log.info(
                "fs %s: indexed", tree, extra={"fields": {**index.stats(), "changed": len(changed)}}
            )
        trim_heap()

    async def run(self) -> None:
        """Index, watch and push until cancelled.

        With no live tree on this node it just waits: the daemon treats a core
        task that ends as a crash and stops the connector.
        """
        if not self.trees:
            await asyncio.Event().wait()
        os.makedirs(self.cfg["control_dir"], mode=0o700, exist_ok=True)
        await self._do(self._open)
        self.ready.set()
        self.watcher = TreeWatcher(
            {t: s["exclude"] for t, s in self.trees.items()}, self.on_paths, self.rescan_now.set
        )
        try:
            self.watcher.start()
        except FsWatchError as exc:
            self.error = str(exc)
            log.error("fs: %s", exc)
        tasks = [
            asyncio.create_task(self._debounce(), name="fs-debounce"),
            asyncio.create_task(self._rescan_loop(), name="fs-rescan"),
            asyncio.create_task(self._conflict_events(), name="fs-conflicts"),
            *(asyncio.create_task(self._pusher(t, p), name=f"fs-push-{p}") for t, p in self.kicks),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await self.link.close()
            if self.watcher:
                self.watcher.close()

    # --------------------------------------------------------------- report
    def _report(self) -> dict[str, Any]:
        out = {}
        for tree, index in self.readers.items():
            pending = index.pending_counts()
            out[tree] = {
                "pool": self.trees[tree]["pool"],
                **index.stats(),
                "conflicts": len(index.conflicts()),
                "peers": {
                    p: {
                        "pending": pending.get(p, 0),
                        "alive": self._is_alive(tree, p),
                        **self.peer_state[(tree, p)],
                    }
                    for p in self.peers[tree]
                },
            }
        return out

    async def report(self) -> dict[str, Any]:
        """``multiall fs status``: per tree files, bytes, pending per peer, last sync, conflicts."""
        loop = asyncio.get_running_loop()
        trees = await loop.run_in_executor(self.read_thread, self._report)
        return {
            "ok": True,
            "node": self.node,
            "trees": trees,
            "error": self.error,
            "watches": self.watcher.watches if self.watcher else 0,
        }

    async def conflicts(self) -> dict[str, Any]:
        """``multiall fs conflicts``: the conflict copies present in each tree."""

        def read() -> dict[str, Any]:
            return {t: i.conflicts() for t, i in self.readers.items()}

        trees = await asyncio.get_running_loop().run_in_executor(self.read_thread, read)
        return {"ok": True, "node": self.node, "trees": trees}
