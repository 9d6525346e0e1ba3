"""Robust aggregation rules: geometric median, centered clipping, FLTrust, FLAME, norm bounding."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import sklearn.cluster  # FLAME imports HDBSCAN from here when it aggregates

from fedfort.aggregation.base import AggregationResult, Aggregator, UpdateBatch
from fedfort.aggregation.centered_clipping import CenteredClipping
from fedfort.aggregation.flame import FLAME
from fedfort.aggregation.fltrust import FLTrust
from fedfort.aggregation.geometric_median import GeometricMedian
from fedfort.aggregation.mean import WeightedMean
from fedfort.aggregation.norm_bound import NormBounding
from fedfort.errors import AggregationError, ConfigError

DIM = 50
HONEST, ATTACKERS = 20, 4


def make_batch(rows: Any, weights: Any = None, model: Any = None, round_: int = 0) -> UpdateBatch:
    updates = np.asarray(rows, dtype=np.float32)
    n, d = updates.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    m = np.zeros(d, dtype=np.float32) if model is None else np.asarray(model, dtype=np.float32)
    return UpdateBatch(updates, w, tuple(f"c{i}" for i in range(n)), m, round_)


def run(rule: Aggregator, batch: UpdateBatch) -> AggregationResult:
    """Aggregate, checking the output contract and that the batch is left untouched."""
    before = (batch.updates.copy(), batch.weights.copy(), batch.client_ids, batch.model)
    model_copy = None if batch.model is None else batch.model.copy()
    result = rule.aggregate(batch)
    np.testing.assert_array_equal(batch.updates, before[0])
    np.testing.assert_array_equal(batch.weights, before[1])
    assert batch.client_ids == before[2]
    if model_copy is not None:
        np.testing.assert_array_equal(batch.model, model_copy)
    assert result.update.dtype == np.float32
    assert result.update.shape == (batch.dim,)
    json.dumps(result.diagnostics)
    return result


def honest_direction() -> np.ndarray:
    return np.full(DIM, 1.0 / np.sqrt(DIM))  # unit norm


def honest_rows(seed: int, count: int = HONEST) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return honest_direction() + 0.02 * rng.standard_normal((count, DIM))


def sign_flip_attack(seed: int = 0) -> tuple[UpdateBatch, np.ndarray]:
    """20 honest updates of norm ~1 and 4 attackers sending -10x the honest mean."""
    honest = honest_rows(seed)
    mean = honest.mean(axis=0)
    return make_batch(np.vstack([honest, np.tile(-10.0 * mean, (ATTACKERS, 1))])), mean


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b))


# --- geometric median ---------------------------------------------------------------------


def test_geometric_median_of_collinear_points_is_the_middle_one() -> None:
    result = run(GeometricMedian(), make_batch([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]]))
    np.testing.assert_allclose(result.update, [1.0, 0.0], atol=1e-4)
    assert result.diagnostics["converged"] is True
    assert result.diagnostics["weights"]["c1"] > 0.99  # the middle point carries the median


def test_geometric_median_of_symmetric_configuration_is_its_centre() -> None:
    centre = np.array([3.0, -2.0])
    offsets = [[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]
    result = run(GeometricMedian(), make_batch(centre + np.array(offsets)))
    np.testing.assert_allclose(result.update, centre, atol=1e-5)


def test_geometric_median_uses_sample_counts_as_weights() -> None:
    rows = [[0.0], [1.0]]
    weighted = run(GeometricMedian(), make_batch(rows, weights=[3.0, 1.0]))
    assert abs(float(weighted.update[0])) < 1e-4  # the heavier point wins outright
    even = run(GeometricMedian(), make_batch(rows, weights=[1.0, 1.0]))
    assert abs(float(even.update[0]) - 0.5) < 1e-6


def test_geometric_median_breakdown_keeps_it_near_honest_points() -> None:
    honest = honest_rows(1, count=5)
    batch = make_batch(np.vstack([honest, np.full((4, DIM), 1e6)]))  # f = 4 < n / 2 = 4.5
    assert distance(run(WeightedMean(), batch).update, honest.mean(axis=0)) > 1e5
    assert distance(run(GeometricMedian(), batch).update, honest.mean(axis=0)) < 0.5


@pytest.mark.parametrize(
    "kwargs", [{"max_iter": 0}, {"tol": -1.0}, {"smoothing": 0.0}, {"smoothing": float("nan")}]
)
def test_geometric_median_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        GeometricMedian(**kwargs)


@pytest.mark.parametrize("weights", [[0.0, 0.0], [-1.0, 2.0], [np.inf, 1.0]])
def test_geometric_median_rejects_bad_weights(weights: list[float]) -> None:
    with pytest.raises(AggregationError):
        run(GeometricMedian(), make_batch([[0.0], [1.0]], weights=weights))


# --- centered clipping --------------------------------------------------------------------


def test_centered_clipping_with_large_tau_is_the_mean_and_carries_its_center() -> None:
    rule = CenteredClipping(tau=10.0)
    first = run(rule, make_batch([[2.0, 0.0], [4.0, 0.0]], weights=[1.0, 9.0]))
    np.testing.assert_allclose(first.update, [3.0, 0.0])  # unweighted mean, nothing clipped
    assert first.diagnostics["clipped"] == []
    assert first.state is not None
    assert rule.state_dict() == {}  # aggregate did not change the rule
    rule.load_state_dict(first.state)
    far = make_batch([[3.0, 20.0], [3.0, 20.0]])
    second = run(rule, far)
    np.testing.assert_allclose(second.update, [3.0, 10.0])  # one tau from the old center
    assert second.diagnostics["clipped"] == ["c0", "c1"]
    fresh = run(CenteredClipping(tau=10.0), far)  # from zero: 10 along (3, 20)
    np.testing.assert_allclose(fresh.update, 10.0 * np.array([3.0, 20.0]) / np.hypot(3, 20))


def test_centered_clipping_state_round_trips_and_resets() -> None:
    rule = CenteredClipping(tau=1.0)
    rule.load_state_dict({"center": np.array([5.0, 5.0], dtype=np.float32)})
    restored = CenteredClipping(tau=1.0)
    restored.load_state_dict(rule.state_dict())
    batch = make_batch([[5.0, 7.0], [5.0, 7.0]])
    np.testing.assert_allclose(run(restored, batch).update, [5.0, 6.0])
    restored.load_state_dict({})
    np.testing.assert_allclose(run(restored, batch).update, np.array([5.0, 7.0]) / np.hypot(5, 7))
    restored.load_state_dict({"center": np.ones(3, dtype=np.float32)})  # wrong shape: zeros
    np.testing.assert_allclose(run(restored, batch).update, np.array([5.0, 7.0]) / np.hypot(5, 7))


@pytest.mark.parametrize(
    "kwargs", [{"tau": 0.0}, {"tau": float("inf")}, {"tau": 1, "iterations": 0}]
)
def test_centered_clipping_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        CenteredClipping(**kwargs)


def test_centered_clipping_uses_history_across_rounds() -> None:
    rule = CenteredClipping(tau=0.5)
    distances = []
    for round_ in range(10):
        batch, honest_mean = sign_flip_attack(seed=round_)
        assert distance(run(WeightedMean(), batch).update, honest_mean) > 1.0
        result = run(rule, batch)
        assert result.state is not None
        rule.load_state_dict(result.state)
        distances.append(distance(result.update, honest_mean))
    assert distances[0] > 0.5  # one clipped step from zero is not enough
    assert distances[-1] < 0.2  # ... but the center carried across rounds gets there


# --- FLTrust ------------------------------------------------------------------------------


def test_fltrust_trust_scores_and_rescaling() -> None:
    rule = FLTrust(lambda model: np.array([0.0, 2.0]))
    batch = make_batch([[0.0, 5.0], [0.0, -1.0], [1.0, 1.0]])
    result = run(rule, batch)
    trust = result.diagnostics["trust"]
    assert trust["c0"] == pytest.approx(1.0)
    assert trust["c1"] == 0.0  # opposite to g0
    assert trust["c2"] == pytest.approx(1 / np.sqrt(2))
    # (1 * (0, 2) + 1/sqrt2 * (sqrt2, sqrt2)) / (1 + 1/sqrt2)
    np.testing.assert_allclose(result.update, np.array([1.0, 3.0]) / (1 + 1 / np.sqrt(2)), 1e-6)


def test_fltrust_returns_zeros_when_nobody_is_trusted() -> None:
    result = run(FLTrust(lambda model: np.array([1.0, 0.0])), make_batch([[-1.0, 0.0], [0, 3]]))
    np.testing.assert_array_equal(result.update, [0.0, 0.0])


def test_fltrust_preconditions() -> None:
    rows = [[1.0, 0.0]]
    no_model = UpdateBatch(np.ones((1, 2), np.float32), np.ones(1), ("c0",), None, 0)
    with pytest.raises(AggregationError, match="global model"):
        run(FLTrust(lambda model: np.ones(2)), no_model)
    with pytest.raises(AggregationError):
        run(FLTrust(lambda model: np.ones(3)), make_batch(rows))
    with pytest.raises(AggregationError):
        run(FLTrust(lambda model: np.array([np.nan, 1.0])), make_batch(rows))


def test_fltrust_gives_the_server_a_copy_of_the_model() -> None:
    def greedy(model: np.ndarray) -> np.ndarray:
        model += 100.0  # a careless trainer that works in place
        return np.array([1.0, 0.0])

    run(FLTrust(greedy), make_batch([[1.0, 0.0]], model=[1.0, 2.0]))  # run() checks the model


# --- FLAME --------------------------------------------------------------------------------


def backdoor_batch(round_: int = 0) -> UpdateBatch:
    """20 honest updates and a tight cluster of 4 pointing in an orthogonal direction."""
    rng = np.random.default_rng(7)
    target = np.zeros(DIM)
    target[: DIM // 2], target[DIM // 2 :] = 1.0, -1.0
    target /= np.linalg.norm(target)  # orthogonal to the honest direction
    attackers = target + 0.001 * rng.standard_normal((ATTACKERS, DIM))
    return make_batch(np.vstack([honest_rows(3), attackers]), round_=round_)


def test_flame_rejects_a_backdoor_cluster_and_admits_a_majority_of_honest_clients() -> None:
    batch = backdoor_batch()
    result = run(FLAME(seed=0), batch)
    attackers = {f"c{i}" for i in range(HONEST, HONEST + ATTACKERS)}
    admitted, rejected = set(result.diagnostics["admitted"]), set(result.diagnostics["rejected"])
    assert attackers <= rejected
    assert admitted | rejected == set(batch.client_ids) and not admitted & rejected
    assert len(admitted) >= batch.num_clients // 2 + 1  # only a majority forms a cluster
    assert result.diagnostics["clustered"] is True
    norms = np.linalg.norm(batch.updates.astype(np.float64), axis=1)
    assert result.diagnostics["clip_norm"] == pytest.approx(float(np.median(norms)))


def test_flame_noise_is_reproducible_per_seed_and_round() -> None:
    same = [run(FLAME(seed=5), backdoor_batch(round_=3)).update for _ in range(2)]
    np.testing.assert_array_equal(same[0], same[1])
    other_round = run(FLAME(seed=5), backdoor_batch(round_=4)).update
    other_seed = run(FLAME(seed=6), backdoor_batch(round_=3)).update
    assert not np.array_equal(same[0], other_round)
    assert not np.array_equal(same[0], other_seed)
    noiseless = run(FLAME(noise_multiplier=0.0, seed=5), backdoor_batch(round_=3))
    noise = same[0].astype(np.float64) - noiseless.update
    expected_std = 0.001 * noiseless.diagnostics["clip_norm"]
    assert 0.5 * expected_std < noise.std() < 1.5 * expected_std


def fake_hdbscan(labels: list[int]) -> type:
    """A stand-in for HDBSCAN that returns fixed labels and checks FLAME's settings."""

    class FixedLabels:
        def __init__(self, **kwargs: Any) -> None:
            assert kwargs["metric"] == "precomputed" and kwargs["min_samples"] == 1
            assert kwargs["min_cluster_size"] == len(labels) // 2 + 1
            assert kwargs["allow_single_cluster"] is True

        def fit(self, dist: np.ndarray) -> FixedLabels:
            assert dist.shape == (len(labels), len(labels))
            assert np.all(np.diag(dist) == 0) and np.all(dist >= 0) and np.all(dist <= 2)
            self.labels_ = np.array(labels)
            return self

    return FixedLabels


