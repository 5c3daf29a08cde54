"""Zone files: monotonic serials, template errors with their line, the bootstrap zone."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._dns_rebuild import (
    DEFAULT_TEMPLATE,
    bootstrap_zone,
    install_zone,
    next_serial,
    render_zone,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import RRset
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import DnsError


def test_serial_is_monotonic():
    assert next_serial(None, now=1000) == 1000
    assert next_serial(999, now=1000) == 1000
    assert next_serial(5000, now=1000) == 5001  # clock behind: still goes up
    assert next_serial((1 << 32) - 1, now=10) == 0  # RFC 1982 wrap


def test_template_errors_name_the_template_and_line():
    with pytest.raises(DnsError, match=r"bad\.j2:2: zone template error"):
        render_zone("$TTL 5\n{{ nope }}\n", {}, "bad.j2")
    text = render_zone(
        DEFAULT_TEMPLATE,
        {
            "zone": "z.test",
            "ttl": 5,
            "serial": 7,
            "ns_name": "ns.z.test",
            "ns_address": "198.18.0.10",
            "rrsets": [RRset("@", "A", 5, ("198.18.0.11",))],
        },
    )
    assert "( 7 60 30 86400 5 )" in text and "@ 5 IN A 198.18.0.11\n" in text


def test_bootstrap_zone_has_soa_ns_and_the_pool_ttl():
    text = bootstrap_zone({"zone": "web.example.test.", "ttl": 30}, "198.18.0.10")
    assert "$ORIGIN web.example.test.\n$TTL 30\n" in text
    assert "IN SOA ns.web.example.test. hostmaster.web.example.test. ( 1 60 30 86400 30 )" in text
    assert "ns.web.example.test. 30 IN A 198.18.0.10\n" in text
    # Defaults are the pool model's: a section with only a zone gets TTL 5.
    assert "( 1 60 30 86400 5 )" in bootstrap_zone({"zone": "z.test"}, "198.18.0.10")


@pytest.mark.skipif(not shutil.which("named-checkzone"), reason="needs bind9-utils")
def test_bootstrap_zone_loads_in_bind(tmp_path):
    path = tmp_path / "web.zone"
    path.write_text(bootstrap_zone({"zone": "web.example.test"}, "198.18.0.10"))
    check = subprocess.run(
        ["named-checkzone", "-k", "fail", "web.example.test", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "loaded serial 1" in check.stdout


def test_install_zone_errors_say_what_to_do_and_leave_nothing_behind(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(DnsError, match=r"cannot write a new zone file in .*/file: .*root"):
        install_zone("$TTL 5\n", str(not_a_dir / "web.zone"), "web.test")
    target = tmp_path / "zones" / "web.zone"
    with pytest.raises(DnsError, match=r"cannot run /nonexistent/named-checkzone.*install bind9"):
        install_zone("$TTL 5\n", str(target), "web.test", checkzone="/nonexistent/named-checkzone")
    assert list(target.parent.iterdir()) == []  # the temporary file is gone
    # The zone is installed, but the reload tool is missing: say both.
    with pytest.raises(
        DnsError, match=r"web.test installed at .* but cannot run /nonexistent/rndc"
    ):
        install_zone(
            "$TTL 5\n",
            str(target),
            "web.test",
            checkzone="/bin/true",
            reload_argv=["/nonexistent/rndc", "reload", "web.test"],
        )
    # A target that is a directory cannot be replaced by a file.
    (tmp_path / "zones" / "dir.zone").mkdir()
    with pytest.raises(DnsError, match=r"cannot install .*dir.zone: .*live zone is unchanged"):
        install_zone("$TTL 5\n", str(tmp_path / "zones" / "dir.zone"), "web.test", "/bin/true")
