"""Anomaly detection and reputation against synthetic outlier updates.

Until the attack suite exists, attacks are synthetic: 20 clients, 4 of them sending scaled,
sign-flipped, noise or zero (free-rider) updates, or replaying an earlier update.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from fedfort.aggregation.mean import WeightedMean
from fedfort.detection import AnomalyDetector, ReputationLedger
from fedfort.errors import ConfigError
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
    ServerSGD,
    VerifyUpdates,
)
from fedfort.server.defense import DetectAnomalies, UpdateReputation

DIM = 2000
N_HONEST, N_EVIL = 16, 4
IDS = tuple(f"c{i:02d}" for i in range(N_HONEST + N_EVIL))
EVIL = set(IDS[:N_EVIL])


def honest_updates(rng: np.random.Generator, direction: np.ndarray, n: int) -> np.ndarray:
    """Non-IID-looking honest updates: a shared direction, per-client scale and large noise."""
    scale = rng.uniform(0.7, 1.3, (n, 1))
    return (direction * scale + rng.normal(0, 2.0 / np.sqrt(DIM), (n, DIM))).astype(np.float32)


def attack(kind: str, honest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mean = honest.mean(axis=0)
    if kind == "scaled":
        return np.tile(10 * mean, (N_EVIL, 1)).astype(np.float32)
    if kind == "sign_flip":
        return np.tile(-3 * mean, (N_EVIL, 1)).astype(np.float32)
    if kind == "noise":
        norm = np.linalg.norm(mean)
        return rng.normal(0, norm / np.sqrt(DIM), (N_EVIL, DIM)).astype(np.float32)
    if kind == "free_rider":
        return np.zeros((N_EVIL, DIM), np.float32)
    raise AssertionError(kind)


def precision_recall(flagged: set[str]) -> tuple[float, float]:
    tp = len(flagged & EVIL)
    precision = tp / len(flagged) if flagged else 0.0
    return precision, tp / len(EVIL)


@pytest.mark.parametrize("kind", ["scaled", "sign_flip", "noise", "free_rider"])
def test_detector_flags_outliers_with_high_precision_and_recall(kind: str) -> None:
    precisions, recalls = [], []
    for trial in range(10):
        rng = np.random.default_rng(trial)
        direction = rng.normal(0, 1 / np.sqrt(DIM), DIM)
        honest = honest_updates(rng, direction, N_HONEST)
        updates = np.concatenate([attack(kind, honest, rng), honest])
        report = AnomalyDetector(DIM, num_byzantine=N_EVIL).score(updates, IDS)
        p, r = precision_recall(set(report.flagged_ids))
        precisions.append(p)
        recalls.append(r)
    assert np.mean(precisions) >= 0.9, precisions
    assert np.mean(recalls) >= 0.9, recalls


def test_honest_round_is_mostly_not_flagged() -> None:
    false_positives = 0
    for trial in range(20):
        rng = np.random.default_rng(100 + trial)
        direction = rng.normal(0, 1 / np.sqrt(DIM), DIM)
        report = AnomalyDetector(DIM).score(honest_updates(rng, direction, 20), IDS)
        false_positives += int(report.flagged.sum())
    assert false_positives / (20 * 20) < 0.02


def test_history_catches_a_replayed_update_that_looks_normal_in_the_round() -> None:
    rng = np.random.default_rng(0)
    detector = AnomalyDetector(DIM)
    direction = rng.normal(0, 1 / np.sqrt(DIM), DIM)
    first = honest_updates(rng, direction, 20)
    report = detector.score(first, IDS)
    detector.load_state_dict(report.history_state)  # the round committed
    second = honest_updates(rng, direction, 20)
    second[5] = first[5]  # c05 replays its stale update from last round
    report = detector.score(second, IDS)
    assert report.flagged_ids == ["c05"]
    assert report.components["history"][5] > report.components["norm"][5]
    without_history = AnomalyDetector(DIM, components=["norm", "cosine", "krum"])
    assert "c05" not in without_history.score(second, IDS).flagged_ids


def test_detector_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="unknown detection components"):
        AnomalyDetector(DIM, components=["vibes"])
    with pytest.raises(ConfigError):
        AnomalyDetector(DIM, threshold=0)


def test_ledger_rewards_penalises_decays_and_quarantines() -> None:
    ledger = ReputationLedger(
        initial=0.5,
        reward=0.1,
        penalty=0.5,
        decay=0.0,
        quarantine_threshold=0.2,
        quarantine_rounds=3,
    )
    state = ledger.updated(1, participants={"a", "b"}, accepted={"a"}, penalised={"b"})
    assert state["scores"] == pytest.approx({"a": 0.55, "b": 0.25})
    ledger.load_state_dict(state)
    state = ledger.updated(2, participants={"b"}, accepted=set(), penalised={"b"})
    ledger.load_state_dict(state)
    assert ledger.score("b") == pytest.approx(0.125)
    assert ledger.quarantined(3) == ["b"] and ledger.is_quarantined("b", 5)
    assert not ledger.is_quarantined("b", 6)
    np.testing.assert_array_equal(ledger.weights(["a", "b"], 3), [0.55, 0.0])
    decaying = ReputationLedger(decay=0.5)
    decaying.load_state_dict({"scores": {"x": 0.1}})
    decaying.load_state_dict(
        decaying.updated(1, participants=set(), accepted=set(), penalised=set())
    )
    assert decaying.score("x") == pytest.approx(0.3)


class SyntheticFederation:
    """A runtime whose first four clients attack every round (or behave, once ``reformed``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rng = np.random.default_rng(7)
        self.direction = self.rng.normal(0, 1 / np.sqrt(DIM), DIM)
        self.reformed: set[str] = set()

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        honest = honest_updates(self.rng, self.direction, len(tasks))
        evil = attack(self.kind, honest, self.rng)
        out = []
        for i, task in enumerate(tasks):
            bad = task.client_id in EVIL and task.client_id not in self.reformed
            delta = evil[0] if bad else honest[i]
            out.append(ClientUpdate(task.round, task.client_id, delta, 10))
        return CollectOutcome(out, [])

    def acknowledge(self, round_: int, accepted: Sequence[ClientUpdate]) -> None:
        return None


def federation(kind: str, *, detect: bool, reputation: bool):
    runtime = SyntheticFederation(kind)
    ledger = ReputationLedger(quarantine_rounds=4) if reputation else None
    stages = [
        SelectClients(1.0, policy=ledger),
        Broadcast(LocalTrainingConfig(), 0),
        Collect(),
        VerifyUpdates(DIM),
    ]
    if detect:
        stages.append(DetectAnomalies(AnomalyDetector(DIM, num_byzantine=N_EVIL)))
    stages += [EnforceQuorum(), Aggregate(WeightedMean()), ApplyServerOptimizer(ServerSGD())]
    if ledger is not None:
        stages.append(UpdateReputation(ledger))
    engine = RoundEngine(np.zeros(DIM, np.float32), IDS, stages, runtime, seed=0)
    return engine, runtime, ledger


@pytest.mark.parametrize("kind", ["scaled", "sign_flip"])
def test_detection_keeps_the_model_on_course_under_attack(kind: str) -> None:
    def error(engine: RoundEngine, runtime: SyntheticFederation) -> float:
        """Distance to the honest trajectory (5 rounds of the shared direction), relative."""
        for _ in range(5):
            engine.run_round()
        target = 5 * runtime.direction
        return float(np.linalg.norm(engine.model - target) / np.linalg.norm(target))

    attacked, runtime = federation(kind, detect=False, reputation=False)[:2]
    defended, runtime_d = federation(kind, detect=True, reputation=False)[:2]
    clean, runtime_c = federation(kind, detect=False, reputation=False)[:2]
    runtime_c.reformed = set(EVIL)
    clean_error = error(clean, runtime_c)
    undefended_error = error(attacked, runtime)
    defended_error = error(defended, runtime_d)
    assert undefended_error > 2 * clean_error
    assert defended_error < 1.3 * clean_error


def test_reputation_quarantines_attackers_and_lets_reformed_clients_back() -> None:
    engine, runtime, ledger = federation("sign_flip", detect=True, reputation=True)
    records = [engine.run_round() for _ in range(2)]
    assert set(records[1].measurements["reputation"]["quarantined"]) == EVIL
    record = engine.run_round()
    assert not EVIL & set(record.selected), "quarantined clients must not be selected"
    assert len(record.selected) == N_HONEST
    runtime.reformed = set(EVIL)
    for _ in range(4):
        record = engine.run_round()
    assert set(record.selected) >= EVIL
    assert not record.measurements["detect"]["flagged"]
    assert ledger is not None
    low = [ledger.score(c) for c in EVIL]
    for _ in range(10):
        engine.run_round()
    assert all(ledger.score(c) > before for c, before in zip(EVIL, low, strict=True))
    assert min(ledger.score(c) for c in EVIL) < min(ledger.score(c) for c in IDS[N_EVIL:])


def test_record_and_downweight_actions() -> None:
    for action in ("record", "downweight"):
        runtime = SyntheticFederation("scaled")
        detect = DetectAnomalies(AnomalyDetector(DIM, num_byzantine=N_EVIL), action)
        stages = [
            SelectClients(1.0),
            Broadcast(LocalTrainingConfig(), 0),
            Collect(),
            VerifyUpdates(DIM),
            detect,
            EnforceQuorum(),
            Aggregate(WeightedMean()),
            ApplyServerOptimizer(ServerSGD()),
        ]
        engine = RoundEngine(np.zeros(DIM, np.float32), IDS, stages, runtime, seed=0)
        record = engine.run_round()
        assert set(record.measurements["detect"]["flagged"]) == EVIL
        assert record.participants == len(IDS)
        model_norm = float(np.linalg.norm(engine.model))
        honest_norm = float(np.linalg.norm(runtime.direction))
        if action == "record":
            assert model_norm > 2 * honest_norm  # the boosted updates went in at full weight
        else:
            assert model_norm < 1.6 * honest_norm
