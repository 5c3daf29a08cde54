# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS-SA: a pool's DNS records follow its topology.

One implementation for the ``dns_zone`` module, the connector's in-process
reconciler and ``multiall dns``:

* **which members** belong in the pool record (:func:`choose_members`): alive,
  SBM OK or WARNING, and healthy for the hold-down period; never nobody;
* **which records** that means (:func:`wanted_rrsets`);
* **what the server serves** (:func:`served_rrsets`, plain queries to the
  authoritative server) and the **difference** (:func:`diff_rrsets`);
* applying it with an **RFC 2136 update signed with TSIG**
  (:func:`apply_update`), or by **rebuilding** the zone file
  (:func:`render_zone`, :func:`install_zone`: ``named-checkzone`` first, atomic
  replace, ``rndc reload``).

Only the record sets MultiAll owns are read and written (the pool name's A and
AAAA, the per-node names, the pool's extra ``records``); everything else in
the zone is left alone.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

try:  # dnspython: in the connector's venv, and python3-dnspython on managed nodes
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype
    import dns.tsig
    import dns.tsigkeyring
    import dns.update

    HAS_DNSPYTHON = True
except ImportError:  # pragma: no cover - reported by the callers
    HAS_DNSPYTHON = False

# SBM codes (module_utils/sbm.py): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
_SBM_HEALTHY = frozenset({"0", "1"})
DEFAULT_TTL = 5
DEFAULT_HOLD_DOWN = 3.0
MANAGED_TYPES = ("A", "AAAA")
_KEY_RE = re.compile(
    r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>[^}]*)\}\s*;', re.IGNORECASE | re.DOTALL
)


class DnsError(Exception):
    """A DNS-SA operation failed; the message says what and what to do."""


# --------------------------------------------------------------- members
def badness(member: Any) -> int:
    """How unfit a member is to receive clients: 0 fit ... 4 down.

    ``member`` is a ``tns.MemberView`` (or anything with ``state`` and ``sbm``).
    """
    if member.state in ("alive", "suspect"):
        if member.sbm in _SBM_HEALTHY:
            return 0
        return 2 if member.sbm == "2" else 1  # CRITICAL is worse than not yet measured
    if member.state == "maintenance":
        return 3
    return 4


class HoldDown:
    """When each member became fit, so a recovering member waits before it returns.

    Hold-down gates *adding*: a member the server does not hand out must have
    been fit for ``hold_down`` seconds in this tracker's view before it goes
    in. Members already served stay while fit, so a connector that just
    started, or the side of a healed partition that saw the others "fail",
    never pulls healthy members out. ``was_down`` remembers members seen
    failed, in maintenance or SBM CRITICAL, for :func:`choose_members`.
    Every node keeps a tracker for every DNS pool, not only the leader, so a
    new leader already knows who is recovering.
    """

    def __init__(self) -> None:
        self.since: dict[str, float] = {}
        self.was_down: set[str] = set()

    def observe(self, members: dict[str, Any], now: float) -> None:
        """Record the current view (``{name: MemberView}``)."""
        for name, member in members.items():
            rank = badness(member)
            if rank == 0:
                self.since.setdefault(name, now)
            else:
                self.since.pop(name, None)
                if rank >= 2 and member.state != "left":
                    # "left" is also how a member looks before Serf reported
                    # it once (a starting connector): not evidence of trouble.
                    self.was_down.add(name)

    def held(self, now: float, hold_down: float, served: Any = ()) -> dict[str, float]:
        """Members fit but still in hold-down: ``{name: seconds left}``."""
        return {
            name: round(since + hold_down - now, 2)
            for name, since in sorted(self.since.items())
            if now - since < hold_down and name not in served
        }


@dataclass
class MemberChoice:
    """The outcome of :func:`choose_members`."""

    members: list[str]
    held: dict[str, float] = field(default_factory=dict)
    kept_last: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "members": self.members,
            "held_down": self.held,
            "kept_last": self.kept_last,
            "excluded": self.excluded,
        }


def _why(member: Any) -> str:
    if member.state in ("alive", "suspect"):
        return {"2": "SBM CRITICAL", "3": "SBM UNKNOWN", "": "SBM not reported"}.get(
            member.sbm, f"SBM {member.sbm}"
        )
    return member.state


