"""The watcher: TNS events -> playbook runs through ansible-runner.

Rules (``watcher.rules`` in connector.yml) map event types, optionally per pool,
to a playbook. Bursts are debounced and coalesced into one run per
(pool, playbook) carrying all their events as ``multiall_events``; at most one
run per pool executes at a time; a failed run is retried with exponential
backoff; every run is journaled (queued, running, successful/failed, changed
hosts). Pool-wide rules (``scope: pool``) run only on the pool leader **with
quorum**: leadership alone is not enough, since every side of a partition has
a leader, and a minority must not act for the pool (a rule may opt out with
``require_quorum: false``). The check is made when the event arrives and again
before every attempt, so a run queued before a split, retried during it, or
resumed after a restart is ``skipped`` (journaled, with the reason) on a node
that no longer leads the pool with quorum; the side that does leads gets the
same topology changes as its own events. ``scope: local`` rules run on the
node the event is about. Unfinished runs are picked up again after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .ansible_env import COLLECTION_ROOT, ansible_env, collection_in_use
from .journal import JournalError

log = logging.getLogger("multiall.watcher")

# Seconds between attempts to journal a run while the journal fails.
JOURNAL_RETRY = 5.0
# Playbook runs at once (one per pool at most); they have their own threads,
# so long runs never take the threads DNS and the journal need.
PLAYBOOK_THREADS = 4


class Watcher:
    """Turns events into journaled, single-flight playbook runs."""

    def __init__(self, connector: Any, cfg: dict[str, Any], journal: Any) -> None:
        self.connector = connector
        self.cfg = cfg
        self.journal = journal
        self.pending: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.pool_locks: dict[str, asyncio.Lock] = {}
        self.tasks: set[asyncio.Task] = set()
        self.play_pool = ThreadPoolExecutor(PLAYBOOK_THREADS, thread_name_prefix="multiall-play")

    def _rules_for(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            r
            for r in self.cfg.get("rules", [])
            if event["type"] in r["events"] and (not r.get("pools") or event["pool"] in r["pools"])
        ]

    def _requires_quorum(self, pool: str, playbook: str) -> bool:
        """Whether a pool-wide run of ``playbook`` needs quorum (unless a rule opts out)."""
        return not any(
            r.get("require_quorum") is False
            for r in self.cfg.get("rules", [])
            if r["playbook"] == playbook
            and r.get("scope", "pool") == "pool"
            and (not r.get("pools") or pool in r["pools"])
        )

    def refusal(self, pool: str, scope: str, require_quorum: bool) -> str | None:
        """Why this node must not run a pool-wide playbook for ``pool`` now (None: it may)."""
        if scope != "pool":
            return None
        topo = self.connector.topology.get(pool)
        if topo is None:
            return "no topology of the pool yet"
        if topo.leader != self.connector.node:
            return f"not the pool leader ({topo.leader or 'none'} is)"
        if require_quorum and not topo.quorum:
            return "no quorum: a minority never runs pool-wide playbooks"
        return None

    def submit(self, event: dict[str, Any]) -> None:
        """Called for every topology event; schedules matching runs after the debounce."""
        for rule in self._rules_for(event):
            scope = rule.get("scope", "pool")
            if scope == "pool":
                if self.refusal(event["pool"], scope, rule.get("require_quorum", True)):
                    continue
            elif event.get("member") != self.connector.node:
                continue
            key = (event["pool"], rule["playbook"], scope)
            self.pending.setdefault(key, []).append(event)
            if key not in self.timers:
                loop = asyncio.get_running_loop()
                self.timers[key] = loop.call_later(
                    float(self.cfg.get("debounce", 1.0)), self._flush, key
                )

    def _flush(self, key: tuple[str, str, str]) -> None:
        """The debounce is over: journal the run (off the event loop), then queue it."""
        self.timers.pop(key, None)
        events = self.pending.pop(key, [])
        if events:
            task = asyncio.create_task(self._queue_run(key, events))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _queue_run(self, key: tuple[str, str, str], events: list[dict[str, Any]]) -> None:
        """Journal a run and queue it; while the journal fails, keep its events and retry.

        A run is executed from its journal row (so it survives a restart); without
        the row there is no run yet, but its events wait here, in order, with
        any that arrive meanwhile. The journal logs its fault and status shows it.
        """
        try:
            run_id = await self.journal.offload(self.journal.queue_run, *key, events)
        except JournalError:
            self.pending[key] = events + self.pending.get(key, [])
            if key not in self.timers:
                self.timers[key] = asyncio.get_running_loop().call_later(
                    JOURNAL_RETRY, self._flush, key
                )
            return
        self.queue.put_nowait(run_id)

    async def run(self) -> None:
        """Resume unfinished runs, then execute queued runs (one per pool at a time)."""
        log.info("watcher ready", extra={"fields": collection_in_use()})
        try:
            unfinished = await self.journal.offload(self.journal.unfinished_runs)
        except JournalError:
            unfinished = []  # the journal logs its fault; its runs resume at the next start
        for old in unfinished:
            self.queue.put_nowait(old["id"])
        while True:
            run_id = await self.queue.get()
            task = asyncio.create_task(self._execute(run_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _execute(self, run_id: int) -> None:
        runs = {r["id"]: r for r in await self.journal.offload(self.journal.runs, 1000)}
        run = runs.get(run_id)
        if run is None:
            return
        lock = self.pool_locks.setdefault(run["pool"], asyncio.Lock())
        async with lock:
            retries = int(self.cfg.get("retries", 3))
            attempt = 0
            need_quorum = self._requires_quorum(run["pool"], run["playbook"])
            await self._wait_for_view()
            while True:
                refused = self.refusal(run["pool"], run["scope"], need_quorum)
                if refused:
                    await self._skip(run, refused)
                    return
                attempt += 1
                await self.journal.offload(
                    self.journal.update_run,
                    run_id,
                    status="running",
                    started=time.time(),
                    attempts=attempt,
                )
                status, changed, detail = await asyncio.get_running_loop().run_in_executor(
                    self.play_pool, self._play, run
                )
                if status == "successful" or attempt > retries:
                    break
                await self.journal.offload(
                    self.journal.update_run, run_id, status="queued", detail=detail
                )
                await asyncio.sleep(min(2 ** (attempt - 1), 30))
            await self.journal.offload(
                self.journal.update_run,
                run_id,
                status=status,
                ended=time.time(),
                changed_hosts=changed,
                detail=detail,
            )
            self.connector.metrics.run(status)
            log.info(
                "watcher run",
                extra={"fields": {"run": run_id, "playbook": run["playbook"], "status": status}},
            )

    async def _wait_for_view(self, limit: float = 15.0) -> None:
        """A run resumed at start-up waits for the first full view of the pools.

        Without it every resumed pool-wide run would be refused for "no
        topology yet"; the daemon's baseline is its first complete view.
        """
        deadline = time.monotonic() + limit
        while not getattr(self.connector, "baseline", True) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def _skip(self, run: dict[str, Any], why: str) -> None:
        """Journal a run this node must not execute (no longer leader, or no quorum)."""
        await asyncio.to_thread(
            self.journal.update_run, run["id"], status="skipped", ended=time.time(), detail=why
        )
        self.connector.metrics.run("skipped")
        log.info(
            "watcher run skipped",
            extra={"fields": {"run": run["id"], "playbook": run["playbook"], "why": why}},
        )

    def _play(self, run: dict[str, Any]) -> tuple[str, list[str], str]:
        """One ansible-runner run (in a worker thread)."""
        import ansible_runner

        playbooks = Path(self.cfg.get("playbooks_dir") or COLLECTION_ROOT / "playbooks")
        playbook = playbooks / run["playbook"]
        if not playbook.is_file():
            return "failed", [], f"playbook {playbook} does not exist"
        private = Path(self.connector.cfg.state_dir) / "runner" / str(run["id"])
        private.mkdir(parents=True, exist_ok=True)
        result = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(playbook),
            inventory=self.cfg.get("inventory") or self.connector.cfg.pools_file,
            extravars={
                "multiall_events": run["events"],
                "multiall_pool": run["pool"],
                "multiall_reactor": self.connector.node,
                "multiall_socket": self.connector.cfg.control_socket,
                "multiall_pools_file": self.connector.cfg.pools_file,
            },
            envvars=ansible_env(),
            quiet=True,
            timeout=900,
        )
        changed = sorted((result.stats or {}).get("changed", {}) or {})
        return ("successful" if result.rc == 0 else "failed"), changed, f"rc={result.rc}"
