"""The ``multiall`` command line; each part registers its sub-commands from ``<part>_cmd.py``.

Errors are printed without a traceback and the exit status says what happened:
0 fine, 1 the model has problems (invalid or conflicting), 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .cmdline import common_options

# Each part's parser module is imported in build_parser, only when it is needed.


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full argument parser; each part adds its own sub-commands.

    With COMMAND ``sl``, only that part's sub-commands: ``multiall sl drift`` is
    timed end to end (benchmarks/sl_drift.py) and the other parts' imports alone
    cost ~1 s under load.
    """
    parser = argparse.ArgumentParser(
        prog="multiall",
        description="MultiAll: keep pools of servers in sync (TakeConnector CLI).",
    )
    parser.add_argument("--version", action="version", version=f"multiall {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = common_options()
    if command == "sl":
        from .sl_cmd import add_sl_parser

        add_sl_parser(sub, common)
        return parser
    from .daemon_cmd import add_daemon_parser
    from .db_cmd import add_db_parser
    from .dns_cmd import add_dns_parser
    from .fs_cmd import add_fs_parser
    from .peer_receive import add_peer_receive_parser
    from .pools_cmd import add_pools_parser
    from .sbm_cmd import add_sbm_parser
    from .sl_cmd import add_sl_parser
    from .tns_cmd import add_tns_parsers

    add_pools_parser(sub)
    add_daemon_parser(sub)
    add_tns_parsers(sub, common)
    add_sbm_parser(sub, common)
    add_dns_parser(sub, common)
    add_fs_parser(sub, common)
    add_db_parser(sub, common)
    add_peer_receive_parser(sub)
    add_sl_parser(sub, common)
    return parser


def emit_json(data: Any) -> None:
    """Machine-readable output: one JSON document on stdout."""
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multiall`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv[:1] == ["sl"] else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
