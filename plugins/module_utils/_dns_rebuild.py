# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS-SA: whole zone files — rendered, checked, atomically installed, reloaded.

The one source of a pool zone's text: ``rebuild`` mode renders it here on
every change, and the ``dns_sa`` role writes the first (bootstrap) zone file
through the same template (:func:`bootstrap_zone`, via the
``takelan.multiall.dns_zone_bootstrap`` filter), so SOA, NS and TTLs cannot
drift between the two.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import tempfile
import time
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import RRset
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import (
    DnsError,
    settings_from_spec,
)

DEFAULT_TEMPLATE = """\
; Zone {{ zone }}: written by MultiAll DNS-SA. Do not edit: the pool's records are
; replaced by dynamic updates (mode update) or by the next rebuild (mode rebuild).
$ORIGIN {{ zone }}.
$TTL {{ ttl }}
@ {{ ttl }} IN SOA {{ ns_name }}. hostmaster.{{ zone }}. ( {{ serial }} 60 30 86400 {{ ttl }} )
@ {{ ttl }} IN NS {{ ns_name }}.
{% if ns_address %}{{ ns_name }}. {{ ttl }} IN A {{ ns_address }}
{% endif %}
{% for rr in rrsets %}{% for line in rr.lines() %}{{ line }}
{% endfor %}{% endfor %}"""
BOOTSTRAP_SERIAL = 1


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def zone_context(
    settings: dict[str, Any],
    serial: int,
    server: str,
    rrsets: dict[tuple[str, str], RRset],
    addresses: dict[str, str],
    members: list[str],
) -> dict[str, Any]:
    """What a zone template sees, the built-in one and a user's ``template`` alike.

    ``zone``, ``ttl``, ``serial``, ``ns_name`` (``ns.<zone>``), ``ns_address``
    (``server`` when it is an address, else empty: a host name needs no glue
    here), ``rrsets`` (the non-empty owned sets; ``rr.lines()`` gives their
    zone-file lines), ``members`` and ``addresses``.
    """
    return {
        "zone": settings["zone"],
        "ttl": settings["ttl"],
        "serial": serial,
        "ns_name": f"ns.{settings['zone']}",
        "ns_address": server if _is_ip(server) else "",
        "rrsets": [rrsets[key] for key in sorted(rrsets) if rrsets[key].values],
        "members": members,
        "addresses": addresses,
    }


def bootstrap_zone(spec: dict[str, Any], server: str) -> str:
    """The zone file the ``dns_sa`` role writes once, before the pool's records exist.

    ``spec`` is the pool's ``dns`` section as written in the pool model;
    ``server`` the address named answers on. Serial 1: every later write
    (dynamic update or rebuild) goes above it.
    """
    settings = settings_from_spec(spec)
    context = zone_context(settings, BOOTSTRAP_SERIAL, server, {}, {}, [])
    return render_zone(DEFAULT_TEMPLATE, context, "built-in template")


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
    Every failure (a directory that cannot be written, a missing checker or
    ``rndc``) is a :class:`DnsError` naming the path and what to do, never an
    ``OSError`` traceback.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".multiall-", suffix=".zone", dir=directory)
    except OSError as exc:
        raise DnsError(
            f"zone {zone}: cannot write a new zone file in {directory}: {exc.strerror or exc}; "
            "run the task on the DNS server as root (become: true) or set zone_file to the "
            "file named loads; the live zone is unchanged"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # "--": a zone name from the model is an operand even if it starts with "-".
        check = _run([checkzone, "-k", "fail", "--", zone, tmp], "bind9-utils")
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
    except OSError as exc:
        raise DnsError(
            f"zone {zone}: cannot install {path}: {exc.strerror or exc}; check that the "
            "task runs as root on the DNS server; the live zone is unchanged"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if reload_argv:
        done = _run(reload_argv, "bind9 (rndc)", f"zone {zone} installed at {path} but ")
        if done.returncode != 0:
            raise DnsError(
                f"zone {zone} installed at {path} but `{' '.join(reload_argv)}` failed: "
                f"{(done.stderr or done.stdout).strip()}; fix rndc (rndc status) and reload"
            )
    return check.stdout.strip()


def _run(argv: list[str], package: str, done: str = "") -> subprocess.CompletedProcess[str]:
    """Run a BIND tool; a tool that cannot be started is a DnsError naming its package."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DnsError(
            f"{done}cannot run {argv[0]}: {exc.strerror or exc}; install {package} "
            "(apt-get install bind9 bind9-utils)"
        ) from None
