"""The argument schema of the ``takelan.multiall.tns`` EDA event source, generated.

The event types an operator may filter on are ``EVENT_TYPES`` in
``module_utils/tns.py``, the same list the watcher's rules are checked against;
the checked-in ``extensions/eda/plugins/event_source/schemas/tns.json`` is
written from it so the two can never disagree (a unit test compares them).

Regenerate after changing EVENT_TYPES::

    .venv/bin/python -m connector.eda_schema --write
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils.tns import EVENT_TYPES

SCHEMA_PATH = (
    Path(__file__).resolve().parents[1] / "extensions/eda/plugins/event_source/schemas/tns.json"
)


def schema() -> dict[str, Any]:
    """The JSON schema of the event source's arguments."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "takelan.multiall.tns arguments",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "socket": {"type": "string"},
            "types": {"type": "array", "items": {"enum": list(EVENT_TYPES)}},
            "pools": {"type": "array", "items": {"type": "string"}},
            "reconnect_delay": {"type": "number", "minimum": 0},
        },
    }


def render() -> str:
    """The file's text: stable key order, two-space indent, final newline."""
    return json.dumps(schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the schema, or with ``--write`` replace the checked-in file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {SCHEMA_PATH}")
    args = parser.parse_args(argv)
    if args.write:
        SCHEMA_PATH.write_text(render())
    else:
        print(render(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
