"""Krum, Multi-Krum (Blanchard et al., NeurIPS 2017) and Bulyan (El Mhamdi et al., ICML 2018)."""

from __future__ import annotations

import numpy as np
import pytest

from batches import attacked_batch, make_batch
from fedfort.aggregation.base import Aggregator, UpdateBatch
from fedfort.aggregation.bulyan import Bulyan
from fedfort.aggregation.krum import Krum, MultiKrum
from fedfort.aggregation.mean import WeightedMean
from fedfort.errors import AggregationError, ConfigError


def honest_and_far(n_honest: int, f: int, d: int = 10, seed: int = 0) -> tuple[UpdateBatch, int]:
    """``n_honest`` updates near 1 followed by ``f`` attackers far away in different places."""
    rng = np.random.default_rng(seed)
    honest = 1.0 + 0.1 * rng.normal(size=(n_honest, d))
    far = 100.0 * rng.normal(size=(f, d))
    return make_batch(np.vstack([honest, far])), n_honest


# Five points in the plane, f = 1, so every score sums the n - f - 2 = 2 nearest squared
# distances. Squared distances: d01=1 d02=4 d03=2 d12=5 d13=1 d23=2 and to (10, 10):
# d40=200 d41=181 d42=164 d43=162. Scores: c0=1+2=3, c1=1+1=2, c2=2+4=6, c3=1+2=3,
# c4=162+164=326.
PLANE = [[0, 0], [1, 0], [0, 2], [1, 1], [10, 10]]
PLANE_SCORES = {"c0": 3.0, "c1": 2.0, "c2": 6.0, "c3": 3.0, "c4": 326.0}


def test_krum_hand_computed() -> None:
    batch = make_batch(PLANE)
    result = Krum(num_byzantine=1).aggregate(batch)
    np.testing.assert_array_equal(result.update, np.array([1, 0], np.float32))
    assert result.update.dtype == np.float32
    assert result.diagnostics["selected"] == ["c1"]
    assert result.diagnostics["scores"] == pytest.approx(PLANE_SCORES)


def test_multi_krum_hand_computed() -> None:
    batch = make_batch(PLANE)
    # Default m = n - f = 4: c1, c0, c3, c2 -> mean of the first four rows.
    result = MultiKrum(num_byzantine=1).aggregate(batch)
    np.testing.assert_allclose(result.update, [0.5, 0.75])
    assert result.diagnostics["selected"] == ["c1", "c0", "c3", "c2"]
    assert result.diagnostics["scores"] == pytest.approx(PLANE_SCORES)
    # m = 3: c1, c0, c3 -> ((1 + 0 + 1) / 3, (0 + 0 + 1) / 3).
    result = MultiKrum(num_byzantine=1, num_selected=3).aggregate(batch)
    np.testing.assert_allclose(result.update, [2 / 3, 1 / 3], rtol=1e-6)
    assert sorted(result.diagnostics["selected"]) == ["c0", "c1", "c3"]
    # m = 1 is Krum.
    one = MultiKrum(num_byzantine=1, num_selected=1).aggregate(batch).update
    np.testing.assert_array_equal(one, Krum(1).aggregate(batch).update)


def test_bulyan_hand_computed() -> None:
    # n = 7, f = 1: theta = 5 updates selected by repeated Krum, then beta = 3 per coordinate.
    # c0..c4 form a tight cluster, c5 sits a little outside it and c6 is far away. The first
    # selections are the cluster's most central points (c0: score 1.25+1.0625+1.5625+3.25).
    # With r = 3 left, Krum uses 1 neighbour, so the final pick is a tie between the
    # mutually nearest c2 and c5 (both 17): ties go to the lower index, c2.
    rows = [[0, 0, 0.5], [1, 0, -0.25], [0, 1, 2], [-1, 0, 0], [0, -1, 0.25], [3, 3, 0]]
    rows.append([100, -100, 0])
    result = Bulyan(num_byzantine=1).aggregate(make_batch(rows))
    assert result.diagnostics["selected"] == ["c0", "c4", "c3", "c1", "c2"]
    assert result.diagnostics["beta"] == 3
    # x: (0, 0, -1, 1, 0), median 0, three closest 0, 0, 0 -> 0; y likewise -> 0;
    # z: (0.5, 0.25, 0, -0.25, 2), median 0.25, three closest 0.25, 0, 0.5 -> 0.25.
    np.testing.assert_allclose(result.update, [0, 0, 0.25])
    assert result.update.dtype == np.float32


