# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SBM: evaluate Baseline Rules on this node and fold them into an SBM status.

Shared by the ``baseline`` module (one evaluation, on demand) and the
TakeConnector scheduler (24/7). Statuses are the Nagios codes ``0 OK,
1 WARNING, 2 CRITICAL, 3 UNKNOWN`` plus ``MAINTENANCE``; a node's status is its
worst rule. A check that cannot run (missing tool, timeout, bad answer) is
UNKNOWN, never OK. Rule shapes are validated by the pool model
(``_pools_spec.BASELINE_RULE``, built from ``KINDS`` here); this file trusts them.

Standard library only, plus psutil where a rule needs it (cpu, memory, swap,
process): without psutil those rules are UNKNOWN with a message saying so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._sbm_perfdata import parse_perfdata, perf_item, perf_of, split_plugin_output

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
MAINTENANCE = "MAINTENANCE"
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Worst first when folding: CRITICAL > WARNING > UNKNOWN > OK (as Nagios ranks them).
_SEVERITY = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}

try:
    import psutil

    HAS_PSUTIL = True
except ImportError:  # pragma: no cover - exercised on nodes without python3-psutil
    psutil = None
    HAS_PSUTIL = False


@dataclass
class Result:
    """One rule's outcome."""

    rule: str
    kind: str
    status: int
    message: str
    value: float | str | None = None
    warn: float | None = None
    crit: float | None = None
    perfdata: dict[str, Any] = field(default_factory=dict)
    took_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (module results, control socket, Serf query answers)."""
        return {
            "rule": self.rule,
            "kind": self.kind,
            "status": self.status,
            "status_name": NAMES[self.status],
            "message": self.message,
            "value": self.value,
            "warn": self.warn,
            "crit": self.crit,
            "perfdata": self.perfdata,
            "took_ms": self.took_ms,
        }


def worst(statuses: list[int]) -> int:
    """The node's status: its worst rule (OK when there are none)."""
    return max(statuses, key=lambda s: _SEVERITY[s], default=OK)


# Which way warn/crit point, for the kinds whose value threshold() compares: a
# higher value is worse (warn <= crit) except for `peer`, the number of pool
# peers reachable (warn >= crit). The pool model validates rules with these.
HIGHER_IS_WORSE = frozenset({"cpu", "load", "memory", "swap", "disk", "tcp", "http"})
LOWER_IS_WORSE = frozenset({"peer"})


def threshold(value: float, rule: dict[str, Any], lower_is_worse: bool = False) -> int:
    """Compare a measured value with the rule's warn/crit."""
    warn, crit = rule.get("warn"), rule.get("crit")
    if lower_is_worse:
        if crit is not None and value <= crit:
            return CRITICAL
        if warn is not None and value <= warn:
            return WARNING
        return OK
    if crit is not None and value >= crit:
        return CRITICAL
    if warn is not None and value >= warn:
        return WARNING
    return OK


class CheckError(Exception):
    """A check could not produce a value: the rule is UNKNOWN."""


def _need_psutil() -> Any:
    if not HAS_PSUTIL:
        raise CheckError("needs psutil (Debian package python3-psutil)")
    return psutil


# ---------------------------------------------------------------- checks
# Each check returns (status, message, value, perfdata) or raises CheckError.
Check = Callable[[dict[str, Any], float], tuple[int, str, Any, dict[str, Any]]]


