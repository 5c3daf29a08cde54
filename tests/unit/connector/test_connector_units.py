"""Pure parts of TakeConnector: config validation, probe packets, journal, watcher."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._control import DEFAULT_SOCKET
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModelError

from connector.config import load_config
from connector.journal import Journal
from connector.watcher import Watcher


# ----------------------------------------------------------------- config
def test_config_defaults(tmp_path):
    path = tmp_path / "connector.yml"
    path.write_text("node: n1\n")
    cfg = load_config(str(path))
    assert cfg.node == "n1" and cfg.probe["interval"] == 0.2 and cfg.serf["profile"] == "local"


def test_watcher_rule_on_every_published_event_type_is_accepted(tmp_path):
    # dns_changed is published by DNS-SA; a rule on it used to be rejected at load.
    path = tmp_path / "connector.yml"
    path.write_text(
        "node: n1\nwatcher:\n  rules:\n"
        "    - events: [dns_changed, member_failed]\n      playbook: dns_reaction.yml\n"
    )
    cfg = load_config(str(path))
    assert cfg.watcher["rules"][0]["events"] == ["dns_changed", "member_failed"]


def test_default_control_socket_is_the_shared_one(tmp_path):
    path = tmp_path / "connector.yml"
    path.write_text("node: n1\n")
    assert load_config(str(path)).control_socket == DEFAULT_SOCKET


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("node: n1\nprobe:\n  interval: 0.001\n", 3, "must be at least 0.05"),
        ("node: n1\nserf:\n  profile: fast\n", 3, "expected one of: lan, wan, local"),
        ("node: n1\nserf:\n  nice: 25\n", 3, "serf.nice: must be at most 19, got 25"),
        (
            "node: n1\nwatcher:\n  rules:\n    - events: [member_exploded]\n      playbook: x.yml\n",
            4,
            "unknown event 'member_exploded'",
        ),
        ("node: n1\nbogus: 1\n", 2, "unknown key 'bogus'"),
        ("probe: {}\n", 1, "missing required key 'node'"),
        ("node: n1\nbind: 300.1.1.1\n", 2, "not an IP address or host name"),
        ("node: n1\ndns:\n  hold_down: -1\n", 3, "must be at least 0"),
        ("node: n1\ndns:\n  keyfile: /x\n", 3, "unknown key 'keyfile'"),
    ],
)
def test_bad_config_names_file_line_and_expectation(tmp_path, text, line, needle):
    path = tmp_path / "connector.yml"
    path.write_text(text)
    with pytest.raises(PoolModelError) as info:
        load_config(str(path))
    message = str(info.value)
    assert f"{path}:{line}:" in message and needle in message


# ----------------------------------------------------------------- journal
def test_journal_keeps_events_and_unfinished_runs_across_reopen(tmp_path):
    db = str(tmp_path / "j.db")
    journal = Journal(db)
    first = journal.add_event({"pool": "web", "type": "member_failed", "member": "n2"})
    run_id = journal.queue_run("web", "x.yml", "pool", [{"type": "member_failed"}])
    journal.update_run(run_id, status="running", started=time.time())
    reopened = Journal(db)
    assert reopened.events()[0]["id"] == first
    assert [r["id"] for r in reopened.unfinished_runs()] == [run_id]


# ----------------------------------------------------------------- watcher
class FakeWatcher(Watcher):
    """Replaces ansible-runner with a recorder that can fail on demand."""

    def __init__(self, *args, fail_times: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.plays: list[tuple[int, float, float]] = []
        self.fail_times = fail_times

    def _play(self, run):
        start = time.monotonic()
        time.sleep(0.05)
        self.plays.append((run["id"], start, time.monotonic()))
        if self.fail_times:
            self.fail_times -= 1
            return "failed", [], "rc=2"
        return "successful", ["n1"], "rc=0"


def make_watcher(tmp_path, leader="n1", quorum=True, rule=None, **kw):
    topo = SimpleNamespace(leader=leader, quorum=quorum)
    connector = SimpleNamespace(
        node="n1",
        topology={"web": topo, "db": topo},
        baseline=True,
        metrics=SimpleNamespace(run=lambda status: None),
        cfg=SimpleNamespace(state_dir=str(tmp_path), pools_file="p.yml"),
    )
    rules = [
        rule
        or {"events": ["member_failed", "member_recovered"], "playbook": "r.yml", "scope": "pool"}
    ]
    journal = Journal(str(tmp_path / "j.db"))
    return FakeWatcher(
        connector, {"rules": rules, "debounce": 0.1, "retries": 2}, journal, **kw
    ), journal


def drive(watcher, events, seconds):
    async def scenario():
        task = asyncio.create_task(watcher.run())
        for event in events:
            watcher.submit(event)
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(scenario())


def test_burst_is_coalesced_into_one_run_per_pool(tmp_path):
    watcher, journal = make_watcher(tmp_path)
    burst = [{"type": "member_failed", "pool": "web", "member": f"n{i}"} for i in range(2, 6)]
    drive(watcher, burst, 0.6)
    runs = journal.runs()
    assert len(runs) == 1 and runs[0]["status"] == "successful"
    assert [e["member"] for e in runs[0]["events"]] == ["n2", "n3", "n4", "n5"]
    assert runs[0]["changed_hosts"] == ["n1"]


def test_one_run_per_pool_at_a_time(tmp_path):
    watcher, _journal = make_watcher(tmp_path)
    watcher.cfg["debounce"] = 0.0
    events = [{"type": "member_failed", "pool": "web", "member": "n2"}]

    async def scenario():
        task = asyncio.create_task(watcher.run())
        watcher.submit(events[0])
        await asyncio.sleep(0.01)
        watcher.submit({"type": "member_recovered", "pool": "web", "member": "n2"})
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(scenario())
    first, second = watcher.plays
    e1, s2 = first[2], second[1]
    assert s2 >= e1  # the second run of pool web waited for the first


def test_failed_run_is_retried_with_backoff_and_journaled(tmp_path):
    watcher, journal = make_watcher(tmp_path, fail_times=1)
    drive(watcher, [{"type": "member_failed", "pool": "web", "member": "n2"}], 2.0)
    run = journal.runs()[0]
    assert run["status"] == "successful" and run["attempts"] == 2
    assert watcher.plays[1][1] - watcher.plays[0][2] >= 0.9  # backoff before the retry


def test_only_the_pool_leader_runs_pool_wide_playbooks(tmp_path):
    watcher, journal = make_watcher(tmp_path, leader="n2")
    drive(watcher, [{"type": "member_failed", "pool": "web", "member": "n3"}], 0.4)
    assert journal.runs() == []


# Pool-wide runs need the pool leader *with quorum*: both sides of a split have a
# leader. The lab test of the same rule is tests/integration/test_partitions_on_lab.py.
FAILED = {"type": "member_failed", "pool": "web", "member": "n3"}


def test_minority_leader_runs_no_pool_playbook(tmp_path):
    watcher, journal = make_watcher(tmp_path, quorum=False)
    drive(watcher, [FAILED], 0.4)
    assert watcher.plays == [] and journal.runs() == []


def test_rule_may_opt_out_of_quorum(tmp_path):
    rule = {"events": ["member_failed"], "playbook": "r.yml", "require_quorum": False}
    watcher, journal = make_watcher(tmp_path, quorum=False, rule=rule)
    drive(watcher, [FAILED], 0.4)
    assert [r["status"] for r in journal.runs()] == ["successful"]


def test_run_resumed_after_a_restart_is_skipped_without_quorum(tmp_path):
    # Queued while this node led with quorum; the daemon restarted inside a minority.
    watcher, journal = make_watcher(tmp_path, quorum=False)
    run_id = journal.queue_run("web", "r.yml", "pool", [FAILED])
    drive(watcher, [], 0.3)
    run = journal.runs()[0]
    assert run["id"] == run_id and watcher.plays == []
    assert run["status"] == "skipped" and "no quorum" in run["detail"]


def test_run_resumed_on_a_node_that_no_longer_leads_is_skipped(tmp_path):
    watcher, journal = make_watcher(tmp_path, leader="n2")
    journal.queue_run("web", "r.yml", "pool", [FAILED])
    drive(watcher, [], 0.3)
    run = journal.runs()[0]
    assert watcher.plays == [] and run["status"] == "skipped" and "n2 is" in run["detail"]


def test_quorum_lost_between_event_and_run_skips_the_run(tmp_path):
    watcher, journal = make_watcher(tmp_path)

    async def scenario():
        task = asyncio.create_task(watcher.run())
        watcher.submit(FAILED)
        watcher.connector.topology["web"].quorum = False  # the split, during the debounce
        await asyncio.sleep(0.4)
        task.cancel()

    asyncio.run(scenario())
    assert watcher.plays == [] and journal.runs()[0]["status"] == "skipped"


def test_require_quorum_is_validated(tmp_path):
    path = tmp_path / "connector.yml"
    path.write_text(
        "node: n1\nwatcher:\n  rules:\n"
        "    - {events: [member_failed], playbook: x.yml, require_quorum: true}\n"
        "    - {events: [member_failed], playbook: y.yml, scope: local, require_quorum: false}\n"
        "    - {events: [member_failed], playbook: z.yml, require_quorum: 'no'}\n"
    )
    with pytest.raises(PoolModelError) as err:
        load_config(str(path))
    text = str(err.value)
    assert "rules[1].require_quorum: require_quorum applies to scope: pool rules only" in text
    assert "rules[2].require_quorum: expected true or false" in text
    assert "rules[0]" not in text


# ------------------------------------------------------------------- sbm
def test_sbm_scheduler_without_rules_publishes_ok_and_keeps_running():
    from connector.sbm_scheduler import SbmScheduler

    published: list[str] = []

    async def publish(code: str) -> None:
        published.append(code)

    async def scenario():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(SbmScheduler({}, publish).run(), 0.3)

    asyncio.run(scenario())
    assert published == ["0"]


def test_sbm_scheduler_publishes_worst_rule_and_maintenance():
    from connector.sbm_scheduler import SbmScheduler

    published: list[str] = []

    async def publish(code: str) -> None:
        published.append(code)

    rules = {
        "ok": {"kind": "load", "crit": 10000, "interval": 0.1},
        "bad": {"kind": "load", "crit": 0, "interval": 0.1},
    }
    sched = SbmScheduler(rules, publish)

    async def scenario():
        task = asyncio.create_task(sched.run())
        await asyncio.sleep(0.3)
        await sched.set_maintenance(True)
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(scenario())
    assert published[0] == "3" and "2" in published and published[-1] == "MAINTENANCE"
    assert {r["rule"]: r["reported_name"] for r in sched.report()["rules"]} == {
        "bad": "CRITICAL",
        "ok": "OK",
    }


def test_peer_rule_gets_the_reachable_peer_count_from_tns():
    from connector.sbm_scheduler import SbmScheduler

    async def publish(code: str) -> None:
        pass

    peers = {"n": 1}
    rules = {"peers": {"kind": "peer", "warn": 2, "crit": 1, "interval": 0.05}}
    sched = SbmScheduler(rules, publish, reachable_peers=lambda: peers["n"])

    async def scenario():
        task = asyncio.create_task(sched.run())
        await asyncio.sleep(0.2)
        first = sched.report()["rules"][0]["reported_name"]
        peers["n"] = 3
        await asyncio.sleep(0.2)
        task.cancel()
        return first, sched.report()["rules"][0]["reported_name"]

    assert asyncio.run(scenario()) == ("CRITICAL", "OK")
