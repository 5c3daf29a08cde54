"""``multiall daemon``: run TakeConnector in the foreground (systemd or the lab supervises it)."""

from __future__ import annotations

import argparse
from typing import Any

from .config import DEFAULT_PATH


def add_daemon_parser(sub: Any) -> None:
    """Register ``multiall daemon``."""
    daemon = sub.add_parser("daemon", help="run TakeConnector in the foreground")
    daemon.add_argument("--config", default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")
    daemon.set_defaults(func=cmd_daemon)


def cmd_daemon(args: argparse.Namespace) -> int:
    """Start the daemon; its exit code is the command's."""
    from .daemon import main  # the daemon's imports are heavy: only this command pays them

    return main(args.config)
