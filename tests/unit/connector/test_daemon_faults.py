"""Faults inside the daemon: it keeps detecting members and serving DNS through them.

Real asyncio, real SQLite files (made immutable or corrupt), real threads, a real
``serf agent`` and real processes for the agent's stderr. The stand-ins are a
check that hangs on purpose, the DNS server's two calls (the thread pool, not
BIND, is under test here), and a small Serf RPC server that fails on cue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
from ansible_collections.takelan.multiall.plugins.module_utils._dns_records import RRset
from ansible_collections.takelan.multiall.plugins.module_utils.tns import SerfMember, pool_topology

from connector import daemon, dns_reconciler, sbm_scheduler, watcher
from connector.config import ConnectorConfig
from connector.control import ControlServer
from connector.daemon import Connector
from connector.journal import Journal
from connector.sbm_scheduler import SbmScheduler

GUARD = 20.0  # a hang guard only: each step below takes milliseconds when it works
MULTIALL = str(Path(sys.executable).parent / "multiall")
NODES = ["n1", "n2", "n3"]
MODEL = """\
nodes:
  n1: {address: 198.18.0.11, pools: [web]}
  n2: {address: 198.18.0.12, pools: [web]}
  n3: {address: 198.18.0.13, pools: [web]}
pools:
  web:
    dns: {zone: web.example.test, server: 198.18.0.10}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_connector(tmp_path: Path, **serf) -> Connector:
    pools = tmp_path / "pools.yml"
    pools.write_text(MODEL)
    cfg = ConnectorConfig(
        node="n1",
        pools_file=str(pools),
        state_dir=str(tmp_path / "state"),
        # The daemon refuses to start without a gossip key and a probe key per pool.
        serf={"encrypt_key": "ggosci2PNEFAPtchZFwO6KYNO0gFsH112VVbvI78Kv8="},
        probe={"keys": {"web": "k" * 64}},
    )
    cfg.serf.update(serf)
    return Connector(cfg)


def event(member: str = "n3") -> dict:
    return {"type": "member_failed", "pool": "web", "member": member}


@contextlib.contextmanager
def immutable(*paths: Path):
    """Make files immutable (chattr +i): writes fail even for root, as on a broken disk."""
    done = []
    try:
        for path in paths:
            if subprocess.run(
                ["chattr", "+i", str(path)], capture_output=True, check=False
            ).returncode:
                pytest.skip("chattr +i is not available here (needs root and ext4/xfs)")
            done.append(path)
        yield
    finally:
        for path in done:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def db_files(connector: Connector) -> list[Path]:
    path = Path(connector.journal.path)
    return [p for p in (path, Path(f"{path}-wal")) if p.exists()]


