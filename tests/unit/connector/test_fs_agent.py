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
