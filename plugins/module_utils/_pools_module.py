# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module-side glue for every module that reads the pool model (private to the collection).

Reading the model from a module fails the same way everywhere: PyYAML missing
is ``missing_required_lib``, a bad model lists every problem with file and
line, an unknown node names the declared ones. Written once here so the
modules stay a few lines of glue (options: ``pools_file``/``node`` from
``_argspec.py``).
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import missing_required_lib

from ._located_yaml import HAS_YAML, YAML_IMPORT_ERROR
from .pools import NodeView, PoolModel, PoolModelError, load, local_node_name


def require_yaml(module: Any) -> None:
    """Fail the module the standard way when PyYAML is missing on the node."""
    if not HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), exception=YAML_IMPORT_ERROR)


def load_model(module: Any) -> PoolModel:
    """The model at ``pools_file``; an invalid model fails the module with every problem."""
    require_yaml(module)
    try:
        return load(module.params["pools_file"])
    except PoolModelError as exc:
        module.fail_json(msg=str(exc), errors=[e.as_dict() for e in exc.errors])
    raise AssertionError("fail_json returned")  # pragma: no cover


def node_view(module: Any) -> NodeView:
    """The merged settings of ``node`` (default: this host's short name)."""
    model = load_model(module)
    try:
        return model.effective(module.params["node"] or local_node_name())
    except KeyError as exc:
        module.fail_json(msg=f"{module.params['pools_file']}: {exc.args[0]}")
    raise AssertionError("fail_json returned")  # pragma: no cover
