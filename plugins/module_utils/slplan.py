# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SL-SA plans: what converging a node would do, simulated before anything changes.

``make_plan`` turns a node's merged settings and its facts (``slfacts``) into
apt requests, runs ``apt-get -s`` (nothing changes), and lists what an
administrator must see first:

- ``removed``: packages apt would remove that the model did not ask to remove;
- ``unsatisfiable``: apt cannot satisfy the request (its own explanation);
- ``downgrades``: a package going to an older version;
- ``held``: a held package the plan would change (the model did not unhold it);
- ``abi``: a soname that disappears (the package that ships it is removed or
  its new version no longer ships it, read from the ``.deb`` with
  ``dpkg-deb -c``) while a package that stays installed depends on that
  package, or the pool requires the library.

A plan with any of these is refused unless forced: ``apply_plan`` only runs
for a plan whose ``refused`` list is empty (or ``force``). Used by the
``pkg_converge`` module; stdlib only (AnsiballZ ships it).
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

from .slfacts import Runner, run, version_matches

PROBLEMS = ("removed", "unsatisfiable", "downgrades", "held", "abi")
_INST = re.compile(r"^Inst (\S+)(?: \[([^\]]+)\])? \((\S+)")
_REMV = re.compile(r"^Remv (\S+)(?: \[([^\]]+)\])?")
_SONAME_FILE = re.compile(r"^.*/(?:lib|lib64|lib/[^/]+)/([^/]+\.so(?:\.[0-9][0-9A-Za-z_.]*)?)$")


class PlanError(Exception):
    """apt could not even be asked (no candidate for a version, apt missing...)."""


