# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client of TakeConnector's control socket (JSON lines over a unix socket).

Shared by the ``multiall`` CLI, the ``tns_maintenance`` module (which runs on
managed nodes, hence stdlib only) and the lab helpers.
"""

from __future__ import annotations

import json
import socket
from typing import Any

DEFAULT_SOCKET = "/run/multiall/connector.sock"


class ControlError(Exception):
    """The connector is not reachable, or it refused the request."""


def exchange(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One JSON line out, one JSON line back, over a unix socket.

    The one implementation of this little protocol: the connector's control
    socket and the lab supervisor's socket both speak it. Raises OSError when
    the socket is unreachable and ValueError when the answer is not JSON.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall((json.dumps(req) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data or b"{}")
    if not isinstance(reply, dict):
        raise ValueError("the answer is not a JSON object")
    return reply


def control_request(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request; return the connector's reply (errors raise ControlError)."""
    try:
        reply = exchange(path, req, timeout)
    except OSError as exc:
        raise ControlError(
            f"cannot reach the connector at {path}: {exc.strerror or exc} (is `multiall daemon` running?)"
        ) from None
    except ValueError:
        raise ControlError(f"the connector at {path} sent something that is not JSON") from None
    if not reply.get("ok", False) and "error" in reply:
        raise ControlError(str(reply["error"]))
    return reply
