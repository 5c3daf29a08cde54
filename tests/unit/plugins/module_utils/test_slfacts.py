"""slfacts: parsing real command output, the drift of a node and of a pool, model libraries."""

from __future__ import annotations

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils import slfacts
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModel,
    PoolModelError,
)

DPKG = (
    "bash\t5.2.15-2+b2\tinstalled\tinstall\n"
    "libsldemo\t1.0\tinstalled\thold\n"
    "oldpkg\t0.1\tconfig-files\tdeinstall\n"
)
LDCONFIG = """\
3 libs found in cache `/etc/ld.so.cache'
\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1
\tlibsldemo.so.1 (libc6,x86-64) => /lib/libsldemo.so.1
\tlocal.so.0 (libc6,x86-64) => /opt/local.so.0
"""
DPKG_S = """\
zlib1g:amd64: /lib/x86_64-linux-gnu/libz.so.1
libsldemo: /usr/lib/libsldemo.so.1
diversion by foo from: /usr/bin/x
dpkg-query: no path found matching pattern /opt/local.so.0
"""


def runner(argv: list[str]) -> tuple[int, str, str]:
    """Canned answers of a node with bash, a held libsldemo, and an unowned library."""
    if argv[0] == "dpkg-query":
        return 0, DPKG, ""
    if argv[0] == "ldconfig":
        return 0, LDCONFIG, ""
    if argv[:2] == ["dpkg", "-S"]:
        return 1, DPKG_S, "dpkg-query: no path found matching pattern /usr/opt/local.so.0\n"
    raise AssertionError(argv)


def test_facts_hold_installed_packages_holds_and_library_owners(monkeypatch):
    monkeypatch.setattr(slfacts, "service_states", lambda _run: {"ssh": ["started", True]})
    facts = slfacts.collect("n1", runner)
    assert facts["packages"] == {"bash": ["5.2.15-2+b2", 0], "libsldemo": ["1.0", 1]}
    # /lib/libsldemo.so.1 is registered as /usr/lib/...: merged /usr is looked up both ways.
    assert facts["libraries"] == {
        "libsldemo.so.1": "libsldemo",
        "libz.so.1": "zlib1g",
        "local.so.0": "",
    }
    assert facts["services"] == {"ssh": ["started", True]}
    assert facts["digest"] == slfacts.digest({**facts, "at": 0})


def test_a_failing_dpkg_query_is_a_clear_error():
    with pytest.raises(slfacts.FactsError, match=r"dpkg-query -W failed \(exit 2\): locked"):
        slfacts.collect("n1", lambda argv: (2, "", "locked\n"))


def test_systemctl_and_lab_supervisor_parsing():
    units = "ssh.service loaded active running OpenBSD Secure Shell\ncron.service loaded inactive dead x\n"
    files = (
        "ssh.service enabled enabled\ncron.service disabled enabled\nfoo.service enabled enabled\n"
    )
    assert slfacts.parse_systemctl(units, files) == {
        "ssh": ["started", True],
        "cron": ["stopped", False],
        "foo": ["stopped", True],
    }
    reply = {"ok": True, "services": [{"name": "sshd", "running": True, "restart": True}]}
    assert slfacts.parse_supervisor(reply) == {"sshd": ["started", True]}


def test_peer_facts_are_checked_before_use():
    with pytest.raises(ValueError, match="n2: SL facts have no 'libraries' mapping"):
        slfacts.check_facts("n2", {"packages": {}, "services": {}})
    with pytest.raises(ValueError, match="package 'x' is not"):
        slfacts.check_facts("n2", {"packages": {"x": "1"}, "services": {}, "libraries": {}})


FACTS = {
    "packages": {"sl-base": ["2.0", 0], "sl-app": ["1.0", 1]},
    "services": {"ssh": ["started", True]},
    "libraries": {"libsldemo.so.1": "libsldemo"},
}


