"""FoolsGold and the robust learning rate: rules against colluding attackers and backdoors."""

from __future__ import annotations

import numpy as np
import pytest

from batches import make_batch
from fedfort.aggregation.foolsgold import FoolsGold, foolsgold_weights
from fedfort.aggregation.mean import WeightedMean
from fedfort.aggregation.registry import make_aggregator
from fedfort.aggregation.robust_lr import RobustLearningRate
from fedfort.errors import AggregationError, ConfigError


def _sybil_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """12 honest updates in different directions and 4 near-copies of one poisoned update."""
    rng = np.random.default_rng(seed)
    honest = rng.normal(size=(12, 40))
    poison = rng.normal(size=40) * 3
    sybils = poison + 0.01 * rng.normal(size=(4, 40))
    return np.vstack([honest, sybils]), poison


def test_foolsgold_zeroes_sybils_and_keeps_distinct_clients() -> None:
    rows, _ = _sybil_batch()
    weights = foolsgold_weights(rows)
    assert (weights[12:] == 0).all()
    assert (weights[:12] > 0.5).all()


def test_foolsgold_aggregate_excludes_sybils_and_commits_histories() -> None:
    rows, _ = _sybil_batch()
    rule = FoolsGold()
    result = rule.aggregate(make_batch(rows))
    honest_mean = rows[:12].mean(0)
    undefended = rows.mean(0)
    assert np.linalg.norm(result.update - honest_mean) < 0.5 * np.linalg.norm(
        undefended - honest_mean
    )
    assert result.diagnostics["zero_weight"] == ["c12", "c13", "c14", "c15"]
    assert rule.histories == {}  # nothing changes until the round commits
    rule.load_state_dict(result.state or {})
    np.testing.assert_allclose(rule.histories["c3"], rows[3], rtol=1e-6)
    second = rule.aggregate(make_batch(rows))
    np.testing.assert_allclose(second.state["histories"]["c3"], 2 * rows[3], rtol=1e-6)  # type: ignore[index]


def test_foolsgold_remembers_sybils_that_hide_in_one_round() -> None:
    rule = FoolsGold()
    rows, _ = _sybil_batch(seed=1)
    for _ in range(3):
        rule.load_state_dict(rule.aggregate(make_batch(rows)).state or {})
    rng = np.random.default_rng(7)
    fresh = rng.normal(size=rows.shape)  # this round everybody looks different
    weights = rule.aggregate(make_batch(fresh)).diagnostics["weights"]
    assert max(weights[f"c{i}"] for i in range(12, 16)) < min(weights[f"c{i}"] for i in range(12))


def test_foolsgold_sketched_histories_still_catch_sybils() -> None:
    rows, _ = _sybil_batch()
    result = FoolsGold(sketch_dim=32, seed=3).aggregate(make_batch(np.tile(rows, (1, 4))))
    assert result.diagnostics["zero_weight"] == ["c12", "c13", "c14", "c15"]
    with pytest.raises(ConfigError):
        FoolsGold(sketch_dim=4)


def test_foolsgold_refuses_a_round_where_everyone_is_a_copy() -> None:
    with pytest.raises(AggregationError, match="zero weight"):
        FoolsGold().aggregate(make_batch(np.ones((5, 3))))


def test_robust_learning_rate_reverses_coordinates_without_agreement() -> None:
    # coordinate 0: all 10 agree; coordinate 1: only 3 attackers push, the rest are split
    rows = np.zeros((10, 2))
    rows[:, 0] = 1.0
    rows[:3, 1] = 2.0
    rows[3:6, 1] = 0.1
    rows[6:, 1] = -0.1
    rule = RobustLearningRate(WeightedMean(), threshold=4)
    result = rule.aggregate(make_batch(rows))
    mean = rows.mean(0)
    assert result.update[0] == pytest.approx(mean[0])
    assert result.update[1] == pytest.approx(-mean[1])  # the backdoor coordinate is unlearned
    assert result.diagnostics["reversed_share"] == 0.5
    assert RobustLearningRate(WeightedMean(), threshold=2).aggregate(make_batch(rows)).update[
        1
    ] == pytest.approx(mean[1])
    with pytest.raises(ConfigError):
        RobustLearningRate(WeightedMean(), threshold=0)


def test_registry_wraps_robust_lr_outside_norm_bounding() -> None:
    rule = make_aggregator("trimmed_mean", num_byzantine=1, norm_bound=1.0, robust_lr_threshold=3)
    assert rule.name == "robust_lr(norm_bound(trimmed_mean))"
    assert make_aggregator("foolsgold").name == "foolsgold"
