"""What an honest-but-curious server sees of a run, recorded as the run goes.

:class:`ServerView` wraps the runtime's executor of a :class:`~fedfort.simulation.Simulation`
and keeps, for every round, the global model the server broadcast and every update that
reached it *as it arrived*: after the client's clipping and noise (local or distributed DP),
and sealed -- with no vector at all -- under secure aggregation, where the server learns only
the round's sum. It changes nothing in the run; it only reads what the server already holds.

It also keeps every reply of the secure channel (``exchanged``): the statistics round's
replies (``[data] standardize`` / ``impute``) and the secure-aggregation protocol's messages.
:attr:`ServerView.statistics` are the clients' feature statistics the server received in the
clear; under secure aggregation there are none, only sealed replies and masked words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedfort.errors import ConfigError
from fedfort.messages import (
    ClientUpdate,
    EvaluateTask,
    EvaluationReport,
    StatisticsReply,
    TrainTask,
)
from fedfort.run.federation import Federation
from fedfort.server.engine import (
    ClientExecutor,
    CollectOutcome,
    EvaluationOutcome,
    FederatedEvaluator,
    SecureChannel,
)

__all__ = ["ServerView"]


class ServerView:
    """A pass-through executor that records the server's view of every round.

    ``broadcast[r]`` is the global model sent in round ``r`` (the model the round's updates
    start from); ``updates[r]`` maps client ids to the deltas the server received in the
    round's last attempt (the committed one), sealed updates left out.
    """

    def __init__(self, inner: ClientExecutor) -> None:
        self.inner = inner
        self.broadcast: dict[int, np.ndarray] = {}
        self.updates: dict[int, dict[str, np.ndarray]] = {}
        #: every reply of the secure channel, by (round, attempt, step)
        self.exchanged: dict[tuple[int, int, int], dict[str, object]] = {}
        #: the evaluation reports of each evaluated round
        self.evaluations: dict[int, list[EvaluationReport]] = {}

    @classmethod
    def attach(cls, sim: Federation) -> ServerView:
        """Install a view on ``sim``'s round engine (before the first round runs)."""
        if sim.engine.round != 0:
            raise ConfigError("attach the server view before the run's first round")
        view = cls(sim.engine.executor)
        sim.engine.executor = view
        return view

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        outcome = self.inner.execute(tasks, deadline_s)
        if tasks:
            round_ = tasks[0].round
            self.broadcast[round_] = np.array(tasks[0].weights, dtype=np.float32, copy=True)
            self.updates[round_] = {
                u.client_id: np.array(u.delta, dtype=np.float32, copy=True)
                for u in outcome.received
                if not u.sealed
            }
        return outcome

    def acknowledge(self, round_: int, accepted: Sequence[ClientUpdate]) -> None:
        self.inner.acknowledge(round_, accepted)

    def exchange(
        self,
        round_: int,
        attempt: int,
        step: int,
        outbox: Mapping[str, object],
        deadline_s: float | None,
    ) -> dict[str, object]:
        if not isinstance(self.inner, SecureChannel):
            raise ConfigError("this runtime cannot carry secure aggregation messages")
        replies = self.inner.exchange(round_, attempt, step, outbox, deadline_s)
        self.exchanged[(round_, attempt, step)] = dict(replies)
        return replies

    @property
    def statistics(self) -> dict[str, np.ndarray]:
        """The feature statistics vectors clients sent in the clear (the last of each)."""
        return {
            cid: np.array(reply.vector, dtype=np.float64, copy=True)
            for replies in self.exchanged.values()
            for cid, reply in replies.items()
            if isinstance(reply, StatisticsReply) and not reply.sealed
        }

    def close(self) -> None:
        self.inner.close()

    def model_after(self, round_: int, final: np.ndarray) -> np.ndarray:
        """The global model committed by ``round_`` (``final`` after the last round)."""
        nxt = self.broadcast.get(round_ + 1)
        return final if nxt is None else nxt

    def evaluate(
        self, tasks: Sequence[EvaluateTask], deadline_s: float | None
    ) -> EvaluationOutcome:
        """The clients' evaluation reports (metrics only), recorded like every other reply."""
        if not isinstance(self.inner, FederatedEvaluator):
            raise ConfigError("this runtime cannot carry evaluation tasks")
        outcome = self.inner.evaluate(tasks, deadline_s)
        if tasks:
            self.evaluations[tasks[0].round] = list(outcome.reports)
        return outcome
