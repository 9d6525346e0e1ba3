"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists its public names and the module that defines each; a name's module is imported
the first time the name is looked up, so ``import fedfort`` (or ``import fedfort.server``)
loads no heavy dependency (torch, scikit-learn, matplotlib, gRPC...) until something uses it.
Static type checkers and IDEs see the real names through the package's
``if TYPE_CHECKING:`` imports, which mirror the table given here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose globals are ``namespace``.

    ``exports`` maps each public name to the module that defines it. A resolved name is stored
    in ``namespace``, so later lookups are plain attribute reads.
    """

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_
