# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pool model: which servers are in which pools, and what each must carry.

A node in several pools carries the *aggregation* of all of them: lists are
unioned, mappings merged. Where two pools set the same key to different values
the model records a :class:`Conflict` naming node, key and both pools and
leaves the key out of the node's settings: there is never a silent winner. A
per-node override (``nodes.NAME.settings``) or an ``exceptions`` entry resolves
it explicitly.

This file is shared by the ``pool_facts`` module, the ``pools`` inventory
plugin and the TakeConnector daemon/CLI, so it depends on the standard library
and PyYAML only (AnsiballZ ships it to managed nodes).
"""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._located_yaml import (
    LocatedDict,
    LocatedList,
    Mark,
    SourceError,
    load_located_file,
    plain,
)
from ._pools_checks import cross_check, exception_nodes, ipv4, name_list
from ._pools_spec import BASELINE_RULE, MODEL_FIELDS, MODEL_KEYS, SECTIONS, TOP
from ._schema import Field, Validator, render_path

DEFAULT_PATH = "/etc/multiall/pools.yml"
YAML_SUFFIXES = (".yml", ".yaml")

# Where a setting may come from, besides a pool name.
NODE_ORIGIN = "node"


class PoolModelError(Exception):
    """The pools file(s) are invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: list[SourceError]) -> None:
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.errors)
        head = f"{count} problem{'s' if count != 1 else ''} in the pool model:"
        return "\n".join([head, *(f"  {err}" for err in self.errors)])


@dataclass(frozen=True)
class Conflict:
    """Two or more pools set one key of one node to different values."""

    node: str
    path: tuple[Any, ...]
    values: dict[str, Any]
    marks: dict[str, Mark | None]

    @property
    def key(self) -> str:
        """The setting's dotted name, e.g. ``packages.nginx.version``."""
        return render_path(self.path)

    def message(self) -> str:
        """One line a person can act on: who disagrees, where, and how to settle it."""
        parts = []
        for origin, value in self.values.items():
            mark = self.marks.get(origin)
            where = f" ({mark})" if mark else ""
            parts.append(f"pool {origin!r}{where} sets {value!r}")
        return (
            f"node {self.node!r}: {self.key}: pools disagree: {'; '.join(parts)}. "
            f"Choose one with an 'exceptions' entry for node {self.node!r} "
            f"(remove or override) or in nodes.{self.node}.settings"
        )

    def as_error(self) -> SourceError:
        """The conflict as a located error (at the first pool's value)."""
        first = next(iter(self.marks.values()), None)
        return SourceError(self.message(), first)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "node": self.node,
            "key": self.key,
            "values": {origin: plain(v) for origin, v in self.values.items()},
            "where": {origin: str(m) if m else None for origin, m in self.marks.items()},
            "message": self.message(),
        }


@dataclass
class NodeView:
    """One node's effective, merged settings and where each value came from."""

    name: str
    address: str
    pools: list[str]
    connection: dict[str, Any]
    settings: dict[str, Any]
    sources: dict[str, list[str]]
    conflicts: list[Conflict] = field(default_factory=list)
    # The IPv4 address TNS uses: ``ip`` as written, else ``address`` when it is
    # one; None for a host name (resolved by PoolModel.probe_ip when needed).
    ip: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form used by ``multiall pools show --json`` and pool_facts."""
        return {
            "node": self.name,
            "address": self.address,
            "ip": self.ip,
            "pools": list(self.pools),
            "connection": dict(self.connection),
            "settings": self.settings,
            "sources": self.sources,
            "conflicts": [c.as_dict() for c in self.conflicts],
        }


def _same(a: Any, b: Any) -> bool:
    """Equality that does not confuse ``True`` with ``1`` or ``'1'`` with ``1``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _leaves(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """Paths of the leaves under ``value`` (an empty mapping is a leaf itself)."""
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, (*path, key))
    else:
        yield path


