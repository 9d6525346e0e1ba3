"""The public parameters of a masking session, and the floor an honest client insists on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from fedfort.errors import ConfigError, ProtocolError
from fedfort.secagg.encoding import FixedPointCodec
from fedfort.secagg.graph import SharingGraph, complete_threshold, plus_parameters

__all__ = ["MaskingParams", "Variant"]

Variant = Literal["secagg", "secagg+"]


@dataclass(frozen=True)
class MaskingParams:
    """What every party of a session must agree on.

    - ``roster``: the selected clients, sorted; a client's index in it is its Shamir
      x-coordinate minus one and its node in the sharing graph.
    - ``variant``: ``secagg`` (complete graph) or ``secagg+`` (random Harary graph).
    - ``degree``/``threshold``: ``k`` and ``t``; ``None`` picks the papers' values
      (:func:`~fedfort.secagg.graph.complete_threshold`,
      :func:`~fedfort.secagg.graph.plus_parameters`).
    - ``bits``, ``bound``: the fixed-point encoding (:class:`FixedPointCodec`), sized for
      ``len(roster)`` inputs.
    - ``dim``: length of the weighted input ``[w x, w]`` (model dimension + 1).
    - ``graph_seed``: public randomness for the graph's relabelling.
    - ``corrupt_fraction``/``dropout_fraction``: what SecAgg+'s ``k`` and ``t`` are sized to
      tolerate when they are not given.
    """

    roster: tuple[str, ...]
    variant: Variant
    dim: int
    bits: int = 32
    bound: float = 1.0
    degree: int | None = None
    threshold: int | None = None
    graph_seed: bytes = b"\x00" * 32
    corrupt_fraction: float = 0.05
    dropout_fraction: float = 0.1

    def __post_init__(self) -> None:
        n = len(self.roster)
        if n < 2:
            raise ConfigError("secure aggregation needs at least 2 clients in a session")
        if list(self.roster) != sorted(set(self.roster)):
            raise ConfigError("the session roster must be sorted and free of duplicates")
        if self.dim < 1:
            raise ConfigError("the session's input dimension must be >= 1")
        if len(self.graph_seed) != 32:
            raise ConfigError("the graph seed has 32 bytes")
        k, t = self.resolved()
        if not 1 <= t <= k + 1:
            raise ConfigError(f"threshold {t} is impossible with {k} neighbours")
        self.codec  # noqa: B018  (validates the encoding)

    def resolved(self) -> tuple[int, int]:
        """``(k, t)`` with the papers' defaults filled in."""
        n = len(self.roster)
        if self.variant == "secagg":
            k, t = n - 1, complete_threshold(n)
        elif self.degree is None:
            k, t = plus_parameters(
                n,
                corrupt_fraction=self.corrupt_fraction,
                dropout_fraction=self.dropout_fraction,
            )
        else:
            k, t = self.degree, self.degree // 2 + 1
        return k, (t if self.threshold is None else self.threshold)

    @property
    def threshold_value(self) -> int:
        return self.resolved()[1]

    @property
    def codec(self) -> FixedPointCodec:
        return FixedPointCodec(bits=self.bits, bound=self.bound, max_inputs=len(self.roster))

    def graph(self) -> SharingGraph:
        n = len(self.roster)
        k, _ = self.resolved()
        if k >= n - 1:
            return SharingGraph.complete(n)
        return SharingGraph.harary(n, k, self.graph_seed)

    def digest(self) -> bytes:
        """A hash of every parameter, signed with the advertised keys so all agree."""
        h = hashlib.sha256(b"fedfort-secagg-params\x00")
        h.update("\x00".join(self.roster).encode())
        k, t = self.resolved()
        h.update(f"|{self.variant}|{self.dim}|{self.bits}|{self.bound!r}|{k}|{t}|".encode())
        h.update(self.graph_seed)
        return h.digest()

    def check_safe(self, min_clients: int = 2) -> None:
        """An honest client's floor: refuse parameters a cheating server could exploit.

        The threshold must be a strict majority of the holders of each secret (``t > k/2``,
        and ``t > 2n/3`` for the complete graph, Bonawitz et al. section 6), and the roster
        must have at least ``min_clients`` members.
        """
        n = len(self.roster)
        k, t = self.resolved()
        if n < min_clients:
            raise ProtocolError(f"a session of {n} clients is below this client's floor")
        floor = complete_threshold(n) if k >= n - 1 else k // 2 + 1
        if t < floor:
            raise ProtocolError(f"threshold {t} is below the safe minimum {floor} for k={k}")
