# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape of a pools file: every key MultiAll accepts, and what it must hold.

One table per section so that a reader (and ``docs/pools.md``) can see the whole
format in one place. Shorthands are normalised here: ``nginx: "1.22*"`` under
``packages`` becomes ``nginx: {version: "1.22*"}``.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Any

from ._dns_records import HAS_DNSPYTHON
from ._located_yaml import LocatedDict
from ._pools_databases import DATABASE
from ._pools_files import CONFLICT_POLICIES
from ._pools_software import LIBRARIES
from ._schema import Field
from .sbm import HIGHER_IS_WORSE, KINDS, LOWER_IS_WORSE

# dnspython's modules are imported where used: see _dns_records (start-up cost).
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
POOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_LOOKS_NUMERIC = re.compile(r"^[0-9.]+$")
# One label of a DNS name as MultiAll writes it into zone files and updates:
# host-name characters plus '_' (for _service._proto names). Stricter than DNS
# itself on purpose: names are written unescaped into rebuilt zone files, where
# a space, ';', '$' or a newline would change what the line means.
_DNS_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
# A control character (newline, tab, NUL...) in a record value would end the
# zone-file line early and let the rest of the value be read as a new line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

SECTIONS = (
    "baseline",
    "files",
    "packages",
    "services",
    "libraries",
    "databases",
    "dns",
    "vars",
)


def check_node_name(name: str) -> str | None:
    """Node names are host names in inventories and DNS labels."""
    if not NODE_NAME.match(name):
        return (
            f"node name {name!r} is not valid: use letters, digits, '.', '-' and '_', "
            "starting with a letter or digit"
        )
    return None


def check_pool_name(name: str) -> str | None:
    """Pool names become Ansible group names ``pool_<name>``."""
    if not POOL_NAME.match(name):
        return (
            f"pool name {name!r} is not valid: it becomes the Ansible group 'pool_{name}', "
            "so use letters, digits and '_' (not starting with a digit)"
        )
    return None


def check_address(value: str) -> str | None:
    """An IP address or a DNS host name; a dotted number that is no IP is a typo."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if _LOOKS_NUMERIC.match(value) or not _HOSTNAME.match(value):
        return f"{value!r} is not an IP address or host name (e.g. 198.18.0.11 or web1.example.net)"
    return None


# The types a pool's extra ``records`` may have.
DNS_RECORD_TYPES = ("A", "AAAA", "CNAME", "SRV", "TXT", "MX")


def check_ipv4(value: str) -> str | None:
    """The TNS probe's address of a node: IPv4 only, like its socket."""
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return f"{value!r} is not an IPv4 address (e.g. 198.18.0.11)"
    return None


def _dns_name_problem(value: str, what: str, relative: bool) -> str | None:
    """Why ``value`` is not a DNS name MultiAll can write safely, or None.

    ``relative``: an owner name inside the zone (``@``, ``www``, ``*.www``,
    ``_sip._tcp``), which must not end with '.' since MultiAll matches the
    server's records by their name relative to the zone.
    """
    if relative and value == "@":
        return None
    if relative and value.endswith("."):
        return f"{what} {value!r} must be relative to the zone (no trailing '.'); '@' is the zone"
    text = value[:-1] if value.endswith(".") else value
    labels = text.split(".")
    if relative and labels[0] == "*":
        labels = labels[1:]
    bad = next((label for label in labels if not _DNS_LABEL.match(label)), None)
    if bad is not None or not labels:
        shown = "" if bad == text else f" (label {bad!r})"
        if bad == "" or not labels:
            shown = " (an empty label)"
        return (
            f"{what} {value!r} is not a valid DNS name{shown}: use labels of 1-63 letters, "
            "digits, '-' and '_' separated by single dots"
        )
    if len(text) > 253:
        return f"{what} {value!r} is longer than 253 characters, the most a DNS name may be"
    if HAS_DNSPYTHON:
        import dns.exception
        import dns.name

        try:
            dns.name.from_text(value, origin=None if relative else dns.name.root)
        except dns.exception.DNSException as exc:
            return f"{what} {value!r} is not a valid DNS name: {exc}"
    return None


def check_dns_zone(value: str) -> str | None:
    """A zone name (``example.net`` or ``example.net.``)."""
    return _dns_name_problem(value, "zone", relative=False)


