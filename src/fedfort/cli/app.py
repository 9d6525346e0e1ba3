"""The ``fedfort`` command: the parser of every command group and the dispatch to them.

Each group lives in its own module of :mod:`fedfort.cli` with ``add_parsers`` (its
sub-parsers) and its handlers. Building the parser imports only those modules, which import
nothing heavy at module level; a handler imports what its command needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from fedfort._version import __version__
from fedfort.cli import (
    access,
    certs,
    data,
    governance,
    keys,
    network,
    privacy,
    redteam,
    simulate,
)
from fedfort.errors import FedfortError

__all__ = ["main"]

#: command -> its handler (the groups' ``run`` functions take the parsed arguments)
_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "simulate": simulate.run,
    "redteam": redteam.run,
    "privacy": privacy.run,
    "certs": certs.run,
    "audit": governance.run,
    "model": governance.run,
    "dashboard": governance.run,
    "report": governance.run,
    "access": access.run_access,
    "operator": access.run_operator,
    "server": network.run_server,
    "client": network.run_client,
    "keys": keys.run,
    "data": data.run,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedfort", description="Secure federated learning for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"fedfort {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (simulate, redteam, privacy, certs, network, keys, governance, access, data):
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedfort`` command."""
    args = _parser().parse_args(argv)
    handler = _HANDLERS.get(args.command)
    if handler is None:
        return 1
    try:
        return handler(args)
    except FedfortError as exc:
        print(f"fedfort: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedfort: interrupted; resume with --resume", file=sys.stderr)
        return 130