def _under(path: tuple[Any, ...], prefix: tuple[Any, ...]) -> bool:
    return path[: len(prefix)] == prefix


def yaml_files(path: str) -> list[str]:
    """The model's files: ``path`` itself, or the YAML files of a directory, sorted."""
    if os.path.isdir(path):
        names = sorted(
            n for n in os.listdir(path) if n.endswith(YAML_SUFFIXES) and not n.startswith(".")
        )
        if not names:
            raise PoolModelError(
                [SourceError("directory has no .yml/.yaml files", Mark(path, 0, 0))]
            )
        return [os.path.join(path, n) for n in names]
    return [path]


class _Merger:
    """Accumulates one node's settings from its pools, with provenance."""

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.sources: dict[tuple[Any, ...], list[str]] = {}
        self.conflicts: dict[tuple[Any, ...], dict[str, Any]] = {}

    def _record(self, path: tuple[Any, ...], value: Any, origin: str) -> None:
        for leaf in _leaves(value, path):
            origins = self.sources.setdefault(leaf, [])
            if origin not in origins:
                origins.append(origin)

    def _origins_under(self, path: tuple[Any, ...]) -> list[str]:
        found: list[str] = []
        for leaf, origins in self.sources.items():
            if _under(leaf, path):
                found.extend(o for o in origins if o not in found)
        return found

    def _drop(self, path: tuple[Any, ...]) -> None:
        for table in (self.sources, self.conflicts):
            for key in [k for k in table if _under(k, path)]:
                del table[key]

    def add(self, origin: str, contribution: dict[str, Any]) -> None:
        """Aggregate a pool's settings: union lists, merge maps, detect conflicts."""
        self._merge(self.settings, contribution, (), origin)

    def _merge(self, target: dict, incoming: dict, path: tuple[Any, ...], origin: str) -> None:
        for key, value in incoming.items():
            here = (*path, key)
            if here in self.conflicts:
                self.conflicts[here][origin] = plain(value)
                continue
            if key not in target:
                target[key] = plain(value)
                self._record(here, value, origin)
                continue
            existing = target[key]
            if isinstance(existing, dict) and isinstance(value, dict):
                # ``nginx: {}`` (any version) and ``nginx: {version: 1.24}`` agree.
                self._merge(existing, value, here, origin)
                if not value:
                    self._record(here, value, origin)
            elif isinstance(existing, list) and isinstance(value, list):
                for item in value:
                    if not any(_same(item, have) for have in existing):
                        existing.append(plain(item))
                self._record(here, value, origin)
            elif _same(existing, value):
                self._record(here, value, origin)
            else:
                values = {o: existing for o in self._origins_under(here)}
                values[origin] = plain(value)
                self.conflicts[here] = values

    def override(self, origin: str, fragment: dict[str, Any]) -> None:
        """Apply an explicit override: its leaves win and settle conflicts under them."""
        self._override(self.settings, fragment, (), origin)

    def _override(self, target: dict, incoming: dict, path: tuple[Any, ...], origin: str) -> None:
        for key, value in incoming.items():
            here = (*path, key)
            if isinstance(value, dict) and value and isinstance(target.get(key), dict):
                self._override(target[key], value, here, origin)
            else:
                self._drop(here)
                target[key] = plain(value)
                self._record(here, value, origin)

    def remove(self, section: str, item: str) -> bool:
        """Drop one item of a section; False when it was not there."""
        items = self.settings.get(section)
        if not isinstance(items, dict) or item not in items:
            return False
        del items[item]
        self._drop((section, item))
        return True

    def finish(self) -> tuple[dict[str, Any], dict[str, list[str]], dict[tuple, dict[str, Any]]]:
        """Settings without any conflicted key, sources by rendered path, conflicts."""
        for path in self.conflicts:
            parent: Any = self.settings
            for part in path[:-1]:
                parent = parent.get(part) if isinstance(parent, dict) else None
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
        for section in SECTIONS:
            self.settings.setdefault(section, {})
        sources = {render_path(p): list(o) for p, o in sorted(self.sources.items(), key=str)}
        return self.settings, sources, self.conflicts


