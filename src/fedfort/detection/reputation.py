"""A reputation ledger: what the federation remembers about each client's behaviour.

Rules, applied once per committed round (nothing changes for discarded attempts):

1. **Decay.** Every score moves a share ``decay`` of the way back to ``initial``, so old
   offences and old merit both fade.
2. **Reward.** A client whose update was accepted and not flagged gains
   ``reward * (1 - r)`` (bounded by 1).
3. **Penalty.** A client whose update was flagged by the detector or rejected by verification
   loses a share ``penalty`` of its score: ``r <- r * (1 - penalty)``.
4. **Quarantine.** A penalty that takes the score below ``quarantine_threshold`` quarantines
   the client for ``quarantine_rounds`` rounds: it is not selected. Afterwards it is selectable
   again, with its low score, and earns its way back through accepted updates and decay.

The ledger is a :class:`~fedfort.server.selection.SelectionPolicy`: selection weights are the
scores (floored at ``min_weight`` so that honest clients with bad luck are not starved), and 0
for quarantined clients. This follows the reputation-weighted selection of FLTrust-style
trust bootstrapping and of reputation systems such as Kang et al., "Incentive Mechanism for
Reliable Federated Learning" (IEEE IoT Journal, 2019).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from fedfort.errors import ConfigError

__all__ = ["ReputationLedger"]


class ReputationLedger:
    """Scores in [0, 1] per client, quarantine, and reputation-weighted selection."""

    def __init__(
        self,
        *,
        initial: float = 0.5,
        reward: float = 0.1,
        penalty: float = 0.5,
        decay: float = 0.02,
        quarantine_threshold: float = 0.2,
        quarantine_rounds: int = 5,
        min_weight: float = 0.05,
    ) -> None:
        for name, value in {
            "initial": initial,
            "reward": reward,
            "penalty": penalty,
            "decay": decay,
            "quarantine_threshold": quarantine_threshold,
            "min_weight": min_weight,
        }.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"reputation.{name} must be in [0, 1], got {value}")
        if quarantine_rounds < 0:
            raise ConfigError(f"quarantine_rounds must be >= 0, got {quarantine_rounds}")
        self.initial = initial
        self.reward = reward
        self.penalty = penalty
        self.decay = decay
        self.quarantine_threshold = quarantine_threshold
        self.quarantine_rounds = quarantine_rounds
        self.min_weight = min_weight
        self.scores: dict[str, float] = {}
        self.quarantined_until: dict[str, int] = {}

    def score(self, client_id: str) -> float:
        return self.scores.get(client_id, self.initial)

    def is_quarantined(self, client_id: str, round_: int) -> bool:
        """Whether ``client_id`` may not take part in round ``round_``."""
        return round_ <= self.quarantined_until.get(client_id, 0)

    def weights(self, client_ids: Sequence[str], round_: int) -> np.ndarray:
        """Selection weights: the score (at least ``min_weight``), 0 while quarantined."""
        return np.array(
            [
                0.0 if self.is_quarantined(c, round_) else max(self.score(c), self.min_weight)
                for c in client_ids
            ],
            dtype=np.float64,
        )

    def updated(
        self,
        round_: int,
        *,
        participants: Collection[str],
        accepted: Collection[str],
        penalised: Collection[str],
    ) -> dict[str, Any]:
        """The ledger state after round ``round_`` (pure; applied with ``load_state_dict``).

        ``participants`` are the clients selected this round; only they can gain or lose.
        """
        known = set(self.scores) | set(participants)
        scores = {c: self.score(c) for c in known}
        for c in scores:
            scores[c] += self.decay * (self.initial - scores[c])
        until = dict(self.quarantined_until)
        for c in participants:
            if c in penalised:
                scores[c] *= 1.0 - self.penalty
                if scores[c] < self.quarantine_threshold and self.quarantine_rounds > 0:
                    until[c] = round_ + self.quarantine_rounds
            elif c in accepted:
                scores[c] += self.reward * (1.0 - scores[c])
        until = {c: r for c, r in until.items() if r > round_}
        return {"scores": scores, "quarantined_until": until}

    def quarantined(self, round_: int) -> list[str]:
        """Clients that may not take part in round ``round_``."""
        return sorted(c for c in self.quarantined_until if self.is_quarantined(c, round_))

    def state_dict(self) -> dict[str, Any]:
        return {"scores": dict(self.scores), "quarantined_until": dict(self.quarantined_until)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores = {k: float(v) for k, v in state.get("scores", {}).items()}
        self.quarantined_until = {k: int(v) for k, v in state.get("quarantined_until", {}).items()}