def test_flame_clips_the_largest_cluster_to_the_median_norm_of_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sklearn.cluster, "HDBSCAN", fake_hdbscan([0, 0, 1, -1]))
    batch = make_batch([[3.0, 4.0], [6.0, 8.0], [0.3, 0.4], [0.0, 20.0]])  # norms 5, 10, .5, 20
    result = run(FLAME(noise_multiplier=0.0), batch)
    assert result.diagnostics["clip_norm"] == pytest.approx(7.5)
    assert result.diagnostics["admitted"] == ["c0", "c1"]
    assert result.diagnostics["rejected"] == ["c2", "c3"]
    np.testing.assert_allclose(result.update, [(3.0 + 4.5) / 2, (4.0 + 6.0) / 2], rtol=1e-6)


def test_flame_keeps_everything_when_hdbscan_finds_only_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sklearn.cluster, "HDBSCAN", fake_hdbscan([-1, -1, -1]))
    result = run(FLAME(noise_multiplier=0.0), make_batch([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]]))
    assert result.diagnostics["clustered"] is False
    assert result.diagnostics["admitted"] == ["c0", "c1", "c2"]
    np.testing.assert_allclose(result.update, [1 / 3, 2 / 3], rtol=1e-6)  # clip norm 1


def test_flame_preconditions() -> None:
    with pytest.raises(AggregationError):
        run(FLAME(), make_batch([[1.0, 0.0]]))
    with pytest.raises(AggregationError):
        run(FLAME(min_cluster_size=5), make_batch([[1.0, 0.0]] * 4))
    for kwargs in ({"noise_multiplier": -1.0}, {"min_cluster_size": 1}, {"seed": -1}):
        with pytest.raises(ConfigError):
            FLAME(**kwargs)


