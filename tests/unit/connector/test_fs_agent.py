"""FsAgent as a core task of the daemon."""

from __future__ import annotations

import asyncio

from ansible_collections.takelan.multiall.plugins.module_utils.pools import load

from connector.fs_agent import FsAgent

MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web]}
  n2: {address: 198.18.0.12, pools: [web]}
pools:
  web: {}
"""


def test_a_node_without_live_trees_keeps_the_task_running(tmp_path) -> None:
    """The daemon stops the connector when a core task ends: no trees must not end it."""
    path = tmp_path / "pools.yml"
    path.write_text(MODEL)
    agent = FsAgent("n1", load(str(path)), str(tmp_path / "state"))
    assert agent.trees == {}

    async def scenario() -> bool:
        task = asyncio.create_task(agent.run())
        await asyncio.sleep(0.2)
        still_running = not task.done()
        task.cancel()
        return still_running

    assert asyncio.run(scenario())


TWO_POOLS = """\
nodes:
  n1: {{address: 198.18.0.11, pools: [web, db]}}
  n2: {{address: 198.18.0.12, pools: [web, db]}}
pools:
  web: {{files: {{{tree}/web: {{}}}}}}
  db: {{files: {{{tree}/db: {{}}}}}}
"""


def test_only_a_real_return_in_the_trees_own_pool_starts_a_comparison(tmp_path) -> None:
    """A peer seen alive (or suspect) again and again is compared with once, and a peer
    alive in one pool's view but failed in the other's never flips between them."""
    from types import SimpleNamespace as NS

    path = tmp_path / "pools.yml"
    path.write_text(TWO_POOLS.format(tree=tmp_path))
    agent = FsAgent("n1", load(str(path)), str(tmp_path / "state"))
    started: list[tuple[str, str]] = []

    async def catch_up(tree: str, peer: str) -> bool:
        started.append((tree, peer))
        return True

    agent._catch_up = catch_up  # type: ignore[method-assign]

    def view(state: str) -> NS:
        return NS(members={"n1": NS(state="alive"), "n2": NS(state=state)})

    async def scenario() -> None:
        for state in ("alive", "suspect", "alive", "suspect", "alive"):
            agent.observe("web", view(state))  # late probes on a loaded machine
            agent.observe("db", view("failed"))
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert started == [(f"{tmp_path}/web", "n2")]
    assert agent._is_alive(f"{tmp_path}/web", "n2")
    assert not agent._is_alive(f"{tmp_path}/db", "n2")
    agent.observe("web", view("suspect"))
    assert agent._is_alive(f"{tmp_path}/web", "n2")  # still pushed to: a push tells
    agent.observe("web", view("maintenance"))
    assert not agent._is_alive(f"{tmp_path}/web", "n2")


def test_a_locked_index_delays_recording_and_never_stops_the_agent(tmp_path) -> None:
    """SQLite's busy timeout ran out (a long receiver transaction on a loaded node):
    the changed paths are recorded on the next try, the core task keeps running."""
    import sqlite3

    path = tmp_path / "pools.yml"
    path.write_text(TWO_POOLS.format(tree=tmp_path))
    agent = FsAgent("n1", load(str(path)), str(tmp_path / "state"), {"debounce": 0.01})
    tree = f"{tmp_path}/web"
    seen: list[set[str]] = []

    def observe(tree_: str, paths: set[str]) -> list[str]:
        seen.append(set(paths))
        if len(seen) == 1:
            raise sqlite3.OperationalError("database is locked")
        return []

    agent._observe_local = observe  # type: ignore[method-assign]

    async def scenario() -> bool:
        task = asyncio.create_task(agent._debounce())
        agent.on_paths(tree, {"a"})
        await asyncio.sleep(1.5)
        running = not task.done()
        task.cancel()
        return running

    assert asyncio.run(scenario())
    assert seen == [{"a"}, {"a"}]


def test_start_up_removes_a_crashs_partial_transfers_and_nothing_else(tmp_path) -> None:
    """A node killed mid-transfer keeps rsync's ``.NAME.XXXXXX``: gone once the agent has
    opened its trees (before any transfer), while files of that shape the tree excludes,
    directories and real files stay; the debris is never indexed."""
    path = tmp_path / "pools.yml"
    path.write_text(
        TWO_POOLS.format(tree=tmp_path).replace(
            "{files: {" + f"{tmp_path}/web" + ": {}}}",
            "{files: {" + f"{tmp_path}/web" + ": {exclude: ['*.swp']}}}",
        )
    )
    web = tmp_path / "web"
    (web / "burst").mkdir(parents=True)
    for name in ("burst/.f590.c2f667", "burst/f590", ".old.zz9zz9.swp", ".hidden"):
        (web / name).write_text("x")
    (web / ".dir.a1b2c3").mkdir()
    agent = FsAgent("n1", load(str(path)), str(tmp_path / "state"))
    agent._open()
    left = sorted(str(p.relative_to(web)) for p in web.rglob("*"))
    assert left == [".dir.a1b2c3", ".hidden", ".old.zz9zz9.swp", "burst", "burst/f590"]
    index = agent.indexes[str(web)]
    assert index.get("burst/.f590.c2f667") is None
    assert index.get("burst/f590") is not None
