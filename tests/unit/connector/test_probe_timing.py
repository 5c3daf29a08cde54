"""When probes are sent and read: wall-clock ticks, the refresh moment, push budget,
Serf join back-off, and the UDP endpoint that drains a burst in one wake-up.

These are what keep an idle connector's CPU flat (issue 15): one wake-up per
burst of packets instead of one per packet, and no push or join storms at a
start of many nodes.
"""

from __future__ import annotations

import asyncio
import socket
import time
import types

import pytest
from test_probe import make

from connector import probe, probe_timing
from connector.probe_timing import (
    PUSH_BURST,
    REFRESH_MARGIN,
    TokenBucket,
    following_tick,
    next_tick,
    refresh_phase,
)
from connector.serf_link import JOIN_RETRY, JOIN_RETRY_MAX, join_step
from connector.udp_endpoint import open_endpoint


# ------------------------------------------------------------------ ticks
def test_every_node_sends_on_the_same_multiples_of_the_interval():
    # Two nodes started at different moments pick the same instants to send.
    a, b = next_tick(1000.013, 0.2), next_tick(1000.171, 0.2)
    assert a == b == pytest.approx(1000.2)
    assert next_tick(1000.2, 0.2) == pytest.approx(1000.4)  # strictly after now


def test_a_stalled_loop_takes_the_next_tick_instead_of_a_burst_of_late_rounds():
    tick = 1000.0
    assert following_tick(tick, 1000.05, 0.2) == pytest.approx(1000.2)
    # The loop stalled for 3 s: the next round is the next tick from now, not 15 late ones.
    assert following_tick(tick, 1003.05, 0.2) == pytest.approx(1003.2)


def test_a_clock_set_back_does_not_silence_the_node():
    # Wall clock set back by an hour: without the check the node would sleep an hour
    # (and be declared failed by every peer).
    nxt = following_tick(1000.0, 1000.0 - 3600 + 0.05, 0.2)
    assert 0 < nxt - (1000.0 - 3600 + 0.05) <= 0.2


