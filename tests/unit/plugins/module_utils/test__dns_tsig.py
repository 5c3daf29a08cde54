"""TSIG keys: tsig-keygen output parses; bad keys are named with what was expected."""

from __future__ import annotations

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._dns_tsig import parse_key
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "no TSIG key found"),
        ('key "k" { algorithm hmac-sha256; };', "needs both `algorithm` and `secret`"),
        ('key "k" { algorithm hmac-sha256; secret "not base64!"; };', "is not base64"),
        ('key "k" { algorithm rot13; secret "c2VjcmV0"; };', "is not one of hmac-sha256"),
    ],
)
def test_bad_key_files_are_named_with_what_was_expected(text, needle):
    with pytest.raises(DnsError, match=needle) as info:
        parse_key(text, "/etc/multiall/dns.key")
    assert str(info.value).startswith("/etc/multiall/dns.key")


def test_tsig_keygen_output_parses():
    key = parse_key(
        'key "multiall-dns" {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0c2VjcmV0";\n};\n', "f"
    )
    assert (key.name, key.algorithm, key.secret) == (
        "multiall-dns",
        "hmac-sha256",
        "c2VjcmV0c2VjcmV0",
    )