def check_dns_owner(value: str) -> str | None:
    """A record's owner name relative to the zone."""
    return _dns_name_problem(value, "name", relative=True)


def check_dns_pool_record(value: str) -> str | None:
    """The name the pool's members are published under, relative to the zone."""
    return _dns_name_problem(value, "record", relative=True)


def check_dns_key_name(value: str) -> str | None:
    """A TSIG key name is a DNS name too."""
    return _dns_name_problem(value, "key name", relative=False)


def _starts_comment(value: str) -> bool:
    """True when an unquoted ';' would make the rest of ``value`` a zone-file comment."""
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            return True
    return False


def check_dns_record(record: Any) -> tuple[str, str] | None:
    """A record's value must parse as that type's data, on one line.

    With dnspython the value is parsed exactly as the DNS server will
    (``dns.rdata.from_text``). Without it (a managed node that lacks
    python3-dnspython) A/AAAA are still checked and no value with a control
    character passes; the rest is parsed where records are written, which
    needs dnspython anyway.
    """
    if not isinstance(record, dict):
        return None
    value, rtype = record.get("value"), record.get("type")
    if not isinstance(value, str) or rtype not in DNS_RECORD_TYPES:
        return None  # a wrong type is reported on its own
    if _CONTROL.search(value):
        return ("value", f"value {value!r} contains a control character (newline, tab...)")
    if _starts_comment(value):
        # DNS would silently drop everything after it: say so instead.
        return ("value", f"value {value!r} has an unquoted ';', which starts a comment; quote it")
    if HAS_DNSPYTHON:
        import dns.exception
        import dns.rdata

        try:
            dns.rdata.from_text("IN", rtype, value, origin=None)
        except dns.exception.DNSException as exc:
            return ("value", f"{value!r} is not valid {rtype} record data: {exc}")
        return None
    if rtype in ("A", "AAAA"):
        try:
            version = ipaddress.ip_address(value).version
        except ValueError:
            version = 0
        if version != (4 if rtype == "A" else 6):
            family = "IPv4" if rtype == "A" else "IPv6"
            return (
                "value",
                f"{value!r} is not valid {rtype} record data: expected an {family} address",
            )
    return None


def check_dns(spec: Any) -> tuple[str, str] | None:
    """The pool record name must still be a valid name once the zone is appended."""
    if not isinstance(spec, dict) or not HAS_DNSPYTHON:
        return None
    zone, record = spec.get("zone"), spec.get("record")
    if not isinstance(zone, str) or not isinstance(record, str) or record == "@":
        return None
    if check_dns_zone(zone) or check_dns_pool_record(record):
        return None  # already reported on its own
    import dns.exception
    import dns.name

    try:
        dns.name.from_text(record, origin=dns.name.from_text(zone))
    except dns.exception.DNSException as exc:
        return ("record", f"record {record!r} in zone {zone!r}: {exc}")
    return None


def check_abs_path(value: str) -> str | None:
    """Declared trees must be absolute and normalised so they cannot escape."""
    if not value.startswith("/"):
        return f"path {value!r} must be absolute (start with '/')"
    if ".." in value.split("/"):
        return f"path {value!r} must not contain '..'"
    if posixpath.normpath(value) != value.rstrip("/") and value != "/":
        return f"path {value!r} is not normalised; write {posixpath.normpath(value)!r}"
    return None


def check_mode(value: str) -> str | None:
    """File modes are octal strings, quoted so YAML does not turn 0644 into 420."""
    if not re.match(r"^0?[0-7]{3,4}$", value):
        return f"mode {value!r} must be an octal string such as '0644'"
    return None


def _str(**kw: Any) -> Field:
    return Field("str", **kw)


def _int(**kw: Any) -> Field:
    return Field("int", **kw)


def _num(**kw: Any) -> Field:
    return Field("number", **kw)


def _bool(**kw: Any) -> Field:
    return Field("bool", **kw)


def _str_list(**kw: Any) -> Field:
    return Field("list", item=_str(), **kw)


def _mode() -> Field:
    return _str(check=check_mode, expect="an octal mode string such as '0644'")


_PORT = {"minimum": 1, "maximum": 65535}

