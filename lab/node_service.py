"""Inside a lab node: ``python -m lab.node_service start|restart|stop|status NAME [-- CMD...]``.

The lab has no systemd; roles use this to manage a service through the node's
supervisor (``/run/lab/supervisor.sock``), idempotently: ``start`` prints
``already running`` or ``started``.
"""

from __future__ import annotations

import json
import sys

from ansible_collections.takelan.multiall.plugins.module_utils._control import exchange

SOCKET = "/run/lab/supervisor.sock"


def call(request: dict) -> dict:
    return exchange(SOCKET, request)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("start", "restart", "stop", "status"):
        print(
            "usage: python -m lab.node_service start|restart|stop|status NAME [-- CMD...]",
            file=sys.stderr,
        )
        return 2
    action, name = argv[0], argv[1]
    command = argv[3:] if len(argv) > 2 and argv[2] == "--" else argv[2:]
    try:
        status = call({"op": "status", "name": name})
    except OSError as exc:
        print(f"no lab supervisor at {SOCKET}: {exc}", file=sys.stderr)
        return 1
    running = bool(status.get("ok") and status["service"]["running"])
    if action == "status":
        print(json.dumps(status.get("service") or {}))
        return 0 if running else 3
    if action in ("stop", "restart") and status.get("ok"):
        call({"op": "stop", "name": name})
        running = False
    if action == "stop":
        print("stopped")
        return 0
    if running:
        print("already running")
        return 0
    if not command:
        print("start needs the command after --", file=sys.stderr)
        return 2
    reply = call({"op": "start", "name": name, "argv": command, "restart": True})
    if not reply.get("ok"):
        print(reply.get("error", "supervisor refused"), file=sys.stderr)
        return 1
    print("started")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
