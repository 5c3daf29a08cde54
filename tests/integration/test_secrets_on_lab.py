"""No secret reaches Ansible's output, even with ``--diff -vv``; key files are private.

The real ``tns`` and ``dns_sa`` roles run on a lab (inventory/lab-dns/pools.yml)
through ``ansible-playbook --diff -vv``: the tns role twice (the first run
generates the gossip key, the second reads the existing one back), the
dns_sa role once. Then every secret the runs made or used is read from the
nodes' files and looked for in the whole output, as written and base64-encoded
(``slurp`` returns file contents base64-encoded).
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from connector.ansible_env import ansible_env
from lab.dns import install_dns

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
pytestmark = [pytest.mark.lab, pytest.mark.slow]
SECRET_RE = re.compile(r'secret\s+"([^"]+)"')


def run_tns(lab) -> str:
    """playbooks/tns.yml on the pool nodes, set up for the lab (connector from this checkout)."""
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(lab.inventory_path),
            str(ROOT / "playbooks" / "tns.yml"),
            "--limit",
            "n1,n2",
            "--diff",
            "-vv",
            "-e",
            f"tns_src={ROOT} tns_copy_src=false tns_make_venv=false",
            "-e",
            f"tns_python={sys.executable} tns_service_manager=lab",
        ],
        capture_output=True,
        text=True,
        env=ansible_env(),
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def secrets_of(lab) -> dict[str, str]:
    """Every secret on the nodes after the runs, named by where it came from."""
    found: dict[str, str] = {}
    for node in ("n1", "n2"):
        etc = lab.node_root(node) / "etc" / "multiall"
        found[f"{node} serf.key"] = (etc / "serf.key").read_text().strip()
        config = yaml.safe_load((etc / "connector.yml").read_text())
        found[f"{node} serf.encrypt_key"] = config["serf"]["encrypt_key"]
        found[f"{node} serf.rpc_auth"] = config["serf"]["rpc_auth"]
        for pool, key in config["probe"]["keys"].items():
            found[f"{node} probe.keys.{pool}"] = key
    bind = lab.node_root("ns1") / "etc" / "bind"
    for path in [bind / "rndc.key", *sorted((bind / "multiall" / "keys").glob("*.key"))]:
        for index, secret in enumerate(SECRET_RE.findall(path.read_text())):
            found[f"ns1 {path.name} #{index}"] = secret
    return found


def encodings(path: Path) -> list[str]:
    """A file's contents as slurp would show them."""
    return [base64.b64encode(path.read_bytes()).decode()]


def test_role_output_never_shows_a_secret_and_keys_are_private(lab_module):
    lab = lab_module(pools_file=str(ROOT / "inventory" / "lab-dns" / "pools.yml"))
    # A loose rndc key (as rndc-confgen left it on some hosts) is tightened by the role.
    lab.exec("ns1", ["sh", "-c", "rndc-confgen -a && chmod 0644 /etc/bind/rndc.key"])
    output = install_dns(lab, "--diff", "-vv")
    output += run_tns(lab)  # generates the gossip key
    output += run_tns(lab)  # reads it back from the nodes
    secrets = secrets_of(lab)
    assert len(secrets) >= 11 and all(secrets.values()), secrets
    files = [
        lab.node_root("n1") / "etc/multiall/serf.key",
        lab.node_root("n1") / "etc/multiall/probe-keys.yml",
        lab.node_root("n1") / "etc/multiall/serf-rpc.key",
        lab.node_root("n1") / "etc/multiall/dns/web.key",
        *sorted((lab.node_root("ns1") / "etc/bind/multiall/keys").glob("*.key")),
    ]
    leaked = [
        name
        for name, secret in secrets.items()
        if secret in output or base64.b64encode(secret.encode()).decode() in output
    ]
    leaked += [str(path) for path in files for text in encodings(path) if text in output]
    assert leaked == [], f"secrets in ansible output: {leaked}"
    # Key files: named reads the rndc and TSIG keys (group bind), nobody else.
    stat = ["stat", "-c", "%a %U %G"]
    assert lab.exec("ns1", [*stat, "/etc/bind/rndc.key"]).stdout.split() == ["640", "root", "bind"]
    for key in ("multiall-web", "multiall-api"):
        path = f"/etc/bind/multiall/keys/{key}.key"
        assert lab.exec("ns1", [*stat, path]).stdout.split() == ["640", "root", "bind"]
    for node in ("n1", "n2"):
        for path in ("/etc/multiall/dns/web.key", "/etc/multiall/connector.yml"):
            assert lab.exec(node, [*stat, path]).stdout.split() == ["600", "root", "root"]
