"""The connector probes pool peers at the model's IPv4 ``ip``, not at a host name."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import ConnectorConfig
from connector.daemon import Connector

MODEL = """\
nodes:
  web1: {address: web1.example.test, ip: 198.18.0.11, pools: [web]}
  web2: {address: 198.18.0.12, pools: [web]}
  web3: {address: web3.example.test, ip: 198.18.0.13, pools: [web]}
pools:
  web: {}
"""


@pytest.fixture
def connector(tmp_path: Path) -> Connector:
    pools = tmp_path / "pools.yml"
    pools.write_text(MODEL)
    cfg = ConnectorConfig(
        node="web1",
        pools_file=str(pools),
        state_dir=str(tmp_path),
        serf={"encrypt_key": "ggosci2PNEFAPtchZFwO6KYNO0gFsH112VVbvI78Kv8="},
        probe={"keys": {"web": "k" * 64}},
    )
    return Connector(cfg)


def test_probe_binds_and_targets_the_ipv4_ip_of_host_named_nodes(connector: Connector) -> None:
    # A probe's source IP is compared with the peer's address: a host name there
    # would make every peer vote a host-named node unreachable.
    assert connector.address == "198.18.0.11"
    assert connector.peers == {"web2": "198.18.0.12", "web3": "198.18.0.13"}
