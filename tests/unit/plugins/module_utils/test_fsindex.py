"""FS-SA index and receiving logic on real directories (no peers, no SSH)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils import fsindex as fsindex_module
from ansible_collections.takelan.multiall.plugins.module_utils._fs_apply import (
    apply_incoming,
    offer,
    resolve_lost,
)
from ansible_collections.takelan.multiall.plugins.module_utils._fs_digest import (
    digest_slices,
    range_digests,
)
from ansible_collections.takelan.multiall.plugins.module_utils.fsindex import (
    Entry,
    FsPathError,
    Index,
    check_rel_path,
    conflict_name,
    decide,
    plan,
    safe_join,
    vv_compare,
    winner,
)


def make(tmp: Path, node: str) -> Index:
    tree = tmp / node / "tree"
    tree.mkdir(parents=True)
    return Index(str(tmp / node / "fs.db"), str(tree), node, ["*.swp"])


def land(src: Index, dst: Index, paths: list[str]) -> None:
    """What rsync does for accepted paths (content + mode + mtime)."""
    for rel in paths:
        a, b = Path(src.tree, rel), Path(dst.tree, rel)
        if a.is_dir():
            b.mkdir(parents=True, exist_ok=True)
        else:
            b.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(a, b)


def sync(src: Index, dst: Index, peers: list[str]) -> dict:
    """One push of SRC's queue for DST, as the agent does it."""
    items = src.pending(dst.node)
    entries = [e.as_dict() for e in src.entries([p for p, _seq in items])]
    reply = apply_incoming(dst, src.node, entries, peers)
    land(src, dst, reply["accept"])
    dst.observe(reply["accept"], [p for p in peers if p != dst.node])
    src.ack(dst.node, items)
    return reply


def test_vector_order_and_deterministic_winner() -> None:
    assert vv_compare({"a": 2}, {"a": 1}) == "newer"
    assert vv_compare({"a": 1}, {"a": 1, "b": 1}) == "older"
    assert vv_compare({"a": 1}, {"b": 1}) == "concurrent"
    one = Entry("f", mtime_ns=5, origin="n1", hash="x", vv={"n1": 1})
    two = Entry("f", mtime_ns=5, origin="n2", hash="y", vv={"n2": 1})
    assert winner(one, two) is two and winner(two, one) is two
    gone = Entry("f", deleted=True, mtime_ns=9, origin="n3", vv={"n3": 1})
    assert winner(gone, one) is one  # an edit beats a delete: nothing is lost
    assert decide(one, two) == "win" and decide(two, one) == "lose"


@pytest.mark.parametrize("bad", ["/etc/passwd", "../etc/passwd", "a/../../x", "", "a\0b"])
def test_peer_paths_leaving_the_tree_are_refused(bad: str) -> None:
    with pytest.raises(FsPathError, match="refused path"):
        check_rel_path(bad, "/srv/t")


def test_symlinked_parent_leading_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "out").symlink_to("/etc")
    with pytest.raises(FsPathError, match="symlink"):
        safe_join(str(tmp_path / "tree"), "out/passwd")


def test_local_change_is_queued_once_and_received_file_is_not_echoed(tmp_path: Path) -> None:
    a, b = make(tmp_path, "n1"), make(tmp_path, "n2")
    Path(a.tree, "d").mkdir()
    Path(a.tree, "d", "f.txt").write_text("hello")
    Path(a.tree, "x.swp").write_text("excluded")
    assert sorted(a.rescan(["n2"])) == ["d", "d/f.txt"]
    assert a.rescan(["n2"]) == []  # nothing new: nothing queued twice
    sync(a, b, ["n1", "n2"])
    assert Path(b.tree, "d", "f.txt").read_text() == "hello"
    assert b.pending("n1") == []  # what b received is not sent back
    assert b.rescan(["n1"]) == []
    assert a.pending("n2") == []


def test_delete_travels_as_tombstone_and_applies_once(tmp_path: Path) -> None:
    a, b = make(tmp_path, "n1"), make(tmp_path, "n2")
    Path(a.tree, "f").write_text("x")
    a.rescan(["n2"])
    sync(a, b, ["n1", "n2"])
    os.unlink(Path(a.tree, "f"))
    assert a.observe(["f"], ["n2"]) == ["f"]
    reply = sync(a, b, ["n1", "n2"])
    assert reply["deleted"] == ["f"] and not Path(b.tree, "f").exists()
    assert b.observe(["f"], ["n1"]) == []  # b's own inotify event: no echo


