"""Host methods, one module each, behind one registry."""

from merdg.methods.base import HOST_METHODS, HostMethod, build_method, register_method
from merdg.methods.fusion import Fusion

__all__ = ["HOST_METHODS", "Fusion", "HostMethod", "build_method", "register_method"]
