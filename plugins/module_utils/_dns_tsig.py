# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS-SA: TSIG keys, from a BIND key file or given piece by piece.

Validated when read, so a bad key is reported with the file it came from
before anything is sent (:func:`load_key_file`, :func:`make_key`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import (
    require_dnspython,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError

_KEY_RE = re.compile(
    r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>[^}]*)\}\s*;', re.IGNORECASE | re.DOTALL
)


# One key per pool: where pool nodes keep it, ``{pool}`` replaced by the pool's name
# (the dns_sa role writes it there, the connector and dns_zone read it from there).
DEFAULT_KEY_FILE = "/etc/multiall/dns/{pool}.key"


def pool_key_name(pool: str, settings: dict[str, Any]) -> str:
    """The TSIG key name of a pool: ``dns.key_name``, else ``multiall-<pool>``.

    A key per pool, so a node of pool A holds nothing that BIND accepts for
    pool B's zone.
    """
    return str(settings.get("key_name") or f"multiall-{pool}").rstrip(".")


def pool_key_file(path: str, pool: str) -> str:
    """A key file path with ``{pool}`` replaced (a path without it is shared by every pool)."""
    return path.replace("{pool}", pool)


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key: name, algorithm (e.g. hmac-sha256) and base64 secret."""

    name: str
    algorithm: str
    secret: str

    def keyring(self) -> Any:
        """dnspython's form of the key."""
        require_dnspython()
        import dns.tsigkeyring  # on first use: see _dns_records (start-up cost)

        return dns.tsigkeyring.from_text({self.name: (self.algorithm, self.secret)})


def parse_key(text: str, source: str) -> TsigKey:
    """The first ``key "NAME" { algorithm A; secret "S"; };`` of a BIND key file."""
    match = _KEY_RE.search(text)
    if not match:
        raise DnsError(
            f'{source}: no TSIG key found; expected `key "NAME" {{ algorithm hmac-sha256; '
            f'secret "BASE64"; }};` (as written by tsig-keygen)'
        )
    body = match.group("body")
    algorithm = re.search(r"algorithm\s+\"?([\w.-]+)\"?\s*;", body)
    secret = re.search(r"secret\s+\"([^\"]+)\"\s*;", body)
    if not algorithm or not secret:
        raise DnsError(f"{source}: key {match.group('name')!r} needs both `algorithm` and `secret`")
    return make_key(match.group("name"), algorithm.group(1), secret.group(1), source)


def make_key(name: str, algorithm: str, secret: str, source: str = "key") -> TsigKey:
    """Validate a key given piecewise (module parameters)."""
    try:
        base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raise DnsError(f"{source}: the secret of TSIG key {name!r} is not base64") from None
    if not re.fullmatch(r"hmac-(md5|sha1|sha224|sha256|sha384|sha512)", algorithm.lower()):
        raise DnsError(
            f"{source}: TSIG algorithm {algorithm!r} is not one of hmac-sha256, hmac-sha512, ..."
        )
    return TsigKey(name.rstrip("."), algorithm.lower(), secret)


def load_key_file(path: str) -> TsigKey:
    """Read a BIND key file (``tsig-keygen NAME > FILE``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise DnsError(f"{path}: cannot read the TSIG key: {exc.strerror or exc}") from None
    return parse_key(text, path)
