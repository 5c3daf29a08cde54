# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which changes of a peer's batch win, decided in memory before anything is written.

Pure logic (no database): ``_changelog_bulk.apply_staged`` stages a batch in
SQL and hands ``resolve`` only the *hot* changes (a key with a version here, or
seen more than once in the batch), with their current versions; every other
change wins without a conflict. Only the final state of each row is written:
LWW means only the last winning version of a row matters, so a row changed ten
times during a partition is written once.

Rules, per primary key, walking the batch in seq order from the local version:
- a change whose HLC is not above the current version loses (LWW; the HLC text
  ends with the origin name, the deterministic tie-break); it is a conflict
  unless it is the very version or its direct predecessor (a replay);
- a change that wins over a current version it did not replace (``prev`` is
  another HLC) is concurrent: the overwritten version is a conflict loser;
- deletes are versions too (tombstones), so an older late update loses to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# (hlc, prev, deleted) of a row's current version
Version = tuple[str, "str | None", bool]


@dataclass
class Conflict:
    """One overwritten or refused version, kept visible in multiall_conflicts."""

    table: str
    pk: dict
    winner_hlc: str
    loser_hlc: str
    loser_op: str
    loser_row: Any
    loser_is_local: bool  # the loser is the row as stored here: read it before writing


@dataclass
class Resolution:
    """The outcome of ``resolve``."""

    # (table, key) -> winning change, ordered by the seq of its last win
    final: dict[tuple[str, tuple], Any] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    applied: int = 0
    lost: int = 0
    tables: dict[str, int] = field(default_factory=dict)


def row_key(pk: dict, order: list[str]) -> tuple:
    """The primary key as a tuple in the table's key order."""
    return tuple(pk[c] for c in order)


def resolve(
    changes: list[Any], local: dict[tuple[str, tuple], Version], pk_order: dict[str, list[str]]
) -> Resolution:
    """Decide every change of a batch (sorted by seq, all above the watermark)."""
    res = Resolution()
    current: dict[tuple[str, tuple], tuple[Version, Any]] = {}
    for ch in changes:
        k = (ch.table, row_key(ch.pk, pk_order[ch.table]))
        if k in current:
            cur, cur_change = current[k]
        else:
            cur, cur_change = local.get(k), None
        if cur is not None and cur[0] >= ch.hlc:
            res.lost += 1
            if cur[0] != ch.hlc and cur[1] != ch.hlc:
                res.conflicts.append(
                    Conflict(ch.table, ch.pk, cur[0], ch.hlc, ch.op, ch.row, False)
                )
            continue
        if cur is not None and cur[0] != ch.prev:
            if cur_change is not None:
                loser_op, loser_row, is_local = cur_change.op, cur_change.row, False
            else:
                loser_op, loser_row, is_local = ("D" if cur[2] else "U"), None, not cur[2]
            res.conflicts.append(
                Conflict(ch.table, ch.pk, ch.hlc, cur[0], loser_op, loser_row, is_local)
            )
        current[k] = ((ch.hlc, ch.prev, ch.op == "D"), ch)
        res.final.pop(k, None)
        res.final[k] = ch
        res.applied += 1
        res.tables[ch.table] = res.tables.get(ch.table, 0) + 1
    return res
