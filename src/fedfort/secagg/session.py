"""What every secure-aggregation mode shares: the session, the result, the machine interfaces.

A mode is a pair of *sans-I/O* state machines. The server machine emits an outbox (one message
per client id), takes in the replies that arrived, and emits the next outbox, until it holds a
result; a client machine turns each message it is handed into a reply. Neither touches a
socket or a clock, so the same code runs in simulation, behind the network runtime and under a
fuzzer. A client that does not answer a step is a dropout at that step; the server machine
decides what that means for the session.

A client's input is its model update ``x`` and its weight ``w`` (its sample count, or 1 under
differential privacy). Every mode sums ``w * x`` and ``w`` together, so the server learns the
weighted mean ``sum(w x) / sum(w)`` but neither an individual update nor an individual weight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = [
    "ClientMachine",
    "SecureSum",
    "ServerMachine",
    "Session",
    "weighted_input",
]


@dataclass(frozen=True)
class Session:
    """One aggregation session: a round attempt of one run.

    ``sid`` is a 32-byte identifier that every signature, key derivation and associated data
    of the session is bound to, so nothing from one session can be replayed into another.
    """

    run_id: str
    round: int
    attempt: int
    nonce: bytes = b""

    @property
    def sid(self) -> bytes:
        h = hashlib.sha256(b"fedfort-secagg-session\x00")
        h.update(self.run_id.encode())
        h.update(b"\x00" + self.round.to_bytes(8, "big") + self.attempt.to_bytes(8, "big"))
        h.update(self.nonce)
        return h.digest()


@dataclass
class SecureSum:
    """The outcome of a session: the sums, who is in them, and who dropped where.

    ``total`` is ``sum(w_i * x_i)`` over the ``included`` clients (float64, decoded) and
    ``weight`` is ``sum(w_i)``; :meth:`mean` is their quotient. ``dropped`` maps each client
    that vanished to the step at which it did. ``traffic`` counts bytes per direction.
    """

    total: np.ndarray
    weight: float
    included: tuple[str, ...]
    dropped: dict[str, str] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)

    def mean(self) -> np.ndarray:
        if not self.weight > 0:
            raise ValueError("the aggregated weight is not positive")
        return self.total / self.weight


class ServerMachine(Protocol):
    """The server side of one session."""

    @property
    def done(self) -> bool:
        """Whether :meth:`result` is available (no more messages to send)."""

    def start(self) -> dict[str, object]:
        """The first outbox, by client id."""

    def step(self, replies: Mapping[str, object]) -> dict[str, object]:
        """Take the replies of the last outbox (absent ids dropped out); the next outbox."""

    def result(self) -> SecureSum:
        """The aggregate; raises if the session is not done."""


class ClientMachine(Protocol):
    """The client side of one session."""

    def handle(self, message: object) -> object:
        """Answer one server message (raises ``ProtocolError`` or ``SecAggAbort``)."""


def weighted_input(update: np.ndarray, weight: float) -> np.ndarray:
    """``[w * x, w]`` in float64: what a client contributes to the secure sum."""
    if update.ndim != 1:
        raise ValueError("a secure-aggregation input is a flat vector")
    if not np.isfinite(weight) or weight < 0:
        raise ValueError(f"a secure-aggregation weight must be finite and >= 0, got {weight}")
    out = np.empty(update.shape[0] + 1, dtype=np.float64)
    np.multiply(update, weight, out=out[:-1], dtype=np.float64)
    out[-1] = weight
    return out
