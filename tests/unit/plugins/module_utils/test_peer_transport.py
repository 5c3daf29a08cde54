"""The peer transport's argv and key lines: one source for module, daemon, role and lab."""

from __future__ import annotations

import shlex

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
    TransportError,
    authorized_key_line,
    known_hosts_line,
    receive_wrapper,
    rsync_argv,
    ssh_argv,
)

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake multiall-peer-web"


def _opts(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")


def test_ssh_pins_host_keys_uses_only_the_pool_key_and_a_per_pool_master() -> None:
    argv = ssh_argv("web", "198.18.0.12")
    opts = _opts(argv)
    assert argv[-1] == "198.18.0.12" and argv[argv.index("-i") + 1] == "/etc/multiall/peer/web.key"
    assert opts["StrictHostKeyChecking"] == "yes" and opts["BatchMode"] == "yes"
    assert opts["UserKnownHostsFile"] == "/etc/multiall/peer/known_hosts"
    assert opts["IdentitiesOnly"] == "yes" and opts["ControlMaster"] == "auto"
    # The forced command is bound to the key: pools never share a master.
    assert opts["ControlPath"].startswith("/run/multiall/ssh/web-")
    assert opts["ControlPersist"] == "300"


def test_ssh_paths_are_configurable_for_tests() -> None:
    opts = _opts(ssh_argv("db", "h", control_dir="/tmp/c", key_dir="/tmp/k", persist=5))
    assert opts["ControlPath"].startswith("/tmp/c/db-") and opts["ControlPersist"] == "5"
    assert opts["UserKnownHostsFile"] == "/tmp/k/known_hosts"


def test_rsync_pushes_the_tree_atomically_without_devices() -> None:
    argv = rsync_argv("web", "198.18.0.12", "/srv/www", delete=True, dry_run=True)
    assert argv[-2:] == ["/srv/www/", "198.18.0.12:/srv/www/"]
    for opt in ("-a", "--no-devices", "--no-specials", "--safe-links", "--delete", "--dry-run"):
        assert opt in argv
    assert "--inplace" not in argv
    ssh = shlex.split(argv[argv.index("-e") + 1])
    assert ssh[0] == "ssh" and "/etc/multiall/peer/web.key" in ssh


def test_rsync_brackets_ipv6_and_passes_excludes_and_file_lists() -> None:
    argv = rsync_argv("web", "fd00::2", "/srv/www", files_from="/tmp/list", exclude=["*.tmp"])
    assert argv[-1] == "[fd00::2]:/srv/www/"
    assert "--files-from=/tmp/list" in argv and "--exclude=*.tmp" in argv


@pytest.mark.parametrize("opt", ["--inplace", "--copy-links", "--devices", "--append=x"])
def test_rsync_refuses_options_that_break_atomicity_or_confinement(opt: str) -> None:
    with pytest.raises(TransportError, match=opt.split("=")[0]):
        rsync_argv("web", "h", "/srv/www", extra=[opt])


def test_rsync_refuses_relative_or_dotdot_trees() -> None:
    with pytest.raises(TransportError, match="absolute"):
        rsync_argv("web", "h", "srv/www")
    with pytest.raises(TransportError, match="absolute"):
        rsync_argv("web", "h", "/srv/../etc")


def test_authorized_key_line_is_restricted_to_the_pool_receiver() -> None:
    line = authorized_key_line("web", PUB)
    assert line == (
        'restrict,command="/usr/local/sbin/multiall-peer-receive web" '
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake multiall-peer-web"
    )
    with pytest.raises(TransportError, match="not an OpenSSH public key"):
        authorized_key_line("web", "garbage")


def test_known_hosts_line_and_wrapper() -> None:
    assert known_hosts_line("198.18.0.12", "ssh-ed25519 AAAA root@n2", ["n2"]) == (
        "198.18.0.12,n2 ssh-ed25519 AAAA"
    )
    script = receive_wrapper("/opt/multiall/venv/bin/python", "/opt/multiall")
    assert script.startswith("#!/bin/sh\n")
    assert 'exec /opt/multiall/venv/bin/python -m connector peer-receive --pool "$1"' in script
