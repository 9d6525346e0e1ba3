"""Accounting agrees with dp-accounting used directly; calibration lands within 1% below target."""

from __future__ import annotations

import itertools
import math

import dp_accounting
import pytest
from dp_accounting import pld, rdp
from dp_accounting.privacy_accountant import NeighboringRelation

from fedfort.errors import ConfigError
from fedfort.privacy.accounting import (
    PrivacyEvent,
    calibrate_noise_multiplier,
    epsilon_curve,
    make_accountant,
)
from fedfort.privacy.dp_fedavg import DpFedAvgPlan, next_clip_norm, split_noise_multiplier
from fedfort.privacy.planning import plan_noise

DELTA = 1e-5


def direct(name: str, events, delta=DELTA, relation=NeighboringRelation.ADD_OR_REMOVE_ONE):
    acc = (
        rdp.RdpAccountant(neighboring_relation=relation)
        if name == "rdp"
        else pld.PLDAccountant(neighboring_relation=relation)
    )
    for event, count in events:
        acc.compose(event, count)
    return acc.get_epsilon(delta)


@pytest.mark.parametrize("name", ["rdp", "pld"])
@pytest.mark.parametrize(
    ("ours", "theirs", "count"),
    [
        (
            PrivacyEvent("gaussian", 1.1, sampling_rate=0.1),
            dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)),
            60,
        ),
        (PrivacyEvent("gaussian", 5.0), dp_accounting.GaussianDpEvent(5.0), 30),
        (PrivacyEvent("laplace", 2.0), dp_accounting.LaplaceDpEvent(2.0), 5),
    ],
)
def test_accountant_matches_dp_accounting_on_the_same_events(name, ours, theirs, count):
    acc = make_accountant(name)
    for _ in range(count):  # one compose per round, as the run does
        acc.compose(ours)
    assert acc.count == count
    assert len(acc.events) == 1  # identical rounds are one ledger entry
    expected = direct(name, [(theirs, count)])
    assert acc.epsilon(DELTA) == pytest.approx(expected, rel=1e-9)
    assert acc.delta(expected) == pytest.approx(DELTA, rel=0.05)


def test_mixed_ledger_and_randomized_response_under_replace_one():
    acc = make_accountant("pld", neighboring="replace_one")
    acc.compose(PrivacyEvent("randomized_response", 0.3, num_buckets=4), 3)
    acc.compose(PrivacyEvent("gaussian", 3.0), 2)
    # the library's PLD accountant ignores a count on randomized response, so the reference
    # composes each release on its own
    rr = dp_accounting.RandomizedResponseDpEvent(0.3, 4)
    expected = direct(
        "pld",
        [(rr, 1), (rr, 1), (rr, 1), (dp_accounting.GaussianDpEvent(3.0), 2)],
        relation=NeighboringRelation.REPLACE_ONE,
    )
    assert acc.epsilon(DELTA) == pytest.approx(expected, rel=1e-9)
    once = direct("pld", [(rr, 1)], relation=NeighboringRelation.REPLACE_ONE)
    assert acc.epsilon(DELTA) > 2 * once  # three reports cost more than one
    # and RDP, which honours counts, agrees that composition grows
    rdp_acc = make_accountant("rdp", neighboring="replace_one")
    rdp_acc.compose(PrivacyEvent("randomized_response", 0.3, num_buckets=4), 3)
    assert rdp_acc.epsilon(DELTA) == pytest.approx(
        direct("rdp", [(rr, 3)], relation=NeighboringRelation.REPLACE_ONE), rel=1e-9
    )
    with pytest.raises(ConfigError, match="replace_one"):
        make_accountant("rdp").compose(PrivacyEvent("randomized_response", 0.3))


def test_randomized_response_reports_compose_over_rounds():
    """Five reports at epsilon 1 each: more than one report, at most the basic composition 5."""
    from fedfort.privacy.mechanisms import rr_noise_parameter

    event = PrivacyEvent("randomized_response", rr_noise_parameter(1.0, 10), num_buckets=10)
    for name in ("rdp", "pld"):
        acc = make_accountant(name, neighboring="replace_one")
        acc.compose(event)
        single = acc.epsilon(1e-6)
        acc.compose(event, 4)
        assert single == pytest.approx(1.0, abs=0.02)
        assert 2.0 < acc.epsilon(1e-6) <= 5.0 + 1e-6, name


def test_extra_events_do_not_change_the_ledger_and_state_round_trips():
    acc = make_accountant("rdp")
    event = PrivacyEvent("gaussian", 1.0, sampling_rate=0.05)
    acc.compose(event, 10)
    before = acc.epsilon(DELTA)
    after = acc.epsilon(DELTA, [(event, 1)])
    assert after > before
    assert acc.epsilon(DELTA) == before
    clone = make_accountant("rdp")
    clone.load_state_dict(acc.state_dict())
    assert clone.epsilon(DELTA) == before and clone.events == acc.events
    with pytest.raises(ConfigError):
        make_accountant("pld").load_state_dict(acc.state_dict())