# --- norm bounding ------------------------------------------------------------------------


def test_norm_bounding_scales_long_updates_only() -> None:
    rule = NormBounding(WeightedMean(), max_norm=1.0)
    assert rule.name == "norm_bound(fedavg)"
    result = run(rule, make_batch([[3.0, 4.0]]))
    np.testing.assert_allclose(result.update, [0.6, 0.8], rtol=1e-6)
    assert result.diagnostics["clipped"] == ["c0"]
    assert result.diagnostics["inner"] == {"weighted": True}
    short = run(rule, make_batch([[0.3, 0.4], [0.0, 0.5]]))
    np.testing.assert_array_equal(short.update, np.array([0.15, 0.45], dtype=np.float32))
    assert short.diagnostics["clipped"] == []


def test_norm_bounding_leaves_a_float64_batch_untouched() -> None:
    updates = np.array([[3.0, 4.0], [0.0, 0.5]])  # float64: astype would not copy
    batch = UpdateBatch(updates, np.ones(2), ("a", "b"))
    result = run(NormBounding(WeightedMean(weighted=False), max_norm=1.0), batch)
    np.testing.assert_array_equal(updates, [[3.0, 4.0], [0.0, 0.5]])
    np.testing.assert_allclose(result.update, [0.3, 0.65], rtol=1e-6)


