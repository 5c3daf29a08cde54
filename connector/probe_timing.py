"""When a prober sends and re-evaluates: wall-clock ticks, the refresh moment, the push budget.

Split from connector/probe.py (which uses them); why rounds run on ticks is in
``Prober.run`` and docs/connector.md ("Ticks").
"""

from __future__ import annotations

import math
import time

# Views are re-evaluated this long after evidence expires at the earliest: the
# time a tick's packets take to arrive and be read. At least REFRESH_MARGIN; more
# when this node reads its peers' packets later than that (the slowest of the last
# READ_DELAY_ROUNDS rounds: a loaded node, a herd of lab nodes on a few cores),
# else every expiry would be seen one round late.
REFRESH_MARGIN = 0.01
READ_DELAY_ROUNDS = 25
RTT_EVERY = 25  # rounds between pings that ask for a pong (the RTT figure)
# Pushes of changed alerts (``_push_soon``): spacing, burst and refill per interval.
PUSH_SPACING = 0.02
PUSH_BURST = 4.0
PUSH_PER_ROUND = 2.0


def next_tick(now: float, interval: float) -> float:
    """The first multiple of INTERVAL after NOW (wall clock): when every node sends."""
    return (math.floor(now / interval) + 1) * interval


class TokenBucket:
    """At most ``burst`` at once, refilled at ``rate`` per second (monotonic clock)."""

    def __init__(self, burst: float, rate: float) -> None:
        self.burst, self.rate = burst, rate
        self.tokens, self.at = burst, time.monotonic()

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False when the budget is spent."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def following_tick(tick: float, now: float, interval: float) -> float:
    """The tick after TICK, or the next one from NOW when the two are far apart.

    Far behind (a stalled loop) or far ahead (the wall clock was set back): never
    a burst of late rounds, never a long sleep that would silence the node.
    """
    tick += interval
    return tick if now - interval < tick <= now + interval else next_tick(now, interval)


def refresh_phase(interval: float, dead_after: float, read_delay: float = 0.0) -> float:
    """How long after a tick views are re-evaluated (see ``Prober.run``).

    READ_DELAY: how late after its own round this node reads its peers' rounds.
    """
    margin = min(interval / 2, max(REFRESH_MARGIN, read_delay + REFRESH_MARGIN / 2))
    return (dead_after % interval + margin) % interval
