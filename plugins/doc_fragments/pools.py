# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by every module that reads the pool model."""

from __future__ import annotations


class ModuleDocFragment:
    """``extends_documentation_fragment: takelan.multiall.pools``."""

    DOCUMENTATION = r"""
options:
  path:
    description:
      - The MultiAll pool model on the managed node, a file or a directory of YAML files.
      - The C(takelan.multiall.multiall_node) role installs it as C(/etc/multiall/pools.yml).
    type: path
    default: /etc/multiall/pools.yml
  node:
    description:
      - The node whose settings are meant, as named in the model.
      - Defaults to the managed host's short host name; pass C("{{ inventory_hostname }}")
        when inventory names differ from host names.
    type: str
requirements:
  - PyYAML on the managed node (Debian package C(python3-yaml)).
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
  platform:
    platforms: posix
"""