# ------------------------------------------------------ 1. hung SBM checks
class DnsServer:
    """The two calls the reconciler makes to BIND, recorded."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []

    def served_rrsets(self, server, zone, keys, port=53, timeout=2.0):
        out = {key: RRset(key[0], key[1], 0, ()) for key in keys}
        out[("@", "A")] = RRset("@", "A", 5, ("198.18.0.11", "198.18.0.12", "198.18.0.13"))
        return out

    def reconcile(self, settings, addresses, members, server, key=None, timeout=2.0, **_):
        self.sent.append(list(members))
        return {"changed": True, "diff": [], "zone": settings["zone"], "members": members}


def test_hung_checks_never_stall_dns_or_event_publishing(tmp_path, monkeypatch):
    # More hung checks than any default thread pool has threads (32 at most).
    release, hung = threading.Event(), []

    def hanging_check(name, rule):
        hung.append(name)
        release.wait()
        return sbm_scheduler.Result(name, rule["kind"], 0, "released")

    monkeypatch.setattr(sbm_scheduler, "evaluate", hanging_check)
    dns = DnsServer()
    monkeypatch.setattr(dns_reconciler, "served_rrsets", dns.served_rrsets)
    monkeypatch.setattr(dns_reconciler, "reconcile", dns.reconcile)
    monkeypatch.setattr(dns_reconciler, "load_key_file", lambda path: object())
    connector = make_connector(tmp_path)
    rules = {
        f"r{i}": {"kind": "load", "crit": 9, "interval": 0.05, "timeout": 0.05} for i in range(40)
    }
    published: list[str] = []

    async def publish(code: str) -> None:
        published.append(code)

    checks = SbmScheduler(rules, publish)

    async def scenario():
        try:
            return await asyncio.wait_for(steps(), 3 * GUARD)
        finally:  # let the hung threads go before asyncio.run waits for its pool's threads
            release.set()

    async def steps():
        task = asyncio.create_task(checks.run())
        while len(checks.last) < len(rules):  # every rule's first check has hung past its timeout
            await asyncio.sleep(0.05)
        # n3 fails: the leader n1 (quorum, fresh contact with n2) takes it out of DNS ...
        connector.prober.heard["web"]["n2"] = time.monotonic()
        serf = {n: SerfMember(n, status="failed" if n == "n3" else "alive") for n in NODES}
        connector.dns.observe("web", pool_topology("web", NODES, serf, {}))
        # A leader long settled with quorum (a fresh one holds removals back a moment).
        connector.dns.settled_since["web"] = time.monotonic() - 60
        await asyncio.wait_for(connector.dns._step("web"), GUARD)
        # ... and the event is journaled and published.
        queue: asyncio.Queue = asyncio.Queue()
        connector.subscribers.add(queue)
        await asyncio.wait_for(connector.publish(event()), GUARD)
        while not all(  # each rule's next round found its check still hung: no new thread
            "no new check starts" in checks.last[r].message for r in rules
        ):
            await asyncio.sleep(0.05)
        task.cancel()
        return queue.get_nowait()

    got = asyncio.run(scenario())
    assert dns.sent == [["n1", "n2"]]
    assert got["member"] == "n3" and isinstance(got["id"], int)
    # DNS-SA's own event was journaled too.
    assert [e["type"] for e in connector.journal.events()] == ["dns_changed", "member_failed"]
    # The checks held one thread per rule, no more: rounds found their check still hung.
    assert len(hung) == len(rules)
    assert "no new check starts until it returns" in checks.last["r0"].message
    assert published[-1] == "3"  # hung checks are UNKNOWN, and say so


# ------------------------------------------------------- 2. journal faults
def test_a_failing_journal_is_reported_and_events_still_flow(tmp_path, caplog):
    connector = make_connector(tmp_path)
    server = ControlServer(connector)
    sock = str(tmp_path / "c.sock")

    async def scenario():
        unix = await asyncio.start_unix_server(server.handle, path=sock)
        queue: asyncio.Queue = asyncio.Queue()
        connector.subscribers.add(queue)
        await connector.publish(event("n2"))
        with immutable(*db_files(connector)):
            for member in ("n3", "n2", "n3"):
                await asyncio.wait_for(connector.publish(event(member)), GUARD)
            status = connector.status()
            shown = await asyncio.to_thread(
                subprocess.run,
                [MULTIALL, "status", "--socket", sock],
                capture_output=True,
                text=True,
                timeout=60,
            )
        await connector.publish(event("n3"))  # the journal works again
        unix.close()
        return [queue.get_nowait() for _count in range(5)], status, shown

    with caplog.at_level(logging.WARNING):
        got, status, shown = asyncio.run(scenario())
    assert [e["member"] for e in got] == ["n2", "n3", "n2", "n3", "n3"]  # nothing held back
    assert [e["id"] is None for e in got] == [False, True, True, True, False]
    fault = status["faults"]["journal"]
    assert fault["path"] == connector.journal.path and fault["failures"] == 3
    assert "disk I/O error" in fault["error"] or "Operation not permitted" in fault["error"]
    assert shown.returncode == 0 and "FAULT journal" in shown.stdout
    assert connector.journal.path in shown.stdout
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and connector.journal.path in errors[0].getMessage()  # not 3
    assert any("recovered after 3 failures" in r.getMessage() for r in caplog.records)
    assert connector.status()["faults"] == {}


def test_a_hung_journal_write_delays_an_event_briefly_and_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(daemon, "JOURNAL_WAIT", 0.2)
    connector = make_connector(tmp_path)

    async def scenario():
        queue: asyncio.Queue = asyncio.Queue()
        connector.subscribers.add(queue)
        with connector.journal._lock:  # the journal's thread is stuck, as on a hung disk
            await asyncio.wait_for(connector.publish(event()), GUARD)
            fault = connector.status()["faults"]["journal"]["error"]
        return queue.get_nowait(), fault

    got, fault = asyncio.run(scenario())
    assert got["member"] == "n3" and got["id"] is None  # published without waiting for the disk
    assert "a write has taken more than 0.2 s" in fault
    deadline = time.monotonic() + GUARD
    while not connector.journal.events() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert connector.journal.events()[0]["member"] == "n3"  # written once the disk came back


def test_the_topology_loop_outlives_a_failing_journal(tmp_path):
    connector = make_connector(tmp_path)
    connector.baseline = True

    async def scenario():
        loop_task = asyncio.create_task(connector.recompute())
        queue: asyncio.Queue = asyncio.Queue()
        connector.subscribers.add(queue)
        connector.serf_members = {n: SerfMember(n, status="alive") for n in NODES}
        connector.dirty.set()
        while "web" not in connector.topology:  # the first view: no event
            await asyncio.sleep(0.01)
        with immutable(*db_files(connector)):
            for status in ("failed", "alive"):  # n3 fails, then comes back: two events
                connector.serf_members = {
                    n: SerfMember(n, status=status if n == "n3" else "alive") for n in NODES
                }
                connector.dirty.set()
                got = await asyncio.wait_for(queue.get(), GUARD)
                assert got["member"] == "n3" and got["id"] is None
        assert not loop_task.done()
        loop_task.cancel()

    asyncio.run(scenario())


def test_a_run_waits_while_the_journal_fails_and_is_queued_when_it_works(tmp_path, monkeypatch):
    monkeypatch.setattr(watcher, "JOURNAL_RETRY", 0.1)
    from tests.unit.connector.test_connector_units import make_watcher

    runner, journal = make_watcher(tmp_path)
    path = Path(journal.path)
    files = [path, Path(f"{path}-wal")]

    async def scenario():
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0.05)
        with immutable(*files):
            runner.submit({"type": "member_failed", "pool": "web", "member": "n2"})
            await asyncio.sleep(0.4)  # the debounce (0.1 s) and a few retries
            runner.submit({"type": "member_failed", "pool": "web", "member": "n3"})
            await asyncio.sleep(0.3)
            assert runner.plays == [] and journal.fault.as_dict() is not None
        for _attempt in range(int(GUARD / 0.05)):
            if runner.plays and journal.runs()[-1]["status"] == "successful":
                break
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(scenario())
    [run] = journal.runs()
    assert [e["member"] for e in run["events"]] == ["n2", "n3"]  # none lost, in order
    assert run["status"] == "successful"


def test_a_corrupt_journal_is_moved_aside_and_a_new_one_started(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    garbage = b"this is not an SQLite database\n" * 100
    (state / "connector.db").write_bytes(garbage)
    with caplog.at_level(logging.ERROR):
        connector = make_connector(tmp_path)
    [aside] = list(state.glob("connector.db.corrupt-*"))
    assert aside.read_bytes() == garbage  # kept as it was, never deleted
    message = caplog.records[0].getMessage()
    assert str(state / "connector.db") in message and str(aside) in message
    assert ".recover" in message
    assert str(aside) in connector.status()["faults"]["journal_corrupt"]["error"]
    connector.journal.add_event(event())
    assert Journal(str(state / "connector.db")).events()[0]["member"] == "n3"


def test_a_journal_that_cannot_be_opened_is_reported_and_retried(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    Journal(str(state / "connector.db")).add_event(event("n2"))
    with immutable(state / "connector.db"), caplog.at_level(logging.ERROR):
        connector = make_connector(tmp_path)  # starts; does not trace back
        assert "connector.db" in connector.status()["faults"]["journal"]["error"]
    assert connector.journal.events()[0]["member"] == "n2"  # reopened once it could be
    assert connector.status()["faults"] == {}
    assert "connector.db" in caplog.records[0].getMessage()


# ------------------------------------------------------------ 3. serf rpc
def sockets_open() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.fixture
def serf_agent(tmp_path):
    """A real Serf agent on loopback whose RPC wants the key ``right-key``."""
    binary = shutil.which("serf")
    if binary is None:
        pytest.skip("serf is not installed")
    conf = tmp_path / "serf.json"
    conf.write_text(json.dumps({"rpc_auth": "right-key"}))
    rpc_port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "agent",
            "-node",
            "t1",
            "-bind",
            f"127.0.0.1:{free_port()}",
            "-rpc-addr",
            f"127.0.0.1:{rpc_port}",
            "-config-file",
            str(conf),
            "-log-level",
            "err",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", rpc_port)) == 0:
                break
        time.sleep(0.05)
    yield rpc_port
    proc.terminate()
    proc.wait(10)


def test_a_wrong_rpc_auth_is_a_warning_and_leaks_no_connection(tmp_path, serf_agent, caplog):
    connector = make_connector(tmp_path, rpc_port=serf_agent, rpc_auth="wrong-key")

    async def scenario():
        follow = asyncio.create_task(connector.follow_serf())
        while connector.serf_rpc.failures < 2:
            await asyncio.sleep(0.02)
        before = sockets_open()
        while connector.serf_rpc.failures < 12:
            await asyncio.sleep(0.02)
        after = sockets_open()
        follow.cancel()
        return before, after

    with caplog.at_level(logging.DEBUG, logger="multiall"):
        before, after = asyncio.run(asyncio.wait_for(scenario(), GUARD * 2))
    assert after <= before  # ten more refused attempts, not one more socket
    warnings = [
        r for r in caplog.records if r.name == "multiall.serf" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1  # one warning, not one per retry
    text = warnings[0].getMessage()
    assert f"127.0.0.1:{serf_agent}" in text and "rpc_auth" in text
    assert "serf rpc" in json.dumps(connector.status()["faults"])


class FakeSerfRpc:
    """Serf's RPC protocol, enough for the connector; ``members`` fails on cue."""

    def __init__(self, fail_calls: set[int]) -> None:
        self.fail_calls, self.members_calls = fail_calls, 0
        self.members = ["n1"]

    def answer(self, command: str, seq: int) -> bytes:
        pack = msgpack.packb
        if command == "members":
            self.members_calls += 1
            if self.members_calls in self.fail_calls:
                return pack({"Seq": seq, "Error": "injected failure"})
            body = {
                "Members": [
                    {
                        "Name": n,
                        "Addr": b"\x7f\x00\x00\x01",
                        "Port": 1,
                        "Status": "alive",
                        "Tags": {},
                    }
                    for n in self.members
                ]
            }
            return pack({"Seq": seq, "Error": ""}) + pack(body, use_bin_type=False)
        if command == "join":
            return pack({"Seq": seq, "Error": ""}) + pack({"Num": 0})
        if command == "get-coordinate":
            return pack({"Seq": seq, "Error": ""}) + pack({"Ok": False})
        return pack({"Seq": seq, "Error": ""})  # handshake, tags, stream's ack, stop

    async def handle(self, reader, writer) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        with_body = {"handshake", "auth", "tags", "join", "stream", "get-coordinate", "stop"}
        header = None
        while chunk := await reader.read(65536):
            unpacker.feed(chunk)
            for item in unpacker:
                if header is None and item.get("Command") in with_body:
                    header = item  # its body is the next item
                    continue
                request, header = header or item, None
                writer.write(self.answer(request["Command"], request["Seq"]))
        writer.close()


