"""``MULTIALL_PROFILE``: where a connector spends its CPU (benchmarks/tns_scale.py ``--profile``)."""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any


@contextlib.contextmanager
def profiled(path: str | None) -> Any:
    """With ``MULTIALL_PROFILE=PATH``, profile the daemon's loop with cProfile.

    Where a connector spends its CPU at start-up and idle (benchmarks/tns_scale.py
    ``--profile``): every SIGUSR1 writes the statistics gathered since the last one
    to ``PATH.<n>`` (n = 1, 2, ...) and starts afresh, so start-up and idle are
    apart. Off (and free) without the variable.
    """
    if not path:
        yield
        return
    import cProfile

    # CPU time, not wall time: on a loaded machine the wall clock would charge
    # the time a process waits for a core to whatever it was doing.
    def profile() -> cProfile.Profile:
        return cProfile.Profile(time.process_time)

    state = {"profile": profile(), "n": 0}

    def dump(_signum: int, _frame: Any) -> None:
        state["n"] += 1
        state["profile"].dump_stats(f"{path}.{state['n']}")  # also stops it
        state["profile"] = profile()
        state["profile"].enable()

    signal.signal(signal.SIGUSR1, dump)
    state["profile"].enable()
    try:
        yield
    finally:
        state["profile"].disable()
