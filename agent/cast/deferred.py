"""A stand-in for a module that a library imports but the agent never uses."""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any


class _OnFirstUse(types.ModuleType):
    """Imports the real module when code first reads one of its names, and hands that on."""

    def __getattr__(self, name: str) -> Any:
        # Module machinery probes dunders (__path__, __file__); those must not import it.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(importlib.import_module(self.__name__), name)


@contextlib.contextmanager
def deferred(name: str) -> Iterator[None]:
    """While the block imports a library, its ``import name`` binds a stand-in, which
    imports the real module on first use. Afterwards ``name`` imports normally."""
    if name in sys.modules:
        yield
        return
    stand_in = _OnFirstUse(name)
    sys.modules[name] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
