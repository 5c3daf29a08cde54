"""The figures the failover benchmarks record and the demo shows (lab/failover.py)."""

from __future__ import annotations

from lab.failover import Failover, percentile


def test_percentile_is_nearest_rank_as_recorded_in_results():
    kills = [0.79, 0.62, 0.66]
    assert percentile(kills, 50) == 0.66
    assert percentile(kills, 99) == 0.79
    assert percentile(kills, 0) == 0.62
    assert percentile([1.0], 99) == 1.0


def test_a_kill_is_timed_until_every_observer_and_dns_have_a_verdict():
    seen = Failover(victim="n3", observers=["n1", "n2"], dns=("198.18.0.10", "db.example.test"))
    seen.connector = {"n1": 0.7, "n2": 0.8}
    seen.serf = {"n1": 5.4}
    assert not seen.complete
    seen.serf["n2"] = 6.1
    assert not seen.complete  # DNS still answers the victim
    seen.dns_gone = 0.8
    assert seen.complete


def test_without_a_zone_the_observers_alone_decide():
    seen = Failover(victim="n3", observers=["n2"], connector={"n2": 0.7}, serf={"n2": 5.0})
    assert seen.complete
