"""The Serf agent's pid file: a connector restarted after a crash stops its orphan agent.

The connector starts its Serf agent as a child process. When the connector is
killed outright (SIGKILL, the OOM killer) the agent lives on as an orphan and
keeps the gossip and RPC ports, so every agent the restarted connector starts
exits at once ("address already in use"), every 10 s, for as long as the
orphan lives; meanwhile the orphan gossips tags the new connector never set.
Under systemd ``KillMode=control-group`` ends the orphan; a connector run by
another supervisor (the lab's, runit, a shell) needs this.

The file names the last agent this state dir started. A process is only
stopped when it is still that agent: a ``serf agent`` for this node, so a
recycled pid of an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import itertools
import os

import psutil

from .state_files import read_int, write_private

PIDFILE = "serf.pid"
STOP_WAIT = 3.0  # seconds a stale agent gets to end on SIGTERM before SIGKILL


def _is_our_agent(proc: psutil.Process, node: str) -> bool:
    """Whether PROC is a Serf agent started for NODE (its command line says so)."""
    try:
        argv = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    names = [os.path.basename(a) for a in argv]
    if not any(n.startswith("serf") for n in names) or "agent" not in argv:
        return False
    return any(a == "-node" and b == node for a, b in itertools.pairwise(argv))


def stop_stale_agent(state_dir: str, node: str) -> int | None:
    """Stop the agent the pid file names if it still runs; its pid, or None if none ran."""
    pid = read_int(os.path.join(state_dir, PIDFILE))
    if pid is None:
        return None  # no file, or not a pid: nothing of ours to stop
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    if pid == os.getpid() or not _is_our_agent(proc, node):
        return None
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.terminate()
        try:
            proc.wait(STOP_WAIT)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_WAIT)
    return pid


def record_agent(state_dir: str, pid: int) -> None:
    """Name PID as this state dir's running agent (written whole: a crash leaves the old file)."""
    write_private(os.path.join(state_dir, PIDFILE), f"{pid}\n")
