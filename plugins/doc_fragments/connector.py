# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The option of every module that talks to the local TakeConnector.

The argument spec is ``connector_argspec()`` in
``plugins/module_utils/_argspec.py``; its default is ``_control.DEFAULT_SOCKET``
and a unit test checks that this text states the same path.
"""

from __future__ import annotations


class ModuleDocFragment:
    """``extends_documentation_fragment: takelan.multiall.connector``."""

    DOCUMENTATION = r"""
options:
  socket:
    description:
      - The local TakeConnector's control socket (JSON lines over a unix socket, mode 0600).
    type: path
    default: /run/multiall/connector.sock
"""
