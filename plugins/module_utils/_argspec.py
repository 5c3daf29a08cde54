# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs shared by the modules (private to the collection).

Each piece here matches one doc fragment in ``plugins/doc_fragments/``, so an
option shared by several modules is specified once and documented once; the
defaults come from the code that uses them (``pools.DEFAULT_PATH``,
``_control.DEFAULT_SOCKET``), never retyped. A module builds its spec by
merging pieces with its own options and passes ``to_kwargs()`` to
``AnsibleModule``; the unit tests compare the result with the documentation.
"""

from __future__ import annotations

import copy
from typing import Any

from ._control import DEFAULT_SOCKET
from .pools import DEFAULT_PATH


class ArgumentSpec:
    """An argument spec plus the cross-option constraints that belong to it."""

    def __init__(
        self,
        argument_spec: dict[str, dict[str, Any]] | None = None,
        *,
        required_together: list[tuple[str, ...]] | None = None,
        required_if: list[tuple[Any, ...]] | None = None,
        required_one_of: list[tuple[str, ...]] | None = None,
        mutually_exclusive: list[tuple[str, ...]] | None = None,
        required_by: dict[str, list[str]] | None = None,
    ) -> None:
        # Deep copies: pieces are merged into many specs and must never share dicts.
        self.argument_spec: dict[str, dict[str, Any]] = copy.deepcopy(argument_spec or {})
        self.required_together = list(required_together or [])
        self.required_if = list(required_if or [])
        self.required_one_of = list(required_one_of or [])
        self.mutually_exclusive = list(mutually_exclusive or [])
        self.required_by: dict[str, list[str]] = {
            k: list(v) for k, v in (required_by or {}).items()
        }

    def merge(self, other: ArgumentSpec) -> ArgumentSpec:
        """Add ``other``'s options and constraints; an option defined twice is a bug."""
        twice = sorted(set(self.argument_spec) & set(other.argument_spec))
        if twice:
            raise ValueError(f"option(s) defined twice: {', '.join(twice)}")
        self.argument_spec.update(copy.deepcopy(other.argument_spec))
        self.required_together.extend(other.required_together)
        self.required_if.extend(other.required_if)
        self.required_one_of.extend(other.required_one_of)
        self.mutually_exclusive.extend(other.mutually_exclusive)
        for key, needed in other.required_by.items():
            self.required_by.setdefault(key, []).extend(needed)
        return self

    def to_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AnsibleModule`` (add ``supports_check_mode``)."""
        return {
            "argument_spec": self.argument_spec,
            "required_together": self.required_together,
            "required_if": self.required_if,
            "required_one_of": self.required_one_of,
            "mutually_exclusive": self.mutually_exclusive,
            "required_by": self.required_by,
        }


def pools_file_argspec() -> ArgumentSpec:
    """``pools_file`` (alias ``path``): doc fragment ``takelan.multiall.pools``."""
    return ArgumentSpec(
        {"pools_file": {"type": "path", "default": DEFAULT_PATH, "aliases": ["path"]}}
    )


def node_argspec() -> ArgumentSpec:
    """``node``: doc fragment ``takelan.multiall.pools.node``."""
    return ArgumentSpec({"node": {"type": "str"}})


def connector_argspec() -> ArgumentSpec:
    """``socket``: doc fragment ``takelan.multiall.connector``."""
    return ArgumentSpec({"socket": {"type": "path", "default": DEFAULT_SOCKET}})
