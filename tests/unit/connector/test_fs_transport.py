"""FsTransport (connector/fs_transport.py) against a real session process that stops reading."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from connector.fs_transport import FsTransport, PeerError

GUARD = 20.0  # a hang guard only: the request fails in about its timeout when it works
# Never reads its requests (a receiver stuck on its disk).
STUCK = "import time\ntime.sleep(60)\n"


def test_a_peer_that_stops_reading_fails_the_request_in_time(tmp_path: Path) -> None:
    """A request too large for the pipe fails in its timeout and frees the peer for the next."""
    stuck = tmp_path / "stuck.py"
    stuck.write_text(STUCK)
    transport = FsTransport("n1", model=None, cfg={"timeout": 1})

    async def session(tree: str, peer: str) -> asyncio.subprocess.Process:
        proc = transport.sessions.get((tree, peer))
        if proc is None or proc.returncode is not None:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(stuck), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            transport.sessions[(tree, peer)] = proc
        return proc

    transport._session = session  # the SSH part is the lab test's

    async def scenario() -> None:
        for _attempt in range(2):  # the lock of (tree, peer) is free again after a failure
            with pytest.raises(PeerError, match="timed out"):
                await transport.ask("www", "n2", "manifest", {"paths": ["x" * 100] * 100_000})
        assert not transport.sessions  # the broken session was dropped

    asyncio.run(asyncio.wait_for(scenario(), GUARD))
