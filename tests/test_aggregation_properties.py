"""Properties every aggregation rule in :mod:`fedfort.aggregation` must have, checked on
generated batches (hypothesis, derandomized by the profile in ``conftest.py``).

Each rule is checked for what holds of it in general:

- permutation invariance: handing the rule the same clients in another order gives the same
  aggregate (seeded randomised rules with the same seed). Floating-point sums depend on their
  order, so results are compared to a tolerance scaled by the inputs. Krum, Multi-Krum and
  Bulyan break exact ties in their scores by index, as they document, so for them a new
  order may change the selection only where such a tie exists. Such ties are not rare: a Krum
  step with one neighbour always has one (the two closest updates score alike), and Bulyan
  with ``f`` = 1 or 2 ends on such a step;
- the aggregate is a finite float32 vector of the batch's dimension;
- the rule's own bound: coordinate-wise rules stay inside the per-coordinate [min, max] of
  their inputs, Krum returns one of the inputs, convex combinations stay in the bounding box,
  clipping rules respect their norm;
- breakdown: with ``f`` Byzantine updates placed far away and ``n`` meeting the rule's
  precondition (:func:`fedfort.aggregation.min_updates`), the robust rules' aggregate stays
  inside the honest updates' bounding box.

Batches are small (``n <= 15`` clients, ``d <= 20`` coordinates) so the file runs in seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedfort.aggregation import (
    FLAME,
    Aggregator,
    Bulyan,
    CenteredClipping,
    CoordinateMedian,
    FLTrust,
    GeometricMedian,
    Krum,
    MultiKrum,
    NormBounding,
    TrimmedMean,
    UpdateBatch,
    WeightedMean,
    min_updates,
)
from fedfort.aggregation.distances import pairwise_sq_distances, row_norms
from fedfort.aggregation.foolsgold import FoolsGold
from fedfort.aggregation.krum import krum_scores
from fedfort.aggregation.robust_lr import RobustLearningRate
from fedfort.errors import AggregationError

MAX_N = 15
MAX_D = 20
#: honest values lie in [-HONEST, HONEST]; Byzantine ones at least FAR away in every coordinate
HONEST = 10.0
FAR = 1e4

SMALL = settings(max_examples=40)


def largest_f(name: str, n: int) -> int:
    """The most Byzantine updates rule ``name`` tolerates with ``n`` updates."""
    f = 0
    while min_updates(name, f + 1) <= n:
        f += 1
    return f


def _server_update(seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """FLTrust's root-dataset update: a fixed vector per seed, of the model's dimension."""

    def update(model: np.ndarray) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=model.shape)

    return update


#: every rule of the package, built for a batch of ``n`` updates (``f`` as large as allowed)
RULES: dict[str, Callable[[int], Aggregator]] = {
    "fedavg": lambda n: WeightedMean(),
    "unweighted_mean": lambda n: WeightedMean(weighted=False),
    "median": lambda n: CoordinateMedian(),
    "trimmed_mean": lambda n: TrimmedMean(num_trimmed=largest_f("trimmed_mean", n)),
    "trimmed_mean_ratio": lambda n: TrimmedMean(trim_ratio=0.2),
    "krum": lambda n: Krum(largest_f("krum", n)),
    "multi_krum": lambda n: MultiKrum(largest_f("multi_krum", n)),
    "bulyan": lambda n: Bulyan(largest_f("bulyan", n)),
    "geometric_median": lambda n: GeometricMedian(),
    "centered_clipping": lambda n: CenteredClipping(tau=1.0, iterations=3),
    "fltrust": lambda n: FLTrust(_server_update(7)),
    "flame": lambda n: FLAME(noise_multiplier=0.01, seed=11),
    "foolsgold": lambda n: FoolsGold(),
    "foolsgold_sketched": lambda n: FoolsGold(sketch_dim=16, seed=5),
    "norm_bound": lambda n: NormBounding(WeightedMean(), max_norm=5.0),
    "robust_lr": lambda n: RobustLearningRate(WeightedMean(), threshold=max(1, n // 2)),
}

values = st.floats(-HONEST, HONEST, width=32, allow_subnormal=False)


def make_batch(updates: np.ndarray, weights: np.ndarray | None = None) -> UpdateBatch:
    n, d = updates.shape
    w = np.ones(n) if weights is None else weights
    ids = tuple(f"c{i:02d}" for i in range(n))
    return UpdateBatch(updates, w, ids, model=np.zeros(d, dtype=np.float32), round=3)


@st.composite
def batches(draw: st.DrawFn, min_n: int = 3, unique: bool = False) -> UpdateBatch:
    """A batch of ``min_n..15`` updates of ``1..20`` coordinates with sample-count weights."""
    n = draw(st.integers(min_n, MAX_N))
    d = draw(st.integers(1, MAX_D))
    updates = draw(arrays(np.float32, (n, d), elements=values, unique=unique))
    weights = draw(arrays(np.float64, n, elements=st.integers(1, 1000).map(float)))
    return make_batch(updates, weights)


def permuted(batch: UpdateBatch, order: list[int]) -> UpdateBatch:
    """The same clients (updates, weights, ids together) in another order."""
    index = np.asarray(order)
    return dataclasses.replace(
        batch,
        updates=batch.updates[index],
        weights=batch.weights[index],
        client_ids=tuple(batch.client_ids[i] for i in order),
    )


def assert_close(a: np.ndarray, b: np.ndarray, scale: float) -> None:
    """Equal up to float32 rounding of sums whose terms are at most ``scale``."""
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(scale, 1.0))


def aggregate(rule: str, batch: UpdateBatch) -> np.ndarray | None:
    """A fresh rule's aggregate of ``batch``, or None if the rule refuses the batch."""
    try:
        return RULES[rule](batch.num_clients).aggregate(batch).update
    except AggregationError:
        return None


