# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""YAML loading that remembers where every key and item came from.

Every error MultiAll reports about a pools file names file, line and column.
PyYAML throws marks away once it builds plain dicts, so this loader builds
``LocatedDict``/``LocatedList`` (plain ``dict``/``list`` subclasses, so the rest
of the code and JSON/Ansible see ordinary containers) that keep the marks, and
it refuses duplicate keys, which PyYAML would otherwise resolve silently by
keeping the last one.

PyYAML is imported guarded: modules ship this file to managed nodes, where it
may be missing. Importing never fails; ``HAS_YAML``/``YAML_IMPORT_ERROR`` let a
module fail with ``missing_required_lib("PyYAML")``, and loading without it
raises :class:`SourceError` saying what to install.
"""

from __future__ import annotations

import traceback
from typing import Any, NamedTuple

try:
    import yaml
except ImportError:
    HAS_YAML = False
    YAML_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_YAML = True
    YAML_IMPORT_ERROR = None

# What to install when PyYAML is missing; named in every such error.
YAML_REQUIREMENT = "PyYAML (Debian package python3-yaml)"


class Mark(NamedTuple):
    """A position in a source file; line and column are 1-based."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SourceError(Exception):
    """Something in a source file is wrong: the message says what and where."""

    def __init__(self, message: str, mark: Mark | None = None, path: str = "") -> None:
        self.message = message
        self.mark = mark
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.mark}: " if self.mark else ""
        what = f"{self.path}: " if self.path else ""
        return f"{where}{what}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for ``--json`` output and module results."""
        return {
            "file": self.mark.file if self.mark else None,
            "line": self.mark.line if self.mark else None,
            "column": self.mark.col if self.mark else None,
            "path": self.path,
            "message": self.message,
        }


class LocatedDict(dict):
    """A dict that knows where it and each of its keys/values start."""

    mark: Mark | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_marks: dict[Any, Mark] = {}
        self.value_marks: dict[Any, Mark] = {}

    def mark_of(self, key: Any) -> Mark | None:
        """Where ``key`` is written (the key itself), falling back to the mapping."""
        return self.key_marks.get(key, self.mark)

    def value_mark_of(self, key: Any) -> Mark | None:
        """Where the value of ``key`` is written."""
        return self.value_marks.get(key, self.mark_of(key))


class LocatedList(list):
    """A list that knows where it and each item start."""

    mark: Mark | None = None

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_marks: list[Mark] = []

    def mark_of(self, index: int) -> Mark | None:
        """Where item ``index`` is written."""
        if 0 <= index < len(self.item_marks):
            return self.item_marks[index]
        return self.mark


def _mark(loader: Any, node: Any) -> Mark:
    return Mark(loader.multiall_file, node.start_mark.line + 1, node.start_mark.column + 1)


def _construct_mapping(loader: Any, node: Any) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.mark = _mark(loader, node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise SourceError(
                "a mapping key must be a plain value (string or number), not a list or mapping",
                _mark(loader, key_node),
            ) from None
        if key in result:
            raise SourceError(
                f"duplicate key {key!r} (first written at line {result.key_marks[key].line}); "
                "each key may appear once in a mapping",
                _mark(loader, key_node),
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_marks[key] = _mark(loader, key_node)
        result.value_marks[key] = _mark(loader, value_node)
    return result


def _construct_sequence(loader: Any, node: Any) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.mark = _mark(loader, node)
    result.item_marks = [_mark(loader, child) for child in node.value]
    return result


def _make_loader() -> Any:
    """SafeLoader (C parser when available) that builds Located containers.

    Built in a function so that this file imports without PyYAML.
    """
    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class LocatingLoader(base):  # type: ignore[misc, valid-type]
        """A SafeLoader whose mappings and sequences remember their marks."""

        multiall_file = "<string>"

    resolver = yaml.resolver.BaseResolver
    LocatingLoader.add_constructor(resolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    LocatingLoader.add_constructor(resolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
    return LocatingLoader


_LocatingLoader: Any = _make_loader() if HAS_YAML else None


def load_located(text: str, filename: str) -> Any:
    """Parse one YAML document, returning Located containers; errors name the file."""
    if _LocatingLoader is None:
        raise SourceError(f"reading YAML needs {YAML_REQUIREMENT}", Mark(filename, 0, 0))
    loader = _LocatingLoader(text)
    loader.multiall_file = filename
    try:
        return loader.get_single_data()
    except SourceError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(filename, mark.line + 1, mark.column + 1) if mark else Mark(filename, 1, 1)
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        raise SourceError(f"YAML syntax error: {problem}{context}", where) from None
    except yaml.YAMLError as exc:
        raise SourceError(f"YAML error: {exc}", Mark(filename, 1, 1)) from None
    finally:
        loader.dispose()


def load_located_file(path: str) -> Any:
    """Read and parse one YAML file; an unreadable file is a SourceError too."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise SourceError(f"cannot read file: {exc.strerror}", Mark(path, 0, 0)) from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"file is not UTF-8 text ({exc.reason})", Mark(path, 1, 1)) from None
    return load_located(text, path)
