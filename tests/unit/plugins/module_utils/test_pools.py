"""The pool model: aggregation, conflicts, exceptions, and every bad-input error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ansible_collections.takelan.multiall.plugins.module_utils.pools import (
    PoolModel,
    PoolModelError,
    load,
)

ROOT = Path(__file__).resolve().parents[4]


def model(text: str) -> PoolModel:
    return PoolModel.from_text(textwrap.dedent(text), "pools.yml")


def errors(text: str) -> list[str]:
    with pytest.raises(PoolModelError) as info:
        model(text)
    return [str(e) for e in info.value.errors]


TWO_POOLS = """\
nodes:
  web1: {address: 198.18.0.11, pools: [web, api]}
  web2: {address: 198.18.0.12, pools: [web]}
pools:
  web:
    %s
  api:
    %s
"""


def two(web: str, api: str) -> PoolModel:
    return model(TWO_POOLS % (web, api))


# ------------------------------------------------------------ aggregation
def test_node_in_two_pools_gets_the_union_of_both():
    m = two(
        'packages: {nginx: {}, curl: {}}\n    files: {/srv/www: {source: /s, exclude: ["*.tmp"]}}',
        'packages: {python3: {}}\n    files: {/srv/www: {source: /s, exclude: ["*.pyc", "*.tmp"]}}',
    )
    view = m.effective("web1")
    assert sorted(view.settings["packages"]) == ["curl", "nginx", "python3"]
    # union in pool-name order (api, then web), without duplicates
    assert view.settings["files"]["/srv/www"]["exclude"] == ["*.pyc", "*.tmp"]
    assert view.sources['files["/srv/www"].source'] == ["api", "web"]  # agreeing pools both listed
    assert view.conflicts == []
    assert sorted(m.effective("web2").settings["packages"]) == ["curl", "nginx"]


def test_any_version_and_a_pinned_version_agree():
    view = two("packages: {nginx: null}", 'packages: {nginx: "1.24*"}').effective("web1")
    assert view.settings["packages"]["nginx"] == {"version": "1.24*"}
    assert view.conflicts == []


def test_shorthands_are_normalised():
    view = two(
        'packages: {nginx: "1.22*"}\n    services: {nginx: started}', "files: {/srv: /src}"
    ).effective("web1")
    assert view.settings["packages"]["nginx"] == {"version": "1.22*"}
    assert view.settings["services"]["nginx"] == {"state": "started"}
    assert view.settings["files"]["/srv"] == {"source": "/src"}


def test_dns_is_kept_per_pool_and_never_conflicts():
    view = two(
        "dns: {zone: web.example.test, ttl: 5}", "dns: {zone: api.example.test, ttl: 30}"
    ).effective("web1")
    assert view.settings["dns"] == {
        "web": {"zone": "web.example.test", "ttl": 5},
        "api": {"zone": "api.example.test", "ttl": 30},
    }
    assert view.conflicts == []


def test_every_section_is_present_even_when_empty():
    view = two("description: x", "description: y").effective("web2")
    assert set(view.settings) == {
        "baseline",
        "files",
        "packages",
        "services",
        "libraries",
        "databases",
        "dns",
        "vars",
    }


def test_included_pool_is_inherited_and_own_keys_win():
    m = model(
        """\
        nodes: {a: {address: 198.18.0.11, pools: [web]}}
        pools:
          base: {packages: {rsync: {}, nginx: "1.0"}, baseline: {d: {kind: disk, warn: 80, crit: 90}}}
          web: {include: [base], packages: {nginx: "2.0"}}
        """
    )
    view = m.effective("a")
    assert view.settings["packages"] == {"rsync": {}, "nginx": {"version": "2.0"}}
    assert view.settings["baseline"]["d"]["crit"] == 90
    assert m.members("base") == [] and m.members("web") == ["a"]


def test_membership_counts_from_both_sides():
    m = model(
        """\
        nodes: {a: {address: 198.18.0.11, pools: [web]}, b: {address: 198.18.0.12}}
        pools: {web: {members: [b]}}
        """
    )
    assert m.members("web") == ["a", "b"] and m.node_pools("b") == ["web"]


# --------------------------------------------------------------- conflicts
@pytest.mark.parametrize(
    ("web", "api", "key"),
    [
        ('packages: {nginx: "1.22*"}', 'packages: {nginx: "1.24*"}', "packages.nginx.version"),
        # A tree declared differently is a load error, not a conflict (FS-SA would
        # sync one directory by two rules): tests/unit/.../test__pools_files.py.
        (
            "baseline: {root: {kind: disk, warn: 80, crit: 90}}",
            "baseline: {root: {kind: disk, warn: 80, crit: 95}}",
            "baseline.root.crit",
        ),
        ("services: {nginx: started}", "services: {nginx: stopped}", "services.nginx.state"),
        (
            "databases: {app: {engine: sqlite}}",
            "databases: {app: {engine: postgresql}}",
            "databases.app.engine",
        ),
        ("vars: {port: 80}", 'vars: {port: "80"}', "vars.port"),
    ],
)
def test_every_kind_of_disagreement_is_a_conflict_naming_node_key_pools_and_lines(web, api, key):
    m = two(web, api)
    view = m.effective("web1")
    assert [c.key for c in view.conflicts] == [key]
    conflict = view.conflicts[0]
    assert conflict.node == "web1" and set(conflict.values) == {"web", "api"}
    assert {o: m.line for o, m in conflict.marks.items()} == {"web": 6, "api": 8}
    message = conflict.message()
    assert "pools.yml:6:" in message and "pools.yml:8:" in message and "'web1'" in message
    # never a silent winner: the key is left out
    parent = view.settings
    for part in conflict.path[:-1]:
        parent = parent[part]
    assert conflict.path[-1] not in parent
    assert m.conflicts() == view.conflicts
    assert m.effective("web2").conflicts == []


def test_included_pools_that_disagree_are_an_error():
    found = errors(
        """\
        nodes: {a: {address: 198.18.0.11, pools: [web]}}
        pools:
          one: {packages: {nginx: "1"}}
          two: {packages: {nginx: "2"}}
          web: {include: [one, two]}
        """
    )
    assert any(
        "pools.yml:5:" in e and "included pools disagree on packages.nginx.version" in e
        for e in found
    )


# -------------------------------------------------------------- resolution
CONFLICT = TWO_POOLS % ('packages: {nginx: "1.22*"}', 'packages: {nginx: "1.24*"}')


def test_scoped_exception_removing_one_pools_item_resolves():
    m = model(CONFLICT + "exceptions:\n  - {node: web1, pool: web, remove: {packages: [nginx]}}\n")
    view = m.effective("web1")
    assert view.conflicts == [] and view.settings["packages"]["nginx"] == {"version": "1.24*"}
    assert m.effective("web2").settings["packages"]["nginx"] == {
        "version": "1.22*"
    }  # others untouched


def test_unscoped_override_resolves_and_is_the_source():
    m = model(
        CONFLICT
        + 'exceptions:\n  - {node: web1, override: {packages: {nginx: {version: "1.25*"}}}, reason: pin}\n'
    )
    view = m.effective("web1")
    assert view.conflicts == [] and view.settings["packages"]["nginx"]["version"] == "1.25*"
    assert view.sources["packages.nginx.version"] == ["exception #1: pin"]


def test_node_settings_override_resolves():
    text = CONFLICT.replace(
        "web1: {address: 198.18.0.11, pools: [web, api]}",
        'web1: {address: 198.18.0.11, pools: [web, api], settings: {packages: {nginx: "1.24*"}}}',
    )
    view = model(text).effective("web1")
    assert view.conflicts == [] and view.sources["packages.nginx.version"] == ["node"]


def test_exception_for_several_nodes():
    text = CONFLICT.replace(
        "web2: {address: 198.18.0.12, pools: [web]}",
        "web2: {address: 198.18.0.12, pools: [web, api]}",
    )
    m = model(
        text + "exceptions:\n  - {nodes: [web1, web2], pool: api, remove: {packages: [nginx]}}\n"
    )
    assert m.conflicts() == []


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        ("nodes: {a: {address: 198.18.0.1}\n", "pools.yml:2:1", "YAML syntax error"),
        (
            "nodes:\n  a: {address: 198.18.0.1}\n  a: {address: 198.18.0.2}\n",
            "pools.yml:3:3",
            "duplicate key 'a'",
        ),
        ("nodez: {}\n", "pools.yml:1:1", "unknown key 'nodez'"),
        (
            "nodes: {a: {address: 198.18.0.1, adress: x}}\n",
            "pools.yml:1:34",
            "unknown key 'adress'",
        ),
        (
            "nodes: {a: {address: 198.18.0.1}}\npools: {web: {members: a}}\n",
            "pools.yml:2:24",
            "expected a list, got the string 'a'",
        ),
        (
            "nodes: {a: {address: 198.18.0.1, ssh_port: '22'}}\n",
            "pools.yml:1:44",
            "expected a whole number",
        ),
        (
            "nodes: {a: {address: 198.18.0.1}}\npools: {web: {members: [a, b]}}\n",
            "pools.yml:2:28",
            "'b' is not a declared node",
        ),
        (
            "nodes: {a: {address: 198.18.0.1, pools: [wbe]}}\npools: {web: {}}\n",
            "pools.yml:1:42",
            "'wbe' is not a declared pool",
        ),
        (
            "nodes: {a: {address: 198.18.0.1}, b: {address: 198.18.0.1}}\n",
            "pools.yml:1:48",
            "already used by node 'a'",
        ),
        ("nodes: {a: {address: 300.1.2.3}}\n", "pools.yml:1:22", "not an IP address or host name"),
        ("nodes: {a: {address: 'web_1!'}}\n", "pools.yml:1:22", "not an IP address or host name"),
        (
            "pools: {a: {include: [b]}, b: {include: [a]}}\n",
            "pools.yml:1:",
            "pool include cycle: a -> b -> a",
        ),
        ("pools: {a: {include: [zz]}}\n", "pools.yml:1:23", "'zz' is not a declared pool"),
        ("pools: {web-eu: {}}\n", "pools.yml:1:9", "becomes the Ansible group 'pool_web-eu'"),
        (
            "pools: {w: {baseline: {r: {kind: temperature}}}}\n",
            "pools.yml:1:",
            "expected one of: command, cpu",
        ),
        (
            "pools: {w: {baseline: {r: {kind: disk, warn: 95, crit: 90}}}}\n",
            "pools.yml:1:",
            "warn (95) is above crit (90)",
        ),
        (
            "pools: {w: {baseline: {r: {kind: peer, warn: 1, crit: 2}}}}\n",
            "pools.yml:1:",
            "lower is worse",
        ),
        (  # latency: higher is worse, as sbm.threshold compares it
            "pools: {w: {baseline: {r: {kind: http, url: 'http://x/', warn: 900, crit: 200}}}}\n",
            "pools.yml:1:",
            "warn (900) is above crit (200)",
        ),
        ("pools: {w: {files: {srv/www: {}}}}\n", "pools.yml:1:21", "must be absolute"),
        (
            "pools: {w: {files: {/srv: {mode: 644}}}}\n",
            "pools.yml:1:",
            "expected an octal mode string",
        ),
        (
            "pools: {w: {baseline: {r: {kind: disk, crit: high}}}}\n",
            "pools.yml:1:",
            "expected a number",
        ),
    ],
)
def test_every_bad_input_is_an_error_with_file_line_column(text, where, needle):
    found = errors(text)
    assert any(e.startswith(where) and needle in e for e in found), found


@pytest.mark.parametrize(
    ("exception", "needle"),
    [
        ("{node: ghost, remove: {packages: [nginx]}}", "'ghost' is not a declared node"),
        (
            "{node: web2, pool: api, remove: {packages: [nginx]}}",
            "node 'web2' is not a member of pool 'api'",
        ),
        (
            "{node: web1, pool: web, remove: {packages: [apache2]}}",
            "item 'apache2' is not set by pool 'web'",
        ),
        ("{node: web1, reason: nothing}", "needs 'remove' and/or 'override'"),
        (
            "{node: web1, nodes: [web2], remove: {packages: [nginx]}}",
            "exactly one of 'node' or 'nodes'",
        ),
    ],
)
def test_bad_exceptions_are_errors(exception, needle):
    found = errors(CONFLICT + f"exceptions:\n  - {exception}\n")
    assert any(e.startswith("pools.yml:") and needle in e for e in found), found


def test_all_errors_are_reported_at_once():
    found = errors(
        "nodes: {a: {address: 300.0.0.1, pools: [x]}, b: {address: 1.2.3.4, bogus: 1}}\n"
    )
    assert len(found) >= 2


def test_directory_of_files_is_combined_and_duplicates_name_both_files(tmp_path):
    (tmp_path / "10-nodes.yml").write_text("nodes: {a: {address: 198.18.0.11, pools: [web]}}\n")
    (tmp_path / "20-pools.yml").write_text("pools: {web: {packages: {rsync: {}}}}\n")
    assert load(str(tmp_path)).effective("a").settings["packages"] == {"rsync": {}}
    (tmp_path / "30-more.yml").write_text("nodes:\n  a: {address: 198.18.0.12}\n")
    with pytest.raises(PoolModelError) as info:
        load(str(tmp_path))
    message = str(info.value)
    assert f"{tmp_path}/30-more.yml:2:3" in message and f"{tmp_path}/10-nodes.yml:1:9" in message


def test_empty_directory_and_missing_path_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(PoolModelError, match=r"no \.yml/\.yaml files"):
        load(str(tmp_path))
    with pytest.raises(PoolModelError, match="no such file or directory"):
        load(str(tmp_path / "nope.yml"))
    (tmp_path / "p.yml").write_text("nodes: {a: {address: 198.18.0.11}}\n")
    monkeypatch.setenv("MULTIALL_POOLS", str(tmp_path / "p.yml"))
    assert load().node_names() == ["a"]


def test_unknown_node_is_a_clear_key_error():
    with pytest.raises(KeyError, match=r"no node .zz."):
        two("description: x", "description: y").effective("zz")


def test_exceptions_and_defaults_from_several_files_are_combined(tmp_path):
    (tmp_path / "10.yml").write_text(
        "defaults: {ssh_user: root}\n"
        "nodes: {a: {address: 198.18.0.11, pools: [web, api]}}\n"
        "exceptions: [{node: a, remove: {packages: [curl]}}]\n"
    )
    (tmp_path / "20.yml").write_text(
        "defaults: {ssh_port: 2222}\n"
        "pools: {web: {packages: {curl: {}}}, api: {packages: {nginx: {}}}}\n"
        "exceptions: [{node: a, remove: {packages: [nginx]}}]\n"
    )
    view = load(str(tmp_path)).effective("a")
    assert view.settings["packages"] == {}
    assert view.connection["ansible_user"] == "root" and view.connection["ansible_port"] == 2222
    (tmp_path / "30.yml").write_text("defaults: {ssh_user: admin}\n")
    with pytest.raises(PoolModelError, match=r"default 'ssh_user' is declared twice"):
        load(str(tmp_path))


def test_model_keys_are_the_top_level_keys_the_loader_accepts():
    """One list: the inventory plugin tells its options from the model with it."""
    from ansible_collections.takelan.multiall.plugins.module_utils._pools_spec import (
        MODEL_KEYS,
        TOP,
    )

    assert MODEL_KEYS == ("defaults", "nodes", "pools", "exceptions")
    assert set(MODEL_KEYS) <= set(TOP.keys)
    found = errors("nodes: {}\npool: {}\n")
    assert "unknown key 'pool'" in found[0] and "pools" in found[0]


def test_without_pyyaml_modules_import_and_loading_says_what_to_install(tmp_path):
    """Modules ship this code to nodes that may lack PyYAML: importing must not fail."""
    (tmp_path / "pools.yml").write_text("nodes: {}\n")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["yaml"] = None  # as if PyYAML were not installed
        sys.path.insert(0, {str(ROOT / "collection")!r})
        from ansible_collections.takelan.multiall.plugins.module_utils import _located_yaml, pools
        from ansible_collections.takelan.multiall.plugins.modules import (
            baseline, dns_zone, pool_facts, tns_maintenance,
        )
        assert _located_yaml.HAS_YAML is False and "yaml" in _located_yaml.YAML_IMPORT_ERROR
        try:
            pools.load({str(tmp_path / "pools.yml")!r})
        except pools.PoolModelError as exc:
            print(exc)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "reading YAML needs PyYAML (Debian package python3-yaml)" in proc.stdout


# ----------------------------------------------------- addresses TNS can use
def test_pool_member_known_by_host_name_needs_an_ip_for_tns():
    found = errors("nodes: {web1: {address: web1.example.net, pools: [web]}}\npools: {web: {}}\n")
    assert any(
        e.startswith("pools.yml:1:25: nodes.web1.address:")
        and "node 'web1' is in pool web" in e
        and "is a host name" in e
        and "add 'ip: <its IPv4 address>'" in e
        for e in found
    ), found


def test_pool_member_with_ipv6_address_is_refused_until_the_probe_supports_it():
    found = errors("nodes: {web1: {address: '2001:db8::11', pools: [web]}}\npools: {web: {}}\n")
    assert any(
        "node 'web1'" in e and "is IPv6, which the TNS probe does not support yet" in e
        for e in found
    ), found


def test_host_name_or_ipv6_with_an_ip_is_accepted_and_ssh_keeps_the_address():
    m = model(
        """\
        nodes:
          web1: {address: web1.example.net, ip: 198.18.0.11, pools: [web]}
          web2: {address: '2001:db8::12', ip: 198.18.0.12, pools: [web]}
          spare: {address: spare.example.net}
        pools: {web: {}}
        """
    )
    web1, web2 = m.effective("web1"), m.effective("web2")
    assert (web1.ip, web1.connection["ansible_host"]) == ("198.18.0.11", "web1.example.net")
    assert (web2.ip, web2.address) == ("198.18.0.12", "2001:db8::12")
    assert m.effective("spare").ip is None  # in no pool: never probed, SSH only


@pytest.mark.parametrize(
    ("nodes", "needle"),
    [
        ("{a: {address: a.example.net, ip: 'fe80::1'}}", "is not an IPv4 address"),
        (
            "{a: {address: 198.18.0.1}, b: {address: b.example.net, ip: 198.18.0.1}}",
            "ip '198.18.0.1' is already used by node 'a'",
        ),
    ],
)
def test_bad_or_shared_ips_are_errors(nodes, needle):
    found = errors(f"nodes: {nodes}\n")
    assert any(e.startswith("pools.yml:1:") and needle in e for e in found), found


# ----------------------------------------------------------------- warnings
@pytest.mark.parametrize("members", [1, 2])
def test_dns_pool_with_fewer_than_three_members_is_a_warning(members):
    nodes = "".join(f"  n{i}: {{address: 198.18.0.{i}, pools: [web]}}\n" for i in range(members))
    m = model(f"nodes:\n{nodes}pools:\n  web:\n    dns: {{zone: web.example.net}}\n")
    (warning,) = m.warnings
    assert str(warning).startswith(f"pools.yml:{members + 4}:5: pools.web.dns: pool 'web'")
    assert f"only {members} member" in warning.message and "fewer than 3" in warning.message


def test_dns_pool_with_three_members_and_pool_without_dns_have_no_warning():
    nodes = "".join(f"  n{i}: {{address: 198.18.0.{i}, pools: [web, db]}}\n" for i in range(3))
    m = model(f"nodes:\n{nodes}pools:\n  web:\n    dns: {{zone: web.example.net}}\n  db: {{}}\n")
    assert m.warnings == []
