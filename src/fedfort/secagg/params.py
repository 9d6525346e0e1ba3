"""The public parameters of a masking session (what the server proposes and every client checks).

The degree and threshold come from :mod:`fedfort.secagg.thresholds`; what an honest client
insists on before it takes part is :class:`fedfort.secagg.policy.ClientPolicy`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from fedfort.errors import ConfigError
from fedfort.secagg.encoding import FixedPointCodec
from fedfort.secagg.graph import SharingGraph
from fedfort.secagg.thresholds import ETA, SIGMA, Thresholds, corrupt_bound, derive

__all__ = ["MaskingParams", "Variant", "graph_seed_for"]

Variant = Literal["secagg", "secagg+"]


def graph_seed_for(sid: bytes) -> bytes:
    """The SecAgg+ graph seed of session ``sid``: ``SHA-256("fedfort-secagg-graph\\0" || sid)``.

    Public and fixed by the session id, so the server cannot pick a client's neighbours (it
    could only grind session ids; see docs/secure-aggregation.md). Clients check it.
    """
    return hashlib.sha256(b"fedfort-secagg-graph\x00" + sid).digest()


@dataclass(frozen=True)
class MaskingParams:
    """What every party of a session must agree on.

    - ``roster``: the selected clients, sorted; a client's index in it is its Shamir
      x-coordinate minus one and its node in the sharing graph.
    - ``variant``: ``secagg`` (complete graph) or ``secagg+`` (random Harary graph).
    - ``degree``/``threshold``: ``k`` and ``t``; ``None`` derives them
      (:func:`~fedfort.secagg.thresholds.derive`). A given threshold must still satisfy
      ``2 t > k + 1 + c_max`` for ``corrupt_fraction``.
    - ``bits``, ``bound``: the fixed-point encoding (:class:`FixedPointCodec`), sized for
      ``len(roster)`` inputs.
    - ``dim``: length of the weighted input ``[w x, w]`` (model dimension + 1).
    - ``graph_seed``: public randomness for the graph's relabelling, :func:`graph_seed_for`
      the session id.
    - ``corrupt_fraction``/``dropout_fraction``: what ``k`` and ``t`` are sized to tolerate
      (a fraction ``gamma`` of the roster corrupt and colluding with the server, a fraction
      ``delta`` dropping out); ``sigma``/``eta``: the SecAgg+ graph fails security with
      probability at most ``2**-sigma`` and liveness with ``2**-eta``.
    - ``task_digest``: :func:`fedfort.messages.session_task_digest` of the task every client
      of the session was sent (empty when the session runs outside a federation); a client
      whose own task hashes otherwise aborts, so no client's input can be cancelled out by
      a task of its own (a weight cap of 0, a learning rate of 0).
    """

    roster: tuple[str, ...]
    variant: Variant
    dim: int
    bits: int = 32
    bound: float = 1.0
    degree: int | None = None
    threshold: int | None = None
    graph_seed: bytes = b"\x00" * 32
    corrupt_fraction: float = 1 / 3
    dropout_fraction: float = 0.1
    sigma: float = SIGMA
    eta: float = ETA
    task_digest: bytes = b""

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
        if len(self.task_digest) not in (0, 32):
            raise ConfigError("the task digest is empty or has 32 bytes")
        if not (0 < self.sigma <= 1024 and 0 < self.eta <= 1024):
            raise ConfigError(
                f"sigma and eta are bits of security in (0, 1024], got {self.sigma}, {self.eta}"
            )
        if self.degree is not None and (
            self.variant != "secagg+" or self.degree % 2 or not 2 <= self.degree <= n - 1
        ):
            raise ConfigError(
                f"a SecAgg+ degree must be even, >= 2 and at most n - 1 = {n - 1}; got "
                f"{self.degree} for variant {self.variant!r}"
            )
        k, t = self.resolved()
        if not 1 <= t <= k + 1:
            raise ConfigError(f"threshold {t} is impossible with {k} neighbours")
        c_max = corrupt_bound(n, k, self.corrupt_fraction, self.sigma)
        if 2 * t <= k + 1 + c_max:
            raise ConfigError(
                f"threshold {t} with degree {k} is unsafe: up to {c_max} corrupt holders of one "
                f"client's shares (corrupt_fraction {self.corrupt_fraction:.3g}) need "
                f"2 t > k + 1 + {c_max}; raise the threshold or leave it unset"
            )
        self.codec  # noqa: B018  (validates the encoding)

    def thresholds(self) -> Thresholds:
        """The derived ``k`` and ``t`` with the bounds behind them (``threshold`` not applied)."""
        return derive(
            len(self.roster),
            self.variant,
            corrupt_fraction=self.corrupt_fraction,
            dropout_fraction=self.dropout_fraction,
            sigma=self.sigma,
            eta=self.eta,
            degree=self.degree,
        )

    def resolved(self) -> tuple[int, int]:
        """``(k, t)``: the derived values, with a given ``threshold`` in place of ``t``.

        With both ``degree`` and ``threshold`` given nothing is derived: whether enough holders
        survive is then the proposer's concern (safety is still checked on construction).
        """
        if self.degree is not None and self.threshold is not None:
            return self.degree, self.threshold
        found = self.thresholds()
        return found.degree, (found.threshold if self.threshold is None else self.threshold)

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
        h.update(
            f"{self.corrupt_fraction!r}|{self.dropout_fraction!r}|{self.sigma!r}|{self.eta!r}|".encode()
        )
        h.update(self.graph_seed)
        h.update(b"|" + self.task_digest)
        return h.digest()