# ------------------------------------------------------------ Debian versions
def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternating non-digit (with '~' lowest) and digit runs."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_version(v: str) -> tuple[int, str, str]:
    epoch, _sep, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    upstream, _sep, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return int(epoch or 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """<0, 0, >0 as Debian orders versions (``dpkg --compare-versions``), without dpkg."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


# --------------------------------------------------------------- apt parsing
def parse_simulation(text: str) -> dict[str, Any]:
    """``apt-get -s`` output -> installs/upgrades/downgrades, removals, held, apt's errors."""
    out: dict[str, Any] = {"inst": {}, "remv": {}, "held": [], "errors": []}
    section = None
    for line in text.splitlines():
        if m := _INST.match(line):
            out["inst"][m.group(1)] = {"from": m.group(2), "to": m.group(3)}
        elif m := _REMV.match(line):
            out["remv"][m.group(1)] = m.group(2)
        elif line.startswith("The following held packages will be changed"):
            section = "held"
        elif line.startswith("The following packages have unmet dependencies"):
            section = "errors"
        elif line.startswith("E: "):
            out["errors"].append(line[3:])
            section = None
        elif line.startswith(" ") and section == "held":
            out["held"].extend(line.split())
        elif line.startswith(" ") and section == "errors":
            out["errors"].append(" ".join(line.split()))
        elif not line.startswith(" "):
            section = None
    return out


def _madison(name: str, runner: Runner, apt: list[str]) -> list[str]:
    rc, out, _err = runner(["apt-cache", *apt, "madison", name])
    return (
        [p.split("|")[1].strip() for p in out.splitlines() if p.count("|") >= 2] if rc == 0 else []
    )


def resolve_version(name: str, wanted: str | None, runner: Runner, apt: list[str]) -> str | None:
    """The version to ask apt for: exact as given, a glob's best candidate, or None (any)."""
    if not wanted or not any(c in wanted for c in "*?["):
        return wanted or None
    for version in _madison(name, runner, apt):  # best first: priority, then version
        if version_matches(version, wanted):
            return version
    raise PlanError(f"package {name}: no version matching {wanted!r} in the apt sources")


# ------------------------------------------------------------------ planning
def requests(
    settings: dict[str, Any], facts: dict[str, Any], runner: Runner, apt: list[str]
) -> dict[str, Any]:
    """What the model asks of this node that it does not have yet (no apt call yet)."""
    want: dict[str, Any] = {
        "install": {},
        "remove": [],
        "hold": [],
        "unhold": [],
        "services": {},
        "enable": {},
    }
    for name, spec in sorted((settings.get("packages") or {}).items()):
        spec = spec or {}
        have = facts["packages"].get(name)
        state = spec.get("state") or "present"
        if state == "absent":
            if have:
                want["remove"].append(name)
            continue
        wanted = spec.get("version")
        if state == "latest":
            best = _madison(name, runner, apt)
            if best and (not have or have[0] != best[0]):
                want["install"][name] = best[0]
        elif not have or (wanted and not version_matches(have[0], wanted)):
            want["install"][name] = resolve_version(name, wanted, runner, apt)
        if "hold" in spec and bool(spec["hold"]) != bool(have and have[1]):
            want["hold" if spec["hold"] else "unhold"].append(name)
    for name, spec in sorted((settings.get("services") or {}).items()):
        spec = spec or {}
        have = facts["services"].get(name)
        target = spec.get("state") or "started"
        if (have[0] if have else "stopped") != target:
            want["services"][name] = target
        # A manager that cannot say (None) is left alone, as the drift report does.
        enabled = have[1] if have else False
        if "enabled" in spec and enabled is not None and bool(spec["enabled"]) != enabled:
            want["enable"][name] = bool(spec["enabled"])
    return want


def _shipped_sonames(name: str, version: str, runner: Runner, apt: list[str]) -> set[str] | None:
    """Sonames the .deb of NAME=VERSION ships (downloaded, listed with dpkg-deb -c)."""
    with tempfile.TemporaryDirectory(prefix="multiall-sl-") as tmp:
        rc, _out, _err = runner(
            [
                "sh",
                "-c",
                'cd "$1" && shift && exec "$@"',
                "sh",
                tmp,
                "apt-get",
                *apt,
                "-q",
                "download",
                f"{name}={version}",
            ]
        )
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")] if rc == 0 else []
        if not debs:
            return None
        rc, out, _err = runner(["dpkg-deb", "-c", os.path.join(tmp, debs[0])])
    found = set()
    for line in out.splitlines():
        path = line.split(" -> ")[0].split()[-1] if line.split() else ""
        if m := _SONAME_FILE.match(path.lstrip(".")):
            found.add(m.group(1))
    return found


def _dependers(runner: Runner) -> dict[str, set[str]]:
    """Installed package -> the packages it depends on (Depends + Pre-Depends)."""
    rc, out, _err = runner(
        ["dpkg-query", "-W", "-f=${Package}\\t${db:Status-Status}\\t${Depends}, ${Pre-Depends}\\n"]
    )
    deps: dict[str, set[str]] = {}
    for line in out.splitlines() if rc == 0 else []:
        parts = line.split("\t")
        if len(parts) == 3 and parts[1] == "installed":
            names = re.findall(r"(?:^|[,|]\s*)([a-z0-9][a-z0-9+.-]+)", parts[2])
            deps[parts[0]] = set(names)
    return deps


def abi_breaks(
    sim: dict[str, Any],
    settings: dict[str, Any],
    facts: dict[str, Any],
    runner: Runner,
    apt: list[str],
) -> list[dict[str, Any]]:
    """Sonames that disappear while something that stays needs them."""
    by_pkg: dict[str, set[str]] = {}
    for soname, pkg in facts["libraries"].items():
        if pkg:
            by_pkg.setdefault(pkg, set()).add(soname)
    changing = {p: i["to"] for p, i in sim["inst"].items() if i["from"] and p in by_pkg}
    changing.update({p: None for p in sim["remv"] if p in by_pkg})
    if not changing:
        return []
    required = {
        s
        for s, spec in (settings.get("libraries") or {}).items()
        if ((spec or {}).get("state") or "present") == "present"
    }
    deps = _dependers(runner)
    staying = {p for p in deps if p not in sim["remv"]}
    out = []
    for pkg, version in sorted(changing.items()):
        shipped = set() if version is None else _shipped_sonames(pkg, version, runner, apt)
        if shipped is None:
            out.append(
                {
                    "package": pkg,
                    "soname": None,
                    "needed_by": [],
                    "message": f"{pkg} {version}: could not download the .deb to check "
                    "which libraries it ships",
                }
            )
            continue
        for soname in sorted(by_pkg[pkg] - shipped):
            users = sorted(p for p in staying if pkg in deps[p] and p != pkg)
            if soname in required:
                users.insert(0, "(the pool's libraries)")
            if users:
                verb = "removed" if version is None else f"upgraded to {version}"
                out.append(
                    {
                        "package": pkg,
                        "soname": soname,
                        "needed_by": users,
                        "message": f"{soname} disappears ({pkg} {verb}) but is needed by "
                        + ", ".join(users),
                    }
                )
    return out


def _apt_args(want: dict[str, Any]) -> list[str]:
    args = [f"{n}={v}" if v else n for n, v in sorted(want["install"].items())]
    return args + [f"{n}-" for n in want["remove"]]


def make_plan(
    settings: dict[str, Any],
    facts: dict[str, Any],
    runner: Runner = run,
    apt: list[str] | None = None,
) -> dict[str, Any]:
    """The simulated plan of converging this node, with every problem an admin must see."""
    apt = list(apt or [])
    want = requests(settings, facts, runner, apt)
    plan: dict[str, Any] = {**want, "changes": {}, **{k: [] for k in PROBLEMS}}
    args = _apt_args(want)
    if args:
        rc, out, err = runner(["apt-get", *apt, "-s", "-q", "install", *args])
        sim = parse_simulation(out + "\n" + err)
        if rc != 0 or sim["errors"]:
            plan["unsatisfiable"] = sim["errors"] or [err.strip() or f"apt-get -s exit {rc}"]
        held_now = {n for n, (_v, h) in facts["packages"].items() if h}
        for name, change in sim["inst"].items():
            plan["changes"][name] = {"from": change["from"], "to": change["to"]}
            if change["from"] and compare_versions(change["to"], change["from"]) < 0:
                plan["downgrades"].append(f"{name} {change['from']} -> {change['to']}")
            if name in held_now and name not in want["unhold"]:
                plan["held"].append(name)
        for name, version in sim["remv"].items():
            plan["changes"][name] = {"from": version, "to": None}
            if name not in want["remove"]:
                plan["removed"].append(f"{name} {version or ''}".strip())
            if name in held_now and name not in want["unhold"]:
                plan["held"].append(name)
        plan["held"] = sorted(set(plan["held"]) | (set(sim["held"]) - set(want["unhold"])))
        if not plan["unsatisfiable"]:
            plan["abi"] = abi_breaks(sim, settings, facts, runner, apt)
    plan["refused"] = refusals(plan)
    plan["changed"] = bool(
        plan["changes"] or want["hold"] or want["unhold"] or want["services"] or want["enable"]
    )
    return plan


def refusals(plan: dict[str, Any]) -> list[str]:
    """One sentence per problem of the plan (empty: safe to apply)."""
    out = [f"would remove {r}, which the model does not remove" for r in plan["removed"]]
    out += [f"apt cannot satisfy the request: {e}" for e in plan["unsatisfiable"]]
    out += [f"would downgrade {d}" for d in plan["downgrades"]]
    out += [f"would change held package {h} (the model does not unhold it)" for h in plan["held"]]
    out += [a["message"] for a in plan["abi"]]
    return out


# ------------------------------------------------------------------ applying
def apply_plan(
    plan: dict[str, Any], runner: Runner = run, apt: list[str] | None = None, force: bool = False
) -> list[str]:
    """Carry out a plan (refused ones only with ``force``); returns the commands run.

    Raises PlanError with apt's message when a step fails; the steps before it
    stay done (apt is transactional per call, holds and services are each one call).
    """
    if plan["refused"] and not force:
        raise PlanError("refused plan: " + "; ".join(plan["refused"]))
    apt = list(apt or [])
    done = []
    steps: list[list[str]] = []
    if plan["unhold"]:
        steps.append(["apt-mark", "unhold", *plan["unhold"]])
    args = _apt_args(plan)
    if args:
        extra = ["--allow-downgrades", "--allow-change-held-packages", "--allow-remove-essential"]
        steps.append(
            [
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                *apt,
                "-y",
                "-q",
                "-o",
                "Dpkg::Options::=--force-confold",
                *(extra if force else []),
                "install",
                *args,
            ]
        )
    if plan["hold"]:
        steps.append(["apt-mark", "hold", *plan["hold"]])
    for step in steps:
        rc, out, err = runner(step)
        if rc != 0:
            raise PlanError(
                f"{' '.join(step[:4])}... failed (exit {rc}): {(err or out).strip()[-800:]}"
            )
        done.append(" ".join(step))
    for name, state in sorted(plan["services"].items()):
        done.append(set_service(name, state, runner))
    for name, enabled in sorted(plan.get("enable", {}).items()):
        done.append(enable_service(name, enabled, runner))
    return done


def set_service(name: str, state: str, runner: Runner) -> str:
    """Start or stop one service through this machine's service manager."""
    from .slfacts import LAB_SUPERVISOR

    if os.path.exists(LAB_SUPERVISOR):
        from ._control import exchange

        status = exchange(LAB_SUPERVISOR, {"op": "status", "name": name}, 5)
        if state == "stopped":
            exchange(LAB_SUPERVISOR, {"op": "stop", "name": name}, 10)
        elif not status.get("ok"):
            raise PlanError(f"service {name}: the lab supervisor does not know how to start it")
        else:
            svc = status["service"]
            exchange(LAB_SUPERVISOR, {"op": "start", "name": name, "argv": svc["argv"]}, 10)
        return f"lab supervisor: {state} {name}"
    verb = "start" if state == "started" else "stop"
    rc, out, err = runner(["systemctl", verb, name])
    if rc != 0:
        raise PlanError(f"systemctl {verb} {name} failed (exit {rc}): {(err or out).strip()}")
    return f"systemctl {verb} {name}"


def enable_service(name: str, enabled: bool, runner: Runner) -> str:
    """Enable or disable one service (started at boot / restarted by the lab supervisor)."""
    from .slfacts import LAB_SUPERVISOR

    if os.path.exists(LAB_SUPERVISOR):
        from ._control import exchange

        reply = exchange(LAB_SUPERVISOR, {"op": "enable", "name": name, "enabled": enabled}, 5)
        if not reply.get("ok"):
            raise PlanError(
                f"service {name}: the lab supervisor cannot "
                f"{'enable' if enabled else 'disable'} it: {reply.get('error')}"
            )
        return f"lab supervisor: {'enable' if enabled else 'disable'} {name}"
    verb = "enable" if enabled else "disable"
    rc, out, err = runner(["systemctl", verb, name])
    if rc != 0:
        raise PlanError(f"systemctl {verb} {name} failed (exit {rc}): {(err or out).strip()}")
    return f"systemctl {verb} {name}"


def _service_text(state: str, enabled: bool | None) -> str:
    return state + ("" if enabled is None else " enabled" if enabled else " disabled")


def state_text(facts: dict[str, Any], plan: dict[str, Any], after: bool) -> str:
    """The diff's side: one line per package/hold/service the plan touches, sorted."""
    lines = {}
    for name in {*plan["changes"], *plan["hold"], *plan["unhold"]}:
        have = facts["packages"].get(name)
        version, held = (have[0], bool(have[1])) if have else (None, False)
        if after:
            if name in plan["changes"]:
                version = plan["changes"][name]["to"]
            held = (held or name in plan["hold"]) and name not in plan["unhold"]
        text = version if version else "absent"
        lines[f"package {name}"] = text + (" (held)" if held and version else "")
    enable = plan.get("enable", {})
    for name in {*plan["services"], *enable}:
        have = facts["services"].get(name)
        state, enabled = (have[0], have[1]) if have else ("stopped", None)
        if after:
            state = plan["services"].get(name, state)
            enabled = enable.get(name, enabled)
        lines[f"service {name}"] = _service_text(state, enabled if name in enable else None)
    return "".join(f"{k}: {v}\n" for k, v in sorted(lines.items()))
