"""What every ``multiall`` client command shares: --socket/--json, the socket path, errors.

Commands talk to the local connector with ``control_request`` from
``module_utils/_control.py`` (the one client of the control socket); this module
only decides *which* socket and how a failure is shown.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

from ansible_collections.takelan.multiall.plugins.module_utils._control import (
    DEFAULT_SOCKET,
    ControlError,
)

Command = Callable[[argparse.Namespace], int]


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every client command: ``--socket`` and ``--json``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket", help=f"control socket (default $MULTIALL_SOCKET or {DEFAULT_SOCKET})"
    )
    common.add_argument("--json", action="store_true", help="print JSON")
    return common


def socket_path(args: argparse.Namespace) -> str:
    """``--socket``, else ``$MULTIALL_SOCKET``, else the default path."""
    return args.socket or os.environ.get("MULTIALL_SOCKET") or DEFAULT_SOCKET


def guard(func: Command) -> Command:
    """A connector that is down or refuses is one line on stderr and exit 1, no traceback."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ControlError as exc:
            print(f"multiall {args.command}: {exc}", file=sys.stderr)
            return 1

    return wrapper
