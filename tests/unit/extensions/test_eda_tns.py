"""The tns event source against a real unix socket speaking the connector's protocol."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SPEC = importlib.util.spec_from_file_location(
    "eda_tns", ROOT / "extensions/eda/plugins/event_source/tns.py"
)
tns = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tns)

EVENTS = [
    {"type": "member_failed", "pool": "web", "member": "n2"},
    {"type": "leader_changed", "pool": "web", "old": "n1", "new": "n2"},
    {"type": "member_failed", "pool": "db", "member": "n5"},
]


async def fake_connector(
    path: str, requests: list[bytes], connections: list[int]
) -> asyncio.AbstractServer:
    async def handle(reader, writer):
        connections.append(1)
        requests.append(await reader.readline())
        if len(connections) == 1:
            writer.write(b"not json\n")  # a bad line must not stop the source
            for event in EVENTS:
                writer.write((json.dumps(event) + "\n").encode())
            await writer.drain()
            writer.close()  # the connector restarts: the source must reconnect
        else:
            await asyncio.sleep(10)

    return await asyncio.start_unix_server(handle, path=path)


def test_source_follows_filters_and_reconnects(tmp_path):
    async def scenario():
        path = str(tmp_path / "c.sock")
        requests: list[bytes] = []
        connections: list[int] = []
        server = await fake_connector(path, requests, connections)
        queue: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(
            tns.main(
                queue,
                {
                    "socket": path,
                    "types": ["member_failed"],
                    "pools": ["web"],
                    "reconnect_delay": 0.05,
                },
            )
        )
        first = await asyncio.wait_for(queue.get(), 5)
        while len(connections) < 2:
            await asyncio.sleep(0.02)
        task.cancel()
        server.close()
        return first, queue.qsize(), requests, len(connections)

    first, left, requests, connections = asyncio.run(scenario())
    assert first == {"tns": {"type": "member_failed", "pool": "web", "member": "n2"}}
    assert left == 0  # leader_changed and the db event were filtered out
    assert json.loads(requests[0]) == {"op": "follow"}
    assert connections == 2


def test_filter_without_arguments_passes_everything():
    assert all(tns.wanted(e, {}) for e in EVENTS)
    assert not tns.wanted(EVENTS[1], {"types": ["member_failed"]})
