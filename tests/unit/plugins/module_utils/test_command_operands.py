"""Values from the pool model reach system tools as operands, never as options.

A package, service or zone name starting with ``-`` (``--admindir=/tmp/x``,
``-H``) would otherwise be parsed by ``dpkg-query``, ``systemctl`` or
``named-checkzone`` as an option. Each test puts a stand-in tool first on
``PATH`` that records its argv, runs the real check or install, and asserts
that ``--`` comes right before the value.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils import sbm
from ansible_collections.takelan.multiall.plugins.module_utils._dns_rebuild import install_zone

HOSTILE = "--admindir=/tmp/evil"


def recording_tool(directory: Path, name: str, stdout: str) -> Path:
    """An executable ``name`` that writes its argv (one per line) to ``name.argv``."""
    log = directory / f"{name}.argv"
    tool = directory / name
    tool.write_text(
        f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {log}\nprintf \'{stdout}\'\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return log


def argv_of(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_package_name_is_an_operand_of_dpkg_query(tmp_path, monkeypatch):
    log = recording_tool(tmp_path, "dpkg-query", r"install ok installed\t1.0")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sbm.check_package({"name": HOSTILE}, 5)
    args = argv_of(log)
    assert args[-2:] == ["--", HOSTILE], args


def test_service_name_is_an_operand_of_systemctl(tmp_path, monkeypatch):
    log = recording_tool(tmp_path, "systemctl", "active")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    real_isdir = os.path.isdir
    # check_service runs only under systemd; this test machine may have none.
    monkeypatch.setattr(sbm.os.path, "isdir", lambda p: p == "/run/systemd/system" or real_isdir(p))
    sbm.check_service({"name": HOSTILE}, 5)
    args = argv_of(log)
    assert args == ["is-active", "--", HOSTILE], args


@pytest.mark.parametrize("zone", ["-zone.test", HOSTILE])
def test_zone_name_is_an_operand_of_named_checkzone(tmp_path, zone):
    log = recording_tool(tmp_path, "named-checkzone", "OK")
    install_zone(
        "; empty\n", str(tmp_path / "z" / "zone.db"), zone, str(tmp_path / "named-checkzone")
    )
    args = argv_of(log)
    assert args[:4] == ["-k", "fail", "--", zone], args
    assert (tmp_path / "z" / "zone.db").read_text() == "; empty\n"
