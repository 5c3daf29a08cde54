"""The MultiAll lab: real servers from network and mount namespaces (see docs/lab.md)."""

from .core import CONTROLLER, LAB_NET, Lab, LabError

__all__ = ["CONTROLLER", "LAB_NET", "Lab", "LabError"]
