"""The shape checks of the pool model that guard what reaches DNS, TNS and thresholds."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._dns_rebuild import (
    render_zone,
    zone_context,
)
from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import wanted_rrsets
from ansible_collections.takelan.multiall.plugins.module_utils._dns_zone import (
    pool_addresses,
    zone_settings,
)
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModel,
    PoolModelError,
)

ROOT = Path(__file__).resolve().parents[4]

NODES = """\
nodes:
  n1: {address: 198.18.0.11}
  n2: {address: 198.18.0.12}
  n3: {address: 198.18.0.13}
pools:
  web:
    members: [n1, n2, n3]
"""


def errors(text: str) -> list[str]:
    with pytest.raises(PoolModelError) as info:
        PoolModel.from_text(text, "pools.yml")
    return [str(e) for e in info.value.errors]


def with_dns(dns: str) -> str:
    return NODES + f"    dns: {dns}\n"


# ------------------------------------------------------------------ DNS names
@pytest.mark.parametrize(
    ("dns", "where", "needle"),
    [
        ('{zone: "bad zone.."}', "pools.yml:8:17", "zone 'bad zone..' is not a valid DNS name"),
        ("{zone: example..net}", "pools.yml:8:17", "(an empty label)"),
        ("{zone: -x.example.net}", "pools.yml:8:17", "label '-x'"),
        (f"{{zone: {'a' * 64}.net}}", "pools.yml:8:17", "is not a valid DNS name"),
        (
            '{zone: example.net, record: "www\\n$INCLUDE /etc/shadow"}',
            "pools.yml:8:38",
            "record",
        ),
        ("{zone: example.net, record: www.example.net.}", "pools.yml:8:38", "must be relative"),
        ("{zone: example.net, key_name: 'k y'}", "pools.yml:8:40", "key name 'k y'"),
        (
            "{zone: example.net, records: [{name: 'a b', type: A, value: 198.18.0.1}]}",
            "pools.yml:8:47",
            "name 'a b' is not a valid DNS name",
        ),
        (
            "{zone: example.net, records: [{name: api, type: A, value: 198.18.0}]}",
            "pools.yml:8:68",
            "'198.18.0' is not valid A record data",
        ),
        (
            "{zone: example.net, records: [{name: api, type: AAAA, value: 198.18.0.1}]}",
            "pools.yml:8:",
            "not valid AAAA record data",
        ),
        (
            "{zone: example.net, records: [{name: api, type: MX, value: mail}]}",
            "pools.yml:8:",
            "not valid MX record data",
        ),
        (
            '{zone: example.net, records: [{name: t, type: TXT, value: "ok\\n$INCLUDE /x"}]}',
            "pools.yml:8:",
            "contains a control character",
        ),
        (
            "{zone: example.net, records: [{name: t, type: TXT, value: 'a ; $INCLUDE /x'}]}",
            "pools.yml:8:",
            "unquoted ';', which starts a comment",
        ),
        (
            "{zone: example.net, records: [{name: api, type: NS, value: ns1}]}",
            "pools.yml:8:",
            "expected one of: A, AAAA, CNAME",
        ),
    ],
)
def test_bad_dns_names_types_and_values_are_errors_with_file_line_column(dns, where, needle):
    found = errors(with_dns(dns))
    assert any(e.startswith(where) and needle in e for e in found), found


def test_record_too_long_once_the_zone_is_appended_is_an_error():
    label = "a" * 63
    found = errors(with_dns(f"{{zone: {label}.{label}.{label}, record: {label}.b}}"))
    assert any("pools.yml:8:" in e and "dns.record" in e and "255" in e for e in found), found


def test_valid_dns_section_passes_and_reaches_the_zone_as_written():
    model = PoolModel.from_text(
        with_dns(
            "{zone: web.example.net., record: www, key_name: multiall-web.,"
            " records: [{name: _http._tcp, type: SRV, value: '0 5 80 www'},"
            " {name: '*.cdn', type: CNAME, value: www}, {name: '@', type: MX, value: '10 mx1'},"
            " {name: info, type: TXT, value: 'hello world'},"
            " {name: semi, type: TXT, value: '\"a;b\" c\\;d'}]}"
        ),
        "pools.yml",
    )
    settings = zone_settings(model, "web")
    rrsets = wanted_rrsets(settings, pool_addresses(model, "web"), ["n1"])
    text = render_zone(
        "{% for rr in rrsets %}{% for line in rr.lines() %}{{ line }}\n{% endfor %}{% endfor %}",
        zone_context(settings, 1, "198.18.0.53", rrsets, {}, []),
        "test",
    )
    assert "www 5 IN A 198.18.0.11" in text
    assert "_http._tcp 5 IN SRV 0 5 80 www.web.example.net." in text
    assert 'semi 5 IN TXT "a;b" "c;d"' in text  # quoted or escaped ';' is data
    assert all(not line.startswith("$") for line in text.splitlines())


def test_without_dnspython_names_are_still_checked_strictly():
    """Managed nodes may lack dnspython: the model still refuses unsafe names and values."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["dns"] = None  # as if dnspython were not installed
        sys.path.insert(0, {str(ROOT / "collection")!r})
        from ansible_collections.takelan.multiall.plugins.module_utils import pools, _pools_spec
        assert _pools_spec.HAS_DNSPYTHON is False
        text = {NODES!r} + (
            '    dns: {{zone: "bad zone..", record: "a\\\\n$INCLUDE x", records: ['
            '{{name: ok, type: A, value: 1.2.3}}, {{name: t, type: TXT, value: "a\\\\nb"}}]}}\\n'
        )
        try:
            pools.PoolModel.from_text(text, "pools.yml")
        except pools.PoolModelError as exc:
            print(exc)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 problems" in proc.stdout, proc.stdout
    assert "zone 'bad zone..' is not a valid DNS name" in proc.stdout
    assert "expected an IPv4 address" in proc.stdout
    assert "control character" in proc.stdout


# ----------------------------------------------------------------- numbers
@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf"])
def test_nan_and_infinity_are_refused_where_a_number_is_expected(value):
    found = errors(
        NODES + f"    baseline: {{cpu: {{kind: cpu, warn: 80, crit: {value}, interval: 5}}}}\n"
    )
    assert any(
        e.startswith("pools.yml:8:") and "crit: expected a finite number" in e for e in found
    ), found


def test_nan_is_refused_even_where_bounds_exist():
    found = errors(NODES + "    baseline: {cpu: {kind: cpu, interval: .nan}}\n")
    assert any("interval: expected a finite number" in e for e in found), found
