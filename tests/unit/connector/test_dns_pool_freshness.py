"""DNS-SA's fresh-majority guard counts only packets signed with the pool's own key."""

from __future__ import annotations

import time
from pathlib import Path

from connector.config import ConnectorConfig
from connector.daemon import Connector

MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web, ops]}
  n2: {address: 198.18.0.12, pools: [web, ops]}
  n3: {address: 198.18.0.13, pools: [web, ops]}
pools:
  web:
    dns: {zone: web.example.test, server: 198.18.0.10}
  ops: {}
"""


def test_a_peer_heard_only_in_another_pool_is_not_fresh_for_this_pools_dns(
    tmp_path: Path,
) -> None:
    pools = tmp_path / "pools.yml"
    pools.write_text(MODEL)
    connector = Connector(
        ConnectorConfig(
            node="n1",
            pools_file=str(pools),
            state_dir=str(tmp_path),
            serf={"encrypt_key": "ggosci2PNEFAPtchZFwO6KYNO0gFsH112VVbvI78Kv8="},
            probe={"keys": {"web": "w" * 64, "ops": "o" * 64}},
        )
    )
    # n2 is heard through the ops pool's key only: web's DNS writer must not
    # count it toward a fresh majority (n1 alone is 1 of 3).
    connector.prober.heard["ops"]["n2"] = time.monotonic()
    assert not connector.dns.fresh_majority("web")
    connector.prober.heard["web"]["n2"] = time.monotonic()
    assert connector.dns.fresh_majority("web")
