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

It also refuses input that would exhaust memory or the stack before any
check could run: files over :data:`MAX_FILE_BYTES`, aliases that expand the
document by more than :data:`MAX_ALIAS_NODES` nodes (the "billion laughs"
attack: nine levels of ten aliases each are a billion nodes once copied into
plain containers), recursive aliases and nesting deeper than
:data:`MAX_DEPTH`. The expansion is counted on PyYAML's composed node graph,
where an alias is a second reference to the anchored node, so the count
costs one pass over the nodes actually written, whatever they expand to.

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

# A pools file describes servers: even a thousand nodes with rich settings fit
# in well under 1 MiB, so 4 MiB is generous yet bounds the parse.
MAX_FILE_BYTES = 4 * 1024 * 1024
# How many nodes aliases may add to a document once expanded. Anchors for
# shared defaults add a few hundred; an alias bomb adds millions.
MAX_ALIAS_NODES = 100_000
# How deep mappings and lists may nest (the model itself needs about 8 levels).
MAX_DEPTH = 100


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
    return _mark_at(loader.multiall_file, node)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: Any, node: Any) -> LocatedDict:
    loader.flatten_mapping(node)
    # Pairs merged in by ``<<: *anchor`` may be overridden by the mapping's
    # own keys (that is what merging is for); only its own keys must be unique.
    own = loader.multiall_own_keys.get(id(node))
    result = LocatedDict()
    result.mark = _mark(loader, node)
    own_keys: set[Any] = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise SourceError(
                "a mapping key must be a plain value (string or number), not a list or mapping",
                _mark(loader, key_node),
            ) from None
        if own is None or id(key_node) in own:
            if key in own_keys:
                raise SourceError(
                    f"duplicate key {key!r} (first written at line "
                    f"{result.key_marks[key].line}); each key may appear once in a mapping",
                    _mark(loader, key_node),
                )
            own_keys.add(key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_marks[key] = _mark(loader, key_node)
        result.value_marks[key] = _mark(loader, value_node)
    return result


def _construct_sequence(loader: Any, node: Any) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.mark = _mark(loader, node)
    result.item_marks = [_mark(loader, child) for child in node.value]
    return result


def _children(node: Any) -> list[Any]:
    """The nodes directly under ``node`` (keys and values of a mapping)."""
    if isinstance(node.value, list):
        if node.value and isinstance(node.value[0], tuple):
            return [child for pair in node.value for child in pair]
        return list(node.value)
    return []


def check_node_graph(root: Any, filename: str) -> None:
    """Refuse alias bombs, recursive aliases and deep nesting before constructing.

    Walks the composed node graph once (iteratively, so depth cannot overflow
    the stack), memoising each node's expanded size and height: a node
    referenced by many aliases is measured once. Raises :class:`SourceError`
    at the first node (innermost first) whose expansion adds more than
    :data:`MAX_ALIAS_NODES` nodes beyond those written in the file, at the
    first value nested deeper than :data:`MAX_DEPTH`, or at an alias that
    contains itself.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, leaving = stack.pop()
        key = id(node)
        if leaving:
            kids = _children(node)
            size[key] = 1 + sum(size[id(kid)] for kid in kids)
            height[key] = 1 + max((height[id(kid)] for kid in kids), default=0)
            active.discard(key)
            if size[key] > len(size) + MAX_ALIAS_NODES:
                raise SourceError(
                    f"aliases here expand to {size[key]:,} values, more than "
                    f"{MAX_ALIAS_NODES:,} beyond those written in the file; refusing a "
                    "YAML alias bomb (write the values out, or use fewer nested aliases)",
                    _mark_at(filename, node),
                )
            continue
        # Measured already (an alias to it came first): only its depth here counts.
        deepest = depth + height[key] - 1 if key in size else depth
        if deepest > MAX_DEPTH:
            raise SourceError(
                f"mappings and lists nest more than {MAX_DEPTH} levels deep here",
                _mark_at(filename, node),
            )
        if key in size:
            continue
        if not isinstance(node.value, list):  # a scalar: nothing below it
            size[key] = height[key] = 1
            continue
        if key in active:
            raise SourceError(
                "recursive alias: this value contains itself, which has no finite form",
                _mark_at(filename, node),
            )
        active.add(key)
        stack.append((node, depth, True))
        # Reversed, so that the walk (and the first problem found) follows the file.
        stack.extend((kid, depth + 1, False) for kid in reversed(_children(node)))


def _mark_at(filename: str, node: Any) -> Mark:
    return Mark(filename, node.start_mark.line + 1, node.start_mark.column + 1)


def _make_loader() -> Any:
    """SafeLoader (C parser when available) that builds Located containers.

    Built in a function so that this file imports without PyYAML.
    """
    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class LocatingLoader(base):  # type: ignore[misc, valid-type]
        """A SafeLoader whose mappings and sequences remember their marks."""

        multiall_file = "<string>"

        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            # id(mapping node) -> ids of the key nodes written in it (not merged in).
            self.multiall_own_keys: dict[int, set[int]] = {}

        def flatten_mapping(self, node: Any) -> None:
            """Remember a mapping's own keys before merges are folded into it.

            PyYAML flattens a merged anchor when it is merged, possibly before
            that anchor is constructed itself, so this is recorded on first sight.
            """
            if id(node) not in self.multiall_own_keys:
                self.multiall_own_keys[id(node)] = {
                    id(key) for key, _value in node.value if key.tag != _MERGE_TAG
                }
            super().flatten_mapping(node)

    resolver = yaml.resolver.BaseResolver
    LocatingLoader.add_constructor(resolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    LocatingLoader.add_constructor(resolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
    return LocatingLoader


_LocatingLoader: Any = _make_loader() if HAS_YAML else None


def load_located(text: str, filename: str) -> Any:
    """Parse one YAML document, returning Located containers; errors name the file."""
    if _LocatingLoader is None:
        raise SourceError(f"reading YAML needs {YAML_REQUIREMENT}", Mark(filename, 0, 0))
    _check_size(len(text.encode("utf-8", "surrogatepass")), filename)
    loader = _LocatingLoader(text)
    loader.multiall_file = filename
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_node_graph(node, filename)
        return loader.construct_document(node)
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


def _check_size(size: int, filename: str) -> None:
    if size > MAX_FILE_BYTES:
        raise SourceError(
            f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the most a pools file "
            "may be; split the model into a directory of smaller files",
            Mark(filename, 1, 1),
        )


def load_located_file(path: str) -> Any:
    """Read and parse one YAML file; an unreadable file is a SourceError too."""
    try:
        with open(path, encoding="utf-8") as handle:
            # Read one byte's worth past the limit (a character is at least one
            # byte) so a huge or endless file (/dev/zero) is never read whole.
            text = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SourceError(f"cannot read file: {exc.strerror}", Mark(path, 0, 0)) from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"file is not UTF-8 text ({exc.reason})", Mark(path, 1, 1)) from None
    return load_located(text, path)


def plain(value: Any) -> Any:
    """Located containers -> plain dict/list (for JSON, Ansible, deep copies)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def item_mark(container: Any, index: int) -> Mark | None:
    """The mark of item INDEX of a located list (None for a plain list)."""
    return container.mark_of(index) if isinstance(container, LocatedList) else None