@st.composite
def general_position(draw: st.DrawFn, min_n: int = 3) -> UpdateBatch:
    """A batch whose updates are drawn from a continuous distribution (seeded by hypothesis),
    so no two distances or deviations are exactly equal: Krum, Multi-Krum and Bulyan break
    exact ties by index, as they document, which makes their choice depend on the order."""
    n = draw(st.integers(min_n, MAX_N))
    d = draw(st.integers(1, MAX_D))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    updates = rng.normal(0.0, HONEST / 3, size=(n, d)).astype(np.float32)
    return make_batch(updates, rng.integers(1, 1000, size=n).astype(np.float64))


def _unique_best(scores: np.ndarray, count: int) -> bool:
    """Whether the ``count`` lowest scores are set apart from the rest by more than rounding."""
    if count >= scores.size:
        return True
    ranked = np.sort(scores)
    return bool(ranked[count] - ranked[count - 1] > 1e-9 * max(1.0, float(ranked[-1])))


def chosen_without_ties(rule: str, batch: UpdateBatch) -> bool:
    """Whether the Krum steps of ``rule`` choose without an exact tie in their scores. Ties do
    occur in general position: with one neighbour (``n - f - 2 = 1``) the two closest updates
    always have equal scores, and the rules then take the lower index."""
    n = batch.num_clients
    f = largest_f(rule, n)
    dist = pairwise_sq_distances(batch.updates)
    if rule == "krum":
        return _unique_best(krum_scores(dist, n - f - 2), 1)
    if rule == "multi_krum":
        return _unique_best(krum_scores(dist, n - f - 2), n - f)
    remaining = np.arange(n)  # Bulyan: n - 2f Krum steps on the updates not yet chosen
    for step in range(n - 2 * f):
        r = remaining.size
        if r == n - 2 * f - step:
            return True  # every remaining update is chosen, in whichever order
        neighbours = min(max(r - f - 2, 1), r - 1)
        scores = krum_scores(dist[np.ix_(remaining, remaining)], neighbours)
        if not _unique_best(scores, 1):
            return False
        remaining = np.delete(remaining, int(np.argmin(scores)))
    return True


TIE_BROKEN_BY_INDEX = ("krum", "multi_krum", "bulyan")


# ---------------------------------------------------------------- every rule, in general


