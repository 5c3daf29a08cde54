"""slplan: apt-get -s parsing, Debian version order, and which plans are refused."""

from __future__ import annotations

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils import slplan

REMOVES = """\
NOTE: This is only a simulation!
Reading package lists...
The following packages will be REMOVED:
  sl-app sl-base
The following NEW packages will be installed:
  sl-conflict
0 upgraded, 1 newly installed, 2 to remove and 0 not upgraded.
Remv sl-app [1.0]
Remv sl-base [1.0]
Inst sl-conflict (1.0 localhost [all])
Conf sl-conflict (1.0 localhost [all])
"""
UNMET = """\
Some packages could not be installed. This may mean that you have
The following packages have unmet dependencies:
 sl-needy : Depends: sl-missing but it is not installable
E: Unable to correct problems, you have held broken packages.
"""
DOWNGRADE_HELD = """\
The following held packages will be changed:
  sl-base
The following packages will be DOWNGRADED:
  sl-base
Inst sl-base [2.0] (1.0 localhost [all])
Conf sl-base (1.0 localhost [all])
"""
LIB_UPGRADE = (
    "Inst libsldemo [1.0] (2.0 localhost [amd64])\nConf libsldemo (2.0 localhost [amd64])\n"
)


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [
        ("1.0", "1.0", 0),
        ("2.0", "1.0", 1),
        ("1.0~rc1", "1.0", -1),
        ("1:0.9", "2.0", 1),
        ("1.10", "1.9", 1),
        ("1.0-2", "1.0-10", -1),
        ("5.2.15-2+b2", "5.2.15-2", 1),
    ],
)
def test_versions_order_as_dpkg_does(a, b, sign):
    result = slplan.compare_versions(a, b)
    assert (result > 0) - (result < 0) == sign


def test_simulation_output_is_parsed():
    sim = slplan.parse_simulation(REMOVES)
    assert sim["remv"] == {"sl-app": "1.0", "sl-base": "1.0"}
    assert sim["inst"] == {"sl-conflict": {"from": None, "to": "1.0"}}
    assert slplan.parse_simulation(UNMET)["errors"] == [
        "sl-needy : Depends: sl-missing but it is not installable",
        "Unable to correct problems, you have held broken packages.",
    ]
    assert slplan.parse_simulation(DOWNGRADE_HELD)["held"] == ["sl-base"]


def fake_apt(sim: str, rc: int = 0, debs: dict[str, list[str]] | None = None):
    """A runner answering apt-get -s with SIM; ``apt-get download`` drops a named .deb."""
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        if "-s" in argv:
            return rc, sim, ""
        if argv[0] == "sh" and "download" in argv:
            name, version = argv[-1].split("=")
            open(f"{argv[4]}/{name}_{version}.deb", "w").close()
            return 0, "", ""
        if argv[0] == "dpkg-deb":
            name = argv[-1].rsplit("/", 1)[-1].split("_")[0]
            lines = [f"-rw-r--r-- root/root 0 2026-01-01 00:00 .{p}" for p in (debs or {})[name]]
            return 0, "\n".join(lines), ""
        if argv[0] == "dpkg-query":
            return 0, "sl-app\tinstalled\tsl-base, libsldemo, \nlibsldemo\tinstalled\t, \n", ""
        raise AssertionError(argv)

    return runner, calls


FACTS = {
    "packages": {"sl-base": ["1.0", 0], "sl-app": ["1.0", 0], "libsldemo": ["1.0", 0]},
    "services": {},
    "libraries": {"libsldemo.so.1": "libsldemo"},
}


def test_a_plan_that_removes_unrequested_packages_is_refused_and_never_applied():
    runner, calls = fake_apt(REMOVES)
    plan = slplan.make_plan({"packages": {"sl-conflict": {}}}, FACTS, runner)
    assert plan["removed"] == ["sl-app 1.0", "sl-base 1.0"]
    assert plan["refused"][0] == "would remove sl-app 1.0, which the model does not remove"
    with pytest.raises(slplan.PlanError, match="refused plan: would remove sl-app"):
        slplan.apply_plan(plan, runner)
    assert not [c for c in calls if "-y" in c]