def test_concurrent_edits_keep_one_winner_and_one_copy_everywhere(tmp_path: Path) -> None:
    a, b = make(tmp_path, "n1"), make(tmp_path, "n2")
    Path(a.tree, "f").write_text("base")
    a.rescan(["n2"])
    sync(a, b, ["n1", "n2"])
    Path(a.tree, "f").write_text("from n1")
    os.utime(Path(a.tree, "f"), ns=(1, 1_000_000_000))
    Path(b.tree, "f").write_text("from n2 (newer)")
    os.utime(Path(b.tree, "f"), ns=(1, 2_000_000_000))
    a.observe(["f"], ["n2"])
    b.observe(["f"], ["n1"])
    # n1 pushes first: its version loses on n2; n1 keeps it aside and asks for n2's.
    items = a.pending("n2")
    reply = apply_incoming(b, "n1", [e.as_dict() for e in a.entries(["f"])], ["n1", "n2"])
    assert reply["accept"] == [] and [e["path"] for e in reply["lost"]] == ["f"]
    copies = resolve_lost(a, reply["lost"], reply["winners"], ["n2"])
    a.ack("n2", items)
    assert copies == [conflict_name("f", "n1", 1_000_000_000)]
    with b.tx() as db:
        b.enqueue(db, ["f"], ["n1"])
    sync(b, a, ["n1", "n2"])
    sync(a, b, ["n1", "n2"])  # the conflict copy
    # n2's own queued push of f reaches n1 too (concurrent with n1's old version):
    # n1 already kept that loser, so nothing new is made and the copy stays indexed.
    reply = apply_incoming(a, "n2", [e.as_dict() for e in b.entries(["f"])], ["n1", "n2"])
    assert reply["conflicts"] == [] and a.get(copies[0]) is not None
    for idx in (a, b):
        assert Path(idx.tree, "f").read_text() == "from n2 (newer)"
        assert Path(idx.tree, copies[0]).read_text() == "from n1"
        assert [c["copy"] for c in idx.conflicts()] == copies
    assert a.pending("n2") == [] and b.pending("n1") == []


def test_offer_queues_what_a_returning_peer_missed(tmp_path: Path) -> None:
    a, b = make(tmp_path, "n1"), make(tmp_path, "n2")
    for name in ("old", "new"):
        Path(a.tree, name).write_text(name)
    a.rescan([])  # b was away: nothing queued for it
    Path(b.tree, "mine").write_text("b")
    b.rescan([])
    reply = offer(a, "n2", [e.as_dict() for e in b.entries()])
    assert sorted(p for p, _seq in a.pending("n2")) == ["new", "old"]
    assert reply["send_me"] == ["mine"]
    assert plan(a.entries(), b.entries())["fetch"] == ["mine"]


def test_offer_in_slices_finds_the_same_as_one_whole_offer(tmp_path: Path) -> None:
    """A returning node offers its index a few entries at a time (bounded memory):
    a path only the other side holds, wherever it sorts, is still queued once."""
    a, b = make(tmp_path, "n1"), make(tmp_path, "n2")
    for name in ("a0", "c1", "e2", "g3", "i4"):
        Path(b.tree, name).write_text(name)  # the returning node n2
    for name in ("0first", "b-only-n1", "d-only-n1", "z-last"):
        Path(a.tree, name).write_text(name)  # what n1 holds and n2 lacks
    a.rescan([])
    b.rescan([])
    wanted, after = [], None
    while True:
        rows = b.entries_range(after, None, 2)
        upto = rows[-1].path if len(rows) == 2 else None
        reply = offer(a, "n2", [e.as_dict() for e in rows], after, upto)
        wanted += reply["send_me"]
        if upto is None:
            break
        after = upto
    assert sorted(wanted) == ["a0", "c1", "e2", "g3", "i4"]
    assert sorted(p for p, _seq in a.pending("n2")) == [
        "0first",
        "b-only-n1",
        "d-only-n1",
        "z-last",
    ]


def test_bad_batch_changes_nothing(tmp_path: Path) -> None:
    b = make(tmp_path, "n2")
    good = {"path": "ok", "vv": {"n1": 1}, "hash": "h"}
    with pytest.raises(FsPathError):
        apply_incoming(b, "n1", [good, {"path": "../../etc/passwd", "deleted": True}], ["n1"])
    assert b.entries() == []


