"""Running a module's ``main()`` in-process, the way community.general's unit tests do.

``run_module`` exposes the arguments to ``AnsibleModule`` (ansible-core's
``patch_module_args`` where it exists, else ``basic._ANSIBLE_ARGS``) and turns
``exit_json``/``fail_json`` into exceptions carrying the result, so a test
asserts on exactly what a playbook would see. ``connector`` serves a real unix
socket that speaks the control protocol of ``module_utils/_control.py``, so
modules that ask the connector are tested through their real client code.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes
from module_harness import ControlServer, ModuleExit, exit_json, fail_json

try:  # ansible-core >= 2.19
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # pragma: no cover - older cores: the community.general recipe
    patch_module_args = None


RunModule = Callable[..., dict[str, Any]]


@pytest.fixture
def run_module(monkeypatch: pytest.MonkeyPatch) -> RunModule:
    """``run_module(module, args, check_mode=False, diff=False)`` -> the result.

    Raises :class:`ModuleFail` when the module fails, so a test writes
    ``with pytest.raises(ModuleFail) as failed: ...``.
    """
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(
        module: types.ModuleType,
        args: dict[str, Any],
        check_mode: bool = False,
        diff: bool = False,
    ) -> dict[str, Any]:
        full = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        if patch_module_args is not None:
            with patch_module_args(full), pytest.raises(ModuleExit) as done:
                module.main()
        else:  # pragma: no cover
            raw = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": full}))
            monkeypatch.setattr(basic, "_ANSIBLE_ARGS", raw)
            with pytest.raises(ModuleExit) as done:
                module.main()
        return done.value.result

    return run


@pytest.fixture
def connector() -> Iterator[Callable[..., ControlServer]]:
    """``connector(answer)`` starts a ControlServer; stopped and removed after the test.

    The socket lives in a short temporary directory: a unix socket path must
    stay under ~100 bytes, which pytest's ``tmp_path`` does not promise.
    """
    directory = Path(tempfile.mkdtemp(prefix="ma-ctl-"))
    servers: list[ControlServer] = []

    def start(answer: Callable[[dict[str, Any]], dict[str, Any]]) -> ControlServer:
        server = ControlServer(directory / f"c{len(servers)}.sock", answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    shutil.rmtree(directory, ignore_errors=True)
