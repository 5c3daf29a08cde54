"""TNS + TakeConnector on a 5-node lab with two overlapping pools.

web = n1 n2 n3 n4, db = n3 n4 n5 (inventory/lab5/pools.yml). Every node runs a
real Serf agent and a real connector under the lab supervisor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.ansible_env import ansible_env
from lab.connector import control, start_all, start_connector, wait_converged, wait_for
from lab.failover import revive

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.lab, pytest.mark.slow]
RULES = [
    {
        "events": ["member_failed", "member_recovered"],
        "playbook": "tns_reaction.yml",
        "scope": "pool",
    },
]


@pytest.fixture(scope="module")
def tns_lab(lab_module):
    lab = lab_module(pools_file=str(ROOT / "inventory" / "lab5" / "pools.yml"))
    start_all(lab, rules=RULES)
    wait_converged(lab, timeout=60)
    return lab


@pytest.fixture(autouse=True)
def settled(tns_lab):
    """Each test starts from a settled lab: every view alive, every Serf agent joined.

    An earlier test's kill, partition or restart may still be healing in Serf
    (a rejoin, a refuted suspicion after a heal); a test that asserted a state
    at one instant then raced it.
    """
    wait_converged(tns_lab, timeout=60)


def state_of(lab, observer: str, pool: str, member: str) -> str:
    return control(lab, observer, {"op": "status"})["pools"][pool]["members"][member]["state"]


def test_status_shows_pools_leader_quorum_and_rtt(tns_lab):
    status = control(tns_lab, "n3", {"op": "status"})
    assert set(status["pools"]) == {"web", "db"}
    web, db = status["pools"]["web"], status["pools"]["db"]
    assert sorted(web["members"]) == ["n1", "n2", "n3", "n4"]
    assert sorted(db["members"]) == ["n3", "n4", "n5"]
    assert web["leader"] == "n1" and db["leader"] == "n3"
    assert web["quorum"] and db["quorum"]
    # Probe RTT is sampled every 10th probe round (2 s): every peer has one soon.
    wait_for(
        lambda: (
            set(control(tns_lab, "n3", {"op": "status"})["probe_rtt_ms"])
            == {"n1", "n2", "n4", "n5"}
        ),
        10,
        "probe RTT to every peer",
    )
    assert all(m["sbm"] == "0" for m in web["members"].values())


def test_killed_node_is_failed_for_every_peer_and_the_leader_runs_the_playbook(tns_lab):
    lab = tns_lab
    lab.kill("n2")
    try:
        # How fast is a goal, measured by benchmarks/failover_detect.py; here the
        # bound only keeps a broken detector from hanging the suite.
        for peer in ("n1", "n3", "n4"):
            wait_for(
                lambda p=peer: state_of(lab, p, "web", "n2") == "failed",
                10,
                f"{peer} to see n2 failed",
            )
        # The pool leader (n1) journaled the event and ran the reaction playbook.
        events = control(lab, "n1", {"op": "events"})["events"]
        assert any(e["type"] == "member_failed" and e["member"] == "n2" for e in events)
        run = wait_for(
            lambda: next(
                (
                    r
                    for r in control(lab, "n1", {"op": "runs"})["runs"]
                    if r["status"] == "successful"
                    and any(
                        e["type"] == "member_failed" and e.get("member") == "n2"
                        for e in r["events"]
                    )
                ),
                None,
            ),
            120,
            "the watcher's run on the leader",
        )
        assert run["playbook"] == "tns_reaction.yml" and run["pool"] == "web"
        log = (lab.node_root("n1") / "var/lib/multiall/reactions.log").read_text()
        assert "web member_failed n2" in log
        # Non-leaders do not run pool-wide playbooks.
        assert control(lab, "n3", {"op": "runs"})["runs"] == [] or all(
            r["pool"] == "db" for r in control(lab, "n3", {"op": "runs"})["runs"]
        )
    finally:
        revive(lab, "n2")
    wait_for(lambda: state_of(lab, "n1", "web", "n2") == "alive", 60, "n2 to recover")
    events = control(lab, "n1", {"op": "events"})["events"]
    assert any(e["type"] == "member_recovered" and e["member"] == "n2" for e in events)
    # Start-up is silent: no node reported peers "recovering" when they merely joined.
    assert all(e["member"] == "n2" for e in events if e["type"] == "member_recovered")


def test_maintenance_returns_after_every_pool_peer_has_seen_it(tns_lab):
    lab = tns_lab
    reply = control(lab, "n4", {"op": "maintenance", "action": "enter", "reason": "kernel upgrade"})
    try:
        assert reply["ok"], reply
        # Already visible on every peer of both pools the moment the call returned.
        for peer, pool in (("n1", "web"), ("n2", "web"), ("n3", "web"), ("n5", "db")):
            member = control(lab, peer, {"op": "status"})["pools"][pool]["members"]["n4"]
            assert member["state"] == "maintenance", (peer, member, reply)
            assert member["reason"] == "kernel upgrade"
        types = [e["type"] for e in control(lab, "n5", {"op": "events"})["events"]]
        assert "maintenance_enter" in types
    finally:
        # A failed check above must not leave n4 in maintenance for the later tests.
        reply = control(lab, "n4", {"op": "maintenance", "action": "exit"})
    assert reply["ok"], reply
    assert state_of(lab, "n1", "web", "n4") == "alive"
    assert "maintenance_exit" in [e["type"] for e in control(lab, "n1", {"op": "events"})["events"]]


def test_partitioned_node_loses_quorum_and_never_evicts_the_majority(tns_lab):
    lab = tns_lab
    lab.partition(["n1"], ["n2", "n3", "n4", "n5"])
    try:
        wait_for(
            lambda: state_of(lab, "n2", "web", "n1") == "failed",
            10,
            "the majority to mark n1 failed",
        )
        wait_for(
            lambda: not control(lab, "n1", {"op": "status"})["pools"]["web"]["quorum"],
            20,
            "n1 to lose quorum",
        )
        majority = control(lab, "n2", {"op": "status"})["pools"]["web"]
        assert majority["quorum"]
        assert majority["leader"] == "n2"  # n1 failed: next lowest name leads
        # n1 sees nobody, but its single vote evicts no one in the majority's view.
        for member in ("n3", "n4"):
            assert majority["members"][member]["state"] == "alive"
        assert control(lab, "n1", {"op": "status"})["pools"]["web"]["quorum"] is False
    finally:
        lab.heal()
    wait_for(lambda: state_of(lab, "n2", "web", "n1") == "alive", 60, "n1 to return after heal")
    wait_for(
        lambda: control(lab, "n1", {"op": "status"})["pools"]["web"]["quorum"],
        60,
        "n1 to regain quorum",
    )


def test_connector_rejects_forged_probe_packets(tns_lab):
    import socket

    before = control(tns_lab, "n3", {"op": "status"})["probe_rejected"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # From the controller address, unsigned and then signed with a wrong key.
        sock.sendto(b'{"t":"ping","from":"n1","ts":0,"view":{"n2":false}}', ("198.18.0.13", 7947))
        sock.sendto(b'{"t":"ping","from":"n1"}.deadbeef', ("198.18.0.13", 7947))
    wait_for(
        lambda: control(tns_lab, "n3", {"op": "status"})["probe_rejected"] >= before + 2,
        5,
        "rejections",
    )
    # The forged "n2 is down" views were dropped: they never evict n2.
    assert state_of(tns_lab, "n3", "web", "n2") != "failed"


# Captures, in a node's namespace, the payloads of probe packets sent by SOURCE.
SNIFF = r"""
import socket, struct, sys
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sock.settimeout(10)
out = []
while len(out) < 5:
    ip = sock.recv(65535)[14:]
    if ip[9] != 17 or socket.inet_ntoa(ip[12:16]) != sys.argv[1]:
        continue
    head = (ip[0] & 15) * 4
    if struct.unpack("!H", ip[head + 2 : head + 4])[0] == 7947:
        out.append(ip[head + 8 :].hex())
