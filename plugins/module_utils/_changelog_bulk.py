# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set-based apply of a peer's batch: the rows go through SQL, Python only decides the few
that need deciding.

Why: resolving every change of a 100 000-row replay in Python (key tuple, version
lookup, LWW walk, grouping into runs, one bound parameter list per statement) cost
~0.05-0.1 ms of CPU per row, ten times a plain ``executemany``. Most rows of a
replay need no decision at all: a key that appears once in the batch and has no
version here wins without a conflict. So:

1. each table's changes are staged in one bulk insert (engine: ``stage``);
2. one query names the *hot* rows: keys with a local version (``multiall_rowver``)
   or appearing more than once in the batch (``staged_hot``);
3. only those go through ``_changelog_apply.resolve`` (the one LWW implementation);
   the versions that do not end up final are removed from the stage and every
   conflict is recorded (the local loser row is read before anything is written);
4. the final rows are written with ``INSERT .. SELECT .. ON CONFLICT DO UPDATE``
   and ``DELETE .. IN (SELECT ..)`` from the stage, in runs that keep the origin's
   order across tables (parents before children), then every staged version goes
   to ``multiall_rowver`` in one statement per table.

Everything happens inside the caller's transaction (``DbHandle.apply_batch``): a
failure rolls the stage back with the rest.

Why the clock is taken between the writes and the versions: on PostgreSQL (READ
COMMITTED) a local write can commit after step 2 read the versions and before
step 4 wrote the rows, and the peer's older row would overwrite it here while
every peer keeps the newer one (a silent divergence). Every capturing
transaction updates ``multiall_clock`` and holds its lock to commit, so the
apply notes the clock row's version before reading, then locks the row after
writing: unchanged means nothing committed in between and nothing can until
this commit; changed, the versions of the written keys are read again, and any
that moved make the caller roll back and decide again (``ApplyRaced``). The
locks are taken in the order a local writer takes them (rows, clock, versions),
so a single-statement write never deadlocks with an apply. SQLite's ``BEGIN
IMMEDIATE`` already serialises the two, and its engine reports the clock as never
moved.
"""

from __future__ import annotations

from collections import deque
from itertools import groupby
from typing import Any

from ._changelog_apply import Version, resolve, row_key


class ApplyRaced(Exception):
    """A local write committed a newer version of a batch's row while the batch was
    being decided: roll back and decide again."""


def final_runs(todo: list[Any]) -> list[tuple[str, bool, int, int]]:
    """``(table, is_delete, first seq, last seq)`` runs of ``todo``, in seq order.

    A run is consecutive changes of one table and kind; writing run by run keeps
    the order in which the origin wrote them (foreign keys: parents first).
    Changes that LWW dropped are gone from the stage by then, so they may sit
    inside a run: it writes only what is staged.
    """
    runs = []
    for (table, delete), group in groupby(todo, key=lambda c: (c.table, c.op == "D")):
        ends = deque(group, maxlen=1)  # consumed in C; keeps the run's last change
        runs.append((table, delete, 0, ends[0].seq))
    # A run starts right after the previous one ends.
    for index in range(len(runs)):
        start = runs[index - 1][3] + 1 if index else todo[0].seq
        runs[index] = (*runs[index][:2], start, runs[index][3])
    return runs


def moved_versions(
    eng: Any, todo: list[Any], local: dict[tuple[str, tuple], Version], pk_order: dict
) -> bool:
    """Does any staged (to be written) key have another version now than when decided?"""
    by_seq = {c.seq: c for c in todo}
    for table in dict.fromkeys(c.table for c in todo):
        for seq, hlc in eng.staged_versions(table):
            was = local.get((table, row_key(by_seq[seq].pk, pk_order[table])))
            if was is None or was[0] != hlc:
                return True
    return False


def apply_staged(eng: Any, todo: list[Any], schemas: dict[str, dict], result: Any) -> None:
    """Apply ``todo`` (sorted by seq, all above the watermark) through the engine's stage.

    ``schemas[table]`` holds the local ``pk`` (key order), ``order`` (column
    order) and ``types`` (declared types); ``result`` is the ApplyResult to fill.
    """
    by_table: dict[str, list] = {}
    for ch in todo:
        by_table.setdefault(ch.table, []).append(ch)
    pk_order = {t: schemas[t]["pk"] for t in by_table}
    hot: list[Any] = []
    local: dict[tuple[str, tuple], Version] = {}
    by_seq: dict[int, Any] | None = None
    mark = eng.clock_version()  # before any version is read
    for table, changes in by_table.items():
        eng.stage(table, schemas[table], changes)
        for seq, hlc, prev, deleted in eng.staged_hot(table, schemas[table]):
            if by_seq is None:
                by_seq = {c.seq: c for c in todo}
            ch = by_seq[seq]
            hot.append(ch)
            if hlc is not None:
                local[(table, row_key(ch.pk, pk_order[table]))] = (hlc, prev, bool(deleted))
    hot.sort(key=lambda c: c.seq)
    res = resolve(hot, local, pk_order)
    final = {ch.seq for ch in res.final.values()}
    dropped = {ch.seq for ch in hot if ch.seq not in final}
    for c in res.conflicts:
        row = eng.current_row(c.table, c.pk) if c.loser_is_local else c.loser_row
        eng.add_conflict(
            c.table, c.pk, c.winner_hlc.split("-", 2)[2], c.winner_hlc,
            c.loser_hlc.split("-", 2)[2], c.loser_hlc, c.loser_op, row,
        )  # fmt: skip
    if dropped:
        for table, changes in by_table.items():
            seqs = [c.seq for c in changes if c.seq in dropped]
            if seqs:
                eng.unstage(table, seqs)
    for table, delete, first, last in final_runs(todo):
        eng.write_staged(table, schemas[table], delete, first, last)
    if eng.lock_clock() != mark and moved_versions(eng, todo, local, pk_order):
        raise ApplyRaced("a local write committed a newer version of a row of this batch")
    for table in by_table:
        eng.version_staged(table, schemas[table])
    eng.unstage_all(list(by_table))
    hot_per_table: dict[str, int] = {}
    for ch in hot:
        hot_per_table[ch.table] = hot_per_table.get(ch.table, 0) + 1
    result.tables = {
        t: len(changes) - hot_per_table.get(t, 0) + res.tables.get(t, 0)
        for t, changes in by_table.items()
    }
    result.tables = {t: n for t, n in result.tables.items() if n}
    result.applied = len(todo) - len(hot) + res.applied
    result.lost = res.lost
    result.conflicts = len(res.conflicts)
