"""Run the whole suite (what `make test` does) with lab jobs spread over private labs.

Most of the suite's wall time is lab tests waiting on real daemons (Serf, BIND,
sshd, ansible-runner) rather than computing, so they overlap well even on two
cores. Each lab test file and each molecule scenario is one job; a job that needs
the lab runs through ``lab/instance.sh K`` in its own private lab K (its own
controller network namespace, addresses and state dir), so jobs never share a lab.
Unit tests and ``make sanity`` need no lab and run beside them.

    python tests/run.py [--jobs N] [--only SUBSTRING] [--list]

``MULTIALL_TEST_JOBS`` sets the default number of parallel jobs (3); 1 runs the
jobs one after the other. Every job's output is kept in ``--logs`` (default a
temp dir) and printed in full when the job fails. Exit status 1 when any job failed.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
# Private labs the suite may use (lab/instance.sh takes 1-9; helpers and people
# working beside a CI run use the low numbers).
LAB_SLOTS = (9, 8, 7, 6, 5, 4)
# Jobs known to take longest start first, so the last job to finish is a short one.
SLOW_FIRST = ("test_partitions_on_lab", "test_installed_collection", "test_dns_on_lab")


@dataclass
class Job:
    """One unit of the suite: a command, and whether it needs a private lab."""

    name: str
    argv: list[str]
    needs_lab: bool
    cwd: Path = ROOT
    rc: int | None = None
    seconds: float = 0.0
    log: Path | None = field(default=None, repr=False)


def discover() -> list[Job]:
    """Sanity, unit tests, each lab test file, each role's molecule scenario."""
    python = str(BIN / "python")
    jobs = [
        Job("sanity", ["tests/sanity/run.sh"], needs_lab=False),
        Job("unit", [python, "-m", "pytest", "-q", "tests/unit"], needs_lab=False),
    ]
    lab_files = sorted((ROOT / "tests" / "integration").glob("test_*.py")) + sorted(
        (ROOT / "tests" / "lab").glob("test_*.py")
    )
    lab_files.sort(key=lambda p: (not p.stem.startswith(SLOW_FIRST), str(p)))
    for path in lab_files:
        rel = str(path.relative_to(ROOT))
        jobs.append(Job(rel, [python, "-m", "pytest", "-q", rel], needs_lab=True))
    for role in sorted((ROOT / "roles").iterdir()):
        if (role / "molecule").is_dir():
            jobs.append(
                Job(
                    f"molecule {role.name}",
                    [str(BIN / "molecule"), "test", "--all"],
                    needs_lab=True,
                    cwd=role,
                )
            )
    return jobs


def run_job(job: Job, slot: int | None, logs: Path) -> None:
    """Run one job to completion, output to its log file."""
    job.log = logs / (job.name.replace("/", "_").replace(" ", "_") + ".log")
    argv = job.argv
    if slot is not None:
        argv = [str(ROOT / "lab" / "instance.sh"), str(slot), *argv]
    started = time.monotonic()
    with open(job.log, "w") as out:
        out.write(f"$ (cd {job.cwd} && {' '.join(argv)})\n")
        out.flush()
        env = job_env()
        if job.name.startswith("molecule "):
            # Molecule's prerun installs the collection (``ansible-galaxy collection
            # install --force``) under ~/.ansible/collections, the same directory for
            # every scenario, and scenarios run in parallel raced on it (FileExistsError
            # in CI). Each scenario gets its own HOME (its playbooks use the checkout's
            # collection anyway: ANSIBLE_COLLECTIONS_PATH in every molecule.yml).
            home = logs / ("home-" + job.name.split()[-1])
            home.mkdir(mode=0o700, exist_ok=True)
            env["HOME"] = str(home)
        proc = subprocess.run(
            argv,
            cwd=job.cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    job.rc = proc.returncode
    job.seconds = time.monotonic() - started
    if slot is not None:
        # The lab is down after every job (fixtures tear down); drop its controller netns.
        subprocess.run(["ip", "netns", "del", f"mactl{slot}"], capture_output=True, check=False)


def job_env() -> dict[str, str]:
    """The venv's tools (molecule calls ansible-config by name) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    return env


def tail(path: Path, lines: int = 25) -> str:
    """The end of a job's log: pytest and molecule put their verdict there."""
    return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])


def main(argv: list[str] | None = None) -> int:
    """Run the jobs, print one line per finished job, then the failures in full."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MULTIALL_TEST_JOBS", "3")))
    parser.add_argument("--only", action="append", default=[], help="run jobs whose name has this")
    parser.add_argument("--list", action="store_true", help="list the jobs and exit")
    parser.add_argument("--logs", help="directory for the jobs' logs (default: a temp dir)")
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= len(LAB_SLOTS):
        parser.error(f"--jobs: expected 1-{len(LAB_SLOTS)}, got {args.jobs}")
    jobs = [j for j in discover() if not args.only or any(s in j.name for s in args.only)]
    if args.list:
        print("\n".join(j.name for j in jobs))
        return 0
    logs = Path(args.logs or tempfile.mkdtemp(prefix="multiall-test-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f">> {len(jobs)} jobs, {args.jobs} at a time, logs in {logs}", flush=True)

    todo: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        todo.put(job)
    lock = threading.Lock()
    done = 0
    started = time.monotonic()

    def worker(slot: int) -> None:
        nonlocal done
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            run_job(job, slot if job.needs_lab else None, logs)
            with lock:
                done += 1
                verdict = "ok" if job.rc == 0 else f"FAILED (rc={job.rc})"
                print(
                    f"[{done}/{len(jobs)} {time.monotonic() - started:6.0f}s] "
                    f"{job.name}: {verdict} in {job.seconds:.0f}s",
                    flush=True,
                )

    threads = [
        threading.Thread(target=worker, args=(slot,), daemon=True)
        for slot in LAB_SLOTS[: args.jobs]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    failed = [j for j in jobs if j.rc != 0]
    for job in failed:
        print(f"\n===== {job.name} FAILED (rc={job.rc}); full log {job.log} =====")
        print(tail(job.log, 200) if job.log else "(no log)")
    total = time.monotonic() - started
    print(f"\n>> {len(jobs) - len(failed)} of {len(jobs)} jobs passed in {total:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
