"""Coordinate-wise order-statistic rules: median and trimmed mean (Yin et al., ICML 2018)."""

from __future__ import annotations

import numpy as np
import pytest

from batches import attacked_batch, make_batch
from fedfort.aggregation.mean import WeightedMean
from fedfort.aggregation.median import CoordinateMedian
from fedfort.aggregation.trimmed_mean import TrimmedMean
from fedfort.errors import AggregationError, ConfigError

# --- coordinate-wise median -------------------------------------------------------------------


def test_median_odd_hand_computed() -> None:
    batch = make_batch([[1, 10], [2, 30], [9, 20]])
    out = CoordinateMedian().aggregate(batch).update
    np.testing.assert_array_equal(out, np.array([2, 20], np.float32))


def test_median_even_averages_middle_values() -> None:
    # Columns sorted: (1, 3, 5, 7) -> 4; (2, 4, 6, 8) -> 5; (-1, 0, 0, 1) -> 0.
    batch = make_batch([[1, 4, 0], [3, 2, 0], [5, 8, 1], [7, 6, -1]])
    out = CoordinateMedian().aggregate(batch).update
    assert out.dtype == np.float32 and out.shape == (3,)
    np.testing.assert_array_equal(out, np.array([4, 5, 0], np.float32))


@pytest.mark.parametrize("n", [1, 2, 5, 6, 31, 64])
def test_median_matches_numpy(n: int) -> None:
    rows = np.random.default_rng(n).normal(size=(n, 257)).astype(np.float32)
    batch = make_batch(rows)
    out = CoordinateMedian().aggregate(batch).update
    np.testing.assert_allclose(out, np.median(rows, axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(batch.updates, rows)  # the batch is not modified


@pytest.mark.parametrize("bad", [[1e6, 1e6, 1e6], [1e6, -1e6, 1e6], [-1e6, -1e6, 1e6]])
def test_median_ignores_a_minority_of_arbitrary_rows(bad: list[float]) -> None:
    honest = np.random.default_rng(1).normal(size=(4, 5))
    byzantine = np.array(bad)[:, None] * np.ones((3, 5))
    out = CoordinateMedian().aggregate(make_batch(np.vstack([honest, byzantine]))).update
    assert np.all(out >= honest.min(axis=0) - 1e-6)
    assert np.all(out <= honest.max(axis=0) + 1e-6)


def test_median_ignores_weights() -> None:
    rows = [[0.0], [1.0], [100.0]]
    a = CoordinateMedian().aggregate(make_batch(rows, [1, 1, 1])).update
    b = CoordinateMedian().aggregate(make_batch(rows, [1, 1, 1e9])).update
    np.testing.assert_array_equal(a, b)
    assert a[0] == 1.0


# --- coordinate-wise trimmed mean -------------------------------------------------------------


def test_trimmed_mean_hand_computed() -> None:
    # Per column drop the smallest and largest value, average the middle three:
    # (1, 2, 3, 4, 100) -> 3; (-100, 10, 20, 30, 40) -> 20; (-5, 0, 5, 10, 1000) -> 5.
    rows = [[1, 10, -5], [2, 20, 0], [3, 30, 5], [4, 40, 10], [100, -100, 1000]]
    for rule in (TrimmedMean(num_trimmed=1), TrimmedMean(trim_ratio=0.2)):
        result = rule.aggregate(make_batch(rows))
        np.testing.assert_array_equal(result.update, np.array([3, 20, 5], np.float32))
        assert result.diagnostics == {"trimmed_per_side": 1}


def test_trimmed_mean_with_nothing_trimmed_is_the_mean() -> None:
    rows = np.random.default_rng(2).normal(size=(9, 40)).astype(np.float32)
    weights = np.arange(1, 10, dtype=np.float64)  # ignored
    for rule in (TrimmedMean(trim_ratio=0.0), TrimmedMean(num_trimmed=0), TrimmedMean(0.1)):
        result = rule.aggregate(make_batch(rows, weights))
        assert result.diagnostics["trimmed_per_side"] == 0  # floor(0.1 * 9) = 0
        np.testing.assert_allclose(result.update, rows.mean(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("n", "k"), [(5, 2), (10, 3), (11, 1), (40, 12)])
def test_trimmed_mean_matches_sort_reference(n: int, k: int) -> None:
    rows = np.random.default_rng(n + k).normal(size=(n, 33)).astype(np.float32)
    batch = make_batch(rows)
    out = TrimmedMean(num_trimmed=k).aggregate(batch).update
    expected = np.sort(rows, axis=0)[k : n - k].mean(axis=0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(batch.updates, rows)


def test_trimmed_mean_ratio_floors_robustly() -> None:
    # 0.29 * 100 is 28.999999999999996 in floating point; k must still be 29.
    assert TrimmedMean(trim_ratio=0.29).trimmed_per_side(100) == 29
    assert TrimmedMean(trim_ratio=0.1).trimmed_per_side(19) == 1
    assert TrimmedMean(trim_ratio=0.1, num_trimmed=4).trimmed_per_side(19) == 4


def test_trimmed_mean_bounded_by_honest_values() -> None:
    honest = np.random.default_rng(3).normal(size=(6, 8))
    byzantine = np.array([[1e6] * 8, [-1e6] * 8])
    out = TrimmedMean(num_trimmed=2).aggregate(make_batch(np.vstack([honest, byzantine]))).update
    assert np.all(out >= honest.min(axis=0) - 1e-6)
    assert np.all(out <= honest.max(axis=0) + 1e-6)


@pytest.mark.parametrize(("n", "k"), [(4, 2), (2, 1), (6, 5)])
def test_trimmed_mean_precondition(n: int, k: int) -> None:
    rows = np.zeros((n, 3))
    with pytest.raises(AggregationError, match=rf"n > 2k updates \(k={k} .*\): got {n}"):
        TrimmedMean(num_trimmed=k).aggregate(make_batch(rows))
    TrimmedMean(num_trimmed=(n - 1) // 2).aggregate(make_batch(rows))  # largest valid k is fine


@pytest.mark.parametrize(
    "kwargs",
    [{"trim_ratio": -0.1}, {"trim_ratio": 0.5}, {"num_trimmed": -1}, {"num_trimmed": 1.5}],
)
def test_trimmed_mean_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        TrimmedMean(**kwargs)  # type: ignore[arg-type]


# --- attack vs defence -----------------------------------------------------------------------


def test_weighted_mean_is_broken_by_the_attack() -> None:
    batch, mu = attacked_batch()
    out = WeightedMean().aggregate(batch).update
    assert np.linalg.norm(out - mu) > 5.0 * np.linalg.norm(mu)


@pytest.mark.parametrize("rule", [CoordinateMedian(), TrimmedMean(num_trimmed=4)])
def test_order_statistics_survive_the_attack(rule: CoordinateMedian | TrimmedMean) -> None:
    batch, mu = attacked_batch()
    baseline = WeightedMean().aggregate(batch).update
    out = rule.aggregate(batch).update
    assert np.linalg.norm(baseline - mu) > 1.0 * np.linalg.norm(mu)
    assert np.linalg.norm(out - mu) < 0.1 * np.linalg.norm(mu)
