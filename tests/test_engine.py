"""The round engine: verification, quorum and retries, optimizers, selection, atomic commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from fedfort.aggregation import WeightedMean
from fedfort.errors import ConfigError, RoundFailed
from fedfort.messages import ClientUpdate, LocalTrainingConfig, TrainTask
from fedfort.server import (
    Aggregate,
    ApplyServerOptimizer,
    Broadcast,
    Collect,
    CollectOutcome,
    EnforceQuorum,
    RoundEngine,
    SelectClients,
    ServerAdam,
    ServerMomentum,
    ServerSGD,
    VerifyUpdates,
)

DIM = 4
IDS = [f"c{i}" for i in range(6)]
Behaviour = Callable[[TrainTask], object | None]


def honest(value: float, samples: int = 10) -> Behaviour:
    def act(task: TrainTask) -> ClientUpdate:
        return ClientUpdate(task.round, task.client_id, np.full(DIM, value, np.float32), samples)

    return act


class ScriptedExecutor:
    """Returns what each client's behaviour produces; ``None`` means the client dropped."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.behaviours = behaviours
        self.acknowledged: list[tuple[int, list[str]]] = []

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        received, missing = [], []
        for task in tasks:
            out = self.behaviours[task.client_id](task)
            if out is None:
                missing.append(task.client_id)
            else:
                received.append(out)
        return CollectOutcome(received, missing)  # type: ignore[arg-type]

    def acknowledge(self, round_: int, accepted: Sequence[ClientUpdate]) -> None:
        self.acknowledged.append((round_, [u.client_id for u in accepted]))


def make_engine(
    behaviours: dict[str, Behaviour],
    *,
    optimizer=None,
    quorum: float = 0.0,
    min_participants: int = 1,
    fraction: float = 1.0,
    max_attempts: int = 3,
    seed: int = 0,
) -> tuple[RoundEngine, ScriptedExecutor]:
    executor = ScriptedExecutor(behaviours)
    stages = [
        SelectClients(fraction),
        Broadcast(LocalTrainingConfig(), run_seed=seed),
        Collect(),
        VerifyUpdates(DIM),
        EnforceQuorum(min_participants, quorum),
        Aggregate(WeightedMean()),
        ApplyServerOptimizer(optimizer or ServerSGD()),
    ]
    engine = RoundEngine(
        np.zeros(DIM, np.float32),
        list(behaviours),
        stages,
        executor,
        seed=seed,
        max_attempts=max_attempts,
    )
    return engine, executor


def update_with(**changes: object) -> Behaviour:
    def act(task: TrainTask) -> object:
        fields = {
            "round": task.round,
            "client_id": task.client_id,
            "delta": np.full(DIM, 100.0, np.float32),
            "num_samples": 10,
        }
        fields.update(changes)
        return ClientUpdate(**fields)  # type: ignore[arg-type]

    return act


BAD_UPDATES: dict[str, Behaviour] = {
    "non_finite": update_with(delta=np.array([1, np.nan, 0, 0], np.float32)),
    "bad_shape": update_with(delta=np.ones(DIM + 1, np.float32)),
    "bad_dtype": update_with(delta=np.ones(DIM, np.float64)),
    "wrong_round": update_with(round=7),
    "bad_sample_count": update_with(num_samples=0),
    "not_an_update": lambda task: {"delta": [1, 2, 3, 4]},
}


@pytest.mark.parametrize("reason", sorted(BAD_UPDATES))
def test_bad_update_is_rejected_with_reason_and_excluded(reason: str) -> None:
    behaviours = {"a": honest(1.0), "b": honest(3.0), "evil": BAD_UPDATES[reason]}
    engine, _ = make_engine(behaviours)
    record = engine.run_round()
    assert [r["reason"] for r in record.rejected] == [reason]
    assert record.participants == 2
    np.testing.assert_allclose(engine.model, np.full(DIM, 2.0))


def test_inf_is_rejected_as_non_finite() -> None:
    behaviours = {"a": honest(1.0), "evil": update_with(delta=np.full(DIM, np.inf, np.float32))}
    engine, _ = make_engine(behaviours)
    record = engine.run_round()
    assert record.rejected[0]["reason"] == "non_finite"
    np.testing.assert_allclose(engine.model, np.full(DIM, 1.0))


def test_unknown_and_duplicate_clients_are_rejected() -> None:
    def impersonate(task: TrainTask) -> ClientUpdate:
        return ClientUpdate(task.round, "stranger", np.full(DIM, 50.0, np.float32), 10)

    class TwiceExecutor(ScriptedExecutor):
        def execute(self, tasks, deadline_s):
            outcome = super().execute(tasks, deadline_s)
            replay = ClientUpdate(tasks[0].round, "a", np.full(DIM, 9.0, np.float32), 10)
            return CollectOutcome([*outcome.received, replay], outcome.missing)

    engine, _ = make_engine({"a": honest(1.0), "b": impersonate})
    engine.executor = TwiceExecutor(engine.executor.behaviours)  # type: ignore[attr-defined]
    record = engine.run_round()
    assert sorted(r["reason"] for r in record.rejected) == ["duplicate", "unknown_client"]
    np.testing.assert_allclose(engine.model, np.full(DIM, 1.0))


