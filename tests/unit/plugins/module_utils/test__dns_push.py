"""DNS-SA push mode: the model check, the leader's atomic write, the server's install."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._dns_push import (
    install_pushed,
    push_file,
    without_serial,
    zone_serial,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_reconcile import reconcile
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import (
    DnsError,
    settings_from_spec,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModel,
    PoolModelError,
)

from connector.dns_push_installer import PushInstaller

ZONE = "web.pool.example.test"
ADDRESSES = {"n1": "198.18.0.11", "n2": "198.18.0.12", "n3": "198.18.0.13"}
NODES = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web]}
  n2: {address: 198.18.0.12, pools: [web]}
pools:
  web:
"""
needs_bind = pytest.mark.skipif(
    shutil.which("named-checkzone") is None, reason="named-checkzone (bind9-utils) missing"
)


def test_push_pool_must_declare_its_push_dir_as_a_files_tree():
    text = NODES + "    dns: {zone: web.pool.example.test, server: 198.18.0.11, mode: push}\n"
    with pytest.raises(PoolModelError) as failed:
        PoolModel.from_text(text, "pools.yml")
    msg = str(failed.value)
    assert "pools.yml:6" in msg and "/var/lib/multiall/dns-push" in msg and "files" in msg
    ok = text + "    files: {/var/lib/multiall/dns-push: {}}\n"
    assert PoolModel.from_text(ok, "pools.yml").pools["web"]["dns"]["mode"] == "push"


def test_push_dir_in_a_converge_only_tree_is_refused():
    text = NODES + (
        "    dns: {zone: web.pool.example.test, mode: push, push_dir: /srv/dns/web}\n"
        "    files: {/srv/dns: {live: false}}\n"
    )
    with pytest.raises(PoolModelError, match=r"pools.yml:7.*/srv/dns carries dns.push_dir"):
        PoolModel.from_text(text, "pools.yml")


def test_serial_is_read_and_blanked():
    text = f"@ 5 IN SOA ns.{ZONE}. hostmaster.{ZONE}. ( 1764000000 60 30 86400 5 )\n"
    assert zone_serial(text) == 1764000000
    assert without_serial(text) == without_serial(text.replace("1764000000", "7"))
    assert zone_serial("nothing") is None


def push_settings(tmp_path) -> dict:
    return settings_from_spec(
        {
            "zone": ZONE,
            "server": "198.18.0.11",
            "mode": "push",
            "push_dir": str(tmp_path / "push"),
            "zone_file": str(tmp_path / "bind" / f"{ZONE}.zone"),
        }
    )


def leader_push(settings, members, monkeypatch, check=False):
    """reconcile() in push mode, the server's answers replaced by 'serves nothing'."""
    from ansible_collections.takelan.multiall.plugins.module_utils import _dns_reconcile

    def plan(settings, addresses, members, server, port=53, timeout=2.0):
        from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import (
            RRset,
            compare,
            owned_keys,
        )

        served = {k: RRset(k[0], k[1], 5, ()) for k in owned_keys(settings, addresses)}
        return compare(settings, addresses, members, served, server)

    monkeypatch.setattr(_dns_reconcile, "plan", plan)
    return reconcile(settings, ADDRESSES, members, "198.18.0.11", check=check)


def test_leader_writes_the_zone_once_and_bumps_the_serial_only_on_change(tmp_path, monkeypatch):
    settings = push_settings(tmp_path)
    path = push_file(settings)
    dry = leader_push(settings, ["n1", "n2", "n3"], monkeypatch, check=True)
    assert dry["changed"] and dry["before"] == "" and "198.18.0.13" in dry["after"]
    assert not (tmp_path / "push").exists()  # check mode writes nothing
    first = leader_push(settings, ["n1", "n2", "n3"], monkeypatch)
    text = Path(path).read_text()
    assert first["changed"] and text == first["after"] and zone_serial(text) == first["serial"]
    again = leader_push(settings, ["n1", "n2", "n3"], monkeypatch)
    assert not again["changed"] and Path(path).read_text() == text  # idempotent, same serial
    gone = leader_push(settings, ["n1", "n2"], monkeypatch)
    new = Path(path).read_text()
    assert gone["changed"] and zone_serial(new) > zone_serial(text)
    assert "@ 5 IN A 198.18.0.13" not in new and "n3 5 IN A 198.18.0.13" in new
    assert [p.name for p in (tmp_path / "push").iterdir()] == [f"{ZONE}.zone"]  # no temp left


@needs_bind
def test_server_installs_a_checked_zone_and_keeps_the_live_one_on_a_bad_one(tmp_path, monkeypatch):
    settings = push_settings(tmp_path)
    leader_push(settings, ["n1", "n2"], monkeypatch)
    installer = PushInstaller({"web": settings}, reload_argv=["true"])
    assert asyncio.run(installer.poll()) == ["web"]
    live = tmp_path / "bind" / f"{ZONE}.zone"
    assert live.read_text() == Path(push_file(settings)).read_text()
    assert asyncio.run(installer.poll()) == []  # unchanged file: nothing to do
    good = live.read_text()
    with Path(push_file(settings)).open("a") as handle:
        handle.write("broken line without a type\n")
    assert asyncio.run(installer.poll()) == []
    assert "named-checkzone rejected" in installer.state["web"]["error"]
    assert live.read_text() == good  # the live zone stays
    with pytest.raises(DnsError, match="named-checkzone rejected"):
        install_pushed(settings, ["true"])
