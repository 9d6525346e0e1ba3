"""A runtime wrapper that lets chosen clients lie about what they send back.

:class:`Tampering` wraps a run's :class:`~fedfort.server.ClientExecutor` (the only thing a
malicious client controls: the update it returns) and rewrites the updates of a round before
the server pipeline sees them. Everything after collection is the real server code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from fedfort.messages import ClientUpdate, TrainTask
from fedfort.run.federation import Federation
from fedfort.server import CollectOutcome

Rewrite = Callable[[ClientUpdate], ClientUpdate]


class Tampering:
    """Apply ``rewrites[client_id]`` to that client's updates in round ``round_``."""

    def __init__(self, inner: Any, round_: int, rewrites: dict[str, Rewrite]) -> None:
        self.inner = inner
        self.round = round_
        self.rewrites = rewrites

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        outcome = self.inner.execute(tasks, deadline_s)
        received = [
            self.rewrites[u.client_id](u)
            if u.round == self.round and u.client_id in self.rewrites
            else u
            for u in outcome.received
        ]
        return dataclasses.replace(outcome, received=received)

    def acknowledge(self, round_: int, accepted: Sequence[ClientUpdate]) -> None:
        self.inner.acknowledge(round_, accepted)

    def close(self) -> None:
        self.inner.close()


def tamper(federation: Federation, round_: int, rewrites: dict[str, Rewrite]) -> None:
    """Make ``federation``'s clients in ``rewrites`` lie in round ``round_``."""
    federation.engine.executor = Tampering(federation.engine.executor, round_, rewrites)
