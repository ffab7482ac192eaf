"""Module attributes imported on first use (PEP 562), so importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(
    namespace: dict[str, object], lazy: dict[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` for names imported on first use.

    Args:
        namespace: The module's ``globals()``; a name, once imported, is stored there.
        lazy: Each lazy name and the module it comes from.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the module.
    """

    def __getattr__(name: str) -> object:
        if name in lazy:
            value = getattr(importlib.import_module(lazy[name]), name)
            namespace[name] = value  # found directly from now on
            return value
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *lazy})

    return __getattr__, __dir__
