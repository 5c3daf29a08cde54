"""Probe packet format: one body, one HMAC per pool section, and the start epoch.

Split from connector/probe.py (which sends and receives them); the trust rules
are described there and in docs/security.md ("TNS").
"""

from __future__ import annotations

import hmac
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from .state_files import read_int, write_private

EPOCH_FILE = "probe.epoch"


def _mac(key: bytes, pool: str, body: bytes) -> bytes:
    # The pool name is inside the MAC: one key reused for two pools still
    # cannot move a section from one pool to the other.
    # hmac.digest: the one-shot C path, several times cheaper than hmac.new() per packet.
    return hmac.digest(key, pool.encode() + b"\0" + body, "sha256").hex().encode()


def seal(keys: Mapping[str, bytes], msg: dict[str, Any]) -> bytes:
    """Encode MSG and sign it once per pool in ``msg["pools"]`` (body '.' mac,mac...)."""
    body = json.dumps(msg, separators=(",", ":"), sort_keys=True).encode()
    return body + b"." + b",".join(_mac(keys[p], p, body) for p in sorted(msg["pools"]))


def open_packet(
    keys: Mapping[str, bytes], packet: bytes
) -> tuple[dict[str, Any], list[str]] | None:
    """The decoded message and the pools whose MAC verified, or None.

    None when the packet is not well formed or no pool MAC verifies with a key
    this node holds. Sections of pools that did not verify must be ignored.
    """
    body, _dot, macs = packet.rpartition(b".")
    if not body:
        return None
    try:
        msg = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not _well_formed(msg):
        return None
    pools = sorted(msg["pools"])
    signatures = macs.split(b",")
    if len(signatures) != len(pools):
        return None
    verified = [
        pool
        for pool, mac in zip(pools, signatures, strict=True)
        if pool in keys and hmac.compare_digest(mac, _mac(keys[pool], pool, body))
    ]
    return (msg, verified) if verified else None


def _well_formed(msg: Any) -> bool:
    if not isinstance(msg, dict) or msg.get("t") not in ("ping", "pong"):
        return False
    if not isinstance(msg.get("from"), str) or not isinstance(msg.get("pools"), dict):
        return False
    if not all(
        isinstance(msg.get(k), int) and not isinstance(msg.get(k), bool) for k in ("ep", "seq")
    ):
        return False
    ts = msg.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        return False  # NaN would pass every skew comparison
    return all(
        isinstance(section, dict)
        and isinstance(section.get("view", {}), dict)
        and isinstance(section.get("maint", {}), dict)
        for section in msg["pools"].values()
    )


def next_epoch(state_dir: str) -> int:
    """This start's epoch: greater than every earlier one of this node.

    Milliseconds of the wall clock, but never less than the last epoch + 1
    (kept in ``state_dir``), so a clock set back between two starts still
    yields a newer epoch and peers accept the restarted node.
    """
    path = os.path.join(state_dir, EPOCH_FILE)
    epoch = max((read_int(path) or 0) + 1, int(time.time() * 1000))
    os.makedirs(state_dir, exist_ok=True)
    write_private(path, f"{epoch}\n")
    return epoch