def check_cpu(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    pct = _need_psutil().cpu_percent(interval=min(0.2, timeout / 2))
    return threshold(pct, rule), f"cpu {pct:.1f}%", pct, perf_of(rule, "cpu", pct, "%", 0, 100)


def check_load(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    load1 = os.getloadavg()[0]
    value = load1 / (os.cpu_count() or 1) if rule.get("per_cpu") else load1
    return (
        threshold(value, rule),
        f"load {value:.2f}",
        round(value, 3),
        perf_of(rule, "load1", round(load1, 3), minimum=0),
    )


def check_memory(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    pct = _need_psutil().virtual_memory().percent
    return threshold(pct, rule), f"memory used {pct:.1f}%", pct, perf_of(rule, "memory", pct, "%")


def check_swap(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    pct = _need_psutil().swap_memory().percent
    return threshold(pct, rule), f"swap used {pct:.1f}%", pct, perf_of(rule, "swap", pct, "%")


def check_disk(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    mount = rule.get("mount", "/")
    try:
        st = os.statvfs(mount)
    except OSError as exc:
        raise CheckError(f"cannot stat {mount}: {exc.strerror}") from None
    if rule.get("inodes"):
        total, free, what = st.f_files, st.f_favail, "inodes"
    else:
        total, free, what = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, "space"
    if not total:
        raise CheckError(f"{mount} reports no {what}")
    pct = round(100.0 * (total - free) / total, 2)
    perf = perf_of(rule, f"{mount}_{what}", pct, "%", 0, 100)
    return threshold(pct, rule), f"{mount} {what} used {pct:.1f}%", pct, perf


def check_process(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    ps = _need_psutil()
    name, cmdline, user = rule.get("name"), rule.get("cmdline"), rule.get("user")
    count = 0
    table = _snapshot(
        "processes",
        lambda: [
            (p.info.get("name"), " ".join(p.info.get("cmdline") or []), p.info.get("username"))
            for p in ps.process_iter(["name", "cmdline", "username"])
        ],
    )
    for proc_name, proc_cmdline, proc_user in table:
        info = {"name": proc_name, "cmdline": proc_cmdline, "username": proc_user}
        if name and info.get("name") != name:
            continue
        if cmdline and cmdline not in info["cmdline"]:
            continue
        if user and info.get("username") != user:
            continue
        count += 1
    low, high = rule.get("min", 1), rule.get("max")
    what = name or cmdline or "process"
    perf = {"count": perf_item(count, minimum=0)}
    if count < low or (high is not None and count > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        return CRITICAL, f"{count} {what} process(es), expected {bounds}", count, perf
    return OK, f"{count} {what} process(es)", count, perf


_SNAPSHOTS: dict[str, tuple[float, Any]] = {}
SNAPSHOT_TTL = 0.25


def _snapshot(key: str, build: Callable[[], Any]) -> Any:
    """Share one expensive read (socket table, process table) among the rules of a cycle.

    200 rules in a cycle would otherwise re-read /proc for every port or process
    rule; a reading at most SNAPSHOT_TTL old is as true as a fresh one for a
    check that runs every few seconds.
    """
    now = time.monotonic()
    cached = _SNAPSHOTS.get(key)
    if cached and now - cached[0] < SNAPSHOT_TTL:
        return cached[1]
    value = build()
    _SNAPSHOTS[key] = (now, value)
    return value


def _listening_ports(proto: str) -> frozenset[int]:
    """Local ports in LISTEN (tcp) or bound (udp), from /proc/net."""
    ports = set()
    for kind in ("tcp", "tcp6") if proto == "tcp" else ("udp", "udp6"):
        try:
            with open(f"/proc/net/{kind}") as handle:
                next(handle)
                for line in handle:
                    parts = line.split(None, 4)
                    if proto == "udp" or parts[3] == "0A":
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration):
            continue
    return frozenset(ports)


def _listening(port: int, proto: str) -> bool:
    """Is anything listening on ``port`` (any local address)?"""
    return port in _snapshot(f"listen-{proto}", lambda: _listening_ports(proto))


def check_port(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    port, proto = int(rule["port"]), rule.get("proto", "tcp")
    if _listening(port, proto):
        return OK, f"{proto}/{port} is listening", 1, {}
    return CRITICAL, f"nothing listens on {proto}/{port}", 0, {}


def check_tcp(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    start = time.monotonic()
    try:
        with socket.create_connection((rule["host"], int(rule["port"])), timeout=timeout):
            pass
    except OSError as exc:
        return (
            CRITICAL,
            f"{rule['host']}:{rule['port']} unreachable: {exc.strerror or exc}",
            None,
            {},
        )
    ms = round((time.monotonic() - start) * 1000, 2)
    status = threshold(ms, rule)
    perf = perf_of(rule, "connect_ms", ms, "ms", 0)
    return status, f"{rule['host']}:{rule['port']} answered in {ms} ms", ms, perf


def check_http(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    # Imported here: ansible's urls module is heavy and only http rules need it.
    import urllib.error

    from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
    from ansible.module_utils.urls import open_url

    start = time.monotonic()
    try:
        resp = open_url(rule["url"], timeout=timeout)
        with resp:
            code, body = resp.status, resp.read(1 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        code, body = exc.code, ""
    except (urllib.error.URLError, UrlsConnectionError, OSError) as exc:
        return CRITICAL, f"{rule['url']}: {getattr(exc, 'reason', exc)}", None, {}
    ms = round((time.monotonic() - start) * 1000, 2)
    perf = perf_of(rule, "ms", ms, "ms", 0)
    want = rule.get("status", 200)
    if code != want:
        return CRITICAL, f"{rule['url']}: status {code}, expected {want}", ms, perf
    if rule.get("match") and rule["match"] not in body:
        return CRITICAL, f"{rule['url']}: body does not contain {rule['match']!r}", ms, perf
    return threshold(ms, rule), f"{rule['url']}: {code} in {ms} ms", ms, perf


def check_dns(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    name, expect = rule["name"], sorted(rule.get("expect") or [])
    try:
        if rule.get("server"):
            import dns.resolver  # dnspython, when a specific server is asked

            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [rule["server"]]
            resolver.lifetime = timeout
            answer = resolver.resolve(name, rule.get("type", "A"))
            got = sorted(r.to_text() for r in answer)
        else:
            got = sorted(
                {i[4][0] for i in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
            )
    except ImportError:
        raise CheckError("a dns rule with 'server' needs dnspython") from None
    except Exception as exc:
        return CRITICAL, f"{name} does not resolve: {exc}", None, {}
    if expect and got != expect:
        return CRITICAL, f"{name} resolves to {got}, expected {expect}", ",".join(got), {}
    return OK, f"{name} resolves to {got}", ",".join(got), {}


def check_file(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    import hashlib
    import pwd

    path = rule["path"]
    try:
        st = os.stat(path)
    except OSError:
        return CRITICAL, f"{path} does not exist", None, {}
    problems = []
    if rule.get("mode") and oct(st.st_mode & 0o7777) != oct(int(rule["mode"], 8)):
        problems.append(f"mode {oct(st.st_mode & 0o7777)[2:]:>04}, expected {rule['mode']}")
    if rule.get("owner"):
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        if owner != rule["owner"]:
            problems.append(f"owner {owner}, expected {rule['owner']}")
    if rule.get("checksum"):
        algo, _sep, want = rule["checksum"].rpartition(":")
        digest = hashlib.new(algo or "sha256")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 16), b""):
                digest.update(chunk)
        if digest.hexdigest() != want:
            problems.append("checksum differs")
    age = time.time() - st.st_mtime
    if rule.get("max_age") is not None and age > rule["max_age"]:
        problems.append(f"{age:.0f} s old, at most {rule['max_age']} s expected")
    if problems:
        return CRITICAL, f"{path}: " + "; ".join(problems), round(age, 1), {}
    return OK, f"{path} as expected", round(age, 1), {"age": perf_item(round(age, 1), "s", 0)}


def check_package(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    import fnmatch

    if not shutil.which("dpkg-query"):
        raise CheckError("dpkg-query is not available")
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}\t${Version}", "--", rule["name"]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    status, _sep, version = proc.stdout.partition("\t")
    if proc.returncode != 0 or not status.endswith("installed"):
        return CRITICAL, f"package {rule['name']} is not installed", None, {}
    if rule.get("version") and not fnmatch.fnmatch(version, rule["version"]):
        return CRITICAL, f"{rule['name']} {version}, expected {rule['version']}", version, {}
    return OK, f"{rule['name']} {version} installed", version, {}


def check_service(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    if not shutil.which("systemctl") or not os.path.isdir("/run/systemd/system"):
        raise CheckError("no systemd here: use a 'process' rule for this service")
    proc = subprocess.run(
        ["systemctl", "is-active", "--", rule["name"]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    state = proc.stdout.strip() or "unknown"
    return (OK if state == "active" else CRITICAL), f"{rule['name']} is {state}", state, {}


def check_command(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    command = rule["command"]
    argv = command if isinstance(command, list) else ["/bin/sh", "-c", str(command)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise CheckError(f"command not found: {argv[0]}") from None
    message, perf = split_plugin_output(proc.stdout)
    status = proc.returncode if proc.returncode in (0, 1, 2, 3) else UNKNOWN
    text = message or proc.stderr.strip()[:200] or f"exit {proc.returncode}"
    return status, text, proc.returncode, parse_perfdata(perf)


def check_peer(rule: dict[str, Any], timeout: float) -> tuple[int, str, Any, dict[str, Any]]:
    reachable = rule.get("_reachable_peers")
    if reachable is None:
        raise CheckError("peer rules need TNS (evaluated by the connector)")
    return (
        threshold(float(reachable), rule, lower_is_worse=rule["kind"] in LOWER_IS_WORSE),
        f"{reachable} pool peer(s) reachable",
        reachable,
        {},
    )


CHECKS: dict[str, Check] = {
    "cpu": check_cpu,
    "load": check_load,
    "memory": check_memory,
    "swap": check_swap,
    "disk": check_disk,
    "process": check_process,
    "port": check_port,
    "tcp": check_tcp,
    "http": check_http,
    "dns": check_dns,
    "file": check_file,
    "package": check_package,
    "service": check_service,
    "command": check_command,
    "peer": check_peer,
}
# The one list of rule kinds: a kind exists because a check implements it. The
# pool model's validator offers exactly these (``_pools_spec.BASELINE_PARAMS``
# adds each kind's own parameters).
KINDS = tuple(sorted(CHECKS))


def evaluate(name: str, rule: dict[str, Any]) -> Result:
    """Run one rule once; any failure to measure becomes UNKNOWN with the reason."""
    kind = rule["kind"]
    timeout = float(rule.get("timeout", 10))
    start = time.monotonic()
    try:
        status, message, value, perf = CHECKS[kind](rule, timeout)
    except CheckError as exc:
        status, message, value, perf = UNKNOWN, str(exc), None, {}
    except subprocess.TimeoutExpired:
        status, message, value, perf = UNKNOWN, f"timed out after {timeout:g} s", None, {}
    except Exception as exc:
        status, message, value, perf = UNKNOWN, f"{type(exc).__name__}: {exc}", None, {}
    return Result(
        rule=name,
        kind=kind,
        status=status,
        message=message,
        value=value,
        warn=rule.get("warn"),
        crit=rule.get("crit"),
        perfdata=perf,
        took_ms=round((time.monotonic() - start) * 1000, 2),
    )


def evaluate_all(rules: dict[str, dict[str, Any]]) -> list[Result]:
    """Every enabled rule once, in name order."""
    return [
        evaluate(name, rule) for name, rule in sorted(rules.items()) if rule.get("enabled", True)
    ]


class RuleState:
    """Flap damping: a rule's reported status changes only after ``for`` equal results.

    Recovery to OK can additionally require ``hold_down`` seconds of OK.
    """

    def __init__(self, consecutive: int = 1, hold_down: float = 0.0) -> None:
        self.consecutive = max(1, consecutive)
        self.hold_down = hold_down
        self.reported = UNKNOWN
        self.measured = False  # the first result is taken as is: there is no flap to damp yet
        self.since = time.time()
        self._candidate: int | None = None
        self._count = 0
        self._ok_since: float | None = None

    def update(self, status: int, now: float | None = None) -> bool:
        """Feed one result; True when the reported status changed."""
        now = time.time() if now is None else now
        if not self.measured:
            self.measured = True
            changed = status != self.reported
            self.reported, self.since = status, now
            return changed
        if status == self.reported:
            self._candidate, self._count = None, 0
            self._ok_since = None
            return False
        if status != self._candidate:
            self._candidate, self._count = status, 0
            self._ok_since = now if status == OK else None
        self._count += 1
        ready = self._count >= self.consecutive
        if status == OK and self.reported != UNKNOWN:
            ready = ready and now - (self._ok_since or now) >= self.hold_down
        if ready:
            self.reported, self.since = status, now
            self._candidate, self._count, self._ok_since = None, 0, None
            return True
        return False
