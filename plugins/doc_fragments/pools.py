# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of every module that reads the pool model.

The argument spec that goes with them is ``pools_file_argspec()`` and
``node_argspec()`` in ``plugins/module_utils/_argspec.py``; a unit test checks
that the two agree (the default path is ``pools.DEFAULT_PATH``).
"""

from __future__ import annotations


class ModuleDocFragment:
    """``takelan.multiall.pools`` (the model path) and ``takelan.multiall.pools.node``."""

    DOCUMENTATION = r"""
options:
  pools_file:
    description:
      - The MultiAll pool model on the managed node, a file or a directory of YAML files.
      - The C(takelan.multiall.multiall_node) role installs it as C(/etc/multiall/pools.yml).
    type: path
    default: /etc/multiall/pools.yml
    aliases: [path]
requirements:
  - PyYAML on the managed node (Debian package C(python3-yaml)).
"""

    NODE = r"""
options:
  node:
    description:
      - The node whose settings are meant, as named in the model.
      - Defaults to the managed host's short host name; pass C("{{ inventory_hostname }}")
        when inventory names differ from host names.
    type: str
"""