def test_member_polling_goes_on_after_a_serf_error(tmp_path, caplog):
    fake = FakeSerfRpc(fail_calls={2})

    async def scenario():
        server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connector = make_connector(tmp_path, rpc_port=port)
        connector.poll_interval = 0.05
        follow = asyncio.create_task(connector.follow_serf())
        while fake.members_calls < 2:  # the first poll has failed
            await asyncio.sleep(0.01)
        fake.members = ["n1", "n2"]  # only a later poll can see n2: no stream event says so
        while "n2" not in connector.serf_members:
            await asyncio.sleep(0.01)
        follow.cancel()
        server.close()
        return connector

    with caplog.at_level(logging.WARNING, logger="multiall"):
        connector = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    assert any("injected failure" in r.getMessage() for r in caplog.records)
    assert connector.status()["faults"] == {}  # recovered, and said so


# --------------------------------------------------- 3. serf agent stderr
def fake_agent(tmp_path: Path, script: str) -> str:
    path = tmp_path / "serf"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_serf_agent_stderr_is_logged_as_it_comes(tmp_path, caplog):
    binary = fake_agent(tmp_path, 'echo "error: bind: address already in use" >&2\nexec sleep 30')
    connector = make_connector(tmp_path, binary=binary)

    async def scenario():
        task = asyncio.create_task(connector.supervise_serf())
        while not any("address already in use" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.02)
        running = connector.serf_proc.returncode is None
        connector.stopping = True
        connector.serf_proc.terminate()
        await task
        return running

    with caplog.at_level(logging.WARNING, logger="multiall"):
        assert asyncio.run(asyncio.wait_for(scenario(), GUARD))  # logged while the agent runs


