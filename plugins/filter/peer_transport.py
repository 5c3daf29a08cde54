# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the peer transport: the ``fs_sa`` role writes what the lab writes.

``peer_authorized_key``, ``peer_known_host`` and ``peer_receive_wrapper`` are
thin wrappers of ``module_utils/peer_transport.py``, so the restricted
``authorized_keys`` line, the pinned host key line and the forced-command
wrapper have one source. Documentation: the ``.yml`` files beside this one.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
    TransportError,
    authorized_key_line,
    known_hosts_line,
    receive_wrapper,
)


def peer_authorized_key(pubkey: Any, pool: str) -> str:
    """``restrict,command="multiall-peer-receive <pool>" <key> multiall-peer-<pool>``."""
    try:
        return authorized_key_line(str(pool), str(pubkey))
    except TransportError as exc:
        raise AnsibleFilterError(f"peer_authorized_key: {exc}") from None


def peer_known_host(hostkey: Any, address: str, names: Any = ()) -> str:
    """``<address>[,names] <type> <key>``; a bare base64 key is taken as ssh-ed25519."""
    key = str(hostkey or "").strip()
    if key and len(key.split()) == 1:
        key = f"ssh-ed25519 {key}"
    try:
        return known_hosts_line(str(address), key, [str(n) for n in names or ()])
    except TransportError as exc:
        raise AnsibleFilterError(f"peer_known_host: {exc}") from None


def peer_receive_wrapper(python: Any, workdir: str) -> str:
    """The forced command's sh wrapper for the connector at ``workdir`` run by ``python``."""
    return receive_wrapper(str(python), str(workdir))


class FilterModule:
    """Peer transport filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "peer_authorized_key": peer_authorized_key,
            "peer_known_host": peer_known_host,
            "peer_receive_wrapper": peer_receive_wrapper,
        }