# Parameters a baseline rule kind accepts besides the common ones (kinds
# without any are absent); the kinds themselves are sbm.KINDS.
BASELINE_PARAMS: dict[str, dict[str, Field]] = {
    "load": {"per_cpu": _bool()},
    "disk": {"mount": _str(check=check_abs_path), "inodes": _bool()},
    "process": {
        "name": _str(),
        "cmdline": _str(),
        "user": _str(),
        "min": _int(minimum=0),
        "max": _int(minimum=0),
    },
    "port": {
        "port": _int(required=True, **_PORT),
        "proto": _str(choices=("tcp", "udp")),
        "address": _str(),
    },
    "tcp": {"host": _str(required=True), "port": _int(required=True, **_PORT)},
    "http": {
        "url": _str(required=True),
        "status": _int(minimum=100, maximum=599),
        "match": _str(),
    },
    "dns": {
        "name": _str(required=True),
        "type": _str(),
        "expect": _str_list(),
        "server": _str(),
    },
    "file": {
        "path": _str(required=True, check=check_abs_path),
        "mode": _mode(),
        "owner": _str(),
        "checksum": _str(),
        "max_age": _num(minimum=0),
    },
    "package": {"name": _str(required=True), "version": _str()},
    "service": {"name": _str(required=True)},
    "command": {"command": Field("any", required=True)},
}

_BASELINE_COMMON: dict[str, Field] = {
    "kind": _str(required=True, choices=KINDS),
    "warn": _num(),
    "crit": _num(),
    "interval": _num(minimum=0.1),
    "timeout": _num(minimum=0.1),
    "for": _int(minimum=1),
    "enabled": _bool(),
    "description": _str(),
}


def _baseline_extra(rule: Any) -> dict[str, Field]:
    kind = rule.get("kind") if isinstance(rule, dict) else None
    return BASELINE_PARAMS.get(kind, {}) if isinstance(kind, str) else {}


def _check_thresholds(rule: Any) -> str | None:
    if not isinstance(rule, dict):
        return None
    warn, crit, kind = rule.get("warn"), rule.get("crit"), rule.get("kind")
    if not isinstance(warn, (int, float)) or not isinstance(crit, (int, float)):
        return None
    if kind in HIGHER_IS_WORSE and warn > crit:
        return (
            f"warn ({warn}) is above crit ({crit}); for '{kind}' higher is worse, so warn <= crit"
        )
    if kind in LOWER_IS_WORSE and warn < crit:
        return f"warn ({warn}) is below crit ({crit}); for '{kind}' lower is worse, so warn >= crit"
    return None


BASELINE_RULE = Field(
    "object",
    keys=_BASELINE_COMMON,
    extra_keys=_baseline_extra,
    check=_check_thresholds,
    expect="a rule mapping with at least 'kind'",
)


def _shorthand(key: str) -> Any:
    """``name: "x"`` -> ``name: {key: "x"}`` and ``name:`` (null) -> ``name: {}``."""

    def normalise(value: Any) -> Any:
        if value is None:
            return LocatedDict()
        if isinstance(value, str):
            out = LocatedDict({key: value})
            return out
        return value

    return normalise


FILE_TREE = Field(
    "object",
    normalise=_shorthand("source"),
    keys={
        "source": _str(),
        "owner": _str(),
        "group": _str(),
        "mode": _mode(),
        "exclude": _str_list(),
        "delete": _bool(),
        # FS-SA: false = converged by fs_sync only, no live push.
        "live": _bool(),
        # FS-SA: who wins a concurrent edit; the loser is kept (keep_both) or
        # only reported (newest).
        "conflict": _str(choices=CONFLICT_POLICIES),
    },
)

PACKAGE = Field(
    "object",
    normalise=_shorthand("version"),
    keys={
        "version": _str(),
        "state": _str(choices=("present", "absent", "latest")),
        "hold": _bool(),
    },
    expect="a version string or a mapping (version, state, hold)",
)

SERVICE = Field(
    "object",
    normalise=_shorthand("state"),
    keys={"state": _str(choices=("started", "stopped")), "enabled": _bool()},
    expect="a state string or a mapping (state, enabled)",
)

