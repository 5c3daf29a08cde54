"""dns_zone_access and the dns_sa role's named.conf: a pool's key updates its own records only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.takelan.multiall.plugins.filter.dns_zone_access import FilterModule

ROOT = Path(__file__).resolve().parents[4]
TEMPLATE = ROOT / "roles" / "dns_sa" / "templates" / "named.conf.multiall.j2"
access = FilterModule().filters()["dns_zone_access"]
WEB = {"zone": "web.pool.example.test.", "server": "198.18.0.10", "ttl": 5}


def test_each_pool_has_its_own_key_and_grants_for_its_owned_records():
    web = access(WEB, "web", {"n1": "198.18.0.11", "n2": "198.18.0.12"})
    assert web["key_name"] == "multiall-web" and web["members"] == ["n1", "n2"]
    assert web["zone"] == "web.pool.example.test" and web["mode"] == "update"
    assert web["grants"] == [
        {"name": "n1.web.pool.example.test.", "types": ["A"]},
        {"name": "n2.web.pool.example.test.", "types": ["A"]},
        {"name": "web.pool.example.test.", "types": ["A", "AAAA"]},
    ]
    named = access(dict(WEB, key_name="web-updates."), "web", {"n1": "198.18.0.11"})
    assert named["key_name"] == "web-updates"
    rebuilt = access(dict(WEB, mode="rebuild"), "api", {"n1": "198.18.0.11"})
    assert rebuilt["grants"] == [] and rebuilt["key_name"] == "multiall-api"


@pytest.mark.parametrize(
    ("spec", "addresses", "needle"),
    [
        ({"server": "x"}, {}, "expected a pool's dns section with a zone"),
        (WEB, ["n1"], "members must be a mapping of node name to address"),
        (WEB, {}, "node_records is on but no member is known"),
        (WEB, {"n1": "host.example"}, "is not an IP address"),
    ],
)
def test_bad_input_names_the_pool(spec, addresses, needle):
    with pytest.raises(AnsibleFilterError, match=needle) as info:
        access(spec, "web", addresses)
    assert "pool web" in str(info.value)


def render(tmp_path: Path, pools: dict) -> str:
    """The role's named.conf for ``pools`` ({pool: (spec, addresses)}), key files made."""
    access_map = {p: access(spec, p, addr) for p, (spec, addr) in pools.items()}
    key_names = sorted({a["key_name"] for a in access_map.values()})
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in key_names:
        keygen = subprocess.run(
            ["tsig-keygen", name], capture_output=True, text=True, check=True
        ).stdout
        (keys / f"{name}.key").write_text(keygen)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    return env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="test",
        dns_sa_key_names=key_names,
        dns_sa_key_dir=str(keys),
        dns_sa_zone_dir=str(tmp_path),
        dns_sa_zone_map={p: spec for p, (spec, _a) in pools.items()},
        dns_sa_access=access_map,
    )


@pytest.mark.skipif(not shutil.which("named-checkconf"), reason="needs bind9-utils")
def test_role_config_grants_per_pool_and_named_accepts_it(tmp_path):
    text = render(
        tmp_path,
        {
            "web": (WEB, {"n1": "198.18.0.11", "n2": "2001:db8::2"}),
            "db": ({"zone": "db.pool.example.test"}, {"n3": "198.18.0.13"}),
            "api": ({"zone": "api.pool.example.test", "mode": "rebuild"}, {}),
        },
    )
    web = text.split('zone "web.pool.example.test"')[1].split("\n};\n")[0]
    assert 'grant "multiall-web" name web.pool.example.test. A AAAA;' in web
    assert 'grant "multiall-web" name n2.web.pool.example.test. AAAA;' in web
    assert "multiall-db" not in web and "allow-update" not in text
    api = text.split('zone "api.pool.example.test"')[1].split("\n};\n")[0]
    assert "update-policy" not in api
    conf = tmp_path / "named.conf"
    conf.write_text(text)
    check = subprocess.run(
        ["named-checkconf", str(conf)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
