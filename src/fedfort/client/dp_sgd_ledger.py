"""A client's own record-level DP-SGD ledger: what its DP-SGD training has cost it.

:class:`DpSgdStats` describes one call of :func:`fedfort.client.dp_sgd.train_dp_sgd` as the
accountant sees it; :class:`DpSgdLedger` composes the client's rounds with Opacus' RDP
accountant (see :mod:`fedfort.client.dp_sgd` for what the epsilon means).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from opacus.accountants import RDPAccountant

from fedfort.errors import CheckpointError, ConfigError

__all__ = ["DpSgdLedger", "DpSgdStats"]


@dataclass(frozen=True)
class DpSgdStats:
    """What one call of :func:`train_dp_sgd` did, as needed for privacy accounting.

    ``train_loss`` is the mean batch loss over the non-empty steps (NaN if every Poisson batch
    was empty); like every training metric it is computed from the raw data and is *not*
    covered by the DP guarantee.
    """

    steps: int
    sample_rate: float
    noise_multiplier: float
    train_loss: float


class DpSgdLedger:
    """A client's own sample-level privacy ledger: the DP-SGD rounds it took part in.

    Each recorded round contributes ``steps`` compositions of the sampled Gaussian mechanism
    with rate ``sample_rate`` and ``noise_multiplier`` (DP-SGD, Abadi et al. 2016). Epsilon is
    computed with Opacus' RDP accountant (Yousefpour et al. 2021; Mironov 2017; Mironov,
    Talwar and Zhang 2019). Only rounds whose update was committed are recorded by
    :meth:`record` (the epsilon the client reports); every update that *left* the client,
    committed or not, is recorded by :meth:`record_release`, and the client's budget is checked
    against those (:meth:`released_epsilon`): a discarded round's update was seen all the same.
    See the module docstring for what the number means.
    """

    def __init__(self) -> None:
        self._history: list[tuple[float, float, int]] = []
        self._released: list[tuple[float, float, int]] = []

    def __len__(self) -> int:
        return len(self._history) + len(self._released)

    def record(self, stats: DpSgdStats) -> None:
        """Add one committed round's DP-SGD training."""
        self._history.append(_entry(stats))

    def record_release(self, stats: DpSgdStats) -> None:
        """Add one round's DP-SGD training whose update left the client."""
        self._released.append(_entry(stats))

    def epsilon(self, delta: float, extra: DpSgdStats | None = None) -> float:
        """Epsilon at ``delta`` of all committed rounds, plus ``extra`` without recording it.

        0.0 when there is nothing to compose; ``inf`` if any step had noise multiplier 0.
        """
        return _epsilon(self._history, delta, extra)

    def released_epsilon(self, delta: float, extra: DpSgdStats | None = None) -> float:
        """Epsilon at ``delta`` of every released round (committed or not), plus ``extra``."""
        return _epsilon(self._released, delta, extra)

    def state_dict(self) -> dict[str, Any]:
        """JSON-friendly state: ``{"history": [[noise_multiplier, sample_rate, steps], ...]}``,
        and ``"released"`` in the same form when releases were recorded and differ from the
        committed history (without it, the history is what was released)."""
        state: dict[str, Any] = {"history": [[z, q, s] for z, q, s in self._history]}
        if self._released and self._released != self._history:
            state["released"] = [[z, q, s] for z, q, s in self._released]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the ledger with ``state`` as produced by :meth:`state_dict`."""
        raw = state.get("history") if isinstance(state, dict) else None
        if not isinstance(raw, list):
            raise CheckpointError("DP-SGD ledger state has no 'history' list")
        history = _entries(raw)
        released = state.get("released")
        if released is not None and not isinstance(released, list):
            raise CheckpointError("DP-SGD ledger state's 'released' is not a list")
        self._history = history
        self._released = list(history) if released is None else _entries(released)


def _epsilon(
    entries: list[tuple[float, float, int]], delta: float, extra: DpSgdStats | None
) -> float:
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    history = list(entries)
    if extra is not None:
        history.append(_entry(extra))
    # RDP composes additively and is linear in the number of steps, so rounds with the same
    # (noise multiplier, sample rate) are merged: the cost grows with the distinct settings,
    # not with the rounds (a few hundred rounds at one setting cost one RDP evaluation).
    merged: dict[tuple[float, float], int] = {}
    for z, q, steps in history:
        if steps > 0:
            merged[(z, q)] = merged.get((z, q), 0) + steps
    if not merged:
        return 0.0
    if any(z == 0 for z, _ in merged):
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(z, q, steps) for (z, q), steps in merged.items()]
    return float(accountant.get_epsilon(delta=delta))


def _entries(raw: list[Any]) -> list[tuple[float, float, int]]:
    history: list[tuple[float, float, int]] = []
    for item in raw:
        if not (isinstance(item, list | tuple) and len(item) == 3):
            raise CheckpointError(
                f"DP-SGD ledger entry {item!r} is not [noise_multiplier, sample_rate, steps]"
            )
        try:
            z, q = float(item[0]), float(item[1])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"DP-SGD ledger entry {item!r} is not numeric") from exc
        s = item[2]
        if isinstance(s, float) and s.is_integer():
            s = int(s)
        valid_steps = isinstance(s, int) and not isinstance(s, bool) and s >= 0
        if not (valid_steps and math.isfinite(z) and z >= 0 and 0 < q <= 1):
            raise CheckpointError(f"DP-SGD ledger entry {item!r} is out of range")
        history.append((z, q, s))
    return history


def _entry(stats: DpSgdStats) -> tuple[float, float, int]:
    if stats.steps < 0 or not 0 < stats.sample_rate <= 1 or not stats.noise_multiplier >= 0:
        raise ConfigError(f"invalid DP-SGD stats for accounting: {stats}")
    return (float(stats.noise_multiplier), float(stats.sample_rate), int(stats.steps))
