# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS-SA: talking DNS to the authoritative server.

What it serves now (:func:`served_rrsets`, :func:`soa_serial`: plain queries,
no recursion) and one **RFC 2136 update signed with TSIG** that replaces
every changed set (:func:`apply_update`). Every failure becomes a
:class:`DnsError` that names the server and says whether anything changed.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import (
    HAS_DNSPYTHON,
    RRset,
    require_dnspython,
    value_sort_key,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_tsig import TsigKey
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError

if HAS_DNSPYTHON:
    import dns  # the package only: _load() imports the modules on first use


def _load() -> None:
    """dnspython's modules this file uses, on first use (start-up cost: see _dns_records)."""
    require_dnspython()
    for name in ("exception", "flags", "message", "query", "rcode", "rdatatype", "tsig", "update"):
        importlib.import_module(f"dns.{name}")  # also sets dns.<name> on the package


def _fqdn(name: str, zone: str) -> str:
    return f"{zone}." if name == "@" else f"{name}.{zone}."


def served_rrsets(
    server: str, zone: str, keys: list[tuple[str, str]], port: int = 53, timeout: float = 2.0
) -> dict[tuple[str, str], RRset]:
    """What the authoritative server answers now for each owned (name, type)."""
    _load()
    out: dict[tuple[str, str], RRset] = {}
    for name, rtype in keys:
        query = dns.message.make_query(_fqdn(name, zone), rtype)
        query.flags &= ~dns.flags.RD  # type: ignore[attr-defined]
        try:
            reply = dns.query.udp_with_fallback(query, server, timeout=timeout, port=port)[0]
        except (dns.exception.Timeout, OSError) as exc:
            raise DnsError(
                f"DNS server {server}:{port} does not answer: {exc or 'timeout'}"
            ) from None
        rcode = reply.rcode()
        if rcode in (dns.rcode.REFUSED, dns.rcode.SERVFAIL):
            raise DnsError(
                f"DNS server {server}:{port} answers {dns.rcode.to_text(rcode)} for "
                f"{_fqdn(name, zone)}: does it serve zone {zone}?"
            )
        values: list[str] = []
        ttl = 0
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.from_text(rtype):
                ttl = rrset.ttl
                values.extend(r.to_text() for r in rrset)
        out[(name, rtype)] = RRset(name, rtype, ttl, tuple(sorted(values, key=value_sort_key)))
    return out


def soa_serial(server: str, zone: str, port: int = 53, timeout: float = 2.0) -> int | None:
    """The serial the server serves now (None when it does not serve the zone)."""
    _load()
    query = dns.message.make_query(f"{zone}.", "SOA")
    try:
        reply = dns.query.udp(query, server, timeout=timeout, port=port)
    except (dns.exception.Timeout, OSError):
        return None
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def apply_update(
    server: str,
    zone: str,
    key: TsigKey,
    changes: list[dict[str, Any]],
    port: int = 53,
    timeout: float = 2.0,
) -> float:
    """Send one signed RFC 2136 update replacing every changed set; seconds taken.

    One message for all the sets: the server applies it all or nothing.
    """
    _load()
    update = dns.update.UpdateMessage(
        f"{zone}.", keyring=key.keyring(), keyname=key.name, keyalgorithm=key.algorithm
    )
    for change in changes:
        if change["values"]:
            update.replace(change["name"], change["ttl"], change["type"], *change["values"])
        else:
            update.delete(change["name"], change["type"])
    started = time.monotonic()
    try:
        reply = dns.query.tcp(update, server, timeout=timeout, port=port)
    except dns.tsig.PeerBadKey:
        raise DnsError(
            f"DNS server {server} does not know TSIG key {key.name!r} (BADKEY): "
            "check the key name against the server's named.conf; nothing was changed"
        ) from None
    except dns.tsig.PeerBadSignature:
        raise DnsError(
            f"DNS server {server} rejected the signature of TSIG key {key.name!r} (BADSIG): "
            "the secret differs from the server's; nothing was changed"
        ) from None
    except dns.tsig.PeerError as exc:
        raise DnsError(f"DNS server {server}: TSIG error {exc}; nothing was changed") from None
    except (dns.exception.Timeout, OSError) as exc:
        raise DnsError(
            f"DNS server {server}:{port} unreachable for the update: {exc or 'timeout'}"
        ) from None
    rcode = reply.rcode()
    if rcode != dns.rcode.NOERROR:
        hint = {
            dns.rcode.REFUSED: (
                "the server refuses this update with this key (its update-policy lets a "
                "pool's key change only that pool's own records; is it the pool's key?)"
            ),
            dns.rcode.NOTAUTH: "the server is not authoritative for the zone or the key is wrong",
            dns.rcode.NOTZONE: "a record is outside the zone",
        }.get(rcode, "")
        raise DnsError(
            f"DNS server {server} answered {dns.rcode.to_text(rcode)} to the update of {zone}"
            + (f": {hint}" if hint else "")
            + "; nothing was changed"
        )
    return time.monotonic() - started