def test_node_drift_names_each_difference():
    settings = {
        "packages": {
            "sl-base": {"version": "1.*"},
            "sl-app": {"hold": False},
            "sl-gone": {"state": "absent"},
        },
        "services": {"ssh": {"state": "started", "enabled": True}, "cron": {}},
        "libraries": {"libsldemo.so.1": {"package": "libsldemo"}, "libx.so.2": {}},
    }
    drift = slfacts.node_drift(settings, FACTS)
    assert [(d["kind"], d["name"], d["installed"], d["expected"]) for d in drift] == [
        ("packages", "sl-app", "1.0", "any (not held)"),
        ("packages", "sl-base", "2.0", "1.*"),
        ("services", "cron", None, "started"),
        ("libraries", "libx.so.2", None, "present"),
    ]


MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web]}
  n2: {address: 198.18.0.12, pools: [web, api]}
  n3: {address: 198.18.0.13, pools: [web]}
pools:
  web:
    packages: {sl-base: "1.0"}
    libraries: {libsldemo.so.1: libsldemo}
  api:
    packages: {sl-base: "2.0"}
"""


def test_pool_matrix_marks_drift_unreachable_nodes_and_pool_conflicts():
    model = PoolModel.from_text(MODEL)
    good = {**FACTS, "packages": {"sl-base": ["1.0", 0]}, "digest": "d1"}
    matrix = slfacts.drift_matrix(
        model, ["n1", "n2", "n3"], {"n1": good, "n2": good, "n3": None}, {"n3": "no answer"}
    )
    rows = {(r["kind"], r["name"]): r["cells"] for r in matrix["rows"]}
    assert rows[("packages", "sl-base")]["n1"]["ok"] is True
    assert rows[("packages", "sl-base")]["n2"]["expected"] == "conflict: api=2.0, web=1.0"
    assert rows[("packages", "sl-base")]["n3"] is None
    assert matrix["unreachable"] == {"n3": "no answer"}
    assert matrix["drifted"] == {"n1": 0, "n2": 1, "n3": 0}
    assert "pools disagree" in matrix["conflicts"][0]["message"]
    assert matrix["drift"] is True


def test_pool_matrix_shows_a_stale_member_from_its_last_facts_and_is_not_in_sync():
    model = PoolModel.from_text(MODEL.replace("pools: [web, api]", "pools: [web]"))
    good = {**FACTS, "packages": {"sl-base": ["1.0", 0]}, "digest": "d1", "at": 5.0}
    old = {**good, "packages": {"sl-base": ["2.0", 0]}}
    matrix = slfacts.drift_matrix(
        model, ["n1", "n2", "n3"], {"n1": good, "n2": old, "n3": good}, {}, {"n2": "no answer"}
    )
    cells = matrix["rows"][0]["cells"]
    assert cells["n2"]["stale"] is True and cells["n2"]["installed"] == "2.0"
    assert "stale" not in cells["n1"]
    assert matrix["stale"] == {"n2": {"error": "no answer", "at": 5.0}}
    assert matrix["unreachable"] == {}
    assert matrix["drift"] is True


def test_libraries_in_the_model_are_validated_with_file_and_line():
    bad = MODEL.replace("libsldemo.so.1: libsldemo", "/usr/lib/libx.so.1: Libx")
    with pytest.raises(PoolModelError) as err:
        PoolModel.from_text(bad, "pools.yml")
    text = str(err.value)
    assert "pools.yml:8:17" in text and "'/usr/lib/libx.so.1' is not a soname" in text
    assert "'Libx' is not a Debian package name" in text


def test_a_required_library_whose_package_the_node_removes_is_an_error():
    bad = MODEL.replace('packages: {sl-base: "2.0"}', "packages: {libsldemo: {state: absent}}")
    with pytest.raises(PoolModelError, match=r"node .n2. must have library libsldemo\.so\.1"):
        PoolModel.from_text(bad)
