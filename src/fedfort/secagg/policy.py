"""What an honest client insists on before it takes part in a masking session.

The server proposes the session's parameters (:class:`~fedfort.secagg.params.MaskingParams`);
a malicious server would propose ones that let it unmask an input: a threshold too low for the
corrupt clients it colludes with, a sparse graph of too small a degree, a graph seed it chose
so that a victim's neighbours are its accomplices, or a tiny roster. A client trusts nothing
it can check itself, so :meth:`ClientPolicy.check` re-derives what it can from the session id
and its *own* assumptions (Bonawitz et al., CCS 2017, section 6; Bell et al., CCS 2020,
section 4 on parameter selection):

- the roster has between ``min_clients`` and ``max_clients`` members (the upper bound also
  caps the cost of the derivation below);
- for a sparse (SecAgg+) graph, the seed is :func:`~fedfort.secagg.params.graph_seed_for`
  the session id, so the graph is a public function of it;
- with ``gamma = max(own corrupt_fraction, the server's)`` and ``sigma = max(own, the
  server's)``, the degree is at least the one this client derives, and
  ``2 t > k + 1 + c_max(gamma, sigma)`` (:mod:`fedfort.secagg.thresholds`): no split of the
  holders lets the server and the corrupt ones rebuild both of a client's secrets.

A refusal raises :class:`~fedfort.errors.SecAggAbort`: the client takes no part in the session.

Before any of this, the server could simply not ask for secure aggregation, or ask for a weaker
mode (CKKS, which an active server defeats with a key owner it colludes with): ``required_mode``
is the least protection the client's own configuration names, and
:meth:`ClientPolicy.admits_mode` tells whether a task's mode meets it (the masking modes meet
each other; CKKS meets only CKKS; none meets nothing but ``none``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedfort.errors import ConfigError, SecAggAbort
from fedfort.secagg.params import MaskingParams, graph_seed_for
from fedfort.secagg.thresholds import SIGMA, corrupt_bound, derive, safe_threshold

__all__ = ["ClientPolicy", "RequiredMode"]

RequiredMode = Literal["none", "ckks", "secagg+", "secagg"]
# how much a mode protects against a malicious server: nothing, an honest-but-curious server
# only (CKKS), or an active one (masking with the client's checks below)
_STRENGTH = {"none": 0, "ckks": 1, "secagg+": 2, "secagg": 2}


@dataclass(frozen=True)
class ClientPolicy:
    """A client's own floor for masking sessions (see the module docstring).

    ``corrupt_fraction`` is the share of the roster this client assumes may collude with the
    server (the server may claim more, never less); ``sigma`` the SecAgg+ security parameter
    it insists on; ``min_clients``/``max_clients`` bound the roster it accepts;
    ``required_mode`` the least secure-aggregation mode a task must ask for.
    """

    corrupt_fraction: float = 1 / 3
    sigma: float = SIGMA
    min_clients: int = 3
    max_clients: int = 10_000
    required_mode: RequiredMode = "none"

    def __post_init__(self) -> None:
        if not 0 <= self.corrupt_fraction < 0.5:
            raise ConfigError(
                f"a client's corrupt_fraction must be in [0, 1/2), got {self.corrupt_fraction}"
            )
        if not 2 <= self.min_clients <= self.max_clients:
            raise ConfigError(
                "a client needs 2 <= min_clients <= max_clients, got "
                f"{self.min_clients} and {self.max_clients}"
            )
        if not 0 < self.sigma <= 1024:
            raise ConfigError(f"a client's sigma must be in (0, 1024] bits, got {self.sigma}")
        if self.required_mode not in _STRENGTH:
            raise ConfigError(
                f"a client's required secure-aggregation mode must be one of {sorted(_STRENGTH)}, "
                f"got {self.required_mode!r}"
            )

    def admits_mode(self, mode: str | None) -> bool:
        """Whether a task asking for secure-aggregation ``mode`` (``None``: none) meets
        ``required_mode``."""
        return _STRENGTH.get(mode or "none", -1) >= _STRENGTH[self.required_mode]

    def check(self, params: MaskingParams, sid: bytes) -> None:
        """Raise :class:`SecAggAbort` unless ``params`` are safe for session ``sid``."""
        n = len(params.roster)
        if n < self.min_clients:
            raise SecAggAbort(
                f"a session of {n} clients is below this client's minimum of {self.min_clients}"
            )
        if n > self.max_clients:
            raise SecAggAbort(
                f"a session of {n} clients is above this client's maximum of {self.max_clients}"
            )
        k, t = params.resolved()
        if k < n - 1 and params.graph_seed != graph_seed_for(sid):
            raise SecAggAbort(
                "the SecAgg+ graph seed is not SHA-256 of the session id: the server chose who "
                "neighbours whom"
            )
        gamma = max(self.corrupt_fraction, params.corrupt_fraction)
        sigma = max(self.sigma, params.sigma)
        own = self._own_degree(params, gamma, sigma)
        if k < own:
            raise SecAggAbort(
                f"the session's degree {k} is below the degree {own} this client derives for "
                f"{n} clients with up to a fraction {gamma:.3g} corrupt"
            )
        c_max = corrupt_bound(n, k, gamma, sigma)
        floor = max(safe_threshold(k, c_max), c_max + 2)
        if t < floor:
            raise SecAggAbort(
                f"threshold {t} is below the safe minimum {floor} for k={k}: up to {c_max} "
                f"corrupt holders (a fraction {gamma:.3g} of {n} clients) need "
                f"2 t > k + 1 + {c_max}"
            )

    def _own_degree(self, params: MaskingParams, gamma: float, sigma: float) -> int:
        """The degree this client derives; the complete graph when nothing sparse is live."""
        n = len(params.roster)
        try:
            return derive(
                n,
                params.variant,
                corrupt_fraction=gamma,
                dropout_fraction=params.dropout_fraction,
                sigma=sigma,
                eta=params.eta,
            ).degree
        except ConfigError:
            return n - 1
