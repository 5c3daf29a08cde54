"""The ``multiall-sbm`` Serf query answer: one node's SBM detail, small enough for Serf.

Serf caps a query response at about 1 KB, so the answer is packed: per rule only
what ``multiall sbm`` shows, the message cut to 60 characters and the perfdata
in its compact Nagios text form (``/=23396876288B;216442024755;...``). When that
is still too big, messages go first, then perfdata, then rules that are OK,
then half of what is left, until it fits; ``truncated`` says so. The asking
node unpacks it back into the same shape a local report has.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._sbm_perfdata import (
    format_perfdata,
    parse_perfdata,
)

LIMIT = 1000  # bytes; Serf's query response limit is 1024
MESSAGE_MAX = 60


def _dump(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, default=str, separators=(",", ":")).encode()


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def shrink(answer: dict[str, Any]) -> None:
        for rule in answer["rules"]:
            rule.pop(key, None)

    return shrink


def _keep_not_ok(answer: dict[str, Any]) -> None:
    answer["rules"] = [r for r in answer["rules"] if r["reported"] != 0] or answer["rules"][:5]


def _halve(answer: dict[str, Any]) -> None:
    answer["rules"] = answer["rules"][: len(answer["rules"]) // 2]


def pack(node: str, report: dict[str, Any], limit: int = LIMIT) -> bytes:
    """``SbmScheduler.report()`` -> the answer's bytes, at most ``limit`` long."""
    rules = []
    for r in report["rules"]:
        rule = {
            "rule": r["rule"],
            "kind": r["kind"],
            "reported": r["reported"],
            "reported_name": r["reported_name"],
            "value": r.get("value"),
            "warn": r.get("warn"),
            "crit": r.get("crit"),
            "since": round(r["since"]),
            "message": str(r.get("message", ""))[:MESSAGE_MAX],
        }
        if r.get("perfdata"):
            rule["perf"] = format_perfdata(r["perfdata"])
        rules.append(rule)
    answer = {
        "node": node,
        "status": report["status"],
        "maintenance": report["maintenance"],
        "rules": rules,
    }
    data = _dump(answer)
    shrinks = [_drop("message"), _drop("perf"), _keep_not_ok]
    while len(data) > limit and answer["rules"]:
        (shrinks.pop(0) if shrinks else _halve)(answer)
        answer["truncated"] = True
        data = _dump(answer)
    return data


def unpack(node: str, payload: bytes) -> dict[str, Any]:
    """An answer's bytes -> the report (perfdata parsed back); ValueError when malformed."""
    try:
        data = json.loads(payload)
    except ValueError:
        raise ValueError(
            f"{node} answered with something that is not JSON (truncated report?)"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ValueError(f"{node} sent a malformed report")
    for rule in data["rules"]:
        if isinstance(rule, dict):
            rule["perfdata"] = parse_perfdata(str(rule.pop("perf", "")))
    return data