def test_small_files_travel_inline_and_land_whole_with_their_metadata(tmp_path: Path) -> None:
    from ansible_collections.takelan.multiall.plugins.module_utils._fs_apply import attach_inline

    a, b = make(tmp_path, "n1"), make(tmp_path, "n2")
    Path(a.tree, "d").mkdir(mode=0o750)
    Path(a.tree, "d", "small").write_text("tiny")
    os.chmod(Path(a.tree, "d", "small"), 0o640)
    Path(a.tree, "big").write_bytes(b"x" * 70_000)
    a.rescan(["n2"])
    entries = [e.as_dict() for e in a.entries()]
    assert attach_inline(a.tree, entries) == 4
    reply = apply_incoming(b, "n1", entries, ["n1", "n2"])
    assert reply["accept"] == ["big"] and reply["landed"] == 2  # d and d/small
    small = Path(b.tree, "d", "small")
    assert small.read_text() == "tiny" and oct(small.stat().st_mode & 0o777) == "0o640"
    assert small.stat().st_mtime_ns == Path(a.tree, "d", "small").stat().st_mtime_ns
    assert oct(Path(b.tree, "d").stat().st_mode & 0o777) == "0o750"
    assert b.observe(["d", "d/small"], ["n1"]) == []  # landed = indexed: no echo
    forged = dict(entries[-1], data="aGVsbG8=")  # content that does not match the hash
    assert apply_incoming(b, "n1", [forged], ["n1", "n2"])["landed"] == 0


def test_fifos_are_skipped_and_reported(tmp_path: Path) -> None:
    a = make(tmp_path, "n1")
    os.mkfifo(Path(a.tree, "pipe"))
    assert a.rescan(["n2"]) == []
    assert a.stats()["skipped"] == ["pipe"]


def test_newest_policy_keeps_the_winner_only_and_still_reports(tmp_path: Path) -> None:
    b = make(tmp_path, "n2")
    Path(b.tree, "f").write_text("mine")
    os.utime(Path(b.tree, "f"), ns=(1, 1_000))
    b.rescan([])
    theirs = {"path": "f", "vv": {"n1": 1}, "hash": "h", "mtime_ns": 2_000, "origin": "n1"}
    reply = apply_incoming(b, "n1", [theirs], ["n1", "n2"], policy="newest")
    assert reply["accept"] == ["f"] and reply["conflicts"] == [{"path": "f", "copy": None}]
    assert b.conflicts() == []
    assert b.db.execute("SELECT path, policy FROM conflicts").fetchall() == [("f", "newest")]


def slice_digests_match(a: Index, b: Index, size: int) -> list[bool]:
    """Per slice of A's index: whether B's index sums the same over it."""
    mine = digest_slices(a, size)
    theirs = range_digests(b, [upto for upto, _c, _s in mine])
    return [(c, s) == t for (_u, c, s), t in zip(mine, theirs, strict=True)]


def test_range_digests_find_exactly_the_slices_that_differ(tmp_path: Path) -> None:
    a, b = make(tmp_path, "a"), make(tmp_path, "b")
    for i in range(30):
        Path(a.tree, f"f{i:02d}").write_text(str(i))
    a.rescan(["b"])
    sync(a, b, ["a", "b"])
    assert slice_digests_match(a, b, 10) == [True, True, True]  # in sync: nothing to offer
    Path(a.tree, "f15").write_text("changed")
    a.observe(["f15"], ["b"])
    assert slice_digests_match(a, b, 10) == [True, False, True]  # only f10..f19 is offered
    Path(b.tree, "f29").unlink()
    b.observe(["f29"], ["a"])  # a tombstone differs too
    assert slice_digests_match(a, b, 10) == [True, False, False]
    assert slice_digests_match(make(tmp_path, "c"), a, 10) == [False]  # empty vs 30 paths


def test_an_index_from_before_digests_gets_them_on_open(tmp_path: Path) -> None:
    a = make(tmp_path, "a")
    Path(a.tree, "x").write_text("x")
    a.rescan([])
    expected = digest_slices(a, 10)
    a.db.executescript("ALTER TABLE files DROP COLUMN dg;")
    a.close()
    again = Index(a.path, a.tree, "a")
    assert digest_slices(again, 10) == expected


