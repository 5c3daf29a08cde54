"""The fs_sa role's peer-transport filters give exactly what the lab writes."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.takelan.multiall.plugins.filter.peer_transport import FilterModule
from ansible_collections.takelan.multiall.plugins.module_utils.peer_transport import (
    authorized_key_line,
    receive_wrapper,
)

FILTERS = FilterModule().filters()
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey multiall-peer-web"


def test_authorized_key_is_the_same_line_the_lab_writes() -> None:
    assert FILTERS["peer_authorized_key"](PUB, "web") == authorized_key_line("web", PUB)
    with pytest.raises(AnsibleFilterError, match="peer_authorized_key: pool web"):
        FILTERS["peer_authorized_key"]("not a key", "web")


def test_known_host_takes_the_bare_fact_or_a_typed_key() -> None:
    line = FILTERS["peer_known_host"]("AAAAC3Nza", "198.18.0.12", ["n2"])
    assert line == "198.18.0.12,n2 ssh-ed25519 AAAAC3Nza"
    assert FILTERS["peer_known_host"]("ssh-rsa AAAAB3", "h") == "h ssh-rsa AAAAB3"
    with pytest.raises(AnsibleFilterError, match="not a host key"):
        FILTERS["peer_known_host"]("", "198.18.0.12")


def test_wrapper_is_the_same_script_the_lab_installs() -> None:
    assert FILTERS["peer_receive_wrapper"]("/v/bin/python", "/opt/m") == receive_wrapper(
        "/v/bin/python", "/opt/m"
    )
