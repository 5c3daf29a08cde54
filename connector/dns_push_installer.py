"""DNS-SA push mode, DNS-server side: install the zone files FS-SA brings.

The pool leader writes ``<push_dir>/<zone>.zone`` (``_dns_reconcile``, mode
``push``); FS-SA carries it to every pool member. On the member whose
address is the pool's ``dns.server`` this polls the file's mtime (one
``stat`` per zone per reconciler wake-up, about once a second: cheaper and
simpler than a hook into FS-SA) and installs a changed file with the shared
``install_zone`` (``named-checkzone -k fail``, atomic rename, ``rndc reload``).
A rejected zone is logged once per version and the live zone stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._dns_push import (
    install_pushed,
    push_file,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError

log = logging.getLogger("multiall.dns")


class PushInstaller:
    """Watches the pushed zone files of the pools this node serves."""

    def __init__(
        self, settings: dict[str, dict[str, Any]], reload_argv: list[str] | None = None
    ) -> None:
        self.settings = settings
        self.reload_argv = reload_argv  # None: rndc reload ZONE
        # Last (mtime_ns, size) handled per pool; None = not looked at yet, so
        # a restart re-checks the file once (install_pushed skips equal text).
        self.seen: dict[str, tuple[int, int] | None] = {p: None for p in settings}
        self.state: dict[str, dict[str, Any]] = {p: {"error": None} for p in settings}

    async def poll(self) -> list[str]:
        """Install every pushed zone whose file changed; returns the pools installed."""
        done = []
        for pool, settings in self.settings.items():
            try:
                st = os.stat(push_file(settings))
            except OSError:
                continue  # not pushed (or not carried here) yet
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self.seen[pool]:
                continue
            self.seen[pool] = stamp
            try:
                installed = await asyncio.to_thread(install_pushed, settings, self.reload_argv)
            except DnsError as exc:
                self.state[pool]["error"] = str(exc)
                log.warning("dns push: %s", exc, extra={"fields": {"pool": pool}})
                continue
            self.state[pool]["error"] = None
            if installed is not None:
                done.append(pool)
                log.info(
                    "dns push: zone installed",
                    extra={"fields": {"pool": pool, "zone": settings["zone"]}},
                )
        return done
