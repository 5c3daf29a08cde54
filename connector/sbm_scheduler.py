"""SBM in the daemon: evaluate Baseline Rules 24/7 and publish the node's status.

Each rule runs on its own interval (jittered so rules do not run in lockstep),
in a thread of its own with a timeout: a hung check is UNKNOWN and never
blocks the others, nor anything else in the daemon. Python cannot stop a
thread, so a hung check keeps its thread until the call returns; that is why
checks never run in the event loop's shared pool (which serves DNS and the
journal) and why a rule whose last check is still hung gets no new thread
(it stays UNKNOWN, "still hung"): the checks hold at most one thread per rule. ``for`` consecutive equal results are needed before a
rule's reported status changes (flap damping); recovery to OK additionally
needs ``hold_down`` seconds. The node's status (its worst rule, or MAINTENANCE)
is published as the Serf tag ``sbm`` as soon as it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.sbm import (
    MAINTENANCE,
    NAMES,
    UNKNOWN,
    Result,
    RuleState,
    evaluate,
    worst,
)

log = logging.getLogger("multiall.sbm")


def _in_daemon_thread(fn: Callable[[], Result], name: str) -> asyncio.Future:
    """Run FN in a new daemon thread; the returned future gets its result.

    A daemon thread, not an executor's: a check hung in the kernel (a dead NFS
    mount, a stuck /proc read) must not keep the daemon from exiting, and
    ``concurrent.futures`` joins its threads at exit.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(result: Result | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # delivered to the awaiting rule, not lost in the thread
            with_loop(settle, None, exc)
        else:
            with_loop(settle, result, None)

    def with_loop(*args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while the check ran: drop it
            loop.call_soon_threadsafe(*args)

    threading.Thread(target=target, name=f"sbm-check-{name}", daemon=True).start()
    return future


class SbmScheduler:
    """Runs the node's rules and keeps the node's SBM status."""

    def __init__(
        self,
        rules: dict[str, dict[str, Any]],
        publish,
        hold_down: float = 0.0,
        default_interval: float = 10.0,
        reachable_peers=None,
    ):
        self.rules = {n: r for n, r in rules.items() if r.get("enabled", True)}
        self.publish = publish  # async callable(str) -> None
        self.reachable_peers = reachable_peers  # callable() -> int, from TNS (for `peer` rules)
        self.default_interval = default_interval
        self.states = {n: RuleState(int(r.get("for", 1)), hold_down) for n, r in self.rules.items()}
        self.last: dict[str, Result] = {}
        self.status: str = str(worst([]) if not self.rules else UNKNOWN)
        self.maintenance = False
        self._lock = asyncio.Lock()
        self._running: dict[str, tuple[asyncio.Future, float]] = {}  # rule -> (check, started)

    def node_status(self) -> str:
        """``"0"``..``"3"``, or ``MAINTENANCE``."""
        if self.maintenance:
            return MAINTENANCE
        if not self.rules:
            return "0"
        return str(worst([s.reported for s in self.states.values()]))

    async def _republish(self) -> None:
        async with self._lock:
            new = self.node_status()
            if new != self.status:
                log.info("sbm status", extra={"fields": {"old": self.status, "new": new}})
                self.status = new
                await self.publish(new)

    async def set_maintenance(self, on: bool) -> None:
        self.maintenance = on
        await self._republish()

    async def _run_rule(self, name: str, rule: dict[str, Any]) -> None:
        interval = float(rule.get("interval", self.default_interval))
        timeout = float(rule.get("timeout", min(10.0, interval)))
        await asyncio.sleep(random.uniform(0, min(interval, 1.0) * 0.2))
        while True:
            if rule["kind"] == "peer" and self.reachable_peers is not None:
                rule = {**rule, "_reachable_peers": self.reachable_peers()}
            result = await self._check(name, rule, timeout + 1.0)
            self.last[name] = result
            if self.states[name].update(result.status):
                await self._republish()
            await asyncio.sleep(interval)

    async def _check(self, name: str, rule: dict[str, Any], limit: float) -> Result:
        """One check of rule NAME, UNKNOWN when it takes longer than LIMIT seconds."""
        now = time.monotonic()
        running = self._running.get(name)
        if running is not None and not running[0].done():
            # The last check still holds its thread: no second one for this rule.
            return Result(
                name,
                rule["kind"],
                UNKNOWN,
                f"check hung for {now - running[1]:.0f} s; no new check starts until it returns",
            )
        check = _in_daemon_thread(lambda: evaluate(name, rule), name)
        check.add_done_callback(lambda f: f.cancelled() or f.exception())  # a late error: seen
        self._running[name] = (check, now)
        try:
            return await asyncio.wait_for(asyncio.shield(check), limit)
        except TimeoutError:
            return Result(name, rule["kind"], UNKNOWN, f"check hung for more than {limit:g} s")
        except Exception as exc:  # evaluate() turns check errors into UNKNOWN; belt and braces
            return Result(name, rule["kind"], UNKNOWN, f"{type(exc).__name__}: {exc}")

    async def run(self) -> None:
        """One task per rule, forever."""
        await self.publish(self.node_status())
        self.status = self.node_status()
        if not self.rules:
            # Nothing to check: stay alive (a core task that returns stops the daemon).
            await asyncio.Event().wait()
        await asyncio.gather(*(self._run_rule(n, r) for n, r in self.rules.items()))

    def report(self) -> dict[str, Any]:
        """Per-rule detail for ``multiall sbm`` and Serf queries."""
        rules = []
        for name in sorted(self.rules):
            state, result = self.states[name], self.last.get(name)
            item = (
                result.as_dict()
                if result
                else {"rule": name, "kind": self.rules[name]["kind"], "message": "not run yet"}
            )
            item.update(
                reported=state.reported, reported_name=NAMES[state.reported], since=state.since
            )
            rules.append(item)
        return {"status": self.status, "maintenance": self.maintenance, "rules": rules}
