# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SL-SA's part of the pool model: required shared libraries, and their cross-checks.

A pool may say which shared libraries (by soname, as ``ldconfig -p`` lists them)
its members must have::

    libraries:
      libssl.so.3: libssl3          # shorthand: the package expected to ship it
      libdemo.so.1: {package: libdemo, state: present}

SL-SA reports a member lacking one as drift, and refuses a plan that would make
one disappear. The cross-check here catches the contradiction a model can hold
by itself: a library whose package the same node is told to remove.
"""

from __future__ import annotations

import re
from typing import Any

from ._located_yaml import LocatedDict
from ._schema import Field, Validator

# ``libc.so.6``, ``ld-linux-x86-64.so.2``, ``libstdc++.so.6``, ``libfoo-1.2.so``.
_SONAME = re.compile(r"^[A-Za-z0-9_+.-]+\.so(\.[A-Za-z0-9_]+)*$")
# Debian package names (Policy 5.6.1); a library's ``package`` must be one.
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def check_soname(value: str) -> str | None:
    """A soname as the dynamic linker looks it up (no directory, ends in .so[.N...])."""
    if "/" in value or not _SONAME.match(value):
        return (
            f"library {value!r} is not a soname: give the name ldconfig -p lists, "
            "e.g. libssl.so.3 (no directory)"
        )
    return None


def check_package_name(value: str) -> str | None:
    """A Debian package name: lower case letters, digits, '+', '-', '.'."""
    if not _PACKAGE.match(value):
        return (
            f"{value!r} is not a Debian package name (lower case letters, digits, '+', '-', '.', "
            "at least 2 characters)"
        )
    return None


def _library_shorthand(value: Any) -> Any:
    """``soname: pkg`` -> ``{package: pkg}``; ``soname:`` (null) -> ``{}``."""
    if value is None:
        return LocatedDict()
    if isinstance(value, str):
        return LocatedDict({"package": value})
    return value


LIBRARY = Field(
    "object",
    normalise=_library_shorthand,
    keys={
        "package": Field("str", check=check_package_name),
        "state": Field("str", choices=("present", "absent")),
    },
    expect="a package name or a mapping (package, state)",
)

LIBRARIES = Field("map", key_check=check_soname, values=LIBRARY)


def check_software(model: Any, v: Validator) -> None:
    """Per node: a required library whose package that node must remove is an error.

    Called once from ``_pools_checks.cross_check`` after the references are known
    good; two pools disagreeing on a package version stay a ``Conflict`` (shown
    by ``multiall pools check`` and by ``multiall sl drift``), not an error.
    """
    for node in model.node_names():
        settings = model.effective(node).settings
        packages = settings.get("packages") or {}
        for soname, lib in (settings.get("libraries") or {}).items():
            pkg = (lib or {}).get("package")
            if not pkg or (lib or {}).get("state", "present") != "present":
                continue
            if (packages.get(pkg) or {}).get("state") == "absent":
                pools = [p for p in model.node_pools(node) if _declares(model, p, soname)]
                where = pools[0] if pools else None
                mark = model.pools[where]["libraries"].mark_of(soname) if where else None
                v.error(
                    f"node {node!r} must have library {soname} from package {pkg!r}, "
                    f"but packages.{pkg}.state is 'absent' for it: keep the package or drop "
                    "the library",
                    mark,
                    ("pools", where or "?", "libraries", soname),
                )


def _declares(model: Any, pool: str, soname: str) -> bool:
    libs = model.pools[pool].get("libraries")
    return isinstance(libs, dict) and soname in libs
