"""The control socket's dispatch, spoken to with the shared client over a real unix socket."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._control import (
    ControlError,
    control_request,
)

from connector.control import ControlServer


def serve_and_ask(tmp_path, requests: list) -> list:
    """Start a ControlServer on a fresh socket, send each request with the shared client."""
    path = str(tmp_path / "connector.sock")
    connector = SimpleNamespace(node="n1", status=lambda: {"node": "n1", "pools": {}})
    server = ControlServer(connector)  # type: ignore[arg-type]

    async def scenario():
        unix = await asyncio.start_unix_server(server.handle, path=path)
        replies = []
        for req in requests:
            try:
                replies.append(await asyncio.to_thread(control_request, path, req, 5))
            except ControlError as exc:
                replies.append(str(exc))
        unix.close()
        return replies

    return asyncio.run(scenario())


def test_status_and_errors_each_get_one_json_line(tmp_path):
    status, unknown, bad_action = serve_and_ask(
        tmp_path, [{"op": "status"}, {"op": "reboot"}, {"op": "maintenance", "action": "pause"}]
    )
    assert status == {"ok": True, "node": "n1", "pools": {}}
    assert unknown == (
        "unknown op 'reboot'; ops: status, events, sbm, runs, maintenance, dns, fs, follow"
    )
    assert bad_action == "action must be 'enter' or 'exit'"


@pytest.mark.parametrize("line", [b"[1, 2]\n", b"not json\n"])
def test_a_line_that_is_not_a_request_object_is_refused_and_the_connection_lives_on(tmp_path, line):
    path = str(tmp_path / "connector.sock")
    connector = SimpleNamespace(node="n1", status=lambda: {"node": "n1"})
    server = ControlServer(connector)  # type: ignore[arg-type]

    async def scenario():
        unix = await asyncio.start_unix_server(server.handle, path=path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(line + b'{"op": "status"}\n')
        await writer.drain()
        first, second = await reader.readline(), await reader.readline()
        writer.close()
        unix.close()
        return json.loads(first), json.loads(second)

    refused, status = asyncio.run(scenario())
    assert refused["ok"] is False and refused["error"]
    assert status == {"ok": True, "node": "n1"}
