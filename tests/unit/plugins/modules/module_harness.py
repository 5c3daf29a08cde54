"""What the module unit tests share: results as exceptions, a connector stand-in.

Imported by ``conftest.py`` (the fixtures) and by the tests (the exception
types). ``ModuleExit``/``ModuleFail`` carry exactly what a playbook would see;
``ControlServer`` serves a real unix socket that speaks the control protocol of
``module_utils/_control.py``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ModuleExit(Exception):
    """``exit_json`` was called; ``result`` is what the module returned."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result)
        self.result = result


class ModuleFail(Exception):
    """``fail_json`` was called; ``result`` holds ``msg`` and the other keys."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("msg"))
        self.result = result


def exit_json(_module: Any, **kwargs: Any) -> None:
    """Stands in for ``AnsibleModule.exit_json``."""
    kwargs.setdefault("changed", False)
    raise ModuleExit(kwargs)


def fail_json(_module: Any, msg: str = "", **kwargs: Any) -> None:
    """Stands in for ``AnsibleModule.fail_json``."""
    kwargs["failed"] = True
    kwargs["msg"] = msg
    raise ModuleFail(kwargs)


class ControlServer:
    """A unix socket answering the connector's JSON-lines control protocol.

    ``answer(request) -> reply`` decides each reply; every request is kept in
    ``requests`` so a test can assert what the module asked for (and that
    check mode asked for no change).
    """

    def __init__(self, path: Path, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.path = str(path)
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _addr = self._sock.accept()
            except OSError:  # closed by stop()
                return
            with conn, conn.makefile("rwb") as stream:
                for line in stream:
                    request = json.loads(line)
                    self.requests.append(request)
                    stream.write(json.dumps(self.answer(request)).encode() + b"\n")
                    stream.flush()

    def ops(self) -> list[str]:
        """The ``op`` of every request so far, in order."""
        return [r.get("op") for r in self.requests]

    def stop(self) -> None:
        """Close the listening socket; the serving thread ends.

        ``shutdown`` first: on Linux it wakes a thread blocked in ``accept``,
        which a bare ``close`` does not.
        """
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