def choose_members(
    members: dict[str, Any],
    held: dict[str, float] | None = None,
    served: Any = (),
    was_down: Any = (),
) -> MemberChoice:
    """Members that get clients; never nobody.

    In: fit members out of hold-down, and served members whose SBM is not
    known yet but that were never seen down (a connector that just started
    must not pull them out). When that leaves nobody, the least-bad members
    are kept, the served ones among them first (a degraded answer beats
    NXDOMAIN for every client), and reported in ``kept_last``.
    """
    held = {n: s for n, s in (held or {}).items() if n in members}
    excluded = {n: _why(m) for n, m in sorted(members.items()) if badness(m) > 0}
    chosen = sorted(
        n
        for n, m in members.items()
        if (badness(m) == 0 and n not in held)
        or (badness(m) == 1 and n in served and n not in was_down)
    )
    if chosen or not members:
        return MemberChoice(chosen, held, [], excluded)
    best = min(badness(m) for m in members.values())
    candidates = sorted(n for n, m in members.items() if badness(m) == best)
    kept = [n for n in candidates if n in served] or candidates
    return MemberChoice(kept, held, kept, excluded)


# --------------------------------------------------------------- records
@dataclass(frozen=True)
class RRset:
    """One record set: owner name relative to the zone (``@`` = apex), type, TTL, values."""

    name: str
    rtype: str
    ttl: int
    values: tuple[str, ...]

    def lines(self) -> list[str]:
        """Zone-file lines, one per value."""
        return [f"{self.name} {self.ttl} IN {self.rtype} {v}" for v in self.values]


def zone_settings(model: Any, pool: str) -> dict[str, Any]:
    """The pool's ``dns`` section with defaults, or DnsError when it has none."""
    if pool not in model.pools:
        raise DnsError(f"no pool {pool!r} in the pool model; pools: {', '.join(model.pools)}")
    spec = model.pools[pool].get("dns")
    if not spec:
        raise DnsError(f"pool {pool!r} has no dns section in the pool model")
    out = {
        "zone": str(spec["zone"]).rstrip("."),
        "server": spec.get("server"),
        "mode": spec.get("mode", "update"),
        "ttl": int(spec.get("ttl", DEFAULT_TTL)),
        "record": spec.get("record", "@"),
        "node_records": bool(spec.get("node_records", True)),
        "key_name": spec.get("key_name"),
        "records": [dict(r) for r in spec.get("records") or []],
    }
    return out


def address_type(node: str, address: str) -> str:
    """``A`` or ``AAAA`` for a node's address (a host name is refused: records need IPs)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise DnsError(
            f"node {node}: address {address!r} is not an IP address; pool records need IPs"
        ) from None
    return "A" if ip.version == 4 else "AAAA"


def wanted_rrsets(
    settings: dict[str, Any], addresses: dict[str, str], members: list[str]
) -> dict[tuple[str, str], RRset]:
    """Every record set MultiAll owns in the zone, as it should be.

    ``addresses`` maps every declared member to its address; ``members`` are
    the ones in the pool record. The pool record's A and AAAA sets are always
    listed (empty = must be absent); per-node names list every declared member,
    down or not, as a node's own name is where an admin reaches it.
    """
    ttl = settings["ttl"]
    name = settings["record"]
    out: dict[tuple[str, str], RRset] = {}
    for rtype in MANAGED_TYPES:
        values = sorted(
            (addresses[n] for n in members if address_type(n, addresses[n]) == rtype),
            key=lambda a: ipaddress.ip_address(a),
        )
        out[(name, rtype)] = RRset(name, rtype, ttl, tuple(values))
    if settings["node_records"]:
        for node, address in sorted(addresses.items()):
            rtype = address_type(node, address)
            out[(node, rtype)] = RRset(node, rtype, ttl, (address,))
    extra: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for record in settings["records"]:
        key = (record["name"], record["type"].upper())
        extra.setdefault(key, []).append((int(record.get("ttl", ttl)), str(record["value"])))
    for (rname, rtype), items in extra.items():
        values = tuple(sorted(_canonical(rtype, v, settings["zone"]) for _, v in items))
        out[(rname, rtype)] = RRset(rname, rtype, items[0][0], values)
    return out


def served_members(
    settings: dict[str, Any], addresses: dict[str, str], served: dict[tuple[str, str], RRset]
) -> set[str]:
    """Members whose address the pool record hands out now."""
    values = {
        v for (name, rtype), r in served.items() if name == settings["record"] for v in r.values
    }
    return {n for n, a in addresses.items() if a in values}


def _canonical(rtype: str, value: str, zone: str) -> str:
    """The server's text form of a value (names absolute), so diffs compare like with like."""
    if not HAS_DNSPYTHON:
        return value
    import dns.rdata

    try:
        origin = dns.name.from_text(f"{zone}.")
        return dns.rdata.from_text("IN", rtype, value, origin=origin, relativize=False).to_text()
    except dns.exception.DNSException as exc:
        raise DnsError(f"record {rtype} {value!r}: {exc}") from None