class PoolModel:
    """A validated pools file (or directory). Build with :meth:`load`."""

    def __init__(self, data: dict[str, Any], files: list[str]) -> None:
        self.files = files
        self.defaults: dict[str, Any] = data.get("defaults") or {}
        self.nodes: dict[str, LocatedDict] = data.get("nodes") or {}
        self.pools: dict[str, LocatedDict] = data.get("pools") or {}
        self.exceptions: list[LocatedDict] = data.get("exceptions") or []
        self.options: dict[str, Any] = {k: v for k, v in data.items() if k not in MODEL_KEYS}
        self._node_pools: dict[str, list[str]] = {}
        self._members: dict[str, list[str]] = {}
        self._views: dict[str, NodeView] = {}
        self._contributions: dict[str, dict[str, Any]] = {}
        self._include_conflicts: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        # Valid but risky: reported by ``multiall pools check``, never fatal.
        self.warnings: list[SourceError] = []

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str) -> PoolModel:
        """Load, validate and cross-check a pools file or directory.

        Raises :class:`PoolModelError` listing every problem; nothing is
        returned half-valid, so a bad file can never change anything.
        """
        files = yaml_files(path)
        parts = []
        errors: list[SourceError] = []
        for name in files:
            try:
                raw = load_located_file(name)
            except SourceError as exc:
                errors.append(exc)
                continue
            parts.append((name, raw))
        if errors:
            raise PoolModelError(errors)
        return cls._build(parts)

    @classmethod
    def from_text(cls, text: str, filename: str = "<pools>") -> PoolModel:
        """Load a model from a string (tests, stdin)."""
        from ._located_yaml import load_located

        try:
            raw = load_located(text, filename)
        except SourceError as exc:
            raise PoolModelError([exc]) from None
        return cls._build([(filename, raw)])

    @classmethod
    def _build(cls, parts: list[tuple[str, Any]]) -> PoolModel:
        validator = Validator()
        combined: dict[str, Any] = {
            key: LocatedList() if field.kind == "list" else LocatedDict()
            for key, field in MODEL_FIELDS.items()
        }
        for name, raw in parts:
            if raw is None:
                raw = LocatedDict()
            mark = getattr(raw, "mark", None) or Mark(name, 1, 1)
            data = validator.validate(raw, TOP, (), mark)
            if not isinstance(data, dict):
                continue
            _combine(combined, data, validator)
        if validator.errors:
            raise PoolModelError(validator.errors)
        model = cls(combined, [name for name, _raw in parts])
        cross_check(model, validator)
        if validator.errors:
            raise PoolModelError(validator.errors)
        return model

    def set_membership(self, node_pools: dict[str, set[str]]) -> None:
        """Record who is in which pool (declared on the node or as a pool member);
        called once by the cross-checks, before the checks that need it."""
        self._node_pools = {n: sorted(p) for n, p in node_pools.items()}
        self._members = {p: [] for p in self.pools}
        for node, pools in sorted(self._node_pools.items()):
            for pool in pools:
                self._members[pool].append(node)

    # -------------------------------------------------------------- queries
    def node_names(self) -> list[str]:
        """All node names, sorted."""
        return sorted(self.nodes)

    def pool_names(self) -> list[str]:
        """All pool names, sorted."""
        return sorted(self.pools)

    def node_pools(self, node: str) -> list[str]:
        """The pools ``node`` is in (declared on the node or as a pool member)."""
        self._require_node(node)
        return list(self._node_pools[node])

    def members(self, pool: str) -> list[str]:
        """The nodes of ``pool``, sorted."""
        if pool not in self.pools:
            raise KeyError(f"no pool {pool!r}; declared pools: {name_list(self.pools)}")
        return list(self._members[pool])

    def _require_node(self, node: str) -> None:
        if node not in self.nodes:
            raise KeyError(
                f"no node {node!r} in the pool model; declared nodes: {name_list(self.nodes)}"
            )

    def _contribution(self, pool: str) -> dict[str, Any]:
        """What ``pool`` gives each member: included pools first, own keys win.

        ``dns`` is keyed by pool name, since each pool has its own zone and two
        pools' zones never compete.
        """
        if pool in self._contributions:
            return self._contributions[pool]
        spec = self.pools[pool]
        merger = _Merger()
        for inc in spec.get("include") or []:
            base = {k: v for k, v in self._contribution(inc).items() if k != "dns"}
            merger.add(inc, base)
        own = {k: spec[k] for k in SECTIONS if k in spec and k != "dns"}
        merger.override(pool, own)
        result: dict[str, Any] = {k: v for k, v in merger.settings.items() if v or k in own}
        for path, values in merger.conflicts.items():
            # Two included pools disagree and the pool's own value did not settle it.
            _pop_path(result, path)
            self._include_conflicts.append((pool, path, values))
        if "dns" in spec:
            result["dns"] = {pool: plain(spec["dns"])}
        self._contributions[pool] = result
        return result

    def effective(self, node: str) -> NodeView:
        """The merged settings of ``node`` (memoised; the model is immutable)."""
        if node in self._views:
            return self._views[node]
        self._require_node(node)
        spec = self.nodes[node]
        merger = _Merger()
        scoped, unscoped = self._exceptions_for(node)
        for pool in self._node_pools[node]:
            contribution = copy.deepcopy(self._contribution(pool))
            for exc in scoped.get(pool, []):
                _apply_scoped(contribution, exc)
            merger.add(pool, contribution)
        if spec.get("settings"):
            merger.override(NODE_ORIGIN, spec["settings"])
        for label, exc in unscoped:
            if exc.get("override"):
                merger.override(label, exc["override"])
            for section, items in (exc.get("remove") or {}).items():
                for item in items:
                    merger.remove(section, item)
        settings, sources, raw_conflicts = merger.finish()
        conflicts = [
            Conflict(
                node=node,
                path=path,
                values=values,
                marks={origin: self._value_mark(origin, path) for origin in values},
            )
            for path, values in raw_conflicts.items()
        ]
        view = NodeView(
            name=node,
            address=spec["address"],
            ip=spec.get("ip") or ipv4(spec["address"]),
            pools=list(self._node_pools[node]),
            connection=self._connection(spec),
            settings=settings,
            sources=sources,
            conflicts=conflicts,
        )
        self._views[node] = view
        return view

    def conflicts(self) -> list[Conflict]:
        """Every unresolved conflict of every node."""
        return [c for n in self.node_names() for c in self.effective(n).conflicts]

    def _exceptions_for(
        self, node: str
    ) -> tuple[dict[str, list[LocatedDict]], list[tuple[str, LocatedDict]]]:
        scoped: dict[str, list[LocatedDict]] = {}
        unscoped: list[tuple[str, LocatedDict]] = []
        for index, exc in enumerate(self.exceptions):
            if node not in exception_nodes(exc):
                continue
            if exc.get("pool"):
                scoped.setdefault(exc["pool"], []).append(exc)
            else:
                reason = f": {exc['reason']}" if exc.get("reason") else ""
                unscoped.append((f"exception #{index + 1}{reason}", exc))
        return scoped, unscoped

    def _connection(self, spec: LocatedDict) -> dict[str, Any]:
        """Ansible connection variables: node values win over ``defaults``."""
        merged = {**self.defaults, **{k: v for k, v in spec.items() if k in _CONNECTION}}
        conn: dict[str, Any] = {"ansible_host": spec["address"]}
        for key, var in _CONNECTION.items():
            if key in merged:
                conn[var] = merged[key]
        return conn

    def _value_mark(self, pool: str, path: tuple[Any, ...]) -> Mark | None:
        """Where ``pool`` (or a pool it includes) writes the value at ``path``."""
        if pool not in self.pools:
            return None
        spec = self.pools[pool]
        mark = _mark_at(spec, path)
        if mark is not None:
            return mark
        for inc in spec.get("include") or []:
            mark = self._value_mark(inc, path)
            if mark is not None:
                return mark
        return spec.mark


