"""A UDP endpoint that reads every queued datagram per wake-up.

asyncio's own datagram transport reads one datagram per event-loop pass. The
prober's packets arrive in bursts (every node of a pool sends its round at the
same tick of the clock, connector/probe.py ``run``), and a process woken once
per datagram spent more CPU on waking (epoll, the loop's pass, the scheduler)
than on the packets themselves: on an idle 8-node lab that was most of a
connector's ~1 % of a core. Here one wake-up drains the socket.

Each datagram is handed over with the time the kernel received it
(``SO_TIMESTAMPNS``), as ``protocol.datagram_arrived(data, addr, monotonic)``
when the protocol has that method: the prober dates evidence by arrival, not
by when a busy node got round to reading it.

Sending is a plain non-blocking ``sendto``: UDP may drop a datagram anyway,
and a full socket buffer drops it here too (counted), never blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import Any

log = logging.getLogger("multiall.probe")
# Datagrams read per wake-up at most, so a flood cannot starve the other tasks.
MAX_PER_WAKE = 512
RECV_SIZE = 65535
# Linux's SO_TIMESTAMPNS (the kernel's receive time, CLOCK_REALTIME, as a timespec);
# Python's socket module does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
ANCILLARY_SIZE = socket.CMSG_SPACE(16)
TIMESPEC = struct.Struct("@qq")


class DrainingEndpoint(asyncio.DatagramTransport):
    """A bound UDP socket feeding ``protocol.datagram_received``, draining per wake-up."""

    def __init__(self, sock: socket.socket, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self._sock, self._protocol = sock, protocol
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self.dropped = 0  # datagrams not sent because the socket buffer was full
        try:  # the kernel's receive timestamps
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self._stamped = True
        except OSError:  # not Linux: evidence is dated when read
            self._stamped = False
            log.debug("no kernel receive timestamps on this system")

    def drain(self) -> None:
        """Deliver every datagram waiting in the socket (also called before a refresh).

        With receive timestamps on and a protocol that takes them, each datagram is
        handed over with its arrival time; otherwise as plain ``datagram_received``.
        """
        if self._closed:
            return
        arrived_cb = getattr(self._protocol, "datagram_arrived", None) if self._stamped else None
        now = time.monotonic()
        offset = now - time.time()  # wall clock -> monotonic, once per wake-up
        for _read in range(MAX_PER_WAKE):
            try:
                if arrived_cb is not None:
                    data, ancillary, _flags, addr = self._sock.recvmsg(RECV_SIZE, ANCILLARY_SIZE)
                else:
                    data, addr = self._sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error reported on the socket: not fatal
                self._protocol.error_received(exc)
                continue
            if arrived_cb is None:
                self._protocol.datagram_received(data, addr)
                continue
            arrived = now
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                    sec, nsec = TIMESPEC.unpack_from(payload)
                    arrived = min(now, sec + nsec / 1e9 + offset)
            arrived_cb(data, addr, arrived)

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Send one datagram now; dropped (and counted) when the buffer is full."""
        if self._closed:
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError as exc:
            self._protocol.error_received(exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname()
        return default

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()


def open_endpoint(protocol: asyncio.DatagramProtocol, address: str, port: int) -> DrainingEndpoint:
    """Bind ADDRESS:PORT (IPv4), attach PROTOCOL and start reading; call from the loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    endpoint = DrainingEndpoint(sock, protocol)
    protocol.connection_made(endpoint)
    asyncio.get_running_loop().add_reader(sock.fileno(), endpoint.drain)
    return endpoint