def _fqdn(name: str, zone: str) -> str:
    return f"{zone}." if name == "@" else f"{name}.{zone}."


def _require_dnspython() -> None:
    if not HAS_DNSPYTHON:
        raise DnsError("dnspython is missing (apt-get install python3-dnspython)")


def served_rrsets(
    server: str, zone: str, keys: list[tuple[str, str]], port: int = 53, timeout: float = 2.0
) -> dict[tuple[str, str], RRset]:
    """What the authoritative server answers now for each owned (name, type)."""
    _require_dnspython()
    out: dict[tuple[str, str], RRset] = {}
    for name, rtype in keys:
        query = dns.message.make_query(_fqdn(name, zone), rtype)
        query.flags &= ~dns.flags.RD  # type: ignore[attr-defined]
        try:
            reply, _ = dns.query.udp_with_fallback(query, server, timeout=timeout, port=port)
        except (dns.exception.Timeout, OSError) as exc:
            raise DnsError(
                f"DNS server {server}:{port} does not answer: {exc or 'timeout'}"
            ) from None
        rcode = reply.rcode()
        if rcode == dns.rcode.REFUSED or rcode == dns.rcode.SERVFAIL:
            raise DnsError(
                f"DNS server {server}:{port} answers {dns.rcode.to_text(rcode)} for {_fqdn(name, zone)}: "
                f"does it serve zone {zone}?"
            )
        values: list[str] = []
        ttl = 0
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.from_text(rtype):
                ttl = rrset.ttl
                values.extend(r.to_text() for r in rrset)
        out[(name, rtype)] = RRset(name, rtype, ttl, tuple(sorted(values, key=_sort_key)))
    return out


def _sort_key(value: str) -> Any:
    try:
        return (0, ipaddress.ip_address(value))
    except ValueError:
        return (1, value)


def _normalise(rrset: RRset) -> RRset:
    return RRset(rrset.name, rrset.rtype, rrset.ttl, tuple(sorted(rrset.values, key=_sort_key)))


def diff_rrsets(
    wanted: dict[tuple[str, str], RRset], served: dict[tuple[str, str], RRset]
) -> list[dict[str, Any]]:
    """Record sets whose values or TTL differ: ``[{name, type, ttl, add, remove}]``."""
    changes = []
    for key, want in sorted(wanted.items()):
        want = _normalise(want)
        have = _normalise(served.get(key) or RRset(key[0], key[1], 0, ()))
        add = [v for v in want.values if v not in have.values]
        remove = [v for v in have.values if v not in want.values]
        ttl_changed = bool(want.values) and bool(have.values) and want.ttl != have.ttl
        if add or remove or ttl_changed:
            changes.append(
                {
                    "name": key[0],
                    "type": key[1],
                    "ttl": want.ttl,
                    "add": add,
                    "remove": remove,
                    "values": list(want.values),
                }
            )
    return changes


def rrset_lines(rrsets: dict[tuple[str, str], RRset]) -> list[str]:
    """Record sets as sorted zone-file lines, one per value."""
    return [line for _, r in sorted(rrsets.items()) for line in _normalise(r).lines()]


def zone_text(rrsets: dict[tuple[str, str], RRset]) -> str:
    """Owned records as zone-file text (for ``--diff``)."""
    lines = rrset_lines(rrsets)
    return "\n".join(lines) + ("\n" if lines else "")


