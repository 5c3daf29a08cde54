# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nagios performance data: parse what plugins print, build it for built-in checks.

Kept apart from the checks (``sbm.py``) because it is a text format with its own
grammar, used by the checks, by the Serf answers that carry SBM results in a
compact form and by ``multiall sbm``. Standard library only.
"""

from __future__ import annotations

import re
from typing import Any

# Nagios plugin guidelines ("Performance data"): space-separated items
#   'label'=value[UOM];[warn];[crit];[min];[max]
# The label is quoted when it holds spaces, '=' or quotes ('' is a quote inside
# quotes); value, min and max are numbers ([-0-9.]) or value is U (could not be
# measured); warn and crit are ranges (10, 10:, ~:10, 10:20, @10:20); trailing
# empty fields may be left out.
PERF_FIELDS = ("value", "unit", "warn", "crit", "min", "max")
_PERF_ITEM = re.compile(r"\s*(?:'((?:[^']|'')*)'|([^\s'=]+))=(\S*)")
_PERF_WORD = re.compile(r"\s*\S*")
_PERF_NUMBER = re.compile(r"^(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")
_PLAIN_LABEL = re.compile(r"^[^\s'=]+$")


def _number(text: str) -> int | float | None:
    """``12`` -> 12, ``0.5`` -> 0.5; anything else (empty, ``U``, garbage) -> None."""
    match = _PERF_NUMBER.match(text.strip())
    if not match:
        return None
    number = match.group(1)
    return float(number) if "." in number else int(number)


def _range(text: str) -> int | float | str | None:
    """A warn/crit field: a plain number as a number, a range (``@10:20``) as written."""
    text = text.strip()
    if not text:
        return None
    match = _PERF_NUMBER.match(text)
    return _number(text) if match and not match.group(2) else text


def perf_item(
    value: float | None,
    unit: str = "",
    warn: Any = None,
    crit: Any = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> dict[str, Any]:
    """One perfdata item: the measured value, its unit, thresholds and bounds."""
    return {
        "value": value,
        "unit": unit,
        "warn": warn,
        "crit": crit,
        "min": minimum,
        "max": maximum,
    }


def perf_of(
    rule: dict[str, Any],
    label: str,
    value: float,
    unit: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
) -> dict[str, dict[str, Any]]:
    """The perfdata of a built-in check: one item, thresholds taken from the rule."""
    return {label: perf_item(value, unit, rule.get("warn"), rule.get("crit"), minimum, maximum)}


def parse_perfdata(text: str) -> dict[str, dict[str, Any]]:
    """Nagios perfdata -> ``{label: {value, unit, warn, crit, min, max}}``, nothing dropped.

    ``/=23396876288B;216442024755;243497277849;0;270552530944`` gives
    ``{"/": {"value": 23396876288, "unit": "B", "warn": 216442024755, ...}}``.
    A value of ``U`` is None; an item that is not ``label=value`` is skipped.
    """
    out: dict[str, dict[str, Any]] = {}
    pos = 0
    while pos < len(text):
        match = _PERF_ITEM.match(text, pos)
        if match is None:
            pos = max(_PERF_WORD.match(text, pos).end(), pos + 1)  # not an item: skip the word
            continue
        pos = match.end()
        quoted, plain, data = match.groups()
        label = quoted.replace("''", "'") if quoted is not None else plain
        fields = data.split(";")
        fields += [""] * (5 - len(fields))
        head = _PERF_NUMBER.match(fields[0])
        if head is None and not fields[0].startswith("U"):
            continue
        out[label] = perf_item(
            _number(head.group(1)) if head else None,
            (head.group(2) if head else fields[0][1:]).strip(),
            _range(fields[1]),
            _range(fields[2]),
            _number(fields[3]),
            _number(fields[4]),
        )
    return out


def format_perfdata(perfdata: dict[str, dict[str, Any]]) -> str:
    """The inverse of parse_perfdata: the compact Nagios text (used to keep Serf answers small)."""
    items = []
    for label, item in perfdata.items():
        name = label if _PLAIN_LABEL.match(label) else "'" + label.replace("'", "''") + "'"
        value = "U" if item.get("value") is None else str(item["value"])
        fields = [value + str(item.get("unit") or "")]
        fields += ["" if item.get(k) is None else str(item[k]) for k in PERF_FIELDS[2:]]
        while len(fields) > 1 and not fields[-1]:
            fields.pop()
        items.append(f"{name}={';'.join(fields)}")
    return " ".join(items)


def split_plugin_output(stdout: str) -> tuple[str, str]:
    """A plugin's output -> (first line's text, all its perfdata).

    Perfdata follows a ``|`` on the first line and, per the guidelines, may go on
    after a second ``|`` in the long text that follows.
    """
    first, _nl, rest = stdout.strip().partition("\n")
    message, _bar, perf = first.partition("|")
    _long_text, more_bar, more = rest.partition("|")
    if more_bar:
        perf = f"{perf} {more}"
    return message.strip(), perf
