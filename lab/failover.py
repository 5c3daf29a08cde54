"""Kill a lab node and time who calls it failed; bring it back.

One loop, used by ``make demo`` (shown live) and by the failover benchmarks
(``benchmarks/failover_detect.py``, ``benchmarks/failover_dns.py``), so the demo
shows the very figures the benchmarks record. The clock starts at ``lab kill``;
each observer's connector verdict, its Serf agent's own verdict and, when a
pool zone is given, the moment the name server stops handing the victim out
are noted the first time they are seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .connector import control, start_connector, wait_converged
from .core import Lab
from .dns import served


@dataclass
class Failover:
    """Seconds after ``lab kill`` at which each verdict was first seen."""

    victim: str
    observers: list[str]
    #: observer -> seconds until its connector called the victim ``failed``
    connector: dict[str, float] = field(default_factory=dict)
    #: observer -> seconds until its Serf agent called the victim ``failed``
    serf: dict[str, float] = field(default_factory=dict)
    #: seconds until the name server's answer no longer held the victim's address
    dns_gone: float | None = None
    #: (name server, zone) watched, if any
    dns: tuple[str, str] | None = None

    @property
    def complete(self) -> bool:
        """Every observer's connector and Serf, and DNS if watched, have seen it."""
        return (
            len(self.connector) == len(self.observers)
            and len(self.serf) == len(self.observers)
            and (self.dns is None or self.dns_gone is not None)
        )


def kill_and_time(
    lab: Lab,
    victim: str,
    observers: list[str],
    *,
    dns: tuple[str, str] | None = None,
    limit: float = 20.0,
    interval: float = 0.02,
    on_poll: Callable[[Failover], None] | None = None,
) -> Failover:
    """Kill ``victim`` and poll until every verdict is in or ``limit`` seconds pass.

    ``dns`` is ``(server, zone)``: the zone's apex A record is queried straight
    at that server each round, before the observers are asked, so its figure is
    not delayed by their control-socket round trips. ``on_poll`` is called after
    every round (the demo redraws its live table there). The result may be
    incomplete when time runs out; callers decide whether that is an error.
    """
    times = Failover(victim=victim, observers=list(observers), dns=dns)
    address = lab.nodes[victim]
    start = time.monotonic()
    lab.kill(victim)
    while not times.complete and time.monotonic() - start < limit:
        if dns is not None and times.dns_gone is None and address not in served(*dns):
            times.dns_gone = time.monotonic() - start
        for observer in observers:
            if observer in times.connector and observer in times.serf:
                continue
            status = control(lab, observer, {"op": "status"}, timeout=5)
            now = time.monotonic() - start
            if observer not in times.connector and any(
                topo["members"].get(victim, {}).get("state") == "failed"
                for topo in status["pools"].values()
            ):
                times.connector[observer] = now
            if observer not in times.serf and status["serf"].get(victim) == "failed":
                times.serf[observer] = now
        if on_poll is not None:
            on_poll(times)
        time.sleep(interval)
    return times


def revive(lab: Lab, node: str, converge_timeout: float | None = None) -> None:
    """``lab revive`` the node and start its connector again (the lab has no init).

    With ``converge_timeout``, also wait until every connector sees every
    member alive, so the next kill starts from a settled pool.
    """
    lab.revive(node)
    start_connector(lab, node)
    if converge_timeout is not None:
        wait_converged(lab, timeout=converge_timeout)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) as recorded in benchmarks/RESULTS.md."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