def describe(changes: list[dict[str, Any]]) -> list[str]:
    """One line per added or removed record: ``+ @ 5 IN A 198.18.0.11``."""
    out = []
    for c in changes:
        out += [f"- {c['name']} IN {c['type']} {v}" for v in c["remove"]]
        out += [f"+ {c['name']} {c['ttl']} IN {c['type']} {v}" for v in c["add"]]
        if not c["add"] and not c["remove"]:
            out.append(f"~ {c['name']} IN {c['type']} ttl -> {c['ttl']}")
    return out


# ------------------------------------------------------------------- TSIG
@dataclass(frozen=True)
class TsigKey:
    """A TSIG key: name, algorithm (e.g. hmac-sha256) and base64 secret."""

    name: str
    algorithm: str
    secret: str

    def keyring(self) -> Any:
        """dnspython's form of the key."""
        _require_dnspython()
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


# ----------------------------------------------------------------- update
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
    _require_dnspython()
    update = dns.update.UpdateMessage(
        f"{zone}.", keyring=key.keyring(), keyname=key.name, keyalgorithm=key.algorithm
    )
    for change in changes:
        owner = "@" if change["name"] == "@" else change["name"]
        if change["values"]:
            update.replace(owner, change["ttl"], change["type"], *change["values"])
        else:
            update.delete(owner, change["type"])
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
            dns.rcode.REFUSED: "the server refuses updates with this key (allow-update?)",
            dns.rcode.NOTAUTH: "the server is not authoritative for the zone or the key is wrong",
            dns.rcode.NOTZONE: "a record is outside the zone",
        }.get(rcode, "")
        raise DnsError(
            f"DNS server {server} answered {dns.rcode.to_text(rcode)} to the update of {zone}"
            + (f": {hint}" if hint else "")
            + "; nothing was changed"
        )
    return time.monotonic() - started


# ---------------------------------------------------------------- rebuild
DEFAULT_TEMPLATE = """\
; Zone {{ zone }}: rendered by MultiAll DNS-SA (rebuild mode). Do not edit:
; the next rebuild replaces this file.
$ORIGIN {{ zone }}.
$TTL {{ ttl }}
@ {{ ttl }} IN SOA {{ ns_name }}. hostmaster.{{ zone }}. ( {{ serial }} 60 30 86400 {{ ttl }} )
@ {{ ttl }} IN NS {{ ns_name }}.
{% if ns_address %}{{ ns_name }}. {{ ttl }} IN A {{ ns_address }}
{% endif %}
{% for rr in rrsets %}{% for line in rr.lines() %}{{ line }}
{% endfor %}{% endfor %}"""


def soa_serial(server: str, zone: str, port: int = 53, timeout: float = 2.0) -> int | None:
    """The serial the server serves now (None when it does not serve the zone)."""
    _require_dnspython()
    query = dns.message.make_query(f"{zone}.", "SOA")
    try:
        reply = dns.query.udp(query, server, timeout=timeout, port=port)
    except (dns.exception.Timeout, OSError):
        return None
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def next_serial(current: int | None, now: float | None = None) -> int:
    """Monotonic: the Unix time, or current + 1 when that is not larger (RFC 1982 safe)."""
    stamp = int(now if now is not None else time.time()) % (1 << 32)
    if current is None:
        return stamp
    return stamp if stamp > current else (current + 1) % (1 << 32)


def render_zone(template: str, context: dict[str, Any], source: str = "template") -> str:
    """Render a zone file with Jinja2 (undefined names are errors, not blanks)."""
    try:
        import jinja2
    except ImportError:
        raise DnsError("Jinja2 is missing (apt-get install python3-jinja2)") from None
    try:
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        return env.from_string(template).render(**context)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        tb = exc.__traceback__
        while line is None and tb is not None:  # runtime errors: the template's own frame
            if tb.tb_frame.f_code.co_filename == "<template>":
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f"{source}:{line}" if line else source
        raise DnsError(f"{where}: zone template error: {exc}") from None