def test_empty_ledger_spends_nothing_and_bad_arguments_are_refused():
    acc = make_accountant("rdp")
    assert acc.epsilon(DELTA) == 0.0
    with pytest.raises(ConfigError):
        acc.epsilon(0.0)
    with pytest.raises(ConfigError):
        PrivacyEvent("gaussian", -1.0)
    with pytest.raises(ConfigError):
        PrivacyEvent("gaussian", 1.0, sampling_rate=1.5)
    with pytest.raises(ConfigError):
        make_accountant("moments")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "rounds", "rate", "name"),
    [
        (1.0, 50, 1.0, "rdp"),
        (3.0, 50, 1.0, "pld"),
        (8.0, 200, 0.1, "rdp"),
        (2.0, 30, 0.05, "pld"),
        (0.5, 10, 1.0, "rdp"),
    ],
)
def test_calibrated_noise_lands_within_one_percent_below_target(target, rounds, rate, name):
    def event(z: float) -> PrivacyEvent:
        return PrivacyEvent("gaussian", z, sampling_rate=rate)

    def theirs(z: float) -> dp_accounting.DpEvent:
        gaussian = dp_accounting.GaussianDpEvent(z)
        return dp_accounting.PoissonSampledDpEvent(rate, gaussian) if rate < 1.0 else gaussian

    z = calibrate_noise_multiplier(target, DELTA, rounds, event, name)
    eps = direct(name, [(theirs(z), rounds)])
    assert 0.99 * target <= eps <= target
    # and it is the smallest such z (to the search tolerance): 1% less noise overshoots
    assert direct(name, [(theirs(z * 0.99), rounds)]) > target


def test_plan_noise_curve_is_monotone_and_ends_at_the_plan():
    plan = plan_noise(3.0, DELTA, 40, lambda z: PrivacyEvent("gaussian", z, 0.2), points=8)
    rounds = [r for r, _ in plan.curve]
    eps = [e for _, e in plan.curve]
    assert rounds[0] == 1 and rounds[-1] == 40
    assert all(b > a for a, b in itertools.pairwise(eps))
    assert eps[-1] == pytest.approx(plan.epsilon)
    assert 0.99 * 3.0 <= plan.epsilon <= 3.0
    full = epsilon_curve(PrivacyEvent("gaussian", 2.0), DELTA, 5)
    assert [r for r, _ in full] == [1, 2, 3, 4, 5]


def test_dp_fedavg_events_match_the_sampling():
    poisson = DpFedAvgPlan("central", 1.2, 300, "poisson", sampling_rate=0.1)
    assert poisson.round_event() == PrivacyEvent("gaussian", 1.2, sampling_rate=0.1)
    assert poisson.expected_participants == pytest.approx(30.0)
    everyone = DpFedAvgPlan("central", 1.2, 300, "fixed", sample_size=300)
    assert everyone.round_event() == PrivacyEvent("gaussian", 1.2)
    # a fixed sample of m < N: one user can displace another, sensitivity 2C, no amplification
    partial = DpFedAvgPlan("central", 1.2, 300, "fixed", sample_size=30)
    assert partial.round_event() == PrivacyEvent("gaussian", 0.6)
    assert partial.expected_participants == 30.0


def test_adaptive_clipping_split_keeps_the_total_guarantee():
    z, count_std = 1.5, 10.0
    z_delta = split_noise_multiplier(z, count_std)
    assert z_delta > z
    composed = dp_accounting.ComposedDpEvent(
        [dp_accounting.GaussianDpEvent(z_delta), dp_accounting.GaussianDpEvent(2 * count_std)]
    )
    single = dp_accounting.GaussianDpEvent(z)
    assert direct("rdp", [(composed, 20)]) == pytest.approx(direct("rdp", [(single, 20)]), rel=1e-9)
    with pytest.raises(ConfigError, match="clip_count_stddev"):
        split_noise_multiplier(3.0, 1.0)
    # more updates within the clip norm than the target quantile -> the clip norm shrinks
    assert next_clip_norm(1.0, 0.9, 0.5, 0.2) < 1.0 < next_clip_norm(1.0, 0.1, 0.5, 0.2)
    assert next_clip_norm(2.0, 0.5, 0.5, 0.2) == pytest.approx(2.0)
    assert math.isclose(next_clip_norm(1.0, 0.6, 0.5, 0.2), math.exp(-0.02))