_CONNECTION = {
    "ssh_user": "ansible_user",
    "ssh_port": "ansible_port",
    "ssh_private_key_file": "ansible_ssh_private_key_file",
    "ssh_common_args": "ansible_ssh_common_args",
    "python": "ansible_python_interpreter",
}


def _combine(combined: dict[str, Any], data: dict[str, Any], v: Validator) -> None:
    """Fold one file of a directory into the whole; a name declared twice is an error."""
    for section in MODEL_KEYS:
        target = combined[section]
        if isinstance(target, LocatedList):
            target.extend(data.get(section) or [])
            continue
        incoming = data.get(section) or {}
        for key, value in incoming.items():
            if key in target:
                first = target.key_marks.get(key)
                v.error(
                    f"{section[:-1] if section != 'defaults' else 'default'} {key!r} is "
                    f"declared twice (first at {first})",
                    incoming.mark_of(key) if isinstance(incoming, LocatedDict) else None,
                    (section, key),
                )
                continue
            target[key] = value
            if isinstance(incoming, LocatedDict):
                target.key_marks[key] = incoming.mark_of(key)  # type: ignore[assignment]
                target.value_marks[key] = incoming.value_mark_of(key)  # type: ignore[assignment]
    for key, value in data.items():
        if key not in MODEL_KEYS:
            combined.setdefault(key, value)