def test_unsatisfiable_downgrade_and_held_are_each_refused():
    runner, _calls = fake_apt(UNMET, rc=100)
    plan = slplan.make_plan({"packages": {"sl-needy": {}}}, FACTS, runner)
    assert plan["refused"][0].startswith("apt cannot satisfy the request: sl-needy : Depends")
    held = {**FACTS, "packages": {**FACTS["packages"], "sl-base": ["2.0", 1]}}
    runner, _calls = fake_apt(DOWNGRADE_HELD)
    plan = slplan.make_plan({"packages": {"sl-base": {"version": "1.0"}}}, held, runner)
    assert plan["refused"] == [
        "would downgrade sl-base 2.0 -> 1.0",
        "would change held package sl-base (the model does not unhold it)",
    ]


def test_a_soname_that_disappears_while_needed_is_refused():
    runner, _calls = fake_apt(
        LIB_UPGRADE, debs={"libsldemo": ["/usr/lib/libsldemo.so.2.0", "/usr/lib/libsldemo.so.2"]}
    )
    settings = {"packages": {"libsldemo": {"version": "2.0"}}, "libraries": {"libsldemo.so.1": {}}}
    plan = slplan.make_plan(settings, FACTS, runner)
    assert plan["abi"][0]["needed_by"] == ["(the pool's libraries)", "sl-app"]
    assert plan["refused"] == [
        "libsldemo.so.1 disappears (libsldemo upgraded to 2.0) but is needed by "
        "(the pool's libraries), sl-app"
    ]


def test_a_library_upgrade_that_keeps_its_soname_is_safe_and_applies():
    runner, _calls = fake_apt(
        LIB_UPGRADE, debs={"libsldemo": ["/usr/lib/libsldemo.so.1.1", "/usr/lib/libsldemo.so.1"]}
    )
    plan = slplan.make_plan(
        {"packages": {"libsldemo": {"version": "2.0", "hold": True}}}, FACTS, runner
    )
    assert plan["refused"] == [] and plan["changed"]
    done = slplan.apply_plan(plan, lambda argv: (0, "", ""))
    assert "install libsldemo=2.0" in done[0] and done[1] == "apt-mark hold libsldemo"
    assert slplan.state_text(FACTS, plan, after=True) == "package libsldemo: 2.0 (held)\n"


def test_nothing_to_do_is_no_change_and_no_apt_call():
    runner, calls = fake_apt("")
    plan = slplan.make_plan({"packages": {"sl-base": {"version": "1.*"}}}, FACTS, runner)
    assert plan["changed"] is False and plan["refused"] == [] and calls == []


def test_a_service_running_but_not_enabled_is_enabled_with_check_mode_diff(monkeypatch):
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        return 0, "", ""

    monkeypatch.setattr(slplan.os.path, "exists", lambda _p: False)  # no lab supervisor
    facts = {
        **FACTS,
        "services": {"web": ["started", False], "old": ["stopped", True], "odd": ["started", None]},
    }
    settings = {
        "services": {
            "web": {"state": "started", "enabled": True},
            "old": {"state": "stopped", "enabled": False},
            "odd": {"state": "started", "enabled": True},  # manager cannot say: left alone
        }
    }
    plan = slplan.make_plan(settings, facts, runner)
    assert plan["enable"] == {"web": True, "old": False}
    assert plan["services"] == {} and plan["changed"] is True and not plan["refused"]
    assert slplan.state_text(facts, plan, after=False) == (
        "service old: stopped enabled\nservice web: started disabled\n"
    )
    assert slplan.state_text(facts, plan, after=True) == (
        "service old: stopped disabled\nservice web: started enabled\n"
    )
    assert calls == []  # planning changes nothing
    assert slplan.apply_plan(plan, runner) == ["systemctl disable old", "systemctl enable web"]
    assert calls == [["systemctl", "disable", "old"], ["systemctl", "enable", "web"]]
    converged = {**facts, "services": {**facts["services"], "web": ["started", True]}}
    converged["services"]["old"] = ["stopped", False]
    assert slplan.make_plan(settings, converged, runner)["changed"] is False
