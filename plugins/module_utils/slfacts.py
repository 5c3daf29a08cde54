# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SL-SA facts and drift: what a node has installed, and how it differs from the model.

One implementation shared by the ``pkg_converge`` module (on the managed node,
through AnsiballZ: stdlib only) and the connector's SL agent (which collects,
publishes and answers for the whole pool). The parsing is pure and unit-tested
on captured ``dpkg-query``/``ldconfig``/``dpkg -S``/``systemctl`` output; the
commands run through a ``Runner`` so the module can pass ``module.run_command``.

Facts are compact on purpose (they travel in Serf queries)::

    {"node": "n1", "at": 1764128400.0, "digest": "3f2a...",
     "packages": {"bash": ["5.2.15-2+b2", 0], "libdemo": ["1.0", 1]},   # [version, held]
     "services": {"sshd": ["started", true]},                           # [state, enabled]
     "libraries": {"libz.so.1": "zlib1g"}}                              # soname -> package
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

Runner = Callable[[list[str]], "tuple[int, str, str]"]

DPKG_STATUS = "/var/lib/dpkg/status"
LAB_SUPERVISOR = "/run/lab/supervisor.sock"
# Fields: name, version, status (installed, config-files...), selection (install, hold...).
DPKG_FORMAT = "${Package}\\t${Version}\\t${db:Status-Status}\\t${db:Status-Want}\\n"
SECTIONS = ("packages", "services", "libraries")


class FactsError(Exception):
    """A fact-gathering command failed; the message names the command and its error."""