print(" ".join(out))
"""
# Sends the captured payloads again and again from the node's own address.
REPLAY = r"""
import socket, sys, time
packets = [bytes.fromhex(h) for h in sys.argv[3:]]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 0))
while True:
    for packet in packets:
        sock.sendto(packet, (sys.argv[2], 7947))
        time.sleep(0.05)
"""


def test_replayed_probe_packets_do_not_keep_a_dead_peer_reachable(tns_lab):
    lab = tns_lab
    captured = lab.exec("n3", ["python3", "-c", SNIFF, "198.18.0.12"]).stdout.split()
    assert len(captured) == 5
    before = control(lab, "n3", {"op": "status"})["probe_replayed"]
    lab.service_stop("n2", "connector")
    # An attacker on n2's address re-sends n2's genuine, correctly signed packets.
    lab.service_start(
        "n2", "replay", ["python3", "-c", REPLAY, "198.18.0.12", "198.18.0.13", *captured]
    )
    try:
        status = wait_for(
            lambda: (
                (s := control(lab, "n3", {"op": "status"}))["probe_heard_s"].get("n2", 0) > 2
                and s["probe_replayed"] >= before + 10
                and s
            ),
            30,
            "n3 to stop hearing n2 while its old packets are replayed",
        )
        assert status["probe_heard_s"]["n2"] > 2
    finally:
        lab.service_stop("n2", "replay")
        start_connector(lab, "n2")
    wait_converged(lab, ["n2", "n3"], timeout=60)


def test_connector_survives_restart_without_losing_its_journal(tns_lab):
    lab = tns_lab
    before = control(lab, "n1", {"op": "events"})["events"]
    lab.service_stop("n1", "connector")
    start_connector(lab, "n1")
    wait_converged(lab, ["n1"], timeout=60)
    after = control(lab, "n1", {"op": "events"})["events"]
    assert [e["id"] for e in before] == [e["id"] for e in after[: len(before)]]


def run_module(lab, node: str, args: str, *extra: str) -> dict:
    """Run takelan.multiall.tns_maintenance on a node over SSH; return its result."""
    import json
    import subprocess
    import sys

    env = ansible_env(
        {
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.minimal",
            # parsed below as JSON, whatever ansible.cfg asks for people
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        }
    )
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "-i",
            str(lab.inventory_path),
            node,
            "-m",
            "takelan.multiall.tns_maintenance",
            "-a",
            args,
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    out = proc.stdout
    result = json.loads(out[out.index("=> ") + 3 :])
    result["_diff_text"] = out[: out.index(f"{node} |")]
    return result


def test_tns_maintenance_module_is_idempotent_and_honours_check_mode(tns_lab):
    lab = tns_lab
    args = "state=present reason=disk-swap socket=/run/lab/connector.sock"
    checked = run_module(lab, "n5", args, "--check", "--diff")
    assert checked["changed"] is True
    assert '+    "maintenance": true' in checked["_diff_text"]
    assert '+    "reason": "disk-swap"' in checked["_diff_text"]
    assert state_of(lab, "n3", "db", "n5") == "alive"  # check mode changed nothing

    first = run_module(lab, "n5", args)
    assert first["changed"] is True and first["maintenance"] is True
    assert state_of(lab, "n3", "db", "n5") == "maintenance"  # seen by peers on return
    again = run_module(lab, "n5", args)
    assert again["changed"] is False

    back = run_module(lab, "n5", "state=absent socket=/run/lab/connector.sock")
    assert back["changed"] is True and back["maintenance"] is False
    assert state_of(lab, "n3", "db", "n5") == "alive"


def test_metrics_on_loopback_count_members_by_state(tns_lab):
    script = (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:9273/metrics', timeout=5).read().decode())"
    )
    text = tns_lab.exec("n3", ["python3", "-c", script]).stdout
    assert 'multiall_members{pool="web",state="alive"} 4.0' in text
    assert 'multiall_members{pool="db",state="alive"} 3.0' in text
    assert "multiall_probe_rtt_ms" in text
    # Loopback only: the node's lab address does not serve metrics.
    probe = tns_lab.exec(
        "n3",
        ["python3", "-c", "import socket; socket.create_connection(('198.18.0.13', 9273), 1)"],
        check=False,
    )
    assert probe.returncode != 0


def test_connector_restarts_its_serf_agent_when_it_dies(tns_lab):
    lab = tns_lab
    old = lab.exec("n5", ["pgrep", "-x", "serf"]).stdout.split()
    lab.exec("n5", ["pkill", "-KILL", "-x", "serf"])
    new = wait_for(
        lambda: (
            (pids := lab.exec("n5", ["pgrep", "-x", "serf"], check=False).stdout.split())
            and pids != old
            and pids
        ),
        20,
        "a new serf agent on n5",
    )
    assert new and new != old
    wait_converged(lab, ["n5", "n3"], timeout=60)


def test_a_connector_killed_outright_ends_its_orphan_serf_agent_on_restart(tns_lab):
    """SIGKILL leaves the connector's Serf agent running with the ports: the restarted
    connector must end it and run its own, not fail to start one every 10 s."""
    lab = tns_lab
    orphan = lab.exec("n5", ["pgrep", "-x", "serf"]).stdout.split()
    # Stopped, the orphan cannot die on its own either (Go exits on a write to the
    # dead connector's pipe, whenever Serf next logs): it holds the ports until ended.
    lab.exec("n5", ["kill", "-STOP", *orphan])
    killed = lab.service_status("n5", "connector")["pid"]
    lab.exec("n5", ["kill", "-9", str(killed)])
    wait_for(
        lambda: lab.service_status("n5", "connector")["pid"] not in (None, killed),
        20,
        "the supervisor to restart n5's connector",
    )
    wait_converged(lab, ["n5", "n3"], timeout=60)
    agents = lab.exec("n5", ["pgrep", "-x", "serf"]).stdout.split()
    assert len(agents) == 1 and agents != orphan, (orphan, agents)
    log = lab.service_log("n5", "connector")
    restarted = log[log.rfind('"msg": "connector started"') :]
    assert "stopped the serf agent a previous connector left running" in restarted, restarted
    assert "serf agent exited" not in restarted, restarted


def test_cli_on_a_node_shows_the_pool_table_and_refuses_other_nodes(tns_lab):
    multiall = str(ROOT / ".venv" / "bin" / "multiall")
    sock = ["--socket", "/run/lab/connector.sock"]
    table = tns_lab.exec("n3", [multiall, "status", *sock]).stdout
    assert "pool web: leader n1, quorum yes (4 declared)" in table
    assert "n3 *" in table and "alive" in table
    events = tns_lab.exec("n3", [multiall, "events", "--json", *sock]).stdout
    assert all(json.loads(line)["pool"] in ("web", "db") for line in events.splitlines())
    wrong = tns_lab.exec("n3", [multiall, "maintenance", "enter", "n1", *sock], check=False)
    assert (
        wrong.returncode == 1 and "run `multiall maintenance enter` on 'n1' itself" in wrong.stderr
    )
    down = tns_lab.exec(
        "n3", [multiall, "status", "--socket", "/run/lab/nothing.sock"], check=False
    )
    assert (
        down.returncode == 1
        and "cannot reach the connector" in down.stderr
        and "Traceback" not in down.stderr
    )


def test_sigterm_stops_connector_and_its_serf_agent_cleanly(tns_lab):
    lab = tns_lab
    lab.service_stop("n5", "connector")  # SIGTERM to the service's process group
    assert lab.exec("n5", ["pgrep", "-x", "serf"], check=False).returncode == 1
    assert not (lab.ctl_path("n5") / "connector.sock").exists()
    start_connector(lab, "n5")
    wait_converged(lab, ["n5"], timeout=60)


def test_sbm_critical_reaches_pool_peers_through_tns(tns_lab):
    lab = tns_lab
    multiall = str(ROOT / ".venv" / "bin" / "multiall")
    # How fast is measured by benchmarks/sbm.py; this test checks that it arrives.
    lab.exec("n5", ["touch", "/run/sbm-fail"])
    try:
        wait_for(
            lambda: (
                control(lab, "n3", {"op": "status"})["pools"]["db"]["members"]["n5"]["sbm"] == "2"
            ),
            10,
            "n3 to see n5 CRITICAL",
        )
        events = control(lab, "n4", {"op": "events"})["events"]
        assert any(
            e["type"] == "sbm_changed" and e["member"] == "n5" and e["new"] == "2" for e in events
        )
        table = lab.exec("n5", [multiall, "sbm", "--socket", "/run/lab/connector.sock"]).stdout
        assert "SBM status 2" in table and "marker" in table and "CRITICAL" in table
        assert "marker present" in table
        # From any node: n3 asks n5 through a Serf query.
        remote = lab.exec(
            "n3", [multiall, "sbm", "n5", "--json", "--socket", "/run/lab/connector.sock"]
        ).stdout
        detail = json.loads(remote)
        assert detail["node"] == "n5" and detail["status"] == "2"
        assert any(
            r["rule"] == "marker" and r["reported_name"] == "CRITICAL" for r in detail["rules"]
        )
        # A real check_disk's perfdata travels whole: value, unit, warn, crit, min, max.
        disk = next(r for r in detail["rules"] if r["rule"] == "nagios_disk")
        root = disk["perfdata"]["/"]
        assert set(root) == {"value", "unit", "warn", "crit", "min", "max"}, disk
        assert root["unit"] == "B" and root["min"] == 0, disk
        assert all(isinstance(root[k], int) for k in ("value", "warn", "crit", "max")), disk
        assert "perf / = " in table and " B  warn " in table
        gone = lab.exec(
            "n3", [multiall, "sbm", "nobody", "--socket", "/run/lab/connector.sock"], check=False
        )
        assert gone.returncode == 1 and "no node 'nobody'" in gone.stderr
    finally:
        lab.exec("n5", ["rm", "-f", "/run/sbm-fail"])
    wait_for(
        lambda: control(lab, "n3", {"op": "status"})["pools"]["db"]["members"]["n5"]["sbm"] == "0",
        10,
        "recovery",
    )


def test_real_conditions_drive_sbm_seen_by_peers(tns_lab):
    """A filled filesystem, a killed process and a closed port on n5, each seen by n3."""
    import yaml

    lab = tns_lab
    lab.exec("n5", ["mkdir", "-p", "/srv/small"])
    lab.exec("n5", ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", "/srv/small"])
    lab.service_start(
        "n5", "worker", ["python3", "-c", "import time; time.sleep(3600)", "sbm-worker"]
    )
    lab.service_start("n5", "web", ["python3", "-m", "http.server", "8088", "--bind", "127.0.0.1"])
    model = yaml.safe_load(lab.inventory_path.read_text())
    model["nodes"]["n5"]["settings"] = {
        "baseline": {
            "small_disk": {
                "kind": "disk",
                "mount": "/srv/small",
                "warn": 50,
                "crit": 80,
                "interval": 0.5,
            },
            "worker": {"kind": "process", "cmdline": "sbm-worker", "interval": 0.5},
            "web_port": {"kind": "port", "port": 8088, "interval": 0.5},
        }
    }
    (lab.node_root("n5") / "etc/multiall/pools.yml").write_text(yaml.safe_dump(model))
    lab.service_stop("n5", "connector")
    start_connector(lab, "n5")
    wait_converged(lab, ["n5", "n3"], timeout=60)

    def seen_by_n3() -> str:
        return control(lab, "n3", {"op": "status"})["pools"]["db"]["members"]["n5"]["sbm"]

    def expect(code: str, what: str) -> None:
        try:
            wait_for(lambda: seen_by_n3() == code, 10, what)
        except AssertionError as exc:
            detail = control(lab, "n5", {"op": "sbm"})
            raise AssertionError(
                f"{exc}; n5 sbm: {detail}; web log: {lab.service_log('n5', 'web')[-800:]}"
            ) from None

    expect("0", "n5 healthy")
    lab.exec("n5", ["dd", "if=/dev/zero", "of=/srv/small/fill", "bs=1k", "count=900"])
    expect("2", "filled filesystem")
    lab.exec("n5", ["rm", "/srv/small/fill"])
    expect("0", "space freed")
    lab.service_stop("n5", "worker")
    expect("2", "killed process")
    lab.service_start(
        "n5", "worker", ["python3", "-c", "import time; time.sleep(3600)", "sbm-worker"]
    )
    expect("0", "process back")
    lab.service_stop("n5", "web")
    expect("2", "closed port")
    lab.service_start("n5", "web", ["python3", "-m", "http.server", "8088", "--bind", "127.0.0.1"])
    expect("0", "port open again")