@pytest.mark.parametrize("rule", sorted(set(RULES) - set(TIE_BROKEN_BY_INDEX)))
@SMALL
@given(batch=batches(), data=st.data())
def test_permuting_the_clients_changes_nothing(
    rule: str, batch: UpdateBatch, data: st.DataObject
) -> None:
    order = data.draw(st.permutations(range(batch.num_clients)))
    first = aggregate(rule, batch)
    second = aggregate(rule, permuted(batch, order))
    if first is None or second is None:
        assert first is None and second is None, "the rule refused only one of the orders"
        return
    assert_close(first, second, float(np.abs(batch.updates).max()))


@pytest.mark.parametrize("rule", TIE_BROKEN_BY_INDEX)
@SMALL
@given(batch=general_position(), data=st.data())
def test_permuting_the_clients_changes_a_selection_only_through_a_tie(
    rule: str, batch: UpdateBatch, data: st.DataObject
) -> None:
    order = data.draw(st.permutations(range(batch.num_clients)))
    first = RULES[rule](batch.num_clients).aggregate(batch)
    second = RULES[rule](batch.num_clients).aggregate(permuted(batch, order))
    if set(first.diagnostics["selected"]) == set(second.diagnostics["selected"]):
        assert_close(first.update, second.update, float(np.abs(batch.updates).max()))
    else:
        assert not chosen_without_ties(rule, batch), "the choice changed without a tie"


@pytest.mark.parametrize("rule", sorted(RULES))
@SMALL
@given(batch=batches())
def test_the_aggregate_is_finite_and_of_the_batch_dimension(rule: str, batch: UpdateBatch) -> None:
    before = batch.updates.copy()
    update = aggregate(rule, batch)
    np.testing.assert_array_equal(batch.updates, before)  # the batch is never modified
    if update is None:
        # only FoolsGold may refuse a valid batch: when every update looks like a Sybil
        assert rule.startswith("foolsgold")
        return
    assert update.dtype == np.float32
    assert update.shape == (batch.dim,)
    assert np.isfinite(update).all()


@pytest.mark.parametrize(
    "rule",
    [
        "fedavg",
        "unweighted_mean",
        "median",
        "trimmed_mean",
        "trimmed_mean_ratio",
        "krum",
        "multi_krum",
        "bulyan",
        "geometric_median",
    ],
)
@SMALL
@given(n=st.integers(3, MAX_N), row=arrays(np.float32, st.integers(1, MAX_D), elements=values))
def test_identical_updates_aggregate_to_that_update(rule: str, n: int, row: np.ndarray) -> None:
    update = aggregate(rule, make_batch(np.tile(row, (n, 1))))
    assert update is not None
    assert_close(update, row, float(np.abs(row).max()))


# ---------------------------------------------------------------- each rule's own bound


def within_box(update: np.ndarray, rows: np.ndarray, slack: float = 0.0) -> bool:
    low, high = rows.min(axis=0), rows.max(axis=0)
    return bool(((update >= low - slack) & (update <= high + slack)).all())


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "trimmed_mean_ratio", "bulyan"])
@SMALL
@given(batch=batches())
def test_coordinate_wise_rules_stay_within_each_coordinates_range(
    rule: str, batch: UpdateBatch
) -> None:
    update = aggregate(rule, batch)
    assert update is not None
    assert within_box(update, batch.updates)


@pytest.mark.parametrize(
    "rule", ["fedavg", "unweighted_mean", "multi_krum", "geometric_median", "foolsgold"]
)
@SMALL
@given(batch=batches())
def test_convex_combinations_stay_inside_the_bounding_box(rule: str, batch: UpdateBatch) -> None:
    update = aggregate(rule, batch)
    assume(update is not None)  # FoolsGold refuses batches where every update is a Sybil
    assert update is not None
    assert within_box(update, batch.updates, slack=1e-5 * HONEST)


@SMALL
@given(batch=batches())
def test_krum_returns_one_of_the_inputs(batch: UpdateBatch) -> None:
    rule = Krum(largest_f("krum", batch.num_clients))
    result = rule.aggregate(batch)
    (chosen,) = result.diagnostics["selected"]
    np.testing.assert_array_equal(result.update, batch.updates[batch.client_ids.index(chosen)])