DNS_RECORD = Field(
    "object",
    keys={
        "name": _str(required=True, check=check_dns_owner),
        "type": _str(required=True, choices=DNS_RECORD_TYPES),
        "value": _str(required=True),
        "ttl": _int(minimum=0),
    },
    check=check_dns_record,
)

DNS = Field(
    "object",
    keys={
        "zone": _str(required=True, check=check_dns_zone),
        "server": _str(check=check_address),
        "mode": _str(choices=("update", "rebuild", "push")),
        "ttl": _int(minimum=0, maximum=86400),
        "record": _str(check=check_dns_pool_record),
        "node_records": _bool(),
        "key_name": _str(check=check_dns_key_name),
        "records": Field("list", item=DNS_RECORD),
        # push mode: the live FS-SA tree the leader writes the zone into, and
        # the file named loads on the DNS server (see _dns_push.py).
        "push_dir": _str(check=check_abs_path),
        "zone_file": _str(check=check_abs_path),
    },
    check=check_dns,
)

SETTINGS_FIELDS: dict[str, Field] = {
    "baseline": Field("map", values=BASELINE_RULE),
    "files": Field("map", key_check=check_abs_path, values=FILE_TREE),
    "packages": Field("map", values=PACKAGE),
    "services": Field("map", values=SERVICE),
    "libraries": LIBRARIES,
    "databases": Field("map", values=DATABASE),
    "dns": DNS,
    "vars": Field("map", values=Field("any")),
}

SSH_FIELDS: dict[str, Field] = {
    "ssh_user": _str(),
    "ssh_port": _int(**_PORT),
    "ssh_private_key_file": _str(),
    "ssh_common_args": _str(),
    "python": _str(),
}

NODE = Field(
    "object",
    keys={
        "address": _str(required=True, check=check_address),
        # The IPv4 address TNS (probe and Serf) uses; needed when ``address``
        # is a host name or IPv6, which SSH (and DNS, for IPv6) keep using.
        "ip": _str(check=check_ipv4, expect="an IPv4 address such as 198.18.0.11"),
        "pools": Field("list", item=_str()),
        "description": _str(),
        # Per-node overrides: same sections as a pool; they win over pools.
        "settings": Field("object", keys={k: v for k, v in SETTINGS_FIELDS.items() if k != "dns"}),
        **SSH_FIELDS,
    },
)

POOL = Field(
    "object",
    normalise=lambda v: LocatedDict() if v is None else v,
    keys={
        "members": Field("list", item=_str()),
        "include": Field("list", item=_str()),
        "description": _str(),
        **SETTINGS_FIELDS,
    },
)

EXCEPTION = Field(
    "object",
    keys={
        "node": _str(),
        "nodes": _str_list(),
        "pool": _str(),
        "reason": _str(),
        "remove": Field(
            "object",
            keys={k: _str_list() for k in SECTIONS if k not in ("dns",)},
            expect="a mapping of section -> list of item names",
        ),
        "override": Field("object", keys={k: v for k, v in SETTINGS_FIELDS.items() if k != "dns"}),
    },
)

# Keys of the inventory plugin (and Constructable/Cacheable) that may share the file.
INVENTORY_KEYS = (
    "plugin",
    "compose",
    "groups",
    "keyed_groups",
    "strict",
    "leading_separator",
    "use_extra_vars",
    "use_vars_plugins",
    "cache",
    "cache_plugin",
    "cache_timeout",
    "cache_connection",
    "cache_prefix",
    "on_conflict",
    "with_sources",
    "group_prefix",
)

# The model's own top-level keys: the one list the loader, the directory merge
# and the inventory plugin (which must tell its options from the model) all use.
MODEL_FIELDS: dict[str, Field] = {
    "defaults": Field("object", keys=dict(SSH_FIELDS)),
    "nodes": Field("map", key_check=check_node_name, values=NODE),
    "pools": Field("map", key_check=check_pool_name, values=POOL),
    "exceptions": Field("list", item=EXCEPTION),
}
MODEL_KEYS = tuple(MODEL_FIELDS)

TOP = Field(
    "object",
    keys={**MODEL_FIELDS, **{k: Field("any") for k in INVENTORY_KEYS}},
    expect="a mapping with 'nodes', 'pools' and optionally 'defaults', 'exceptions'",
)
