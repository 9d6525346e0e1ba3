"""The networked runtime: gRPC with mutual TLS.

- :class:`NetworkServer` runs a federation's rounds for clients that connect over the network
  (:mod:`~fedfort.transport.server`), with the :class:`Credentials` of ``fedfort certs issue``;
- :class:`NetworkClient` takes part in one (:mod:`~fedfort.transport.client`);
- :mod:`~fedfort.crypto.pki` is the federation's certificate authority.

The names resolve lazily: ``import fedfort.transport`` (or ``fedfort.crypto.pki``) loads
neither gRPC nor torch until a server or client is used.
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.transport.client import NetworkClient
    from fedfort.transport.server import Credentials, NetworkServer

__all__ = ["Credentials", "NetworkClient", "NetworkServer"]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "Credentials": "fedfort.transport.server",
            "NetworkClient": "fedfort.transport.client",
            "NetworkServer": "fedfort.transport.server",
        },
        globals(),
    )
