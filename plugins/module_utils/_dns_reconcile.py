# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS-SA: make the server serve what the topology wants — the body written once.

The ``dns_zone`` module and the connector's in-process reconciler both call
:func:`reconcile` (and ``multiall dns`` the read-only :func:`plan`): ask the
server for the owned record sets, compare them with the wanted ones, then
apply the difference as one signed RFC 2136 update (``update`` mode) or by
rebuilding the zone file (``rebuild`` mode). Check mode sends and writes
nothing.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._dns_push import (
    push_file,
    read_text,
    without_serial,
    write_atomic,
    zone_serial,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_rebuild import (
    DEFAULT_TEMPLATE,
    install_zone,
    next_serial,
    render_zone,
    zone_context,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import (
    compare,
    owned_keys,
    rrset_lines,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_tsig import TsigKey
from ansible_collections.takelan.multiall.plugins.module_utils._dns_update import (
    apply_update,
    served_rrsets,
    soa_serial,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import (
    DEFAULT_ZONE_DIR,
    DnsError,
)


def plan(
    settings: dict[str, Any],
    addresses: dict[str, str],
    members: list[str],
    server: str,
    port: int = 53,
    timeout: float = 2.0,
) -> dict[str, Any]:
    """Ask the server for the owned record sets and ``compare`` them with the wanted ones."""
    keys = owned_keys(settings, addresses)
    served = served_rrsets(server, settings["zone"], keys, port, timeout)
    return compare(settings, addresses, members, served, server)


def reconcile(
    settings: dict[str, Any],
    addresses: dict[str, str],
    members: list[str],
    server: str,
    key: TsigKey | None = None,
    port: int = 53,
    timeout: float = 2.0,
    check: bool = False,
    zone_file: str | None = None,
    template: str | None = None,
    template_source: str = "template",
    reload_argv: list[str] | None = None,
) -> dict[str, Any]:
    """Make the server serve what the topology wants (``update`` or ``rebuild`` mode).

    Returns the plan plus ``changed``; in check mode nothing is sent or written.
    """
    result = plan(settings, addresses, members, server, port, timeout)
    result["changed"] = bool(result["changes"])
    zone = settings["zone"]
    mode = settings["mode"]
    if mode == "rebuild":
        # Render even when nothing changed so a broken template is reported early.
        serial = next_serial(soa_serial(server, zone, port, timeout))
        context = zone_context(
            settings, serial, server, result["wanted"], addresses, result["members"]
        )
        text = render_zone(template or DEFAULT_TEMPLATE, context, template_source)
        result["serial"] = serial
        if result["changed"] and not check:
            path = zone_file or f"{DEFAULT_ZONE_DIR}/{zone}.zone"
            if reload_argv is None:
                reload_argv = ["rndc", "reload", zone]
            install_zone(text, path, zone, reload_argv=reload_argv)
            result["zone_file"] = path
    elif mode == "update":
        if result["changed"] and not check:
            if key is None:
                raise DnsError("a TSIG key is needed for dynamic updates (key_file or key_secret)")
            seconds = apply_update(server, zone, key, result["changes"], port, timeout)
            result["update_ms"] = round(seconds * 1000, 2)
    elif mode == "push":
        # The leader's file, not the server, is what push mode writes: FS-SA
        # may still be carrying the last one, and re-writing it then would only
        # bump the serial. Changed = the records in the pushed file differ.
        path = push_file(settings)
        before = read_text(path)
        current = zone_serial(before)
        context = zone_context(
            settings, current or 0, server, result["wanted"], addresses, result["members"]
        )
        same = render_zone(template or DEFAULT_TEMPLATE, context, template_source)
        result["changed"] = without_serial(same) != without_serial(before)
        serial = next_serial(current) if result["changed"] else current
        context["serial"] = serial
        text = render_zone(template or DEFAULT_TEMPLATE, context, template_source)
        result.update(serial=serial, zone_file=path, before=before or "", after=text)
        if result["changed"] and not check:
            write_atomic(text, path)
    else:
        raise DnsError(f"zone {zone}: unknown mode {mode!r}; use update, rebuild or push")
    result["wanted"] = rrset_lines(result["wanted"])
    result["served"] = rrset_lines(result["served"])
    return result
