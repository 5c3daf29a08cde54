"""FS-SA watcher: inotify on every live tree of this node, recursive, on the event loop.

inotify watches directories, not trees: each directory gets its own watch, a
new directory gets one as soon as its creation is seen (and its content, which
may have been written before the watch existed, is reported too). Events are
turned into relative paths and handed to a callback; the agent debounces them.
Nothing here decides what changed: the index compares the disk with what it
knows, so a lost or duplicated event costs nothing (the periodic rescan catches
what inotify never said, e.g. after a queue overflow).

Running out of watches is a clear error naming ``fs.inotify.max_user_watches``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Callable

from ansible_collections.takelan.multiall.plugins.module_utils.fsindex import excluded
from inotify_simple import INotify
from inotify_simple import flags as F

log = logging.getLogger("multiall.fs")

MASK = (
    F.CREATE
    | F.DELETE
    | F.CLOSE_WRITE
    | F.MODIFY
    | F.ATTRIB
    | F.MOVED_FROM
    | F.MOVED_TO
    | F.DELETE_SELF
    | F.MOVE_SELF
    | F.DONT_FOLLOW
    | F.EXCL_UNLINK
)
SYSCTL = "fs.inotify.max_user_watches"


class FsWatchError(RuntimeError):
    """The trees cannot be watched (out of watches, unreadable tree)."""


class TreeWatcher:
    """One inotify instance for all of this node's live trees."""

    def __init__(
        self,
        trees: dict[str, list[str]],
        on_paths: Callable[[str, set[str]], None],
        on_overflow: Callable[[], None],
    ) -> None:
        """TREES maps each tree path to its exclude patterns; ON_PATHS(tree, rels)."""
        self.trees = {t.rstrip("/") or "/": ex for t, ex in trees.items()}
        self.on_paths, self.on_overflow = on_paths, on_overflow
        self.inotify = INotify()
        self.wds: dict[int, tuple[str, str]] = {}  # wd -> (tree, rel dir)

    def start(self) -> None:
        """Watch every directory of every tree and register with the running loop."""
        for tree in self.trees:
            os.makedirs(tree, mode=0o755, exist_ok=True)
            self._watch_dir(tree, "")
        asyncio.get_running_loop().add_reader(self.inotify.fileno(), self._readable)

    def close(self) -> None:
        """Stop watching."""
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().remove_reader(self.inotify.fileno())
        self.inotify.close()

    @property
    def watches(self) -> int:
        """Directories watched now."""
        return len(self.wds)

    def _add(self, tree: str, rel: str) -> bool:
        full = os.path.join(tree, rel) if rel else tree
        try:
            wd = self.inotify.add_watch(full, MASK | F.ONLYDIR)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise FsWatchError(
                    f"out of inotify watches while watching {full} ({len(self.wds)} in use):"
                    f" raise the sysctl {SYSCTL} (e.g. sysctl -w {SYSCTL}=524288;"
                    " the fs_sa role sets it)"
                ) from None
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return False  # gone (or replaced) before we got to it
            raise FsWatchError(f"cannot watch {full}: {exc.strerror}") from None
        self.wds[wd] = (tree, rel)
        return True

    def _watch_dir(self, tree: str, rel: str) -> set[str]:
        """Watch REL and every directory below it; return every path found below it."""
        found: set[str] = set()
        if not self._add(tree, rel):
            return found
        base = os.path.join(tree, rel) if rel else tree
        for root, dirs, files in os.walk(base):
            sub = os.path.relpath(root, tree)
            sub = "" if sub == "." else sub + "/"
            keep = []
            for name in dirs:
                child = sub + name
                if excluded(child, self.trees[tree]):
                    continue
                found.add(child)
                if not os.path.islink(os.path.join(root, name)):
                    keep.append(name)
                    self._add(tree, child)
            dirs[:] = keep
            found.update(sub + n for n in files if not excluded(sub + n, self.trees[tree]))
        return found

    def _readable(self) -> None:
        try:
            events = self.inotify.read(timeout=0)
        except OSError as exc:
            log.error("inotify read failed: %s", exc)
            return
        batch: dict[str, set[str]] = {}
        for event in events:
            if event.mask & F.Q_OVERFLOW:
                log.warning("inotify queue overflowed: rescanning the trees")
                self.on_overflow()
                continue
            where = self.wds.get(event.wd)
            if where is None:
                continue
            tree, rel_dir = where
            if event.mask & F.IGNORED:
                self.wds.pop(event.wd, None)
                continue
            if not event.name:
                continue  # DELETE_SELF/MOVE_SELF: the parent's event names it
            rel = f"{rel_dir}/{event.name}" if rel_dir else event.name
            if excluded(rel, self.trees[tree]):
                continue
            paths = batch.setdefault(tree, set())
            paths.add(rel)
            if event.mask & F.ISDIR and event.mask & (F.CREATE | F.MOVED_TO):
                try:
                    paths.update(self._watch_dir(tree, rel))
                except FsWatchError as exc:
                    log.error("%s", exc)
                    self.on_overflow()
            if event.mask & F.ISDIR and event.mask & (F.MOVED_FROM | F.DELETE):
                # Everything that was below it is gone from here: let the index say what.
                paths.add(rel + "/")
        for tree, paths in batch.items():
            self.on_paths(tree, paths)
