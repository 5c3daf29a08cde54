"""Small helpers for the connector's child processes (ssh sessions, rsync)."""

from __future__ import annotations

import asyncio

EXIT_WAIT = 5.0  # seconds a killed child (a session, an rsync) gets to be reaped


async def reaped(proc: asyncio.subprocess.Process, timeout: float = EXIT_WAIT) -> bool:
    """Wait (at most TIMEOUT) until PROC has exited; whether it has.

    Not ``proc.wait()``: on Python 3.11 it also waits until every pipe of the
    process is closed, and a pipe held by another process (a child it left
    behind, a ControlPersist master of an older OpenSSH) keeps it waiting for
    as long as that process lives.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.returncode is None and loop.time() < deadline:
        await asyncio.sleep(0.01)
    return proc.returncode is not None
