"""SBM in the daemon: evaluate Baseline Rules 24/7 and publish the node's status.

Each rule runs on its own interval (jittered so rules do not run in lockstep),
in a worker thread with its own timeout: a hung check is UNKNOWN and never
blocks the others. ``for`` consecutive equal results are needed before a
rule's reported status changes (flap damping); recovery to OK additionally
needs ``hold_down`` seconds. The node's status (its worst rule, or MAINTENANCE)
is published as the Serf tag ``sbm`` as soon as it changes.
"""

from __future__ import annotations

import asyncio
import logging
import random
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
            try:
                result = await asyncio.wait_for(
                    asyncio.to_thread(evaluate, name, rule), timeout + 1.0
                )
            except TimeoutError:
                result = Result(
                    name, rule["kind"], UNKNOWN, f"check hung for more than {timeout + 1:g} s"
                )
            self.last[name] = result
            if self.states[name].update(result.status):
                await self._republish()
            await asyncio.sleep(interval)

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
