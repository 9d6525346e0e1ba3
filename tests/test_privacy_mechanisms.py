"""Noise sources (fedfort.privacy.noise) and local DP mechanisms (fedfort.privacy.mechanisms)."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.privacy_accountant import NeighboringRelation
from scipy import stats

from fedfort.errors import ConfigError
from fedfort.privacy.mechanisms import (
    LocalGaussian,
    LocalLaplace,
    clip_l1,
    clip_l2,
    clip_rows_l2,
    estimate_frequencies,
    gaussian_noise_multiplier,
    randomize_bits,
    randomized_response,
    randomized_response_event,
    rr_keep_probability,
    rr_noise_parameter,
)
from fedfort.privacy.noise import (
    NoiseSource,
    SecureNoise,
    SeededNoise,
    make_noise,
    snap,
    snapping_grid,
)

N = 200_000
U64_MAX = (1 << 64) - 1


class ScriptedNoise(NoiseSource):
    """Returns the scripted words first, then ``fill`` forever."""

    def __init__(self, script: list[int], fill: int) -> None:
        self.script = list(script)
        self.fill = fill
        self.calls: list[int] = []

    def words(self, n: int) -> np.ndarray:
        self.calls.append(n)
        head, self.script = self.script[:n], self.script[n:]
        return np.array(head + [self.fill] * (n - len(head)), dtype=np.uint64)


def sources() -> list[NoiseSource]:
    return [SecureNoise(), SeededNoise(1234)]


# ----------------------------------------------------------------------------- uniforms, words


@pytest.mark.parametrize("source", sources(), ids=["secure", "seeded"])
def test_uniform_strictly_inside_open_interval(source: NoiseSource) -> None:
    u = source.uniform(N)
    assert u.dtype == np.float64 and u.shape == (N,)
    assert np.all(u > 0.0) and np.all(u < 1.0)
    assert abs(u.mean() - 0.5) < 0.005


def test_uniform_extremes_are_open_and_zero_words_redrawn() -> None:
    # word 0 (k = 0), the largest word, then a redraw that is zero again, then k = 1
    src = ScriptedNoise([0, U64_MAX, (1 << 11) - 1, 1 << 11], fill=1 << 11)
    u = src.uniform(2)
    assert u[0] == 2.0**-53  # the zero words were rejected and replaced by k = 1
    assert u[1] == 1.0 - 2.0**-53
    assert np.all((u > 0) & (u < 1))
    assert src.calls == [2, 1, 1]


def test_secure_draws_differ_between_calls() -> None:
    src = SecureNoise()
    assert src.secure is True
    a, b = src.words(16), src.words(16)
    assert a.dtype == np.uint64 and a.shape == (16,)
    assert not np.array_equal(a, b)
    assert not np.array_equal(src.gaussian(8, 1.0), src.gaussian(8, 1.0))


def test_seeded_reproducible_and_seed_dependent() -> None:
    assert SeededNoise(7).secure is False
    a = SeededNoise(7).uniform(1000)
    b = SeededNoise(7).uniform(1000)
    c = SeededNoise(8).uniform(1000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(
        SeededNoise(3).gaussian((4, 5), 2.0), SeededNoise(3).gaussian((4, 5), 2.0)
    )


def test_make_noise() -> None:
    assert isinstance(make_noise(True), SecureNoise)
    assert isinstance(make_noise(True, seed=5), SecureNoise)
    seeded = make_noise(False, seed=5)
    assert isinstance(seeded, SeededNoise) and not seeded.secure
    np.testing.assert_array_equal(seeded.words(4), SeededNoise(5).words(4))
    with pytest.raises(ConfigError, match="seed"):
        make_noise(False)


# ----------------------------------------------------------------------------- Gaussian, Laplace


@pytest.mark.parametrize("source", sources(), ids=["secure", "seeded"])
def test_gaussian_moments(source: NoiseSource) -> None:
    std = 2.5
    z = source.gaussian(N, std)
    assert z.dtype == np.float64 and z.shape == (N,)
    assert abs(z.mean()) < 5 * std / math.sqrt(N)
    assert z.std() == pytest.approx(std, rel=0.02)
    # Box-Muller's two outputs of a pair are independent: no correlation, even in the squares
    half = N // 2
    assert abs(np.corrcoef(z[:half], z[half:])[0, 1]) < 0.02
    assert abs(np.corrcoef(z[:half] ** 2, z[half:] ** 2)[0, 1]) < 0.02


def test_gaussian_ks_and_shape() -> None:
    z = SeededNoise(2024).gaussian(N, 3.0)
    assert stats.kstest(z, stats.norm(scale=3.0).cdf).pvalue > 1e-3
    # the Box-Muller tail is truncated at sqrt(106 ln 2) std
    assert np.abs(z).max() <= 3.0 * math.sqrt(106 * math.log(2))
    odd = SeededNoise(1).gaussian((3, 5, 7), 1.0)
    assert odd.shape == (3, 5, 7) and np.all(odd != 0)
    np.testing.assert_array_equal(SeededNoise(1).gaussian((4,), 0.0), np.zeros(4))


@pytest.mark.parametrize("source", sources(), ids=["secure", "seeded"])
def test_laplace_moments(source: NoiseSource) -> None:
    b = 0.7
    x = source.laplace(N, b)
    assert x.dtype == np.float64
    assert abs(x.mean()) < 5 * math.sqrt(2) * b / math.sqrt(N)
    assert x.std() == pytest.approx(math.sqrt(2) * b, rel=0.03)
    assert np.abs(x).mean() == pytest.approx(b, rel=0.02)


def test_laplace_ks_and_zero_scale() -> None:
    x = SeededNoise(99).laplace(N, 1.5)
    assert stats.kstest(x, stats.laplace(scale=1.5).cdf).pvalue > 1e-3
    np.testing.assert_array_equal(SeededNoise(1).laplace((2, 3), 0.0), np.zeros((2, 3)))


def test_bernoulli() -> None:
    src = SeededNoise(5)
    draws = src.bernoulli(0.3, N)
    assert draws.dtype == np.bool_
    assert draws.mean() == pytest.approx(0.3, abs=0.005)
    assert not src.bernoulli(0.0, 1000).any()
    assert src.bernoulli(1.0, 1000).all()
    per_column = src.bernoulli(np.array([0.0, 0.5, 1.0]), (N // 4, 3))
    np.testing.assert_allclose(per_column.mean(axis=0), [0.0, 0.5, 1.0], atol=0.01)


# ----------------------------------------------------------------------------- integers


def test_integers_uniform_chi_square() -> None:
    draws = SeededNoise(11).integers(3, 300_000)
    assert draws.dtype == np.int64 and draws.min() == 0 and draws.max() == 2
    counts = np.bincount(draws, minlength=3)
    assert stats.chisquare(counts).pvalue > 1e-3
    sevens = SeededNoise(12).integers(7, (500, 200))
    assert sevens.shape == (500, 200)
    assert stats.chisquare(np.bincount(sevens.ravel(), minlength=7)).pvalue > 1e-3


def test_integers_rejects_biased_words() -> None:
    # 2**64 = 1 (mod 3), so the top word 2**64 - 1 would over-weight bucket 0: it is redrawn
    src = ScriptedNoise([U64_MAX, 4, U64_MAX, U64_MAX, 5], fill=5)
    out = src.integers(3, 3)
    np.testing.assert_array_equal(out, [5 % 3, 4 % 3, 5 % 3])
    assert src.calls == [3, 2, 1]


def test_integers_edge_highs() -> None:
    src = SeededNoise(13)
    np.testing.assert_array_equal(src.integers(1, 5), np.zeros(5, dtype=np.int64))
    big = src.integers(2**63, 10_000)
    assert big.min() >= 0 and big.mean() / 2.0**63 == pytest.approx(0.5, abs=0.02)
    odd = src.integers(10**18 + 7, 50_000)
    assert odd.min() >= 0 and odd.max() < 10**18 + 7
    assert odd.mean() / (10**18 + 7) == pytest.approx(0.5, abs=0.01)


# ----------------------------------------------------------------------------- snapping


def test_snapping_grid() -> None:
    assert snapping_grid(1.0) == 2.0**-6
    assert snapping_grid(0.75) == 2.0**-7
    assert snapping_grid(3.0, bits=0) == 2.0
    for std in (1e-3, 0.37, 7.46, 1234.5):
        g = snapping_grid(std)
        assert math.frexp(g)[0] == 0.5  # a power of two
        assert g <= std / 64 < 2 * g


def test_snap_exact_multiple_within_half_grid() -> None:
    x = SeededNoise(3).gaussian(50_000, 10.0) + 123.456
    for grid in (2.0**-7, 0.125, 1.0, 4.0):
        s = snap(x, grid)
        assert s.dtype == np.float64
        q = s / grid
        np.testing.assert_array_equal(q, np.round(q))
        assert np.all(np.abs(s - x) <= grid / 2)
    np.testing.assert_array_equal(snap(np.array([0.3, -0.3, 0.5]), 0.5), [0.5, -0.5, 0.5])


# ----------------------------------------------------------------------------- clipping


def test_clip_rows_l2_matches_reference() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(50, 20)) * rng.uniform(0.01, 3.0, size=(50, 1))
    m[7] = 0.0
    bound = 1.0
    clipped, norms = clip_rows_l2(m.astype(np.float32), bound)
    assert clipped.dtype == np.float64 and norms.dtype == np.float64 and norms.shape == (50,)
    for i, row in enumerate(m.astype(np.float32).astype(np.float64)):
        norm = float(np.linalg.norm(row))
        assert norms[i] == pytest.approx(norm, rel=1e-12)
        expected = row * min(1.0, bound / norm) if norm > 0 else row
        np.testing.assert_allclose(clipped[i], expected, rtol=1e-12, atol=0)
        if norm <= bound:
            np.testing.assert_array_equal(clipped[i], row)
    assert np.all(np.linalg.norm(clipped, axis=1) <= bound + 1e-9)
    np.testing.assert_array_equal(clipped[7], 0.0)
    assert (norms > bound).any() and (norms < bound).any()


def test_clip_l2_and_l1() -> None:
    v = np.array([3.0, 4.0])
    c, n = clip_l2(v, 1.0)
    assert n == 5.0 and np.linalg.norm(c) == pytest.approx(1.0) and c == pytest.approx([0.6, 0.8])
    c, n = clip_l2(v, 10.0)
    np.testing.assert_array_equal(c, v)
    assert c is not v
    c, n = clip_l1(np.array([[1.0, -3.0], [0.0, 4.0]]), 4.0)
    assert n == 8.0 and np.abs(c).sum() == pytest.approx(4.0) and c.shape == (2, 2)
    c, n = clip_l1(np.zeros(3), 1.0)
    assert n == 0.0 and not c.any()


# ----------------------------------------------------------------------------- LocalGaussian


def test_local_gaussian_calibration_checked_by_fresh_pld() -> None:
    eps, delta = 1.0, 1e-5
    mech = LocalGaussian(epsilon=eps, delta=delta, clip_norm=0.5)
    assert mech.std == pytest.approx(mech.noise_multiplier * 2 * 0.5)
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(mech.noise_multiplier))
    achieved = accountant.get_epsilon(delta)
    assert 0.99 * eps <= achieved <= eps
    # a slightly smaller multiplier would exceed the budget: the calibration is tight
    tighter = dp_accounting.pld.PLDAccountant()
    tighter.compose(dp_accounting.GaussianDpEvent(0.98 * mech.noise_multiplier))
    assert tighter.get_epsilon(delta) > eps
    assert mech.dp_event() == dp_accounting.GaussianDpEvent(mech.noise_multiplier)
    assert gaussian_noise_multiplier(eps, delta) == mech.noise_multiplier


def test_local_gaussian_apply_noise_and_clipping() -> None:
    mech = LocalGaussian(epsilon=2.0, delta=1e-6, clip_norm=1.0)
    update = np.full(N, 0.1, dtype=np.float32)  # L2 norm ~ 44.7, clipped to 1
    out = mech.apply(update, SeededNoise(21))
    assert out.dtype == np.float32 and out.shape == update.shape
    clipped, norm = clip_l2(update, 1.0)
    assert norm > 1.0
    residual = out.astype(np.float64) - clipped
    assert residual.std() == pytest.approx(mech.std, rel=0.03)
    assert abs(residual.mean()) < 5 * mech.std / math.sqrt(N)
    # snapped: every output is a multiple of the grid
    q = out.astype(np.float64) / snapping_grid(mech.std)
    np.testing.assert_array_equal(q, np.round(q))
    # reproducible with the same seed, shape kept for matrices
    np.testing.assert_array_equal(out, mech.apply(update, SeededNoise(21)))
    assert mech.apply(np.ones((3, 4)), SecureNoise()).shape == (3, 4)


# ----------------------------------------------------------------------------- LocalLaplace


def test_local_laplace() -> None:
    mech = LocalLaplace(epsilon=0.5, clip_norm=2.0)
    assert mech.scale == pytest.approx(2 * 2.0 / 0.5)
    assert mech.noise_multiplier == pytest.approx(1 / 0.5)
    assert mech.dp_event() == dp_accounting.LaplaceDpEvent(2.0)
    update = np.linspace(-1, 1, N)
    out = mech.apply(update, SeededNoise(8))
    assert out.dtype == np.float32 and out.shape == update.shape
    clipped, norm = clip_l1(update, 2.0)
    assert norm > 2.0 and np.abs(clipped).sum() == pytest.approx(2.0)
    residual = out.astype(np.float64) - clipped
    assert np.abs(residual).mean() == pytest.approx(mech.scale, rel=0.03)
    assert residual.std() == pytest.approx(math.sqrt(2) * mech.scale, rel=0.03)
    # the accountant agrees: one application is 0.5-DP (at a negligible delta)
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(mech.dp_event())
    assert accountant.get_epsilon(1e-10) == pytest.approx(0.5, rel=1e-3)


# ----------------------------------------------------------------------------- randomized response


def test_rr_probabilities() -> None:
    eps, k = 1.3, 6
    keep = rr_keep_probability(eps, k)
    assert keep == pytest.approx(math.exp(eps) / (math.exp(eps) + k - 1), rel=1e-14)
    p = rr_noise_parameter(eps, k)
    assert p == pytest.approx(k / (math.exp(eps) + k - 1), rel=1e-14)
    assert 1 - p + p / k == pytest.approx(keep, rel=1e-14)  # the two descriptions agree
    assert rr_keep_probability(1000.0, 3) == 1.0 and rr_noise_parameter(1000.0, 3) == 0.0


@pytest.mark.parametrize(("eps", "k"), [(0.5, 2), (1.0, 5), (3.0, 100)])
def test_rr_worst_case_ratio_is_exp_eps(eps: float, k: int) -> None:
    keep = rr_keep_probability(eps, k)
    other = (1 - keep) / (k - 1)
    probs = np.full((k, k), other)  # probs[input, output]
    np.fill_diagonal(probs, keep)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    ratios = probs[:, None, :] / probs[None, :, :]
    assert ratios.max() == pytest.approx(math.exp(eps), rel=1e-12)


def test_randomized_response_keep_rate_and_others_uniform() -> None:
    eps, k = 1.0, 5
    values = np.tile(np.arange(k), N // k)
    reports = randomized_response(values, k, eps, SeededNoise(31))
    assert reports.shape == values.shape and reports.min() >= 0 and reports.max() < k
    kept = reports == values
    assert kept.mean() == pytest.approx(rr_keep_probability(eps, k), abs=0.005)
    # the wrong answers spread evenly over the other buckets
    changed = (reports[~kept] - values[~kept]) % k
    assert changed.min() >= 1
    assert stats.chisquare(np.bincount(changed, minlength=k)[1:]).pvalue > 1e-3
    # secure source too
    secure = randomized_response(values, k, eps, SecureNoise())
    assert (secure == values).mean() == pytest.approx(rr_keep_probability(eps, k), abs=0.005)


def test_estimate_frequencies_recovers_distribution() -> None:
    eps, k = 2.0, 5
    truth = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    values = np.repeat(np.arange(k), (truth * N).astype(int))
    assert values.size == N
    reports = randomized_response(values, k, eps, SeededNoise(77))
    estimate = estimate_frequencies(reports, k, eps)
    assert estimate.shape == (k,) and estimate.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(estimate, truth, atol=0.01)
    raw = np.bincount(reports, minlength=k) / N
    assert np.abs(raw - truth).max() > 0.05  # the debiasing is doing the work


def test_randomize_bits() -> None:
    eps = 0.8
    bits = np.zeros(N, dtype=np.int8)
    bits[::2] = 1
    out = randomize_bits(bits, eps, SeededNoise(4))
    assert out.dtype == np.int8 and set(np.unique(out)) <= {0, 1}
    assert (out != bits).mean() == pytest.approx(1 / (math.exp(eps) + 1), abs=0.005)
    flags = randomize_bits(np.ones(1000, dtype=bool), 50.0, SeededNoise(4))
    assert flags.dtype == np.bool_ and flags.all()


@pytest.mark.parametrize(("eps", "k"), [(0.5, 2), (1.0, 10), (2.5, 64)])
def test_randomized_response_event_accounted(eps: float, k: int) -> None:
    event = randomized_response_event(eps, k)
    assert event == dp_accounting.RandomizedResponseDpEvent(rr_noise_parameter(eps, k), k)
    accountant = dp_accounting.pld.PLDAccountant(
        neighboring_relation=NeighboringRelation.REPLACE_ONE
    )
    accountant.compose(event)
    assert accountant.get_epsilon(0.0) == pytest.approx(eps, rel=1e-3)


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "call",
    [
        lambda: SeededNoise(1).gaussian(3, -1.0),
        lambda: SeededNoise(1).gaussian(3, math.nan),
        lambda: SeededNoise(1).laplace(3, math.inf),
        lambda: SeededNoise(1).gaussian((2, -1), 1.0),
        lambda: SeededNoise(1).uniform(-1),
        lambda: SeededNoise(1).bernoulli(1.5, 3),
        lambda: SeededNoise(1).bernoulli(np.array([0.1, 0.2]), 3),
        lambda: SeededNoise(1).integers(0, 3),
        lambda: SeededNoise(1).integers(2**63 + 1, 3),
        lambda: SeededNoise(-1),
        lambda: snapping_grid(0.0),
        lambda: snapping_grid(-1.0),
        lambda: snapping_grid(math.inf),
        lambda: snap(np.ones(3), 0.3),
        lambda: snap(np.array([1.0, math.nan]), 0.5),
        lambda: clip_rows_l2(np.ones(3), 1.0),
        lambda: clip_rows_l2(np.ones((2, 3)), 0.0),
        lambda: clip_rows_l2(np.array([[1.0, math.inf]]), 1.0),
        lambda: clip_l2(np.ones(3), -1.0),
        lambda: clip_l1(np.array([math.nan]), 1.0),
        lambda: clip_l2(np.array(["a"]), 1.0),
        lambda: LocalGaussian(epsilon=0.0, delta=1e-5, clip_norm=1.0),
        lambda: LocalGaussian(epsilon=math.inf, delta=1e-5, clip_norm=1.0),
        lambda: LocalGaussian(epsilon=1.0, delta=0.0, clip_norm=1.0),
        lambda: LocalGaussian(epsilon=1.0, delta=1.0, clip_norm=1.0),
        lambda: LocalGaussian(epsilon=1.0, delta=1e-5, clip_norm=0.0),
        lambda: LocalLaplace(epsilon=-1.0, clip_norm=1.0),
        lambda: LocalLaplace(epsilon=1.0, clip_norm=math.nan),
        lambda: LocalGaussian(1.0, 1e-5, 1.0).apply(np.array([1.0, math.nan]), SeededNoise(1)),
        lambda: rr_keep_probability(0.0, 3),
        lambda: rr_noise_parameter(1.0, 1),
        lambda: randomized_response(np.array([0, 3]), 3, 1.0, SeededNoise(1)),
        lambda: randomized_response(np.array([-1]), 3, 1.0, SeededNoise(1)),
        lambda: randomized_response(np.array([0.0, 1.0]), 3, 1.0, SeededNoise(1)),
        lambda: randomized_response(np.array([0, 1]), 2, -0.5, SeededNoise(1)),
        lambda: randomize_bits(np.array([0, 2]), 1.0, SeededNoise(1)),
        lambda: randomize_bits(np.array([0.5]), 1.0, SeededNoise(1)),
        lambda: estimate_frequencies(np.array([], dtype=int), 3, 1.0),
        lambda: estimate_frequencies(np.array([0, 5]), 3, 1.0),
        lambda: randomized_response_event(1.0, 1),
    ],
)
def test_bad_arguments_raise_config_error(call) -> None:
    with pytest.raises(ConfigError):
        call()


def test_clipped_sum_never_exceeds_the_bound_and_matches_the_reference() -> None:
    from fedfort.privacy.mechanisms import clipped_sum

    rng = np.random.default_rng(3)
    matrix = (rng.standard_normal((7, 20_000)) * rng.uniform(0.001, 3.0, (7, 1))).astype(np.float32)
    total, norms = clipped_sum(matrix, 1.0)
    exact = np.linalg.norm(matrix.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, exact, rtol=1e-4)
    reference, _ = clip_rows_l2(matrix, 1.0)
    np.testing.assert_allclose(total, reference.sum(axis=0), rtol=2e-3, atol=1e-6)
    # each row's contribution, as clipped_sum computes it, is within the bound in exact
    # arithmetic: one client moves the sum by at most C
    for row in matrix:
        alone, _ = clipped_sum(row[None, :], 1.0)
        assert np.linalg.norm(alone) <= 1.0
        if np.linalg.norm(row.astype(np.float64)) > 1.0:
            assert np.linalg.norm(alone) > 0.998  # clipped, not shrunk further than the slack
    with pytest.raises(ConfigError):
        clipped_sum(matrix.astype(np.float64), 1.0)
    with pytest.raises(ConfigError):
        clipped_sum(np.full((2, 3), np.nan, dtype=np.float32), 1.0)
