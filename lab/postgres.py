"""Debian's real PostgreSQL 15 for DB-SA: one cluster inside a lab node, or a throwaway local one.

Inside a node, the server runs as user ``postgres`` under the node's supervisor
(like sshd and serf), with its socket in ``/run/lab/pg`` — the node's control
directory, which the host sees as ``lab.ctl_path(node) / "pg"`` — so tests on
the host reach every node's database over a unix socket, and TCP only where
asked (the node's own address). Password authentication (scram) for the
application role; its password sits in a 0600 ``password_file``, as the model
requires.

``local_cluster()`` is the same server in a temporary directory, unix socket
only, for unit-ish tests of the PostgreSQL engine without a lab.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .core import Lab, LabError

PG_BIN = Path("/usr/lib/postgresql/15/bin")
NODE_DATA = "/var/lib/multiall-lab/pg"
NODE_SOCKET_DIR = "/run/lab/pg"
NODE_PASSWORD_DIR = "/etc/multiall/db"
SETTINGS = [
    # A lab/test cluster: durability is the host's problem, speed and small memory ours.
    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
    "-c", "shared_buffers=16MB", "-c", "max_connections=40",
    "-c", "dynamic_shared_memory_type=mmap",
]  # fmt: skip


@dataclass(frozen=True)
class PgDatabase:
    """Where a database is and how to log in."""

    dsn: str  # as seen from where the database's users run (inside the node)
    host_dsn: str  # as seen from the host (tests)
    password_file: str  # path inside the node (0600)
    host_password_file: str  # the same file as seen from the host

    def spec(self, tables: list[str], host: bool = False) -> dict:
        """A ``databases[NAME]`` entry of the model for this database."""
        return {
            "engine": "postgresql",
            "dsn": self.host_dsn if host else self.dsn,
            "password_file": self.host_password_file if host else self.password_file,
            "tables": tables,
        }


def _postgres_ids() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise LabError("user postgres is missing: apt-get install postgresql") from None
    return pw.pw_uid, pw.pw_gid


def _initdb_argv(data: str, pwfile: str) -> list[str]:
    return [
        "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
        str(PG_BIN / "initdb"), "-D", data, "-U", "postgres", f"--pwfile={pwfile}",
        "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--no-sync",
        "-E", "UTF8", "--locale=C.UTF-8",
    ]  # fmt: skip


def _server_argv(data: str, socket_dir: str, listen: str) -> list[str]:
    return [
        "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
        str(PG_BIN / "postgres"), "-D", data, "-k", socket_dir, "-h", listen, *SETTINGS,
    ]  # fmt: skip


def _setup_sql(db: str, role: str, password: str, createdb: bool = False) -> str:
    extra = " CREATEDB" if createdb else ""
    return (
        f"CREATE ROLE {role} LOGIN{extra} PASSWORD '{password}';\n"
        f"CREATE DATABASE {db} OWNER {role};\n"
    )


def _psql(host: str, password: str, sql: str) -> None:
    argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-U", "postgres",
            "-d", "postgres", "-c", sql]  # fmt: skip
    env = {"PGPASSWORD": password, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)
    if proc.returncode != 0:
        raise LabError(f"psql {sql.splitlines()[0]}... failed: {proc.stderr.strip()}")


def _wait_socket(socket_dir: Path, timeout: float, alive: object = None) -> None:
    deadline = time.monotonic() + timeout
    sock = socket_dir / ".s.PGSQL.5432"
    while time.monotonic() < deadline:
        if sock.exists():
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-q", "-h", str(socket_dir)], check=False
            )
            if ready.returncode == 0:
                return
        if callable(alive) and not alive():
            break
        time.sleep(0.05)
    raise LabError(f"PostgreSQL did not come up with a socket in {socket_dir}")


def start_postgres(
    lab: Lab, node: str, db: str = "app", role: str = "app", tcp: bool = False
) -> PgDatabase:
    """Start (once) the node's PostgreSQL under its supervisor and create ``db`` owned by ``role``.

    Idempotent: a running server and an existing database are kept. ``tcp``
    also listens on the node's lab address (for tools on other nodes).
    """
    root = lab.node_root(node)
    ctl = lab.ctl_path(node)
    uid, gid = _postgres_ids()
    pw_dir = root / NODE_PASSWORD_DIR.lstrip("/")
    pw_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pw_dir, 0o700)
    admin_file = pw_dir / "postgres.pass"
    app_file = pw_dir / f"{db}.pass"
    for path in (admin_file, app_file):
        if not path.exists():
            path.write_text(secrets.token_hex(16) + "\n")
            path.chmod(0o600)
    admin = admin_file.read_text().strip()
    data = root / NODE_DATA.lstrip("/")
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        os.chown(data, uid, gid)
        os.chmod(data, 0o700)
        pwfile = data.parent / "initdb.pw"
        pwfile.write_text(admin + "\n")
        os.chown(pwfile, uid, gid)
        try:
            lab.exec(node, _initdb_argv(NODE_DATA, str(Path(NODE_DATA).parent / "initdb.pw")),
                     timeout=120)  # fmt: skip
        finally:
            pwfile.unlink()
    sock_dir = ctl / "pg"
    sock_dir.mkdir(exist_ok=True)
    os.chown(sock_dir, uid, gid)
    status = lab.service_status(node, "postgres") if _has_service(lab, node) else None
    if not (status and status.get("running")):
        listen = lab.nodes[node] if tcp else ""
        lab.service_start(node, "postgres", _server_argv(NODE_DATA, NODE_SOCKET_DIR, listen))
    _wait_socket(sock_dir, 30)
    exists = subprocess.run(
        ["psql", "-X", "-tA", "-h", str(sock_dir), "-U", "postgres", "-d", "postgres", "-c",
         f"SELECT 1 FROM pg_database WHERE datname = '{db}'"],
        capture_output=True, text=True, env={"PGPASSWORD": admin, "PATH": "/usr/bin:/bin"},
        check=False,
    ).stdout.strip()  # fmt: skip
    if exists != "1":
        password = app_file.read_text().strip()
        for stmt in _setup_sql(db, role, password).splitlines():
            _psql(str(sock_dir), admin, stmt)
    return PgDatabase(
        dsn=f"host={NODE_SOCKET_DIR} dbname={db} user={role}",
        host_dsn=f"host={sock_dir} dbname={db} user={role}",
        password_file=f"{NODE_PASSWORD_DIR}/{db}.pass",
        host_password_file=str(app_file),
    )


def _has_service(lab: Lab, node: str) -> bool:
    services = lab.service_status(node) or []
    names = services if isinstance(services, (list, dict)) else []
    return any((s.get("name") if isinstance(s, dict) else s) == "postgres" for s in names)


def pg_dump(lab: Lab, node: str, db: str = "app", tables: list[str] | None = None) -> str:
    """The engine's own dump of ``db`` on ``node`` (data only, rows sorted) for comparisons."""
    admin = (lab.node_root(node) / NODE_PASSWORD_DIR.lstrip("/") / "postgres.pass").read_text()
    argv = [str(PG_BIN / "pg_dump"), "-h", str(lab.ctl_path(node) / "pg"), "-U", "postgres",
            "--data-only", "--inserts", "--rows-per-insert=1", db]  # fmt: skip
    for table in tables or []:
        argv += ["-t", table]
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False,
        env={"PGPASSWORD": admin.strip(), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise LabError(f"pg_dump on {node} failed: {proc.stderr.strip()}")
    return "\n".join(sorted(line for line in proc.stdout.splitlines() if line.startswith("INSERT")))


@contextlib.contextmanager
def local_cluster(db: str = "app", role: str = "app") -> Iterator[PgDatabase]:
    """A throwaway PostgreSQL in a temp dir (unix socket only), stopped and removed after.

    ``role`` may create databases, so a test can make one per simulated node.
    """
    uid, gid = _postgres_ids()
    base = Path(tempfile.mkdtemp(prefix="multiall-pg-"))
    proc = None
    try:
        os.chmod(base, 0o755)
        data, sock = base / "data", base / "sock"
        for d in (data, sock):
            d.mkdir()
            os.chown(d, uid, gid)
        os.chmod(data, 0o700)
        admin = secrets.token_hex(16)
        pwfile = base / "initdb.pw"
        pwfile.write_text(admin + "\n")
        os.chown(pwfile, uid, gid)
        init = subprocess.run(
            _initdb_argv(str(data), str(pwfile)), capture_output=True, text=True, check=False
        )
        if init.returncode != 0:
            raise LabError(f"initdb failed: {init.stderr.strip()}")
        log = open(base / "server.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            _server_argv(str(data), str(sock), ""),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        try:
            _wait_socket(sock, 30, alive=lambda: proc.poll() is None)
        except LabError:
            raise LabError((base / "server.log").read_text()[-1500:]) from None
        password = secrets.token_hex(16)
        for stmt in _setup_sql(db, role, password, createdb=True).splitlines():
            _psql(str(sock), admin, stmt)
        app_file = base / f"{db}.pass"
        app_file.write_text(password + "\n")
        app_file.chmod(0o600)
        dsn = f"host={sock} dbname={db} user={role}"
        yield PgDatabase(dsn, dsn, str(app_file), str(app_file))
    finally:
        if proc is not None and proc.poll() is None:
            # setpriv execs, so this is the postmaster: SIGINT = fast shutdown (SIGTERM
            # would wait for every client to disconnect).
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)