def test_a_dying_agent_reports_its_last_lines_only(tmp_path, caplog):
    # Serf says why it cannot start on stdout, not stderr: the warning carries it too.
    why = "==> Failed to start the Serf agent: bind: address already in use"
    binary = fake_agent(
        tmp_path,
        f'i=0; while [ $i -lt 300 ]; do echo "line $i" >&2; i=$((i+1)); done\necho "{why}"; exit 3',
    )
    connector = make_connector(tmp_path, binary=binary)

    async def scenario():
        task = asyncio.create_task(connector.supervise_serf())
        while not any(r.getMessage().startswith("serf agent exited") for r in caplog.records):
            await asyncio.sleep(0.02)
        connector.stopping = True
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="multiall"):
        asyncio.run(asyncio.wait_for(scenario(), GUARD))
    lines = [r for r in caplog.records if r.getMessage().startswith("serf agent: line")]
    assert len(lines) >= 300  # each line, as it came
    [exited] = [r for r in caplog.records if r.getMessage().startswith("serf agent exited")]
    assert exited.fields["rc"] == 3
    assert exited.fields["stderr"].splitlines() == [f"line {i}" for i in range(280, 300)]
    assert exited.fields["output"] == why
    assert not any(why in r.getMessage() for r in caplog.records if r is not exited)


