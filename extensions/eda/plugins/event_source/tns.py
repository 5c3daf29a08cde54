"""tns: TNS topology events from TakeConnector, for ansible-rulebook.

Connects to the local connector's control socket, asks it to ``follow`` and
puts every topology event on the queue as ``{"tns": {...}}`` - the same events
the connector's watcher reacts to: member_failed, member_recovered,
maintenance_enter, maintenance_exit, sbm_changed, leader_changed, quorum_lost,
quorum_regained - and dns_changed when the pool leader changed the pool's DNS
records (DNS-SA), fs_conflict when FS-SA kept a conflict copy (tree, path,
copy, winner, loser), sl_drift when a node's packages, services or libraries
drifted from its pools (SL-SA), and db_conflict / db_schema_mismatch from DB-SA.
Reconnects with backoff when the connector restarts.

Arguments:
    socket:   path of the connector's control socket
              (default /run/multiall/connector.sock)
    types:    only these event types (list; default: all)
    pools:    only events of these pools (list; default: all)
    reconnect_delay: first delay between reconnects in seconds (default 0.5)

Example:
    - takelan.multiall.tns:
        types: [member_failed, quorum_lost]
        pools: [web]
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)
# Stated again here (the source may run where module_utils is not importable);
# tests/unit/test_one_source.py keeps it equal to module_utils._control.DEFAULT_SOCKET.
DEFAULT_SOCKET = "/run/multiall/connector.sock"


def wanted(event: dict[str, Any], args: dict[str, Any]) -> bool:
    """Filter by the ``types`` and ``pools`` arguments."""
    types, pools = args.get("types"), args.get("pools")
    return (not types or event.get("type") in types) and (not pools or event.get("pool") in pools)


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    """Follow the connector forever, putting matching events on ``queue``."""
    path = args.get("socket") or DEFAULT_SOCKET
    first_delay = float(args.get("reconnect_delay", 0.5))
    delay = first_delay
    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError as exc:
            logger.debug("connector at %s not reachable (%s); retrying in %.1f s", path, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        delay = first_delay
        try:
            writer.write(b'{"op": "follow"}\n')
            await writer.drain()
            # Said once per connection: operators (and the lab test) know from
            # here on that no event of this connector is missed.
            logger.info("following TNS events of the connector at %s", path)
            while line := await reader.readline():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # never let a bad line stop the source
                if isinstance(event, dict) and wanted(event, args):
                    await queue.put({"tns": event})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(delay)


if __name__ == "__main__":

    class MockQueue:
        """Prints events instead of handing them to ansible-rulebook."""

        async def put(self, event: dict[str, Any]) -> None:
            print(json.dumps(event))

    asyncio.run(main(MockQueue(), {}))  # type: ignore[arg-type]