@SMALL
@given(batch=batches(min_n=1), bound=st.floats(0.1, 50.0))
def test_norm_bounding_a_mean_keeps_its_norm_within_the_bound(
    batch: UpdateBatch, bound: float
) -> None:
    update = NormBounding(WeightedMean(), max_norm=bound).aggregate(batch).update
    # a clipped float32 row may exceed the bound by one rounding step (NormBounding's docstring)
    assert float(np.linalg.norm(update)) <= bound * (1 + 1e-6)


@SMALL
@given(batch=batches(min_n=1), tau=st.floats(0.1, 5.0), iterations=st.integers(1, 4))
def test_centered_clipping_moves_at_most_tau_per_iteration(
    batch: UpdateBatch, tau: float, iterations: int
) -> None:
    update = CenteredClipping(tau, iterations).aggregate(batch).update
    assert float(np.linalg.norm(update)) <= iterations * tau * (1 + 1e-6)


@SMALL
@given(batch=batches(min_n=1), seed=st.integers(0, 2**16))
def test_fltrust_never_exceeds_the_server_updates_norm(batch: UpdateBatch, seed: int) -> None:
    server = _server_update(seed)
    result = FLTrust(server).aggregate(batch)
    g0_norm = float(np.linalg.norm(server(np.zeros(batch.dim))))
    assert result.diagnostics["server_update_norm"] == pytest.approx(g0_norm)
    assert float(np.linalg.norm(result.update)) <= g0_norm * (1 + 1e-5)
    assert all(0.0 <= t <= 1.0 for t in result.diagnostics["trust"].values())


@SMALL
@given(batch=batches())
def test_flame_without_noise_stays_within_the_median_norm(batch: UpdateBatch) -> None:
    result = FLAME(noise_multiplier=0.0, seed=0).aggregate(batch)
    clip_norm = float(np.median(row_norms(batch.updates)))
    assert result.diagnostics["clip_norm"] == pytest.approx(clip_norm)
    assert float(np.linalg.norm(result.update)) <= clip_norm * (1 + 1e-5) + 1e-12
    admitted, rejected = result.diagnostics["admitted"], result.diagnostics["rejected"]
    assert sorted(admitted + rejected) == sorted(batch.client_ids)
    assert admitted


@SMALL
@given(batch=batches(min_n=1), threshold=st.integers(1, MAX_N))
def test_robust_learning_rate_only_flips_signs_where_votes_disagree(
    batch: UpdateBatch, threshold: int
) -> None:
    inner = WeightedMean().aggregate(batch).update
    update = RobustLearningRate(WeightedMean(), threshold).aggregate(batch).update
    votes = np.abs(np.sign(batch.updates).sum(axis=0))
    np.testing.assert_array_equal(update, np.where(votes >= threshold, inner, -inner))


# ---------------------------------------------------------------- breakdown


@st.composite
def attacked(draw: st.DrawFn, rule: str) -> tuple[UpdateBatch, np.ndarray]:
    """Honest updates in [-10, 10] and ``f`` Byzantine ones at least ``FAR`` away in every
    coordinate, interleaved at arbitrary positions; ``n`` meets the rule's precondition."""
    f = draw(st.integers(1, largest_f(rule, MAX_N)))
    n = draw(st.integers(min_updates(rule, f), MAX_N))
    d = draw(st.integers(1, MAX_D))
    honest = draw(arrays(np.float32, (n - f, d), elements=values))
    distance = draw(st.floats(FAR, 1e6))
    if draw(st.booleans()):  # colluding: one shared malicious vector
        signs = np.tile(draw(arrays(np.int8, d, elements=st.sampled_from([-1, 1]))), (f, 1))
    else:
        signs = draw(arrays(np.int8, (f, d), elements=st.sampled_from([-1, 1])))
    byzantine = (distance * signs).astype(np.float32)
    rows = np.vstack([honest, byzantine])
    order = draw(st.permutations(range(n)))
    return make_batch(rows[np.asarray(order)]), honest


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "multi_krum", "bulyan"])
@SMALL
@given(data=st.data())
def test_byzantine_updates_far_away_cannot_leave_the_honest_box(
    rule: str, data: st.DataObject
) -> None:
    batch, honest = data.draw(attacked(rule))
    update = aggregate(rule, batch)
    assert update is not None
    assert within_box(update, honest, slack=1e-5 * HONEST)
