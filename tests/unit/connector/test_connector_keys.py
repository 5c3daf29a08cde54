"""The daemon refuses to run without its secrets (connector/config.py, daemon.py).

Without a gossip key Serf gossips in clear text, without probe keys anyone on
the network signs probe packets, and without an RPC token Serf's RPC is open:
none of that may happen silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModelError

from connector.config import load_config
from connector.daemon import Connector

GOSSIP = "ggosci2PNEFAPtchZFwO6KYNO0gFsH112VVbvI78Kv8="
MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web, db]}
  n2: {address: 198.18.0.12, pools: [web]}
  n3: {address: 198.18.0.13, pools: [web, db]}
pools:
  web: {}
  db: {}
"""


def write(tmp_path: Path, text: str) -> str:
    (tmp_path / "pools.yml").write_text(MODEL)
    path = tmp_path / "connector.yml"
    path.write_text(f"node: n1\npools_file: {tmp_path}/pools.yml\nstate_dir: {tmp_path}\n{text}")
    return str(path)


def test_daemon_refuses_to_start_without_gossip_key_and_per_pool_probe_keys(tmp_path):
    path = write(tmp_path, f"probe:\n  keys:\n    web: {'w' * 64}\n")
    with pytest.raises(PoolModelError) as info:
        Connector(load_config(path))
    message = str(info.value)
    assert "problems in the connector configuration" in message
    assert f"{path}:1:1: serf.encrypt_key: missing" in message
    # The probe section is on line 4; db's key is missing, web's is there.
    assert f"{path}:4:1: probe.keys.db: missing: the probe key of pool 'db'" in message
    assert "probe.keys.web" not in message and "takelan.multiall.tns role generates" in message


def test_one_shared_probe_secret_is_refused_with_what_to_do(tmp_path):
    path = write(tmp_path, f"probe:\n  secret: {'s' * 64}\n")
    with pytest.raises(PoolModelError) as info:
        load_config(path)
    assert f"{path}:5:" in str(info.value)
    assert "give one key per pool in probe.keys.<pool>" in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("serf:\n  encrypt_key: not-a-key\n", "serf.encrypt_key: not base64"),
        ("serf:\n  encrypt_key: c2hvcnQ=\n", "decodes to 5 bytes; Serf needs 16, 24 or 32"),
        ("probe:\n  keys:\n    web: short\n", "probe.keys.web: too short (5 characters)"),
        ("serf:\n  rpc_auth: abc\n", "serf.rpc_auth: too short"),
    ],
)
def test_weak_or_malformed_keys_are_refused(tmp_path, text, needle):
    with pytest.raises(PoolModelError) as info:
        load_config(write(tmp_path, text))
    assert needle in str(info.value)


def test_serf_rpc_always_has_a_token_independent_of_the_gossip_key(tmp_path):
    keys = f"probe:\n  keys:\n    web: {'w' * 64}\n    db: {'d' * 64}\n"
    path = write(tmp_path, f"serf:\n  encrypt_key: {GOSSIP}\n{keys}")
    connector = Connector(load_config(path))
    connector._serf_argv()
    conf = json.loads((tmp_path / "serf.json").read_text())
    assert conf["encrypt_key"] == GOSSIP
    assert len(conf["rpc_auth"]) >= 32 and GOSSIP not in conf["rpc_auth"]
    assert (tmp_path / "serf.json").stat().st_mode & 0o777 == 0o600
    # Each start makes its own token when none is configured.
    again = Connector(load_config(path))
    assert again.cfg.serf["rpc_auth"] != connector.cfg.serf["rpc_auth"]
