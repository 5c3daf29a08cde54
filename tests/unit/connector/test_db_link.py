"""PeerLink (connector/db_link.py) against real session processes that misbehave.

The receivers here are small Python programs speaking db_wire.py: one that
stops reading (a receiver stuck in its database), and one whose stderr outlives
it (a process it left behind holds the pipe, as a ControlPersist master of an
older OpenSSH did).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from connector.db_link import LinkError, PeerLink

GUARD = 20.0  # a hang guard only: each step takes well under a second when it works

# Answers each request with its running count; exits without a reply on "ping".
ANSWERING = """
import sys
from connector.db_wire import read_request, reply_line
n = 0
while (request := read_request(sys.stdin.buffer)) is not None:
    if request[0]["op"] == "ping":
        sys.exit(0)
    n += 1
    sys.stdout.buffer.write(reply_line({"ok": True, "watermark": n}))
    sys.stdout.buffer.flush()
"""
# Reads one request header, then never reads again.
STUCK = "import sys, time\nsys.stdin.buffer.readline()\ntime.sleep(60)\n"


def program(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_peer_that_stops_reading_fails_the_request_in_time(tmp_path: Path) -> None:
    """A send that cannot be written is bounded by the link's timeout, like the reply."""
    link = PeerLink([sys.executable, program(tmp_path, "stuck.py", STUCK)], "n2", timeout=1)

    async def scenario() -> str:
        await link.start()
        future = link.send("apply", b"x" * (8 << 20))  # far more than the pipe holds
        try:
            with pytest.raises(LinkError) as caught:
                await link.wait(future)
        finally:
            await link.close()
        return str(caught.value)

    message = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    assert "no reply within 1 s" in message
    assert not link.open


def test_a_session_whose_stderr_outlives_it_is_replaced_cleanly(tmp_path: Path) -> None:
    """Each ended session fails only its own requests; the next one answers, close never raises."""
    answering = program(tmp_path, "answering.py", ANSWERING)
    # The background sleep keeps the session's stderr open after the session exits.
    argv = ["sh", "-c", f'sleep 1.5 </dev/null >/dev/null & exec "{sys.executable}" "{answering}"']
    link = PeerLink(argv, "n2", timeout=5)

    async def scenario() -> list[int]:
        seen = []
        try:
            for _round in range(3):
                seen.append((await link.request("watermark"))["watermark"])
                ended = link.send("ping")  # the receiver exits without replying
                while link.open:
                    await asyncio.sleep(0.001)
                # A new session at once, while the old one's end is still being handled.
                seen.append((await link.request("watermark"))["watermark"])
                with pytest.raises(LinkError):
                    await link.wait(ended)
                await link.close()
                await link.close()  # twice: nothing left to close, and no error
        finally:
            await link.close()
            await asyncio.sleep(1.6)  # the last holders exit: every pipe closes in this loop
        return seen

    assert asyncio.run(asyncio.wait_for(scenario(), GUARD)) == [1, 1] * 3