def test_norm_bounding_forwards_state_to_the_inner_rule() -> None:
    rule = NormBounding(CenteredClipping(tau=100.0), max_norm=1.0)
    result = run(rule, make_batch([[30.0, 40.0]]))
    assert result.state is not None
    np.testing.assert_allclose(result.state["center"], [0.6, 0.8], rtol=1e-6)
    rule.load_state_dict(result.state)
    np.testing.assert_allclose(rule.inner.state_dict()["center"], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(rule.state_dict()["center"], [0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize("max_norm", [0.0, -1.0, float("inf"), float("nan")])
def test_norm_bounding_rejects_bad_bounds(max_norm: float) -> None:
    with pytest.raises(ConfigError):
        NormBounding(WeightedMean(), max_norm)


def test_norm_bounding_defeats_a_boosted_update() -> None:
    honest = honest_rows(11)
    backdoor = np.zeros(DIM)
    backdoor[0] = 1.0
    batch = make_batch(np.vstack([honest, 100.0 * backdoor]))
    target = honest.mean(axis=0)
    assert distance(run(WeightedMean(), batch).update, target) > 4.0
    bounded = run(NormBounding(WeightedMean(), max_norm=1.5), batch)
    assert distance(bounded.update, target) < 0.1
    assert bounded.diagnostics["clipped"] == [f"c{HONEST}"]


# --- attack vs defence --------------------------------------------------------------------


def server_update(model: np.ndarray) -> np.ndarray:
    """The server's own update on a small clean root dataset: near the honest direction."""
    return honest_direction() + 0.05 * np.random.default_rng(99).standard_normal(DIM)


@pytest.mark.parametrize(
    "rule",
    [
        GeometricMedian(),
        CenteredClipping(tau=0.5, iterations=10),
        FLTrust(server_update),
        FLAME(seed=0),
        NormBounding(GeometricMedian(), max_norm=2.0),
    ],
    ids=lambda rule: rule.name,
)
def test_robust_rules_resist_a_sign_flip_attack(rule: Aggregator) -> None:
    batch, honest_mean = sign_flip_attack()
    assert distance(run(WeightedMean(), batch).update, honest_mean) > 1.5  # mean is dragged back
    assert distance(run(rule, batch).update, honest_mean) < 0.25
