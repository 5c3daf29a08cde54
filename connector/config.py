"""``/etc/multiall/connector.yml``: the daemon's configuration, validated at load.

Validation reuses the pool model's located YAML loader and validator, so a bad
key is reported as ``connector.yml:12:3: probe.interval: must be at least 0.05``
and the daemon refuses to start rather than run half-configured.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.takelan.multiall.plugins.module_utils._control import DEFAULT_SOCKET
from ansible_collections.takelan.multiall.plugins.module_utils._dns_members import DEFAULT_HOLD_DOWN
from ansible_collections.takelan.multiall.plugins.module_utils._dns_tsig import DEFAULT_KEY_FILE
from ansible_collections.takelan.multiall.plugins.module_utils._located_yaml import (
    LocatedDict,
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
# Shortest probe key accepted: 128 bits as hex (the tns role generates 256).
MIN_PROBE_KEY = 32
_ROLE_HINT = "the takelan.multiall.tns role generates it and keeps it in /etc/multiall"


class ConfigError(PoolModelError):
    """connector.yml is invalid or lacks a secret; ``errors`` lists every problem."""

    def __str__(self) -> str:
        count = len(self.errors)
        head = f"{count} problem{'s' if count != 1 else ''} in the connector configuration:"
        return "\n".join([head, *(f"  {err}" for err in self.errors)])


def check_gossip_key(value: str) -> str | None:
    """Serf's ``encrypt_key``: base64 of 16, 24 or 32 bytes (``serf keygen``)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "not base64; expected a key from `serf keygen`"
    if len(raw) not in (16, 24, 32):
        return f"decodes to {len(raw)} bytes; Serf needs 16, 24 or 32 (`serf keygen`)"
    return None


def check_probe_key(value: str) -> str | None:
    """A pool's probe key: long enough that it cannot be guessed."""
    if len(value) < MIN_PROBE_KEY:
        return f"too short ({len(value)} characters); at least {MIN_PROBE_KEY} are needed"
    return None


def _no_shared_secret(_value: Any) -> str:
    return (
        "one probe secret for every pool is no longer accepted: give one key per pool"
        f" in probe.keys.<pool> ({_ROLE_HINT})"
    )


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
                "rpc_auth": Field("str", check=check_probe_key),
                "encrypt_key": Field("str", check=check_gossip_key),
                "profile": Field("str", choices=("lan", "wan", "local")),
                # How much lower than the connector's the agent's CPU priority is (serf_link.py).
                "nice": Field("int", minimum=0, maximum=19),
                # Serf's cap on one query answer (UDP: at most ~64 KB; default 1 KB in Serf).
                "query_response_size_limit": Field("int", minimum=1024, maximum=60000),
            },
        ),
        "probe": Field(
            "object",
            keys={
                "port": Field("int", minimum=1, maximum=65535),
                "interval": Field("number", minimum=0.05, maximum=10),
                "dead_after": Field("number", minimum=0.1, maximum=60),
                "bounded_above": Field("int", minimum=2, maximum=1000000),
                "rings": Field("int", minimum=1, maximum=16),
                "keys": Field("map", values=Field("str", check=check_probe_key)),
                "secret": Field("str", check=_no_shared_secret),
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
        "fs": Field(
            "object",
            keys={
                "debounce": Field("number", minimum=0, maximum=60),
                "rescan": Field("number", minimum=0, maximum=86400),
                "batch": Field("int", minimum=1, maximum=1_000_000),
                "timeout": Field("number", minimum=1, maximum=3600),
                "key_dir": Field("str"),
                "control_dir": Field("str"),
                "catch_up_every": Field("number", minimum=0, maximum=86400),
            },
        ),
        "sl": Field(
            "object",
            keys={
                "poll": Field("number", minimum=0.1, maximum=600),
                "interval": Field("number", minimum=1, maximum=86400),
                "timeout": Field("number", minimum=0.05, maximum=30),
                "retry_after": Field("number", minimum=0.05, maximum=30),
            },
        ),
        "db": Field(
            "object",
            keys={
                "batch": Field("int", minimum=1, maximum=100000),
                "poll": Field("number", minimum=0.01, maximum=60),
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
    fs: dict[str, Any] = field(default_factory=dict)
    sl: dict[str, Any] = field(default_factory=dict)
    db: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    # Where each top-level section starts, for messages about what it lacks.
    marks: dict[str, Mark] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.serf = {
            "binary": "serf",
            "port": 7946,
            "rpc_port": 7373,
            "profile": "local",
            "nice": 0,
            # SL facts (~11 KB compressed) in one answer instead of 13 (sl_agent.py)
            "query_response_size_limit": 16384,
            **self.serf,
        }
        self.probe = {
            "port": 7947,
            "interval": 0.2,
            "dead_after": 0.65,
            "bounded_above": 12,
            "rings": 3,
            **self.probe,
        }
        self.dns = {
            "key_file": DEFAULT_KEY_FILE,  # {pool}: one TSIG key per pool
            "hold_down": DEFAULT_HOLD_DOWN,
            "timeout": 1.0,
            "resync": 2.0,
            **self.dns,
        }
        self.watcher = {"debounce": 1.0, "retries": 3, "rules": [], **self.watcher}


def load_config(path: str = DEFAULT_PATH) -> ConnectorConfig:
    """Load and validate; raises ConfigError listing every problem."""
    try:
        raw = load_located_file(path)
    except SourceError as exc:
        raise ConfigError([exc]) from None
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
        raise ConfigError(validator.errors)
    top = getattr(data, "mark", None) or Mark(path, 1, 1)
    marks = {
        key: (data.mark_of(key) if isinstance(data, LocatedDict) else None) or top
        for key in ("serf", "probe")
    }
    return ConnectorConfig(**dict(data), source=path, marks=marks)


def require_secrets(cfg: ConnectorConfig, pools: list[str]) -> None:
    """Refuse to start without a gossip key and a probe key for each of the node's pools.

    Without them gossip would be clear text and any host on the network could
    sign probe packets: never run like that silently. Raises ConfigError
    naming the file, the setting and where it comes from.
    """
    errors = []
    top = Mark(cfg.source or DEFAULT_PATH, 1, 1)
    if not cfg.serf.get("encrypt_key"):
        errors.append(
            SourceError(
                "missing: the Serf gossip key (`serf keygen`) that encrypts gossip;"
                f" {_ROLE_HINT} (serf.key)",
                cfg.marks.get("serf", top),
                "serf.encrypt_key",
            )
        )
    keys = cfg.probe.get("keys") or {}
    for pool in pools:
        if not keys.get(pool):
            errors.append(
                SourceError(
                    f"missing: the probe key of pool {pool!r}, which signs this node's"
                    f" probe packets to that pool's peers; {_ROLE_HINT} (probe-keys.yml)",
                    cfg.marks.get("probe", top),
                    f"probe.keys.{pool}",
                )
            )
    if errors:
        raise ConfigError(errors)
