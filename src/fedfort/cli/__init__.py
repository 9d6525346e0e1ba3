"""The ``fedfort`` command line: one module per command group.

- :mod:`~fedfort.cli.app`: the parser and the dispatch (:func:`main`, the console script);
- :mod:`~fedfort.cli.simulate`: ``fedfort simulate``;
- :mod:`~fedfort.cli.redteam`: ``fedfort redteam`` and ``fedfort redteam privacy``;
- :mod:`~fedfort.cli.privacy`: ``fedfort privacy plan``;
- :mod:`~fedfort.cli.certs`: ``fedfort certs init|issue|revoke``;
- :mod:`~fedfort.cli.network`: ``fedfort server`` and ``fedfort client``;
- :mod:`~fedfort.cli.keys`: ``fedfort keys rotate|encrypt``;
- :mod:`~fedfort.cli.governance`: ``fedfort audit|model|dashboard|report``;
- :mod:`~fedfort.cli.access`: ``fedfort access`` and ``fedfort operator``.

Building the parser imports none of fedfort's heavy dependencies (torch, scikit-learn,
matplotlib, prometheus_client, gRPC, TenSEAL, Opacus, dp-accounting, Ray): each command
imports what it needs inside its handler, so ``fedfort --help`` answers at once.
"""

from fedfort.cli.app import main

__all__ = ["main"]
