"""FS-SA's way to its peers: a ``multiall-fs`` session and rsync, per (tree, peer).

Both ride the pool's persistent SSH master (``peer_transport``): the session is
one long-lived ``multiall-fs session TREE`` (one JSON request per line), so a
push's metadata costs a round trip, not a process start on the receiver; rsync
moves the files too large to travel inline. Every failure is a PeerError
naming the peer, with the receiver's own message when it refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._pools_files import peer_pool
from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
    rsync_argv,
    ssh_argv,
)

from .subprocs import reaped

log = logging.getLogger("multiall.fs")
# Longest reply line read from a session (an index of 100 000 paths is ~10 MB).
MAX_REPLY = 1 << 28


class PeerError(RuntimeError):
    """A request to a peer failed (named, with the peer's own message)."""


class FsTransport:
    """Sessions and rsync runs from this node to its tree peers."""

    def __init__(self, node: str, model: Any, cfg: dict[str, Any]) -> None:
        self.node, self.model, self.cfg = node, model, cfg
        self.sessions: dict[tuple[str, str], asyncio.subprocess.Process] = {}
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}

    def route(self, tree: str, peer: str) -> dict[str, Any]:
        """The pool (whose key carries TREE to PEER), address and SSH settings."""
        view = self.model.effective(peer)
        kw: dict[str, Any] = {
            "key_dir": self.cfg["key_dir"],
            "control_dir": self.cfg["control_dir"],
        }
        if getattr(view, "ssh_port", None):
            kw["port"] = int(view.ssh_port)
        return {"pool": peer_pool(self.model, self.node, peer, tree), "address": view.address, **kw}

    async def _session(self, tree: str, peer: str) -> asyncio.subprocess.Process:
        """The open ``multiall-fs session TREE`` to PEER (started when there is none)."""
        proc = self.sessions.get((tree, peer))
        if proc is not None and proc.returncode is None:
            return proc
        t = self.route(tree, peer)
        argv = ssh_argv(
            t["pool"],
            t["address"],
            key_dir=t["key_dir"],
            control_dir=t["control_dir"],
            port=t.get("port"),
        )
        proc = await asyncio.create_subprocess_exec(
            *argv,
            "multiall-fs",
            "session",
            tree,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_REPLY,
        )
        self.sessions[(tree, peer)] = proc
        return proc

    async def _drop_session(self, key: tuple[str, str]) -> str:
        """End a broken session; the last line it wrote on stderr (the peer's refusal)."""
        proc = self.sessions.pop(key, None)
        if proc is None:
            return ""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        err = b""
        with contextlib.suppress(TimeoutError, ValueError):
            assert proc.stderr is not None
            err = await asyncio.wait_for(proc.stderr.read(), 2)
        await reaped(proc)
        lines = err.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit {proc.returncode}"

    async def ask(self, tree: str, peer: str, op: str, data: dict[str, Any]) -> dict[str, Any]:
        """One ``multiall-fs`` request to PEER over its session; the JSON reply."""
        key = (tree, peer)
        async with self.locks.setdefault(key, asyncio.Lock()):
            proc = await self._session(tree, peer)
            assert proc.stdin is not None and proc.stdout is not None
            line = b""
            try:
                proc.stdin.write(
                    (json.dumps({"op": op, "from": self.node, **data}) + "\n").encode()
                )
                # Sending is bounded too: a peer that stops reading (a receiver stuck
                # on its disk) fills the pipe, and an unbounded drain held this
                # (tree, peer) lock, and every later push to the peer, for good.
                await asyncio.wait_for(proc.stdin.drain(), self.cfg["timeout"])
                line = await asyncio.wait_for(proc.stdout.readline(), self.cfg["timeout"])
            except TimeoutError:
                await self._drop_session(key)
                raise PeerError(f"{peer}: multiall-fs {op} {tree} timed out") from None
            except (ConnectionError, ValueError) as exc:
                why = await self._drop_session(key)
                raise PeerError(f"{peer}: multiall-fs {op} {tree}: {why or exc}") from None
            if not line:
                why = await self._drop_session(key)
                raise PeerError(f"{peer}: multiall-fs {op} {tree}: {why}")
        try:
            reply = json.loads(line)
        except ValueError:
            raise PeerError(f"{peer}: multiall-fs {op} {tree}: reply is not JSON") from None
        if not reply.get("ok"):
            raise PeerError(f"{peer}: multiall-fs {op} {tree}: {reply.get('error')}")
        return reply

    async def rsync(self, tree: str, peer: str, paths: list[str]) -> None:
        """Land PATHS (relative to TREE) on PEER: one rsync over the persistent master."""
        t = self.route(tree, peer)
        argv = rsync_argv(
            t["pool"],
            t["address"],
            tree,
            files_from="-",
            itemize=False,
            extra=["--from0"],
            key_dir=t["key_dir"],
            control_dir=t["control_dir"],
            **({"port": t["port"]} if t.get("port") else {}),
        )
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _out, err = await asyncio.wait_for(
                proc.communicate(b"\0".join(p.encode() for p in paths)), self.cfg["timeout"]
            )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await reaped(proc)
            raise PeerError(f"{peer}: rsync of {len(paths)} paths into {tree} timed out") from None
        # 24: a source file vanished meanwhile (its delete is queued already).
        if proc.returncode not in (0, 24):
            lines = err.decode(errors="replace").strip().splitlines()
            raise PeerError(
                f"{peer}: rsync into {tree} failed ({proc.returncode}): "
                f"{lines[-1] if lines else ''}"
            )
        for line in err.decode(errors="replace").splitlines():
            if "skipping non-regular file" in line:
                log.warning("fs %s: %s (devices and fifos are not synced)", tree, line.strip())

    async def close(self) -> None:
        """End every session."""
        for key in list(self.sessions):
            await self._drop_session(key)
