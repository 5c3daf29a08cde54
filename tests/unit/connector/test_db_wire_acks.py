"""DB-SA pieces without a database: the session framing, ack watermarks, the model
questions, checksum comparison (what ``multiall db verify`` reports)."""

from __future__ import annotations

import io
import os
import stat

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModel

from connector.db_acks import AckStore
from connector.db_agent import compare_checksums
from connector.db_model import db_peers, db_pools, policy
from connector.db_shipper import hlc_wall
from connector.db_wire import WireError, header_line, parse_reply, read_request


def test_requests_round_trip_and_a_truncated_payload_is_refused() -> None:
    stream = io.BytesIO(header_line("apply", b"abc") + b"abc" + header_line("ping"))
    assert read_request(stream) == ({"op": "apply", "bytes": 3}, b"abc")
    assert read_request(stream) == ({"op": "ping", "bytes": 0}, b"")
    assert read_request(stream) is None
    with pytest.raises(WireError, match="truncated: 2 of 3"):
        read_request(io.BytesIO(header_line("apply", b"abc") + b"ab"))


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json\n", "not JSON"),
        (b"[1]\n", "JSON object"),
        (b'{"op": "drop"}\n', "unknown op 'drop'"),
        (b'{"op": "apply", "bytes": -1}\n', "payload size -1"),
        (b'{"op": "apply", "bytes": 99999999999}\n', "payload size"),
    ],
)
def test_forged_headers_are_refused_with_the_reason(line: bytes, error: str) -> None:
    with pytest.raises(WireError, match=error):
        read_request(io.BytesIO(line))


def test_a_reply_must_be_a_db_sa_reply() -> None:
    assert parse_reply(b'{"ok": true, "watermark": 3}\n')["watermark"] == 3
    with pytest.raises(WireError, match="not a DB-SA reply"):
        parse_reply(b'{"hello": 1}\n')


def test_ack_watermarks_survive_a_restart_and_never_go_back(tmp_path) -> None:
    path = str(tmp_path / "state" / "db-acks.db")
    acks = AckStore(path)
    assert acks.get("app", "n2") == 0
    assert acks.advance("app", "n2", 10) == 10
    assert acks.advance("app", "n2", 4) == 10  # a late reply never forgets
    acks.advance("app", "n3", 7)
    acks.close()
    again = AckStore(path)
    assert again.all("app") == {"n2": 10, "n3": 7}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


MODEL = """
nodes:
  a: {address: 198.18.0.11, pools: [p1, p2]}
  b: {address: 198.18.0.12, pools: [p1]}
  c: {address: 198.18.0.13, pools: [p2]}
  d: {address: 198.18.0.14, pools: [p3]}
pools:
  p1:
    databases:
      shop: {engine: sqlite, path: /var/lib/shop.db, tables: [t], policy: {mode: interval, interval: 2}}
  p2:
    databases:
      shop: {engine: sqlite, path: /var/lib/shop.db, tables: [t], policy: {mode: interval, interval: 2}}
  p3: {}
"""


def test_a_database_in_two_pools_syncs_with_the_union_of_their_members() -> None:
    model = PoolModel.from_text(MODEL)
    assert db_pools(model, "a", "shop") == ["p1", "p2"]
    assert db_peers(model, "a", "shop") == ["b", "c"]
    assert db_peers(model, "b", "shop") == ["a"]
    assert db_pools(model, "d", "shop") == []
    assert policy({"policy": {"mode": "interval", "interval": 2}})["interval"] == 2
    assert policy({})["mode"] == "realtime"


def test_verify_names_the_rows_that_differ() -> None:
    mine = {
        "t": {"rows": 3, "digest": "x", "rows_digest": {"[1]": "a", "[2]": "b", "[3]": "c"}},
        "u": {"rows": 1, "digest": "y", "rows_digest": {"[1]": "a"}},
    }
    theirs = {
        "t": {"rows": 3, "digest": "z", "rows_digest": {"[1]": "a", "[2]": "B", "[4]": "d"}},
        "u": {"rows": 1, "digest": "y", "rows_digest": {"[1]": "a"}},
    }
    result = compare_checksums(mine, theirs)
    assert not result["same"]
    assert result["tables"]["u"]["same"]
    t = result["tables"]["t"]
    assert (t["only_here"], t["only_there"], t["differ"], t["count"]) == (
        ["[3]"],
        ["[4]"],
        ["[2]"],
        3,
    )


def test_hlc_wall_reads_the_leading_milliseconds() -> None:
    assert hlc_wall("1764100000123-0001-n1") == pytest.approx(1764100000.123)
    assert hlc_wall("") is None


def test_metrics_show_each_peers_backlog() -> None:
    from prometheus_client import REGISTRY

    from connector.db_metrics import DbMetrics

    metrics = DbMetrics(True)
    metrics.local_seq("unit_db", {"n2": 0, "n3": 0}, 10)
    metrics.acked_batch("unit_db", "n2", 10, 10, 10)
    value = REGISTRY.get_sample_value
    assert value("multiall_db_backlog", {"db": "unit_db", "peer": "n2"}) == 0
    assert value("multiall_db_backlog", {"db": "unit_db", "peer": "n3"}) == 10
    assert value("multiall_db_shipped_rows_total", {"db": "unit_db", "peer": "n2"}) == 10
    DbMetrics(False).conflict("unit_db", "n2", 1)  # disabled: a no-op