# An agent whose command line stays "serf agent ..." (no exec) and that ends on SIGTERM
# within 0.1 s.
LINGERING_AGENT = "trap 'exit 0' TERM; while :; do sleep 0.1; done"


def test_a_restarted_connector_stops_the_agent_its_killed_predecessor_left(tmp_path, caplog):
    """After a SIGKILL of the connector its agent holds the ports: the next start ends it."""
    binary = fake_agent(tmp_path, LINGERING_AGENT)
    first = make_connector(tmp_path, binary=binary)
    second = make_connector(tmp_path, binary=binary)

    async def scenario():
        task = asyncio.create_task(first.supervise_serf())
        while first.serf_proc is None:
            await asyncio.sleep(0.02)
        orphan = first.serf_proc
        task.cancel()  # the connector is gone; its agent is not
        await asyncio.sleep(0.1)
        assert orphan.returncode is None
        task = asyncio.create_task(second.supervise_serf())
        while second.serf_proc is None:
            await asyncio.sleep(0.02)
        await asyncio.wait_for(orphan.wait(), 5)
        running = second.serf_proc.returncode is None
        second.stopping = True
        second.serf_proc.terminate()
        await task
        return orphan.pid, running

    with caplog.at_level(logging.WARNING, logger="multiall"):
        orphan, running = asyncio.run(asyncio.wait_for(scenario(), GUARD))
    assert running
    stopped = [r for r in caplog.records if r.getMessage().startswith("stopped the serf agent")]
    assert [r.fields["pid"] for r in stopped] == [orphan]


def test_a_pid_file_naming_another_process_stops_nothing(tmp_path):
    """A recycled pid (an unrelated process, another node's agent) is never signalled."""
    from connector.serf_pidfile import record_agent, stop_stale_agent

    other = fake_agent(tmp_path, LINGERING_AGENT)
    procs = [
        subprocess.Popen(["sleep", "30"]),
        subprocess.Popen([other, "agent", "-node", "n2"]),
    ]
    try:
        for proc in procs:
            record_agent(str(tmp_path), proc.pid)
            assert stop_stale_agent(str(tmp_path), "n1") is None
            assert proc.poll() is None
        (tmp_path / "serf.pid").write_text("not a pid\n")
        assert stop_stale_agent(str(tmp_path), "n1") is None
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("nice", "below"), [(None, 0), (10, 10)])
def test_the_serf_agent_runs_below_the_connectors_cpu_priority(tmp_path, nice, below):
    """Probe rounds are the fast path; on a busy node the connector gets the CPU first."""
    binary = fake_agent(tmp_path, "exec sleep 30")
    connector = make_connector(tmp_path, binary=binary, **({} if nice is None else {"nice": nice}))

    async def scenario():
        task = asyncio.create_task(connector.supervise_serf())
        while connector.serf_proc is None:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        agent = os.getpriority(os.PRIO_PROCESS, connector.serf_proc.pid)
        connector.stopping = True
        connector.serf_proc.terminate()
        await task
        return agent

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert asyncio.run(asyncio.wait_for(scenario(), GUARD)) == min(19, mine + below)
