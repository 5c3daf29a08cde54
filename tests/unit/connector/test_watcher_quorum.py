"""Pool-wide watcher runs need the pool leader *with quorum* (both sides of a split have a leader).

ansible-runner is replaced by a recorder; the topology is set by hand. The lab
test of the same rule is tests/integration/test_partitions_on_lab.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModelError

from connector.config import load_config
from connector.journal import Journal
from connector.watcher import Watcher

RULE = {"events": ["member_failed"], "playbook": "r.yml", "scope": "pool"}
FAILED = {"type": "member_failed", "pool": "web", "member": "n3"}


class Recorder(Watcher):
    """Records runs instead of starting ansible-runner."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.played: list[int] = []

    def _play(self, run):
        self.played.append(run["id"])
        return "successful", [], "rc=0"


def make(tmp_path, quorum: bool, rule: dict | None = None, leader: str = "n1"):
    topo = SimpleNamespace(leader=leader, quorum=quorum)
    connector = SimpleNamespace(
        node="n1",
        topology={"web": topo},
        baseline=True,
        metrics=SimpleNamespace(run=lambda status: None),
        cfg=SimpleNamespace(state_dir=str(tmp_path), pools_file="p.yml"),
    )
    journal = Journal(str(tmp_path / "j.db"))
    cfg = {"rules": [rule or RULE], "debounce": 0.05, "retries": 0}
    return Recorder(connector, cfg, journal), journal, topo


def drive(watcher, events, seconds):
    async def scenario():
        task = asyncio.create_task(watcher.run())
        for event in events:
            watcher.submit(event)
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(scenario())


def test_minority_leader_runs_no_pool_playbook(tmp_path):
    watcher, journal, _topo = make(tmp_path, quorum=False)
    drive(watcher, [FAILED], 0.3)
    assert watcher.played == [] and journal.runs() == []


def test_leader_with_quorum_runs_it(tmp_path):
    watcher, journal, _topo = make(tmp_path, quorum=True)
    drive(watcher, [FAILED], 0.3)
    assert [r["status"] for r in journal.runs()] == ["successful"]


def test_rule_may_opt_out_of_quorum(tmp_path):
    watcher, journal, _topo = make(tmp_path, quorum=False, rule={**RULE, "require_quorum": False})
    drive(watcher, [FAILED], 0.3)
    assert [r["status"] for r in journal.runs()] == ["successful"]


def test_run_resumed_after_a_restart_is_skipped_without_quorum(tmp_path):
    # Queued while this node led with quorum; the daemon restarted inside a minority.
    watcher, journal, _topo = make(tmp_path, quorum=False)
    run_id = journal.queue_run("web", "r.yml", "pool", [FAILED])
    drive(watcher, [], 0.3)
    run = journal.runs()[0]
    assert run["id"] == run_id and watcher.played == []
    assert run["status"] == "skipped" and "no quorum" in run["detail"]


def test_run_resumed_on_a_node_that_no_longer_leads_is_skipped(tmp_path):
    watcher, journal, _topo = make(tmp_path, quorum=True, leader="n2")
    journal.queue_run("web", "r.yml", "pool", [FAILED])
    drive(watcher, [], 0.3)
    run = journal.runs()[0]
    assert watcher.played == [] and run["status"] == "skipped" and "n2 is" in run["detail"]


def test_quorum_lost_between_event_and_run_skips_the_run(tmp_path):
    watcher, journal, topo = make(tmp_path, quorum=True)

    async def scenario():
        task = asyncio.create_task(watcher.run())
        watcher.submit(FAILED)
        topo.quorum = False  # the split happens during the debounce
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(scenario())
    assert watcher.played == [] and journal.runs()[0]["status"] == "skipped"


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
    assert "rules[1].require_quorum" in text or "require_quorum" in text
    assert "scope: pool rules only" in text
    assert "true or false" in text
    assert "x.yml" not in text