@pytest.mark.parametrize(
    ("interval", "dead_after"), [(0.2, 0.65), (0.2, 0.6), (0.5, 2.0), (0.2, 0.79), (1.0, 3.3)]
)
def test_views_are_refreshed_just_after_evidence_expires(interval, dead_after):
    """Evidence read just after a tick expires; the next refresh sees it within the margin."""
    phase = refresh_phase(interval, dead_after)
    assert 0 <= phase < interval
    for delay in (0.0, REFRESH_MARGIN / 2, REFRESH_MARGIN * 0.99):
        expiry = 100 * interval + delay + dead_after  # heard at tick 100, just after it
        # The first refresh (tick + phase) at or after the expiry.
        k = int((expiry - phase) // interval)
        refresh = k * interval + phase
        if refresh < expiry - 1e-9:
            refresh += interval
        assert refresh - expiry <= REFRESH_MARGIN + 1e-9, (delay, refresh - expiry)


def test_a_node_that_reads_late_refreshes_later_instead_of_a_round_late():
    """Evidence read 60 ms after its tick (a loaded node) expires 60 ms later too."""
    interval, dead_after, late = 0.2, 0.65, 0.06
    expiry = 100 * interval + late + dead_after
    for phase in (refresh_phase(interval, dead_after), refresh_phase(interval, dead_after, late)):
        first = (100 + 3) * interval + phase  # the refresh 3 ticks later
        seen = first if first >= expiry else first + interval
        assert seen - expiry >= 0
    # Without the read delay the expiry is seen a round late; with it, at once.
    fixed = (100 + 3) * interval + refresh_phase(interval, dead_after)
    assert fixed < expiry  # one round late: seen at fixed + interval
    adaptive = (100 + 3) * interval + refresh_phase(interval, dead_after, late)
    assert 0 <= adaptive - expiry <= REFRESH_MARGIN
    # Never later than half an interval, whatever the delay.
    assert refresh_phase(interval, 0.6, 5.0) == pytest.approx(interval / 2)


# ------------------------------------------------------------------ pushes
def test_the_push_budget_allows_a_burst_then_refills_by_rate():
    bucket = TokenBucket(3, 10.0)
    now = bucket.at
    assert [bucket.take(now) for _try in range(5)] == [True, True, True, False, False]
    assert bucket.take(now + 0.05) is False  # half a token
    assert bucket.take(now + 0.11) is True
    assert bucket.take(now + 10) and bucket.take(now + 10) and bucket.take(now + 10)
    assert not bucket.take(now + 10)  # never more than the burst


def test_a_storm_of_alert_changes_pushes_within_the_budget(monkeypatch):
    """A start of many nodes changes records all the time: pushes stay bounded."""
    node = make("n1")
    clock = {"t": 5000.0}
    # The prober's clock only (asyncio keeps the real one).
    fake = types.SimpleNamespace(monotonic=lambda: clock["t"], time=time.time)
    monkeypatch.setattr(probe, "time", fake)
    monkeypatch.setattr(probe_timing, "time", fake)
    node._push_budget = TokenBucket(PUSH_BURST, probe_timing.PUSH_PER_ROUND / node.interval)
    pushes = []
    monkeypatch.setattr(node, "_round", lambda peers, rtt=False: pushes.append(clock["t"]))

    async def storm() -> None:
        for _change in range(40):  # one change every 21 ms of the node's clock, for 0.84 s
            node._push_soon()
            await asyncio.sleep(0.002)  # let a scheduled push run
            clock["t"] += 0.021

    asyncio.run(storm())
    refill = 40 * 0.021 * probe_timing.PUSH_PER_ROUND / node.interval
    assert PUSH_BURST <= len(pushes) <= PUSH_BURST + refill + 1
    assert len(pushes) < 40 / 2  # without the budget: one push per change


# ------------------------------------------------------------------ joins
def test_serf_joins_only_when_gossip_makes_no_progress_and_back_off():
    # Nobody seen yet: join now, wait longer before the next try.
    assert join_step(0, 0, 127, JOIN_RETRY) == (True, JOIN_RETRY * 2)
    # Gossip brought members since the last poll: no join, same wait.
    assert join_step(40, 10, 127, 2.0) == (False, 2.0)
    # Stuck: join, doubling up to the cap.
    assert join_step(40, 40, 127, 2.0) == (True, 4.0)
    assert join_step(40, 40, 127, JOIN_RETRY_MAX) == (True, JOIN_RETRY_MAX)
    # Everyone present: back to the short wait for the next time someone goes missing.
    assert join_step(127, 120, 127, JOIN_RETRY_MAX) == (False, JOIN_RETRY)


# ------------------------------------------------------------------ endpoint
class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append(data)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


def test_one_wake_up_reads_every_queued_datagram():
    async def run() -> tuple[list[int], list[bytes]]:
        recorder = Recorder()
        endpoint = open_endpoint(recorder, "127.0.0.1", 0)
        port = endpoint.get_extra_info("sockname")[1]
        drains: list[int] = []
        real = endpoint.drain

        def counted() -> None:
            before = len(recorder.got)
            real()
            drains.append(len(recorder.got) - before)

        loop = asyncio.get_running_loop()
        loop.remove_reader(endpoint.get_extra_info("socket").fileno())
        loop.add_reader(endpoint.get_extra_info("socket").fileno(), counted)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for i in range(6):  # a burst, queued before the loop looks
                out.sendto(b"p%d" % i, ("127.0.0.1", port))
        for _wait in range(20):
            await asyncio.sleep(0.01)
            if len(recorder.got) == 6:
                break
        endpoint.close()
        assert endpoint.is_closing()
        return drains, recorder.got

    drains, got = asyncio.run(run())
    assert got == [b"p%d" % i for i in range(6)]
    assert drains[0] == 6  # all six in the first wake-up, not one per wake-up


def test_sending_to_nobody_is_not_an_error_and_a_closed_endpoint_sends_nothing():
    async def run() -> Recorder:
        recorder = Recorder()
        endpoint = open_endpoint(recorder, "127.0.0.1", 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spare:
            spare.bind(("127.0.0.1", 0))
            free = spare.getsockname()[1]
        endpoint.sendto(b"x", ("127.0.0.1", free))  # nobody listens: ICMP at most
        await asyncio.sleep(0.05)
        endpoint.close()
        endpoint.sendto(b"y", ("127.0.0.1", free))  # after close: silently nothing
        return recorder

    recorder = asyncio.run(run())
    assert all(isinstance(e, OSError) for e in recorder.errors)


class Stamped(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[float] = []

    def datagram_arrived(self, data: bytes, addr: tuple[str, int], arrived: float) -> None:
        self.got.append(data)
        self.arrived.append(arrived)


def test_a_datagram_is_dated_when_it_arrived_not_when_a_busy_node_read_it():
    async def run() -> tuple[Stamped, float, float]:
        recorder = Stamped()
        endpoint = open_endpoint(recorder, "127.0.0.1", 0)
        asyncio.get_running_loop().remove_reader(endpoint.get_extra_info("socket").fileno())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            sent = time.monotonic()
            out.sendto(b"late", endpoint.get_extra_info("sockname"))
        time.sleep(0.3)  # the node is busy: the datagram waits in the socket
        read = time.monotonic()
        endpoint.drain()
        endpoint.close()
        return recorder, sent, read

    recorder, sent, read = asyncio.run(run())
    assert recorder.got == [b"late"]
    assert sent - 0.05 <= recorder.arrived[0] <= sent + 0.1 < read


def test_evidence_from_a_late_read_packet_is_as_old_as_its_arrival():
    n1, n2 = make("n1"), make("n2")
    n2._send("ping", "n1")
    packet = n2.transport.last_to("n1")  # type: ignore[union-attr]
    arrived = time.monotonic() - 0.4
    n1.datagram_arrived(packet, ("198.18.0.12", 7947), arrived)
    assert n1.heard["web"]["n2"] == arrived  # not the moment it was read
