# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS-SA ``push`` mode: the leader's zone file travels to the DNS server by FS-SA.

The pool leader renders the whole zone (same template and serial rule as
``rebuild``) and writes it atomically to ``<push_dir>/<zone>.zone``, a live
FS-SA tree of the pool; FS-SA carries it to every member. The member whose
address is ``dns.server`` notices the file changed (mtime poll) and installs
it with :func:`_dns_rebuild.install_zone` (``named-checkzone -k fail``, atomic
rename, ``rndc reload``): a zone that fails the check is not installed and
the live zone stays. No dnspython here: the pool model loader imports
:func:`check_push_trees`.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

from ._dns_zone import DEFAULT_ZONE_DIR, DnsError
from ._pools_files import tree_of

DEFAULT_PUSH_DIR = "/var/lib/multiall/dns-push"
# "@ TTL IN SOA ns. host. ( SERIAL ..." as the built-in template writes it.
_SOA = re.compile(r"\bSOA\s+\S+\s+\S+\s*\(?\s*(\d+)", re.IGNORECASE)


def push_file(settings: dict[str, Any]) -> str:
    """Where the leader writes the pool's zone: ``<push_dir>/<zone>.zone``."""
    return f"{(settings.get('push_dir') or DEFAULT_PUSH_DIR).rstrip('/')}/{settings['zone']}.zone"


def server_zone_file(settings: dict[str, Any]) -> str:
    """The file named loads on the DNS server (``dns.zone_file``, else the role's default)."""
    return settings.get("zone_file") or f"{DEFAULT_ZONE_DIR}/{settings['zone']}.zone"


def zone_serial(text: str | None) -> int | None:
    """The SOA serial written in a zone file's text, or None."""
    found = _SOA.search(text or "")
    return int(found.group(1)) if found else None


def without_serial(text: str | None) -> str | None:
    """The text with its SOA serial blanked: equal texts publish the same records."""
    return None if text is None else _SOA.sub(lambda m: m.group(0)[: -len(m.group(1))], text, 1)


def read_text(path: str) -> str | None:
    """A zone file's text, or None when there is none yet; unreadable is a DnsError."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DnsError(f"cannot read the pushed zone {path}: {exc.strerror or exc}") from None


def write_atomic(text: str, path: str) -> None:
    """Write ``path`` so that FS-SA (and readers) only ever see a whole zone file.

    Written to a hidden temporary file in the same directory, flushed, then
    renamed over the target.
    """
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".multiall-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise DnsError(
            f"cannot write the pushed zone in {directory}: {exc.strerror or exc}; "
            "the connector runs as root and the directory is the pool's dns.push_dir tree"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise DnsError(f"cannot write the pushed zone {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_push_trees(model: Any, v: Any) -> None:
    """Load-time check: a ``push`` pool declares its ``dns.push_dir`` as a live ``files`` tree.

    Without it nothing would carry the leader's zone file to the DNS server,
    so the model is refused with the place of ``dns.mode`` (file:line).
    """
    for pool, spec in model.pools.items():
        dns = spec.get("dns") or {}
        if not isinstance(dns, dict) or dns.get("mode") != "push":
            continue
        push_dir = str(dns.get("push_dir") or DEFAULT_PUSH_DIR)
        trees = dict(model._contribution(pool).get("files") or {})
        tree = tree_of(trees, push_dir)
        where = ("pools", pool, "dns", "push_dir" if dns.get("push_dir") else "mode")
        if tree is None:
            v.error(
                f"pool {pool!r} has dns.mode push but does not declare dns.push_dir "
                f"{push_dir} under 'files' (e.g. files: {{{push_dir}: {{live: true}}}}); "
                "FS-SA carries the zone file to the DNS server through that tree",
                model._value_mark(pool, where[1:]),
                where,
            )
        elif (trees[tree] or {}).get("live") is False:
            v.error(
                f"pool {pool!r}: tree {tree} carries dns.push_dir but has live: false; "
                "push mode needs a live FS-SA tree",
                model._value_mark(pool, ("files", tree, "live")),
                ("pools", pool, "files", tree, "live"),
            )


def install_pushed(settings: dict[str, Any], reload_argv: list[str] | None = None) -> str | None:
    """On the DNS server: install the pushed zone when it differs from the live one.

    Returns the pushed text that was installed, None when there was nothing to
    do. A zone ``named-checkzone`` rejects raises DnsError and the live zone
    stays (``install_zone`` removes the candidate).
    """
    from ._dns_rebuild import install_zone  # Jinja2/dnspython users only, not the loader

    zone = settings["zone"]
    text = read_text(push_file(settings))
    target = server_zone_file(settings)
    if text is None or text == read_text(target):
        return None
    install_zone(text, target, zone, reload_argv=reload_argv or ["rndc", "reload", zone])
    return text
