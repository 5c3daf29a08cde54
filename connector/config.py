"""``/etc/multiall/connector.yml``: the daemon's configuration, validated at load.

Validation reuses the pool model's located YAML loader and validator, so a bad
key is reported as ``connector.yml:12:3: probe.interval: must be at least 0.05``
and the daemon refuses to start rather than run half-configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import DEFAULT_SOCKET
from ansible_collections.takelan.multiall.plugins.module_utils._dns_members import DEFAULT_HOLD_DOWN
from ansible_collections.takelan.multiall.plugins.module_utils._located_yaml import (
    Mark,
    SourceError,
    load_located_file,
)
from ansible_collections.takelan.multiall.plugins.module_utils._pools_spec import check_address
from ansible_collections.takelan.multiall.plugins.module_utils._schema import Field, Validator
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    DEFAULT_PATH as DEFAULT_POOLS_FILE,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import PoolModelError
from ansible_collections.takelan.multiall.plugins.module_utils.tns import EVENT_TYPES

DEFAULT_PATH = "/etc/multiall/connector.yml"

_RULE = Field(
    "object",
    keys={
        "events": Field("list", required=True, item=Field("str")),
        "pools": Field("list", item=Field("str")),
        "playbook": Field("str", required=True),
        "scope": Field("str", choices=("pool", "local")),
        # Pool-wide runs need the pool leader to have quorum; false opts out
        # (for a playbook that is safe to run on both sides of a partition).
        "require_quorum": Field("bool"),
    },
)

SPEC = Field(
    "object",
    keys={
        "node": Field("str", required=True),
        "pools_file": Field("str"),
        "bind": Field("str", check=check_address),
        "state_dir": Field("str"),
        "control_socket": Field("str"),
        "metrics": Field("str"),
        "serf": Field(
            "object",
            keys={
                "binary": Field("str"),
                "port": Field("int", minimum=1, maximum=65535),
                "rpc_port": Field("int", minimum=1, maximum=65535),
                "rpc_auth": Field("str"),
                "encrypt_key": Field("str"),
                "profile": Field("str", choices=("lan", "wan", "local")),
            },
        ),
        "probe": Field(
            "object",
            keys={
                "port": Field("int", minimum=1, maximum=65535),
                "interval": Field("number", minimum=0.05, maximum=10),
                "dead_after": Field("number", minimum=0.1, maximum=60),
                "secret": Field("str"),
            },
        ),
        "sbm": Field(
            "object",
            keys={
                "hold_down": Field("number", minimum=0, maximum=3600),
                "interval": Field("number", minimum=0.1, maximum=3600),
            },
        ),
        "dns": Field(
            "object",
            keys={
                "key_file": Field("str"),
                "hold_down": Field("number", minimum=0, maximum=3600),
                "timeout": Field("number", minimum=0.05, maximum=30),
                "resync": Field("number", minimum=1, maximum=3600),
            },
        ),
        "watcher": Field(
            "object",
            keys={
                "playbooks_dir": Field("str"),
                "inventory": Field("str"),
                "debounce": Field("number", minimum=0, maximum=600),
                "retries": Field("int", minimum=0, maximum=20),
                "rules": Field("list", item=_RULE),
            },
        ),
    },
)


@dataclass
class ConnectorConfig:
    """Validated configuration with defaults filled in."""

    node: str
    pools_file: str = DEFAULT_POOLS_FILE
    bind: str | None = None
    state_dir: str = "/var/lib/multiall"
    control_socket: str = DEFAULT_SOCKET
    metrics: str | None = None
    serf: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    watcher: dict[str, Any] = field(default_factory=dict)
    sbm: dict[str, Any] = field(default_factory=dict)
    dns: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.serf = {
            "binary": "serf",
            "port": 7946,
            "rpc_port": 7373,
            "profile": "local",
            **self.serf,
        }
        self.probe = {"port": 7947, "interval": 0.2, "dead_after": 0.65, **self.probe}
        self.dns = {
            "key_file": "/etc/multiall/dns.key",
            "hold_down": DEFAULT_HOLD_DOWN,
            "timeout": 1.0,
            "resync": 2.0,
            **self.dns,
        }
        self.watcher = {"debounce": 1.0, "retries": 3, "rules": [], **self.watcher}


def load_config(path: str = DEFAULT_PATH) -> ConnectorConfig:
    """Load and validate; raises PoolModelError listing every problem."""
    try:
        raw = load_located_file(path)
    except SourceError as exc:
        raise PoolModelError([exc]) from None
    validator = Validator()
    data = validator.validate(raw, SPEC, (), getattr(raw, "mark", None) or Mark(path, 1, 1))
    for index, rule in enumerate(
        (data or {}).get("watcher", {}).get("rules", []) if isinstance(data, dict) else []
    ):
        if "require_quorum" in rule and rule.get("scope", "pool") != "pool":
            validator.error(
                "require_quorum applies to scope: pool rules only (a local rule runs "
                "on the node the event is about, with or without quorum)",
                getattr(rule, "mark", None),
                ("watcher", "rules", index, "require_quorum"),
            )
        for event in rule.get("events", []):
            if event not in EVENT_TYPES:
                validator.error(
                    f"unknown event {event!r}; events: {', '.join(EVENT_TYPES)}",
                    getattr(rule, "mark", None),
                    ("watcher", "rules", index, "events"),
                )
    if validator.errors:
        raise PoolModelError(validator.errors)
    return ConnectorConfig(**dict(data), source=path)