def test_bulyan_without_byzantine_is_the_mean() -> None:
    rows = [[1, 2], [3, 4], [8, 0]]
    out = Bulyan(num_byzantine=0).aggregate(make_batch(rows, [1, 5, 100])).update
    np.testing.assert_allclose(out, [4, 2])


@pytest.mark.parametrize("f", [1, 2, 3])
def test_krum_picks_an_honest_update(f: int) -> None:
    batch, n_honest = honest_and_far(2 * f + 3 - f, f, seed=f)  # n = 2f + 3, the minimum
    result = Krum(num_byzantine=f).aggregate(batch)
    (chosen,) = result.diagnostics["selected"]
    assert int(chosen[1:]) < n_honest
    assert any(np.array_equal(result.update, row) for row in batch.updates[:n_honest])
    honest_scores = [result.diagnostics["scores"][f"c{i}"] for i in range(n_honest)]
    far_scores = [result.diagnostics["scores"][f"c{i}"] for i in range(n_honest, batch.num_clients)]
    assert max(honest_scores) < min(far_scores)


def test_multi_krum_averages_honest_rows_only() -> None:
    batch, n_honest = honest_and_far(12, 3)
    result = MultiKrum(num_byzantine=3, num_selected=8).aggregate(batch)
    chosen = [int(cid[1:]) for cid in result.diagnostics["selected"]]
    assert len(chosen) == 8 and max(chosen) < n_honest
    np.testing.assert_allclose(result.update, batch.updates[chosen].mean(axis=0), rtol=1e-6)
    default = MultiKrum(num_byzantine=3).aggregate(batch)  # m = n - f = 12: exactly the honest
    assert sorted(default.diagnostics["selected"]) == sorted(f"c{i}" for i in range(n_honest))
    np.testing.assert_allclose(default.update, batch.updates[:n_honest].mean(axis=0), rtol=1e-6)


def test_bulyan_stays_within_honest_range() -> None:
    rng = np.random.default_rng(4)
    honest = rng.normal(size=(13, 6))
    byzantine = np.array([[1e6] * 6, [-1e6] * 6, [1e6, -1e6] * 3])  # n = 16 >= 4 * 3 + 3
    batch = make_batch(np.vstack([honest, byzantine]))
    result = Bulyan(num_byzantine=3).aggregate(batch)
    assert all(int(cid[1:]) < 13 for cid in result.diagnostics["selected"])
    assert len(result.diagnostics["selected"]) == 16 - 2 * 3
    assert np.all(result.update >= honest.min(axis=0) - 1e-6)
    assert np.all(result.update <= honest.max(axis=0) + 1e-6)


def test_krum_distances_survive_float32_cancellation() -> None:
    # Rows of norm 1e4 that differ by 1e-2..0.5: a float32 Gram matrix rounds every distance
    # here to 0 or +-16. Two nearest neighbours, so the scores are (hand-computed from the
    # offsets): c0 = 1e-4 + 4e-4, c1 = 1e-4 + 5e-4, c2 = 4e-4 + 5e-4, c3 = 0.09 + 0.0901,
    # c4 = 0.25 + 0.2501.
    rows = np.full((5, 100), 1000.0, np.float32)
    rows[1, 0] += 0.01
    rows[2, 1] += 0.02
    rows[3, 2] += 0.3
    rows[4, 3] += 0.5
    batch = make_batch(rows)
    result = Krum(num_byzantine=1).aggregate(batch)
    assert result.diagnostics["selected"] == ["c0"]
    scores = result.diagnostics["scores"]
    expected = {"c0": 5e-4, "c1": 6e-4, "c2": 9e-4, "c3": 0.1801, "c4": 0.5001}
    assert scores == pytest.approx(expected, rel=1e-2)
    assert sorted(scores, key=scores.__getitem__) == ["c0", "c1", "c2", "c3", "c4"]
    multi = MultiKrum(num_byzantine=1, num_selected=2).aggregate(batch)
    assert multi.diagnostics["selected"] == ["c0", "c1"]