def test_weighted_mean_uses_sample_counts() -> None:
    engine, _ = make_engine({"a": honest(1.0, samples=30), "b": honest(5.0, samples=10)})
    engine.run_round()
    np.testing.assert_allclose(engine.model, np.full(DIM, 2.0))


def test_round_below_quorum_is_discarded_retried_and_recorded() -> None:
    calls = {"n": 0}

    def flaky(task: TrainTask) -> ClientUpdate | None:
        calls["n"] += 1
        return None if task.attempt == 1 else honest(4.0)(task)

    behaviours = {"a": flaky, "b": flaky, "c": honest(1.0)}
    engine, executor = make_engine(behaviours, quorum=1.0)
    record = engine.run_round()
    assert record.attempt == 2
    assert len(record.discarded_attempts) == 1
    discarded = record.discarded_attempts[0]
    assert "quorum" in discarded["reason"]
    assert sorted(discarded["dropped"]) == ["a", "b"]
    np.testing.assert_allclose(engine.model, np.full(DIM, 3.0))
    assert executor.acknowledged == [(1, ["a", "b", "c"])]


def test_failed_round_commits_nothing_and_server_keeps_running() -> None:
    state = {"up": True}

    def sometimes(task: TrainTask) -> ClientUpdate | None:
        return honest(2.0)(task) if state["up"] else None

    optimizer = ServerMomentum(lr=1.0, momentum=0.5)
    engine, executor = make_engine(
        {"a": sometimes, "b": sometimes}, min_participants=2, optimizer=optimizer
    )
    engine.run_round()
    engine.run_round()
    before_model = engine.model.copy()
    before_opt = engine.stage("server_optimizer").state_dict()["velocity"].copy()
    state["up"] = False
    with pytest.raises(RoundFailed, match="after 3 attempts"):
        engine.run_round()
    assert engine.round == 2
    np.testing.assert_array_equal(engine.model, before_model)
    np.testing.assert_array_equal(
        engine.stage("server_optimizer").state_dict()["velocity"], before_opt
    )
    assert len(executor.acknowledged) == 2
    state["up"] = True
    assert engine.run_round().round == 3


def test_fedavgm_and_fedadam_follow_their_update_rules() -> None:
    momentum, _ = make_engine({"a": honest(1.0)}, optimizer=ServerMomentum(lr=0.5, momentum=0.9))
    momentum.run_round()
    momentum.run_round()
    # v1 = 1, v2 = 0.9 + 1 = 1.9; x = 0.5 * (1 + 1.9)
    np.testing.assert_allclose(momentum.model, np.full(DIM, 1.45), rtol=1e-6)

    adam, _ = make_engine({"a": honest(2.0)}, optimizer=ServerAdam(lr=0.1, tau=1e-3))
    adam.run_round()
    m, v = 0.1 * 2.0, 0.01 * 4.0
    np.testing.assert_allclose(adam.model, np.full(DIM, 0.1 * m / (np.sqrt(v) + 1e-3)), rtol=1e-5)


def test_selection_is_seeded_fractional_and_policy_aware() -> None:
    behaviours = {cid: honest(1.0) for cid in IDS}
    first, _ = make_engine(behaviours, fraction=0.5, seed=3)
    second, _ = make_engine(behaviours, fraction=0.5, seed=3)
    picks = [first.run_round().selected for _ in range(4)]
    assert picks == [second.run_round().selected for _ in range(4)]
    assert all(len(p) == 3 for p in picks)
    assert len({tuple(p) for p in picks}) > 1

    class OnlyEven:
        def weights(self, client_ids, round_):
            return np.array([1.0 if int(c[1:]) % 2 == 0 else 0.0 for c in client_ids])

    engine, _ = make_engine(behaviours, fraction=1.0)
    engine.stages[0] = SelectClients(1.0, policy=OnlyEven())
    assert engine.run_round().selected == ["c0", "c2", "c4"]


def test_misconfigured_stages_fail_clearly() -> None:
    with pytest.raises(ConfigError):
        SelectClients(fraction=0.0)
    with pytest.raises(ConfigError):
        EnforceQuorum(min_participants=0)
    with pytest.raises(ConfigError):
        Collect(deadline_s=-1)
    with pytest.raises(ConfigError, match="unique"):
        RoundEngine(np.zeros(2, np.float32), ["a", "a"], [], ScriptedExecutor({}), seed=0)
