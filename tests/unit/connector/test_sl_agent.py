"""The SL facts answer: chunks that fit a Serf query, reassembled and checked on the other side."""

from __future__ import annotations

import json

import pytest

from connector import sl_agent


def facts(n: int) -> dict:
    return {
        "node": "n1",
        "at": 1.0,
        "digest": "abcdef0123456789",
        "packages": {f"package-number-{i}": [f"{i}.0-{i % 7}+deb12u1", 0] for i in range(n)},
        "services": {"ssh": ["started", True]},
        "libraries": {f"libthing{i}.so.{i % 3}": f"libthing{i}" for i in range(n)},
    }


def test_facts_of_500_packages_travel_in_answers_under_serf_limit():
    answers = sl_agent.pack(facts(500))
    assert all(len(a) <= 1000 for a in answers)  # Serf answers are capped at 1024 bytes
    parts = [sl_agent.split("n1", a) for a in answers]
    assert [h["i"] for h, _c in parts] == list(range(len(answers)))
    assert sl_agent.unpack("n1", [c for _h, c in parts]) == json.loads(json.dumps(facts(500)))


def test_corrupt_or_foreign_answers_are_rejected_with_the_node_named():
    with pytest.raises(ValueError, match="n2 sent a malformed SL facts answer"):
        sl_agent.split("n2", b"not json\nxx")
    _header, chunk = sl_agent.split("n2", sl_agent.pack(facts(3))[0])
    with pytest.raises(ValueError, match="n2 sent SL facts that do not decompress"):
        sl_agent.unpack("n2", [chunk[:-5]])
