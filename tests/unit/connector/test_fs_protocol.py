"""``multiall-fs`` on the receiving side, and the inotify watcher, on real directories."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._fs_digest import digest_slices
from ansible_collections.takelan.multiall.plugins.module_utils.fsindex import Index, index_path

from connector.fs_protocol import handle
from connector.fs_watch import TreeWatcher
from connector.peer_receive import PeerRequest, Refused


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    tree = tmp_path / "tree"
    tree.mkdir()
    pools = tmp_path / "pools.yml"
    pools.write_text(
        "nodes:\n"
        "  n1: {address: 198.18.0.11, pools: [web, db]}\n"
        "  n2: {address: 198.18.0.12, pools: [web, db]}\n"
        "  n3: {address: 198.18.0.13, pools: [db]}\n"
        "pools:\n"
        f"  web: {{files: {{{tree}: {{}}}}}}\n"
        "  db: {}\n"
    )
    return {"tree": tree, "pools": pools, "state": tmp_path / "state"}


def ask(site: dict[str, Path], words: list[str], data: dict, pool: str = "web") -> dict:
    request = PeerRequest(pool, "n2", str(site["pools"]), " ".join(words), words)
    return handle(request, data, str(site["state"]))


def test_apply_indexes_before_landing_and_applies_deletes(site) -> None:
    (site["tree"] / "old").write_text("x")
    tree = str(site["tree"])
    Index(index_path(str(site["state"]), tree), tree, "n2").rescan([])
    (site["tree"] / "mine").write_text("written after the last scan")
    entries = [
        {"path": "mine", "vv": {"n1": 1}, "deleted": True, "origin": "n1"},
        {"path": "new.txt", "vv": {"n1": 1}, "hash": "h", "size": 2, "origin": "n1"},
        {"path": "old", "vv": {"n1": 5, "n2": 1}, "deleted": True, "origin": "n1"},
    ]
    reply = ask(site, ["multiall-fs", "apply", tree], {"from": "n1", "entries": entries})
    assert reply["accept"] == ["new.txt"] and reply["deleted"] == ["old"]
    assert not (site["tree"] / "old").exists()
    assert (site["tree"] / "mine").exists()  # a local version the sender never saw
    index = Index(index_path(str(site["state"]), tree), tree, "n2")
    assert index.get("new.txt").vv == {"n1": 1}  # known before rsync brings it
    assert index.get("old").deleted


@pytest.mark.parametrize(
    ("words", "data", "message"),
    [
        (["multiall-fs", "apply", "/etc"], {"from": "n1"}, "tree /etc is not declared"),
        (["multiall-fs", "apply", "{tree}"], {"from": "n3"}, "'n3' is not a peer"),
        (["multiall-fs", "format", "{tree}"], {"from": "n1"}, "usage: multiall-fs"),
    ],
)
def test_requests_outside_what_the_pool_declares_are_refused(site, words, data, message):
    words = [w.format(tree=site["tree"]) for w in words]
    with pytest.raises(Refused, match=message):
        ask(site, words, data)


def test_a_tree_of_another_pool_is_refused_with_that_pools_key(site) -> None:
    with pytest.raises(Refused, match="not declared by pool db"):
        ask(site, ["multiall-fs", "index", str(site["tree"])], {"from": "n1"}, pool="db")


def test_watcher_reports_files_in_a_new_directory_and_changes(tmp_path: Path) -> None:
    seen: set[str] = set()

    async def scenario() -> None:
        watcher = TreeWatcher({str(tmp_path): ["*.swp"]}, lambda t, p: seen.update(p), lambda: None)
        watcher.start()
        try:
            os.makedirs(tmp_path / "a" / "b")
            (tmp_path / "a" / "b" / "f").write_text("x")
            (tmp_path / "skip.swp").write_text("x")
            await asyncio.sleep(0.2)
            (tmp_path / "a" / "b" / "f").chmod(0o600)
            os.rename(tmp_path / "a" / "b" / "f", tmp_path / "g")
            await asyncio.sleep(0.2)
            assert watcher.watches == 3
        finally:
            watcher.close()

    asyncio.run(scenario())
    assert {"a", "a/b", "a/b/f", "g"} <= seen
    assert "skip.swp" not in seen


def test_session_answers_each_line_and_survives_a_refusal(site, monkeypatch, capsys) -> None:
    import io
    import json

    from connector.fs_protocol import session

    tree = str(site["tree"])
    lines = [
        {"op": "apply", "from": "n1", "entries": [{"path": "a", "vv": {"n1": 1}, "hash": "h"}]},
        {"op": "apply", "from": "n1", "entries": [{"path": "/etc/passwd", "deleted": True}]},
        {"op": "index", "from": "n1"},
    ]
    stdin = io.TextIOWrapper(io.BytesIO("".join(json.dumps(x) + "\n" for x in lines).encode()))
    monkeypatch.setattr("sys.stdin", stdin)
    words = ["multiall-fs", "session", tree]
    request = PeerRequest("web", "n2", str(site["pools"]), " ".join(words), words)
    assert session(request, str(site["state"])) == 0
    first, refused, index = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert first["ok"] and first["accept"] == ["a"]
    assert not refused["ok"] and "absolute paths are not accepted" in refused["error"]
    assert [e["path"] for e in index["entries"]] == ["a"]


def test_digest_answers_sums_over_the_slices_the_sender_names(site) -> None:
    tree = str(site["tree"])
    for name in ("a", "b", "c"):
        (site["tree"] / name).write_text(name)
    index = Index(index_path(str(site["state"]), tree), tree, "n2")
    index.rescan([])
    mine = digest_slices(index, 2)
    reply = ask(site, ["multiall-fs", "digest", tree], {"from": "n1", "uptos": ["b", None]})
    assert [tuple(d) for d in reply["digests"]] == [(c, s) for _u, c, s in mine]
    with pytest.raises(Refused, match="'uptos' must be a list"):
        ask(site, ["multiall-fs", "digest", tree], {"from": "n1", "uptos": [1]})