def install_zone(
    text: str,
    path: str,
    zone: str,
    checkzone: str = "named-checkzone",
    reload_argv: list[str] | None = None,
) -> str:
    """Check, atomically install and reload a zone file; returns the checker's output.

    The file is written next to its target and checked there; a file that
    fails ``named-checkzone`` is removed and the live zone is not touched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".multiall-", suffix=".zone", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        check = subprocess.run(
            [checkzone, "-k", "fail", zone, tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            detail = (check.stdout + check.stderr).replace(tmp, "<new zone>").strip()
            raise DnsError(
                f"named-checkzone rejected the new zone {zone}; the live zone is unchanged: {detail}"
            )
        if os.path.exists(path):
            st = os.stat(path)
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, st.st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if reload_argv:
        done = subprocess.run(reload_argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DnsError(
                f"zone {zone} installed at {path} but `{' '.join(reload_argv)}` failed: "
                f"{(done.stderr or done.stdout).strip()}"
            )
    return check.stdout.strip()


# -------------------------------------------------------------- reconcile
def pool_addresses(model: Any, pool: str) -> dict[str, str]:
    """Every declared member of the pool and its address."""
    return {n: model.effective(n).address for n in model.members(pool)}


def zone_server(settings: dict[str, Any], override: str | None = None) -> str:
    """The DNS server to talk to: the override, else the pool's ``dns.server``."""
    server = override or settings.get("server")
    if not server:
        raise DnsError(f"zone {settings['zone']}: no DNS server; set dns.server in the pool model")
    return str(server)


def owned_keys(settings: dict[str, Any], addresses: dict[str, str]) -> list[tuple[str, str]]:
    """Every (name, type) MultiAll owns in the zone; the same whoever is up."""
    return list(wanted_rrsets(settings, addresses, []))


def compare(
    settings: dict[str, Any],
    addresses: dict[str, str],
    members: list[str],
    served: dict[tuple[str, str], RRset],
    server: str,
) -> dict[str, Any]:
    """Wanted vs served for the owned record sets, and the changes between them."""
    unknown = sorted(set(members) - set(addresses))
    if unknown:
        raise DnsError(f"not members of the pool: {', '.join(unknown)}")
    wanted = wanted_rrsets(settings, addresses, members)
    changes = diff_rrsets(wanted, served)
    return {
        "zone": settings["zone"],
        "server": server,
        "members": sorted(members),
        "wanted": wanted,
        "served": served,
        "changes": changes,
        "diff": describe(changes),
        "before": zone_text(served),
        "after": zone_text(wanted),
    }


def plan(
    settings: dict[str, Any],
    addresses: dict[str, str],
    members: list[str],
    server: str,
    port: int = 53,
    timeout: float = 2.0,
) -> dict[str, Any]:
    """Ask the server for the owned record sets and :func:`compare` them with the wanted ones."""
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
    mode = settings["mode"]
    if mode == "rebuild":
        # Render even when nothing changed so a broken template is reported early.
        serial = next_serial(soa_serial(server, settings["zone"], port, timeout))
        ns_address = server if _is_ip(server) else ""
        text = render_zone(
            template or DEFAULT_TEMPLATE,
            {
                "zone": settings["zone"],
                "ttl": settings["ttl"],
                "serial": serial,
                "ns_name": f"ns.{settings['zone']}",
                "ns_address": ns_address,
                "rrsets": [r for _, r in sorted(result["wanted"].items()) if r.values],
                "members": result["members"],
                "addresses": addresses,
            },
            template_source,
        )
        result["serial"] = serial
        if result["changed"] and not check:
            path = zone_file or f"/var/lib/bind/multiall/{settings['zone']}.zone"
            install_zone(
                text,
                path,
                settings["zone"],
                reload_argv=reload_argv
                if reload_argv is not None
                else ["rndc", "reload", settings["zone"]],
            )
            result["zone_file"] = path
    elif mode == "update":
        if result["changed"] and not check:
            if key is None:
                raise DnsError("a TSIG key is needed for dynamic updates (key_file or key_secret)")
            result["update_ms"] = round(
                apply_update(server, settings["zone"], key, result["changes"], port, timeout)
                * 1000,
                2,
            )
    else:
        raise DnsError(
            f"zone {settings['zone']}: mode {mode!r} needs FS-SA to carry zone files to the "
            "secondaries, which is not built yet; use mode update or rebuild"
        )
    result["wanted"] = rrset_lines(result["wanted"])
    result["served"] = rrset_lines(result["served"])
    return result


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