def _apply_scoped(contribution: dict[str, Any], exc: dict[str, Any]) -> None:
    """An exception limited to one pool edits that pool's contribution for one node."""
    for section, items in (exc.get("remove") or {}).items():
        for item in items:
            (contribution.get(section) or {}).pop(item, None)
    merger = _Merger()
    merger.settings = contribution
    merger.override("exception", exc.get("override") or {})


def _pop_path(tree: dict[str, Any], path: tuple[Any, ...]) -> None:
    parent: Any = tree
    for part in path[:-1]:
        parent = parent.get(part) if isinstance(parent, dict) else None
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def _mark_at(container: Any, path: Iterable[Any]) -> Mark | None:
    """The mark of the deepest located value along ``path`` (None if absent)."""
    mark = None
    current = container
    for part in path:
        if isinstance(current, LocatedDict) and part in current:
            mark = current.value_mark_of(part)
            current = current[part]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            return mark if mark is not None else None
    return mark


def validate_rules(rules: Any, where: str = "rules") -> dict[str, Any]:
    """Baseline Rules given outside a pools file, checked exactly as the model checks its own.

    For the ``baseline`` module's ``rules`` option: a typo in a kind or a
    threshold is the same clear error there as in ``pools.yml``. Raises
    :class:`PoolModelError` listing every problem (paths start with ``where``).
    """
    validator = Validator()
    data = validator.validate(rules, Field("map", values=BASELINE_RULE), (where,), None)
    if validator.errors:
        raise PoolModelError(validator.errors)
    return plain(data)


def local_node_name() -> str:
    """This host's name in the model when none is given: its short host name."""
    return socket.gethostname().split(".")[0]


def load(path: str | None = None) -> PoolModel:
    """Load the model from ``path``, ``$MULTIALL_POOLS`` or the default location."""
    chosen = path or os.environ.get("MULTIALL_POOLS") or DEFAULT_PATH
    if not os.path.exists(chosen):
        raise PoolModelError(
            [
                SourceError(
                    "no such file or directory; pass the pools file/directory or set "
                    "MULTIALL_POOLS",
                    Mark(chosen, 0, 0),
                )
            ]
        )
    return PoolModel.load(chosen)