def test_rules_do_not_modify_the_batch_and_ignore_weights() -> None:
    batch, _ = honest_and_far(15, 3)
    before = batch.updates.copy()
    heavy = make_batch(batch.updates, np.r_[np.ones(15), np.full(3, 1e9)])
    for rule in (Krum(3), MultiKrum(3), Bulyan(3)):
        out = rule.aggregate(batch).update
        np.testing.assert_array_equal(batch.updates, before)
        np.testing.assert_array_equal(out, rule.aggregate(heavy).update)
        assert not np.shares_memory(out, batch.updates)


@pytest.mark.parametrize(
    ("rule", "n", "message"),
    [
        (Krum(3), 8, r"Krum needs n > 2f \+ 2 updates \(f=3\): got 8"),
        (Krum(0), 2, r"Krum needs n > 2f \+ 2 updates \(f=0\): got 2"),
        (MultiKrum(2), 6, r"Multi-Krum needs n > 2f \+ 2 updates \(f=2\): got 6"),
        (MultiKrum(1, num_selected=5), 5, r"at most n - f = 4 updates \(f=1\): asked for 5"),
        (Bulyan(2), 10, r"Bulyan needs n >= 4f \+ 3 updates \(f=2\): got 10"),
        (Bulyan(0), 2, r"Bulyan needs n >= 4f \+ 3 updates \(f=0\): got 2"),
    ],
)
def test_preconditions(rule: Aggregator, n: int, message: str) -> None:
    rows = np.random.default_rng(n).normal(size=(n, 4))
    with pytest.raises(AggregationError, match=message):
        rule.aggregate(make_batch(rows))
    bigger = np.random.default_rng(n).normal(size=(n + 1, 4))
    rule.aggregate(make_batch(bigger))  # one more update is enough


@pytest.mark.parametrize(
    "build",
    [
        lambda: Krum(-1),
        lambda: Krum(1.5),
        lambda: Krum(True),
        lambda: MultiKrum(-2),
        lambda: MultiKrum(1, num_selected=0),
        lambda: MultiKrum(1, num_selected=2.0),
        lambda: Bulyan(-1),
        lambda: Bulyan("2"),
    ],
)
def test_bad_config(build: object) -> None:
    with pytest.raises(ConfigError):
        build()  # type: ignore[operator]


# --- attack vs defence -----------------------------------------------------------------------


@pytest.mark.parametrize("rule", [Krum(4), MultiKrum(4), Bulyan(4)], ids=lambda r: r.name)
def test_krum_family_survives_the_attack(rule: Aggregator) -> None:
    batch, mu = attacked_batch()
    baseline = WeightedMean().aggregate(batch).update
    assert np.linalg.norm(baseline - mu) > 5.0 * np.linalg.norm(mu)
    result = rule.aggregate(batch)
    assert np.linalg.norm(result.update - mu) < 0.15 * np.linalg.norm(mu)
    selected = result.diagnostics["selected"]
    if isinstance(rule, Bulyan):
        # Only the Krum steps on more than 2f + 2 remaining updates are guaranteed honest: the
        # last two steps (theta = n - 2f) run on 2f + 2 and 2f + 1 updates, where the four
        # identical attackers (three zero distances each) can win.
        selected = selected[: len(selected) - 2]
    assert all(int(cid[1:]) < 20 for cid in selected)
