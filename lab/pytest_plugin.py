"""pytest fixtures for tests on lab nodes; every lab is torn down, even on failure.

    def test_x(lab_factory):
        lab = lab_factory(n=3)                  # or lab_factory(pools_file="...")

``lab3`` is a module-scoped 3-node lab; ``lab_module`` a module-scoped factory.
Lab tests are skipped (with the reason) when not root or without ``ip netns``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator

import pytest

from .core import Lab
from .postgres import PG_BIN, PgDatabase, local_cluster

_LIVE: list[Lab] = []


def _teardown_all(*_: object) -> None:
    while _LIVE:
        _LIVE.pop().down()


atexit.register(_teardown_all)


def _on_signal(signum: int, _frame: object) -> None:
    _teardown_all()
    sys.exit(128 + signum)


def lab_unavailable() -> str | None:
    """Why lab tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces and mounts)"
    for tool in ("ip", "unshare", "nsenter", "nft", "sshd"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"lab tests need {tool!r} (run `make test`, which installs it)"
    return None


def _factory() -> tuple[Callable[..., Lab], Callable[[], None]]:
    created: list[Lab] = []

    def make(n: int | None = None, pools_file: str | None = None) -> Lab:
        reason = lab_unavailable()
        if reason:
            pytest.skip(reason)
        lab = Lab()
        for old in created:
            old.down()
        lab.up(n=n or (None if pools_file else 3), pools_file=pools_file, force=True)
        created.append(lab)
        _LIVE.append(lab)
        return lab

    def cleanup() -> None:
        for lab in created:
            lab.down()
            if lab in _LIVE:
                _LIVE.remove(lab)

    return make, cleanup


def _factory_fixture() -> Iterator[Callable[..., Lab]]:
    make, cleanup = _factory()
    try:
        yield make
    finally:
        cleanup()


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., Lab]]:
    """Build a lab inside one test; it is removed when the test ends."""
    yield from _factory_fixture()


@pytest.fixture(scope="module")
def lab_module() -> Iterator[Callable[..., Lab]]:
    """Like lab_factory, shared by the tests of one module."""
    yield from _factory_fixture()


@pytest.fixture(scope="module")
def lab3(lab_module: Callable[..., Lab]) -> Lab:
    """A 3-node lab (n1..n3) shared by one test module."""
    return lab_module(n=3)


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgDatabase]:
    """A throwaway local PostgreSQL 15 (unix socket only) shared by one test module."""
    if os.geteuid() != 0 or not shutil.which("setpriv") or not PG_BIN.is_dir():
        pytest.skip("needs root, setpriv and Debian's postgresql-15")
    with local_cluster() as pg:
        yield pg


# Lines of each node's connector log in a failed test's report
# (MULTIALL_LAB_LOG_LINES overrides: 0 prints whole logs, for a reproduction run).
LOG_TAIL_LINES = int(os.environ.get("MULTIALL_LAB_LOG_LINES", "60"))


def lab_log_tails(lab: Lab, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of every node's connector log, for a failed test's report.

    The lab is torn down right after its module, so without this a failure on a
    CI machine leaves nothing to read but the assertion.
    """
    out = []
    for node in sorted(lab.nodes):
        tail = lab.service_log(node, "connector").splitlines()[-lines if lines else 0 :]
        out.append(f"--- {node} connector.log (last {len(tail)} lines)")
        out.extend(line[:400] for line in tail)
    return "\n".join(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed lab test reports the tails of its live labs' connector logs."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LIVE:
        for lab in _LIVE:
            try:
                text = lab_log_tails(lab)
            except OSError as exc:  # a node dir removed by the test itself
                text = f"(connector logs unreadable: {exc})"
            report.sections.append((f"lab connector logs ({report.when})", text))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs root and builds network-namespace lab nodes")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