def run(argv: list[str]) -> tuple[int, str, str]:
    """Default runner: the command's exit status, stdout and stderr (C locale)."""
    env = {**os.environ, "LC_ALL": "C"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        return 127, "", f"{argv[0]}: {exc.strerror or exc}"
    return proc.returncode, proc.stdout, proc.stderr


# --------------------------------------------------------------------- parsing
def parse_dpkg_query(text: str) -> dict[str, list[Any]]:
    """``dpkg-query -W -f=DPKG_FORMAT`` -> ``{name: [version, held]}`` (installed only).

    Held is 1 when the selection is ``hold`` (``apt-mark hold`` / ``dpkg
    --set-selections``): the same fact ``apt-mark showhold`` lists, in the same call.
    """
    out: dict[str, list[Any]] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 4 or parts[2] not in ("installed", "half-configured", "unpacked"):
            continue
        name, version, _status, want = parts
        out[name] = [version, 1 if want == "hold" else 0]
    return out


def parse_ldconfig(text: str) -> dict[str, list[str]]:
    """``ldconfig -p`` -> ``{soname: [paths]}`` (one soname may exist for several ABIs)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=>" not in line or not line.startswith(("\t", " ")):
            continue
        left, path = line.rsplit("=>", 1)
        soname = left.strip().split(" ", 1)[0]
        out.setdefault(soname, []).append(path.strip())
    return out


def parse_dpkg_search(text: str) -> dict[str, str]:
    """``dpkg -S PATH...`` -> ``{path: package}`` (first owner; diversions skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(("diversion by", "local diversion")) or ": " not in line:
            continue
        owners, path = line.split(": ", 1)
        first = owners.split(",")[0].strip()
        out[path.strip()] = first.split(":")[0]
    return out


def parse_systemctl(units: str, unit_files: str) -> dict[str, list[Any]]:
    """``systemctl list-units`` + ``list-unit-files`` (plain, no legend) -> services."""
    enabled: dict[str, bool] = {}
    for line in unit_files.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(".service"):
            enabled[parts[0][: -len(".service")]] = parts[1] in ("enabled", "enabled-runtime")
    out: dict[str, list[Any]] = {n: ["stopped", e] for n, e in enabled.items()}
    for line in units.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].endswith(".service"):
            name = parts[0][: -len(".service")]
            state = "started" if parts[2] == "active" else "stopped"
            out[name] = [state, enabled.get(name)]
    return out


def parse_supervisor(reply: dict[str, Any]) -> dict[str, list[Any]]:
    """The lab supervisor's ``list`` reply -> services (``enabled`` = restarted when it exits)."""
    return {
        s["name"]: ["started" if s.get("running") else "stopped", bool(s.get("restart"))]
        for s in reply.get("services") or []
        if isinstance(s, dict) and isinstance(s.get("name"), str)
    }


# ------------------------------------------------------------------ collection
def _alternate(path: str) -> str:
    """/lib/x -> /usr/lib/x and back: with merged /usr, dpkg may know either spelling."""
    return path[4:] if path.startswith("/usr/") else "/usr" + path


def library_owners(sonames: dict[str, list[str]], runner: Runner) -> dict[str, str]:
    """``{soname: package}`` with one batched ``dpkg -S`` over every path (and its twin)."""
    paths = sorted({p for ps in sonames.values() for p in ps for p in (p, _alternate(p))})
    owners: dict[str, str] = {}
    if paths:
        # Exit 1 only means some paths are nobody's (a twin, a local library): expected.
        _rc, out, _err = runner(["dpkg", "-S", *paths])
        owners = parse_dpkg_search(out)
    result = {}
    for soname, ps in sorted(sonames.items()):
        pkg = next((owners[q] for p in ps for q in (p, _alternate(p)) if q in owners), "")
        result[soname] = pkg
    return result


def service_states(runner: Runner) -> dict[str, list[Any]]:
    """Services and their state from this machine's service manager.

    The lab has no systemd: its nodes' PID 1 is the lab supervisor, so when its
    socket is there it is the service manager (the one small adapter SL-SA needs).
    """
    if os.path.exists(LAB_SUPERVISOR):
        from ._control import exchange

        try:
            return parse_supervisor(exchange(LAB_SUPERVISOR, {"op": "status"}, 5))
        except (OSError, ValueError) as exc:
            raise FactsError(f"lab supervisor {LAB_SUPERVISOR}: {exc}") from None
    if not shutil.which("systemctl"):
        return {}
    plain = ["--plain", "--no-legend", "--no-pager"]
    _rc, units, _e = runner(["systemctl", "list-units", "--type=service", "--all", *plain])
    _rc, files, _e = runner(["systemctl", "list-unit-files", "--type=service", *plain])
    return parse_systemctl(units, files)


def digest(facts: dict[str, Any]) -> str:
    """A short hash of what was found (not when): equal digests, equal facts."""
    body = json.dumps([facts.get(k) for k in SECTIONS], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def collect(node: str, runner: Runner = run) -> dict[str, Any]:
    """Everything SL-SA knows about this node, in the compact form above."""
    rc, out, err = runner(["dpkg-query", "-W", f"-f={DPKG_FORMAT}"])
    if rc != 0:
        raise FactsError(f"dpkg-query -W failed (exit {rc}): {err.strip()}")
    packages = parse_dpkg_query(out)
    rc, out, err = runner(["ldconfig", "-p"])
    if rc != 0:
        raise FactsError(f"ldconfig -p failed (exit {rc}): {err.strip()}")
    facts: dict[str, Any] = {
        "node": node,
        "at": round(time.time(), 3),
        "packages": packages,
        "services": service_states(runner),
        "libraries": library_owners(parse_ldconfig(out), runner),
    }
    facts["digest"] = digest(facts)
    return facts


def check_facts(node: str, facts: Any) -> dict[str, Any]:
    """Facts that came from a peer, checked before use: ValueError names what is wrong."""
    if not isinstance(facts, dict):
        raise ValueError(f"{node}: SL facts are not a JSON object")
    for key in SECTIONS:
        if not isinstance(facts.get(key), dict):
            raise ValueError(f"{node}: SL facts have no '{key}' mapping")
    for name, value in facts["packages"].items():
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
            raise ValueError(f"{node}: SL facts: package {name!r} is not [version, held]")
    return facts


# ----------------------------------------------------------------------- drift
def version_matches(installed: str, wanted: str) -> bool:
    """``1.22*`` is a glob over the installed version; anything else must be equal."""
    if any(c in wanted for c in "*?["):
        return fnmatch.fnmatchcase(installed, wanted)
    return installed == wanted


def _package_cell(spec: dict[str, Any] | None, have: list[Any] | None) -> dict[str, Any]:
    installed = have[0] if have else None
    cell: dict[str, Any] = {"installed": installed, "held": bool(have and have[1])}
    if spec is None:
        return {**cell, "expected": None, "ok": True}
    state = spec.get("state") or "present"
    if state == "absent":
        return {**cell, "expected": "absent", "ok": installed is None}
    expected = spec.get("version") or "any"
    ok = installed is not None and (
        "version" not in spec or version_matches(installed, spec["version"])
    )
    if "hold" in spec and installed is not None and bool(spec["hold"]) != cell["held"]:
        ok = False
        expected += " (held)" if spec["hold"] else " (not held)"
    return {**cell, "expected": expected, "ok": ok}


def _service_cell(spec: dict[str, Any] | None, have: list[Any] | None) -> dict[str, Any]:
    installed = f"{have[0]}" + (" enabled" if have and have[1] else "") if have else None
    if spec is None:
        return {"installed": installed, "expected": None, "ok": True}
    parts = [spec.get("state") or "started"]
    ok = (
        bool(have) and have[0] == parts[0]
        if parts[0] == "started"
        else not have or have[0] == "stopped"
    )
    if "enabled" in spec:
        parts.append("enabled" if spec["enabled"] else "disabled")
        # A manager that cannot say (None) is not drift: only a definite answer is.
        if have and have[1] is not None and bool(have[1]) != bool(spec["enabled"]):
            ok = False
    return {"installed": installed, "expected": " ".join(parts), "ok": ok}


def _library_cell(spec: dict[str, Any] | None, have: str | None) -> dict[str, Any]:
    installed = None if have is None else (have or "(no package)")
    if spec is None:
        return {"installed": installed, "expected": None, "ok": True}
    if (spec.get("state") or "present") == "absent":
        return {"installed": installed, "expected": "absent", "ok": have is None}
    return {
        "installed": installed,
        "expected": spec.get("package") or "present",
        "ok": have is not None,
    }


CELLS = {"packages": _package_cell, "services": _service_cell, "libraries": _library_cell}


def node_drift(settings: dict[str, Any], facts: dict[str, Any]) -> list[dict[str, Any]]:
    """One node's differences from its merged settings: ``[{kind, name, installed, expected}]``."""
    out = []
    for kind, cell_of in CELLS.items():
        for name, spec in sorted((settings.get(kind) or {}).items()):
            cell = cell_of(spec or {}, facts[kind].get(name))
            if not cell["ok"]:
                out.append({"kind": kind, "name": name, **cell})
    return out


def drift_matrix(
    model: Any,
    nodes: Iterable[str],
    facts: dict[str, dict[str, Any] | None],
    errors: dict[str, str] | None = None,
    stale: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Rows = every package/service/library any of ``nodes`` must have; columns = nodes.

    A node whose facts are missing (down, no answer) has ``None`` cells and is
    listed under ``unreachable``: unknown is not "in sync". A node in ``stale``
    (node -> why its fresh facts are missing) is shown from its last known facts:
    its cells carry ``stale: true``, it is listed under ``stale`` with the reason
    and the time those facts were collected, and the report is not "in sync".
    Pools that disagree on a key of a node (``multiall pools check``) make that
    cell a conflict.
    """
    nodes = list(nodes)
    stale = {n: why for n, why in (stale or {}).items() if facts.get(n) is not None}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    conflicts = []
    for node in nodes:
        view = model.effective(node)
        for conflict in view.conflicts:
            if conflict.path and conflict.path[0] in CELLS and len(conflict.path) > 1:
                key = (conflict.path[0], str(conflict.path[1]))
                rows.setdefault(key, {})[node] = {
                    "installed": None,
                    "expected": "conflict: "
                    + ", ".join(f"{pool}={value}" for pool, value in conflict.values.items()),
                    "ok": False,
                    "conflict": conflict.message(),
                }
                conflicts.append(conflict.as_dict())
        for kind in CELLS:
            for name in view.settings.get(kind) or {}:
                rows.setdefault((kind, name), {})
    drifted: dict[str, int] = {}
    for (kind, name), cells in rows.items():
        for node in nodes:
            if node in cells:
                drifted[node] = drifted.get(node, 0) + 1
                continue
            node_facts = facts.get(node)
            spec = (model.effective(node).settings.get(kind) or {}).get(name)
            if node_facts is None:
                cells[node] = None
                continue
            cells[node] = CELLS[kind](
                spec if spec is None else (spec or {}), node_facts[kind].get(name)
            )
            if node in stale:
                cells[node]["stale"] = True
            if not cells[node]["ok"]:
                drifted[node] = drifted.get(node, 0) + 1
    return {
        "nodes": nodes,
        "rows": [
            {"kind": kind, "name": name, "cells": rows[(kind, name)]}
            for kind, name in sorted(rows, key=lambda k: (SECTIONS.index(k[0]), k[1]))
        ],
        "drifted": {n: drifted.get(n, 0) for n in nodes},
        "unreachable": {
            n: (errors or {}).get(n, "no facts") for n in nodes if facts.get(n) is None
        },
        "stale": {
            n: {"error": why, "at": (facts[n] or {}).get("at")} for n, why in sorted(stale.items())
        },
        "conflicts": conflicts,
        "digests": {n: (facts.get(n) or {}).get("digest") for n in nodes},
        "drift": any(drifted.values()) or any(facts.get(n) is None for n in nodes) or bool(stale),
    }
