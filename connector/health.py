"""A fault the daemon lives with: logged when it starts, changes and clears, shown in status.

The daemon keeps working through faults of its parts (the journal's disk, the
Serf agent's RPC): detecting members and serving DNS matter more than any one
of them. A fault that repeats on every retry must not flood the log, and must
not hide either, so each part keeps one ``Fault``: the first failure is logged
at once, then the latest one at most every ``every`` seconds with the number of
failures since, and the recovery once. ``multiall status``
shows the current fault, so an operator sees it without reading the log.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class Fault:
    """The current fault of one part of the daemon (None while it works)."""

    def __init__(
        self, logger: logging.Logger, what: str, level: int = logging.WARNING, every: float = 30.0
    ) -> None:
        self.log, self.what, self.level, self.every = logger, what, level, every
        self.error: str | None = None
        self.since = 0.0  # wall clock, for operators
        self.failures = 0
        self._logged_at = 0.0  # monotonic
        self._unlogged = 0

    def failed(self, message: str, **fields: Any) -> None:
        """Record one failure; log the first, then at most one every ``every`` seconds.

        MESSAGE is logged as it is: it should name the part, the file or address
        and what to do.
        """
        now = time.monotonic()
        first = self.error is None
        if first:
            self.since, self.failures = time.time(), 0
        self.failures += 1
        self.error = message
        # Not "every new message": a part whose errors alternate would flood the log.
        if first or now - self._logged_at >= self.every:
            repeats = {"repeats": self._unlogged} if self._unlogged else {}
            self.log.log(
                self.level,
                "%s",
                message,
                extra={
                    "fields": {"part": self.what, **fields, **repeats, "failures": self.failures}
                },
            )
            self._logged_at, self._unlogged = now, 0
        else:
            self._unlogged += 1

    def ok(self) -> None:
        """The part works again: say so once."""
        if self.error is None:
            return
        self.log.warning(
            "%s: recovered after %d failures",
            self.what,
            self.failures,
            extra={"fields": {"error": self.error, "down_s": round(time.time() - self.since, 1)}},
        )
        self.error, self.failures, self._unlogged = None, 0, 0

    def as_dict(self) -> dict[str, Any] | None:
        """For ``multiall status``: None while the part works."""
        if self.error is None:
            return None
        return {"error": self.error, "since": round(self.since, 3), "failures": self.failures}
