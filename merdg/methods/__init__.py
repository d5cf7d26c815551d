"""Host methods, one module each, behind one registry."""

from merdg.methods.base import HOST_METHODS, HostMethod, MethodModules, build_method, register_method
from merdg.methods.cmc import CMC
from merdg.methods.cmrf import CMRF
from merdg.methods.fusion import Fusion
from merdg.methods.simmmdg import SimMMDG

__all__ = [
    "CMC",
    "CMRF",
    "HOST_METHODS",
    "Fusion",
    "HostMethod",
    "MethodModules",
    "SimMMDG",
    "build_method",
    "register_method",
]
