# -*- coding: utf-8 -*-
# Copyright: TakeLAN MultiAll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attribute descriptions shared by every module (private to the collection).

Each module states only its ``support`` (and ``details``); what an attribute
means is written once here. ``platform`` is the same for all of them: MultiAll
manages Linux nodes.
"""

from __future__ import annotations


class ModuleDocFragment:
    """``extends_documentation_fragment: takelan.multiall._attributes`` and its named parts."""

    # Standard fragment: every module uses it.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return the changed status it predicts without modifying the target.
  diff_mode:
    description: Returns details on what has changed (or would change in check mode) when run with diff.
  platform:
    description: Target operating systems this module can manage.
    support: full
    platforms: posix
"""

    # With the standard fragment, for modules that only read.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
"""

    # With the standard fragment and INFO_MODULE, for modules that return facts.
    FACTS = r"""
options: {}
attributes:
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
"""
