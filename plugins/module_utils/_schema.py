# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small declarative validator for Located YAML data.

Why not jsonschema: its messages talk about schemas, ours must talk about the
pools file ("pools.web.members[2]: expected a node name, got 42") and point at
file:line:col, and module_utils must stay stdlib + PyYAML because AnsiballZ
ships it to managed nodes. Validation collects every error in one pass so a
user fixes a file in one go; normalisation (shorthands such as
``nginx: "1.22*"``) happens here too, so code behind the edge sees one shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._located_yaml import LocatedDict, LocatedList, Mark, SourceError

# A check returns None when the value is fine, else the problem; an object's
# check may return ``(key, problem)`` to point at one of its values instead.
Check = Callable[[Any], "str | tuple[str, str] | None"]
Normalise = Callable[[Any], Any]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def render_path(parts: tuple[Any, ...] | list[Any]) -> str:
    """``('pools', 'web', 'files', '/srv')`` -> ``pools.web.files["/srv"]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _IDENT.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]".replace("'", '"')
    return out


def describe(value: Any) -> str:
    """Short type+value description for messages: ``the number 42``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


@dataclass
class Field:
    """What one value must look like.

    ``kind`` is one of: str, int, number, bool, list, map (free keys, each
    value checked by ``values``), object (fixed keys given by ``keys``), any.
    """

    kind: str
    required: bool = False
    choices: tuple[Any, ...] | None = None
    item: Field | None = None
    keys: dict[str, Field] | None = None
    values: Field | None = None
    key_check: Check | None = None
    check: Check | None = None
    normalise: Normalise | None = None
    minimum: float | None = None
    maximum: float | None = None
    expect: str = ""
    extra_keys: Callable[[Any], dict[str, Field]] | None = field(default=None, repr=False)


_KIND_TEXT = {
    "str": "a string",
    "int": "a whole number",
    "number": "a number",
    "bool": "true or false",
    "list": "a list",
    "map": "a mapping",
    "object": "a mapping",
}


class Validator:
    """Walks data against a Field tree, collecting errors and normalising."""

    def __init__(self) -> None:
        self.errors: list[SourceError] = []

    def error(self, message: str, mark: Mark | None, path: tuple[Any, ...]) -> None:
        """Record one problem; validation goes on so all problems are reported."""
        self.errors.append(SourceError(message, mark, render_path(path)))

    def validate(self, value: Any, spec: Field, path: tuple[Any, ...], mark: Mark | None) -> Any:
        """Return the normalised value (or the value unchanged when it is wrong)."""
        if spec.normalise is not None:
            value = spec.normalise(value)
            if isinstance(value, LocatedDict) and value.mark is None:
                value.mark = mark
        if spec.kind == "any":
            return value
        if not self._type_ok(value, spec):
            expected = spec.expect or _KIND_TEXT[spec.kind]
            self.error(f"expected {expected}, got {describe(value)}", mark, path)
            return value
        if spec.choices is not None and value not in spec.choices:
            options = ", ".join(str(c) for c in spec.choices)
            self.error(f"expected one of: {options}; got {describe(value)}", mark, path)
            return value
        if isinstance(value, float) and not math.isfinite(value):
            # NaN compares false with everything, so it would pass any bound
            # and make every threshold check silently never fire.
            self.error(
                f"expected a finite number, got {describe(value)} "
                "(.nan and .inf are not allowed here)",
                mark,
                path,
            )
            return value
        if spec.kind in ("int", "number"):
            if spec.minimum is not None and value < spec.minimum:
                self.error(f"must be at least {spec.minimum:g}, got {value}", mark, path)
            if spec.maximum is not None and value > spec.maximum:
                self.error(f"must be at most {spec.maximum:g}, got {value}", mark, path)
        if spec.kind == "list":
            value = self._validate_list(value, spec, path)
        elif spec.kind == "map":
            value = self._validate_map(value, spec, path)
        elif spec.kind == "object":
            value = self._validate_object(value, spec, path)
        if spec.check is not None:
            problem = spec.check(value)
            if isinstance(problem, tuple):
                key, text = problem
                where = value.value_mark_of(key) if isinstance(value, LocatedDict) else mark
                self.error(text, where, (*path, key))
            elif problem:
                self.error(problem, mark, path)
        return value

    @staticmethod
    def _type_ok(value: Any, spec: Field) -> bool:
        kind = spec.kind
        if kind == "str":
            return isinstance(value, str)
        if kind == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if kind == "number":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "bool":
            return isinstance(value, bool)
        if kind == "list":
            return isinstance(value, list)
        return isinstance(value, dict)

    def _validate_list(self, value: list, spec: Field, path: tuple[Any, ...]) -> list:
        if spec.item is None:
            return value
        out = LocatedList()
        out.mark = getattr(value, "mark", None)
        marks = getattr(value, "item_marks", [])
        for index, item in enumerate(value):
            item_mark = marks[index] if index < len(marks) else out.mark
            out.append(self.validate(item, spec.item, (*path, index), item_mark))
            out.item_marks.append(item_mark)  # type: ignore[arg-type]
        return out

    def _new_like(self, value: dict) -> LocatedDict:
        out = LocatedDict()
        out.mark = getattr(value, "mark", None)
        return out

    def _copy_marks(self, out: LocatedDict, value: dict, key: Any) -> None:
        if isinstance(value, LocatedDict):
            if key in value.key_marks:
                out.key_marks[key] = value.key_marks[key]
            if key in value.value_marks:
                out.value_marks[key] = value.value_marks[key]

    def _validate_map(self, value: dict, spec: Field, path: tuple[Any, ...]) -> dict:
        out = self._new_like(value)
        for key, item in value.items():
            key_mark = value.mark_of(key) if isinstance(value, LocatedDict) else None
            if not isinstance(key, str):
                self.error(f"keys must be strings, got {describe(key)}", key_mark, (*path, key))
                continue
            if spec.key_check is not None:
                problem = spec.key_check(key)
                if problem:
                    self.error(problem, key_mark, (*path, key))
            val_mark = value.value_mark_of(key) if isinstance(value, LocatedDict) else None
            out[key] = (
                self.validate(item, spec.values, (*path, key), val_mark) if spec.values else item
            )
            self._copy_marks(out, value, key)
        return out

    def _validate_object(self, value: dict, spec: Field, path: tuple[Any, ...]) -> dict:
        keys = dict(spec.keys or {})
        if spec.extra_keys is not None:
            keys.update(spec.extra_keys(value))
        out = self._new_like(value)
        for key, item in value.items():
            key_mark = value.mark_of(key) if isinstance(value, LocatedDict) else None
            if key not in keys:
                allowed = ", ".join(sorted(keys)) or "(none)"
                self.error(f"unknown key {key!r}; allowed keys here: {allowed}", key_mark, path)
                continue
            val_mark = value.value_mark_of(key) if isinstance(value, LocatedDict) else None
            out[key] = self.validate(item, keys[key], (*path, key), val_mark)
            self._copy_marks(out, value, key)
        for key, sub in keys.items():
            if sub.required and key not in value:
                mark = getattr(value, "mark", None)
                self.error(f"missing required key {key!r}", mark, path)
        return out