def test_rescan_of_an_unchanged_tree_reads_no_file(tmp_path: Path, monkeypatch) -> None:
    a = make(tmp_path, "a")
    Path(a.tree, "d").mkdir()
    for i in range(5):
        Path(a.tree, "d", f"f{i}").write_text(str(i))
    a.rescan(["b"])

    def no_read(*_a: object) -> str:
        raise AssertionError("an unchanged file was hashed")

    monkeypatch.setattr(fsindex_module, "hash_path", no_read)
    assert a.rescan(["b"]) == []
    monkeypatch.undo()
    Path(a.tree, "d", "f3").write_text("changed")  # size differs: found by stat
    Path(a.tree, "d", "f4").unlink()
    assert a.rescan(["b"]) == ["d/f3", "d/f4"]
    assert a.get("d/f4").deleted and sorted(a.under("d")) == ["d", "d/f0", "d/f1", "d/f2", "d/f3"]


def test_a_version_already_here_is_not_landed_twice(tmp_path: Path) -> None:
    """Peer b relays what a sent; c has it already (or has it in flight)."""
    a, b, c = make(tmp_path, "a"), make(tmp_path, "b"), make(tmp_path, "c")
    peers = ["a", "b", "c"]
    Path(a.tree, "f").write_text("from a")
    a.rescan(["b", "c"])
    sync(a, b, peers)
    entry = b.get("f").as_dict()
    in_flight = apply_incoming(c, "a", [a.get("f").as_dict()], peers)
    assert in_flight["accept"] == ["f"]
    assert apply_incoming(c, "b", [entry], peers)["accept"] == ["f"]  # not landed yet: again
    land(a, c, ["f"])
    c.observe(["f"], ["a", "b"])
    assert apply_incoming(c, "b", [entry], peers)["accept"] == []  # here: nothing travels


def test_an_index_comparison_keeps_a_queued_path_in_its_place(tmp_path: Path) -> None:
    a = make(tmp_path, "a")
    Path(a.tree, "f").write_text("x")
    a.rescan(["b"])
    items = a.pending("b")
    offer(a, "b", [])  # b lacks f: a queues it again for b
    a.ack("b", items)  # the push that was in flight acknowledges it
    assert a.pending("b") == []


def test_a_version_indexed_but_never_landed_is_landed_again(tmp_path: Path) -> None:
    """c indexed a's version, then its landing was cut (node killed mid-rsync, the
    incoming mark cleared at restart): the next push must land it, not skip it."""
    a, c = make(tmp_path, "a"), make(tmp_path, "c")
    peers = ["a", "c"]
    Path(a.tree, "f").write_text("from a")
    a.rescan(["c"])
    assert apply_incoming(c, "a", [a.get("f").as_dict()], peers)["accept"] == ["f"]
    with c.tx() as db:  # what a restart leaves: the entry, no mark, no file
        db.execute("UPDATE files SET incoming=0 WHERE path='f'")
    assert not Path(c.tree, "f").exists()
    assert apply_incoming(c, "a", [a.get("f").as_dict()], peers)["accept"] == ["f"]
    land(a, c, ["f"])
    c.observe(["f"], ["a"])
    assert apply_incoming(c, "a", [a.get("f").as_dict()], peers)["accept"] == []


def test_the_rescan_walk_collects_only_rsyncs_temporary_files(tmp_path: Path) -> None:
    """One walk both indexes the tree and finds a crash's partial transfers (never indexed)."""
    a = make(tmp_path, "a")
    tree = Path(a.tree)
    (tree / "burst").mkdir()
    for name in ("burst/.f590.c2f667", "burst/f590", ".hidden", ".conf.bak", "burst/.x.abc"):
        (tree / name).write_text("x")
    (tree / ".dir.a1b2c3").mkdir()  # a directory of that shape is someone's: kept
    (tree / ".dir.a1b2c3" / ".in.d1r0ne").write_text("pruned with its directory")
    (tree / ".old.zz9zz9.swp").write_text("excluded")  # the tree's exclude covers it
    (tree / ".lnk.abc123").symlink_to("burst/f590")  # not a regular file
    debris: list[str] = []
    changed = a.rescan(["b"], debris)
    assert debris == ["burst/.f590.c2f667"]
    assert sorted(changed) == [".conf.bak", ".hidden", "burst", "burst/.x.abc", "burst/f590"]
    assert (tree / "burst/.f590.c2f667").exists()  # found, not removed: the caller decides
    assert a.rescan(["b"]) == []  # without a list: the same walk, nothing collected
