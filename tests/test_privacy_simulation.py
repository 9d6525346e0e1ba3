"""Private runs end to end: accounting per round, budgets, calibration, placements, local DP,
adaptive clipping, DP-SGD reports, resume, config refusals and the CLI."""

from __future__ import annotations

import json
import re

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from opacus.accountants import RDPAccountant

from conftest import tiny_config
from fedfort import Simulation
from fedfort.cli import main
from fedfort.client.privacy import privatize
from fedfort.config import ClientsConfig, RunConfig
from fedfort.errors import ConfigError, PrivacyBudgetExhausted, RoundFailed
from fedfort.messages import ClientPrivacy, ClientUpdate
from fedfort.privacy.mechanisms import LocalGaussian
from fedfort.server.checkpoint import CheckpointStore
from fedfort.simulation.simulation import CHECKPOINT_FILE

DELTA = 1e-5


def config(privacy: dict, **sections) -> RunConfig:
    """A tiny run of 20 clients over 4 rounds with ``privacy`` (noise from a seeded generator)."""
    layer = {"rounds": 4, "clients.count": 20, "privacy": {"secure_noise": False, **privacy}}
    return tiny_config(layer, **sections)


def run(cfg: RunConfig, out=None):
    with Simulation(cfg, out) as sim:
        return sim.run()


def direct_epsilon(event, count: int, accountant: str = "rdp") -> float:
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()
    acc.compose(event, count)
    return acc.get_epsilon(DELTA)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_epsilon_per_round_is_what_dp_accounting_gives_for_the_same_events(accountant):
    cfg = config(
        {
            "mode": "central",
            "noise_multiplier": 1.3,
            "sampling": "poisson",
            "accountant": accountant,
        },
        server={"fraction": 0.25, "quorum": 0.0},
    )
    result = run(cfg)
    event = dp_accounting.PoissonSampledDpEvent(0.25, dp_accounting.GaussianDpEvent(1.3))
    for record in result.records:
        assert record["delta"] == DELTA
        assert record["epsilon"] == pytest.approx(
            direct_epsilon(event, record["round"], accountant), rel=1e-9
        )
    assert result.final["epsilon"] == result.records[-1]["epsilon"]
    # Poisson sampling: the number of participants varies around q * N = 5
    assert {r["measurements"]["aggregate"]["expected_participants"] for r in result.records} == {
        5.0
    }


def test_fixed_sample_of_part_of_the_federation_is_accounted_without_amplification():
    cfg = config({"mode": "central", "noise_multiplier": 4.0}, server={"fraction": 0.5})
    result = run(cfg)
    assert all(r["participants"] == 10 for r in result.records)
    # sensitivity 2C for a fixed sample of m < N: a Gaussian with multiplier z / 2 per round
    expected = direct_epsilon(dp_accounting.GaussianDpEvent(2.0), 4)
    assert result.final["epsilon"] == pytest.approx(expected, rel=1e-9)


def test_budget_stops_before_the_round_that_would_exceed_it(tmp_path):
    z = 3.0
    eps = [direct_epsilon(dp_accounting.GaussianDpEvent(z), r) for r in range(1, 6)]
    target = (eps[2] + eps[3]) / 2  # room for exactly three rounds
    cfg = config({"mode": "central", "noise_multiplier": z, "target_epsilon": target}, rounds=10)
    with Simulation(cfg, tmp_path) as sim, pytest.raises(PrivacyBudgetExhausted) as info:
        sim.run()
    exc = info.value
    assert exc.result is not None
    records = exc.result.records  # type: ignore[attr-defined]
    assert [r["round"] for r in records] == [1, 2, 3]
    assert all(r["epsilon"] <= target for r in records)
    assert exc.spent == pytest.approx(eps[2]) and exc.next_epsilon == pytest.approx(eps[3])
    assert exc.next_epsilon > target
    assert exc.result.final["stopped"] == "privacy_budget_exhausted"  # type: ignore[attr-defined]
    with CheckpointStore(tmp_path / CHECKPOINT_FILE) as store:
        assert store.latest_round() == 3  # the last committed round is the final checkpoint
    # resuming cannot spend more: it stops before doing any work
    with Simulation.resume(tmp_path) as again, pytest.raises(PrivacyBudgetExhausted):
        again.run()
    with CheckpointStore(tmp_path / CHECKPOINT_FILE) as store:
        assert store.latest_round() == 3


def test_cli_budget_exhaustion_writes_results_and_exits_cleanly(tmp_path, capsys):
    z = 3.0
    target = direct_epsilon(dp_accounting.GaussianDpEvent(z), 2) * 1.001
    path = tmp_path / "run.toml"
    path.write_text(
        '[model]\nname = "logreg"\n[data]\npartition = "iid"\n[clients]\ncount = 10\n'
        f'[privacy]\nmode = "central"\nnoise_multiplier = {z}\ntarget_epsilon = {target}\n'
        "secure_noise = false\n"
    )
    assert (
        main(
            [
                "simulate",
                "--config",
                str(path),
                "--rounds",
                "6",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    assert "privacy budget exhausted after round 2" in out.err
    body = json.loads((tmp_path / "o" / "results.json").read_text())
    assert body["final"]["rounds"] == 2 and body["final"]["stopped"] == "privacy_budget_exhausted"
    assert body["privacy"]["stopped_by_budget"] is True
    assert body["final"]["epsilon"] <= target
    assert all("epsilon" in r and "delta" in r for r in body["rounds"])


def test_simulate_calibrates_noise_to_the_target_epsilon():
    cfg = config({"mode": "central", "target_epsilon": 2.0}, rounds=5)
    with Simulation(cfg) as sim:
        z = sim.config.privacy.noise_multiplier
        assert z is not None
        result = sim.run()
    assert 0.99 * 2.0 <= result.final["epsilon"] <= 2.0
    assert result.final["epsilon"] == pytest.approx(
        direct_epsilon(dp_accounting.GaussianDpEvent(z), 5), rel=1e-9
    )


def test_resumed_private_run_continues_the_ledger_and_noise(tmp_path):
    cfg = config({"mode": "central", "noise_multiplier": 2.0}, rounds=5)
    whole = run(cfg)
    with Simulation(cfg.with_overrides({"rounds": 3}), tmp_path) as sim:
        sim.run()
    with Simulation.resume(tmp_path, rounds=5) as sim:
        resumed = sim.run()
    assert [r["epsilon"] for r in resumed.records] == [r["epsilon"] for r in whole.records]
    np.testing.assert_array_equal(resumed.model, whole.model)


def test_secure_noise_differs_between_runs_and_seeded_noise_does_not():
    seeded = config({"mode": "central", "noise_multiplier": 1.0}, rounds=1)
    np.testing.assert_array_equal(run(seeded).model, run(seeded).model)
    secure = seeded.with_overrides({"privacy.secure_noise": True})
    assert not np.array_equal(run(secure).model, run(secure).model)


def test_distributed_rounds_short_of_noise_shares_release_nothing():
    cfg = config(
        {"mode": "distributed", "noise_multiplier": 1.0},
        rounds=2,
        simulation={"dropout_rate": 0.3},
        server={"max_attempts": 2, "quorum": 0.0},
    )
    with Simulation(cfg) as sim, pytest.raises(RoundFailed, match="noise shares"):
        sim.run()
    assert sim.engine.round == 0


def test_distributed_clients_clip_and_add_their_share():
    rng = np.random.default_rng(0)
    update = ClientUpdate(
        1, "c", (rng.normal(size=20_000) * 5).astype(np.float32), 37, {"train_loss": 0.3}
    )
    directive = ClientPrivacy(clip_norm=1.0, noise_std=0.0, report_clipped=True, secure_noise=False)
    out = privatize(update, directive, seed=1)
    assert np.linalg.norm(out.delta) == pytest.approx(1.0, rel=1e-5)
    assert out.clip_indicator == -0.5  # the norm was above the clip
    assert out.num_samples == 1 and out.metrics == {}  # nothing else about the data leaves
    noisy = privatize(update, ClientPrivacy(clip_norm=1.0, noise_std=0.2, secure_noise=False), 1)
    assert np.std(noisy.delta - out.delta) == pytest.approx(0.2, rel=0.03)


def test_adaptive_clipping_follows_the_median_norm_at_no_extra_privacy_cost():
    common = {"mode": "central", "noise_multiplier": 1.0, "clip_norm": 20.0}
    cfg = config(
        {**common, "adaptive_clipping": True, "clip_learning_rate": 1.0, "clip_count_stddev": 2.0},
        rounds=16,
        clients={"count": 40},
    )
    result = run(cfg)
    clips = [r["measurements"]["aggregate"]["clip_norm"] for r in result.records]
    fractions = [r["measurements"]["aggregate"]["noisy_unclipped_fraction"] for r in result.records]
    assert clips[-1] < clips[0] / 4  # 20 is far above every update's norm: it must come down
    assert fractions[0] > 0.8  # everything is within 20 at first
    assert abs(np.mean(fractions[-4:]) - 0.5) < 0.25  # then about half are within the clip
    fixed = run(config(common, rounds=16, clients={"count": 40}))
    assert result.final["epsilon"] == pytest.approx(fixed.final["epsilon"], rel=1e-12)


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
def test_local_dp_reports_per_round_epsilon_composed_over_rounds(mechanism):
    cfg = config(
        {"mode": "local", "local_mechanism": mechanism, "local_epsilon": 4.0, "clip_norm": 1.0},
        rounds=3,
        defense={"aggregator": "median"},  # local DP protects each update: any rule may follow
    )
    result = run(cfg)
    if mechanism == "gaussian":
        z = LocalGaussian(4.0, 1e-5, 1.0).noise_multiplier
        event = dp_accounting.GaussianDpEvent(z)
        single = pld.PLDAccountant()
        single.compose(event)
        assert single.get_epsilon(1e-5) <= 4.0  # one round is (4, 1e-5)-DP on its own
    else:
        event = dp_accounting.LaplaceDpEvent(1 / 4.0)
    for record in result.records:
        assert record["epsilon"] == pytest.approx(direct_epsilon(event, record["round"]), rel=1e-9)
        assert record["train_loss"] is None  # local losses never leave a private client
    # beside the accountant's figure, the plain sum of per-round epsilons is reported
    assert result.privacy["basic_composition_epsilon"] == 12.0
    assert result.privacy["local_epsilon_per_round"] == 4.0


def test_dp_sgd_clients_report_their_own_epsilon(tmp_path):
    cfg = config(
        {"dp_sgd": {"enabled": True, "noise_multiplier": 1.1, "max_grad_norm": 1.0}},
        rounds=2,
        clients={"count": 4, "batch_size": 16, "lr": 0.2},
    )
    with Simulation(cfg, tmp_path) as sim:
        result = sim.run()
        client = sim.clients.get("client-000")
        n = len(client.data)
    q = 16 / n
    steps = max(1, round(1 / q))
    reference = RDPAccountant()
    for _ in range(2 * steps):
        reference.step(noise_multiplier=1.1, sample_rate=q)
    eps = result.records[-1]["measurements"]["privacy"]
    assert client.dp_sgd_ledger().epsilon(1e-5) == pytest.approx(
        reference.get_epsilon(1e-5), rel=1e-9
    )
    assert eps["dp_sgd_epsilon_max"] >= eps["dp_sgd_epsilon_mean"] > 0
    assert result.privacy["dp_sgd"]["client_epsilon_max"] == eps["dp_sgd_epsilon_max"]
    assert result.final["epsilon"] is None  # no user-level guarantee was asked for


@pytest.mark.parametrize(
    ("privacy", "sections", "message"),
    [
        ({"mode": "central"}, {}, "noise_multiplier or privacy.target_epsilon"),
        (
            {"mode": "distributed", "noise_multiplier": 1},
            {"defense": {"aggregator": "krum"}},
            "fedavg",
        ),
        (
            {"mode": "central", "noise_multiplier": 1},
            {"detection": {"enabled": True}},
            "detection",
        ),
        ({"mode": "distributed", "noise_multiplier": 1, "sampling": "poisson"}, {}, "fraction"),
        ({"mode": "local"}, {}, "local_epsilon"),
        ({"target_epsilon": 1.0}, {}, "privacy.mode"),
        (
            {"mode": "central", "noise_multiplier": 1},
            {"clients": ClientsConfig(algorithm="scaffold")},
            "SCAFFOLD",
        ),
        (
            {
                "mode": "central",
                "noise_multiplier": 3,
                "adaptive_clipping": True,
                "clip_count_stddev": 1,
            },
            {},
            "clip_count_stddev",
        ),
    ],
)
def test_settings_without_a_valid_guarantee_are_refused(privacy, sections, message):
    with pytest.raises(ConfigError, match=message):
        config(privacy, **sections)


def test_privacy_plan_prints_a_calibrated_multiplier_and_the_curve(capsys):
    argv = ["privacy", "plan", "--epsilon", "3", "--delta", "1e-5", "--rounds", "50"]
    assert main([*argv, "--sampling-rate", "0.1", "--points", "5"]) == 0
    out = capsys.readouterr().out
    z = float(re.search(r"noise multiplier ([0-9.]+)", out).group(1))
    event = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(z))
    assert 0.99 * 3 <= direct_epsilon(event, 50) <= 3.0 + 1e-3  # z is printed to 4 decimals
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [int(r[0]) for r in rows][-1] == 50 and len(rows) >= 5
    assert main(["privacy", "plan", "--epsilon", "3", "--rounds", "5", "--sampling-rate", "2"]) == 2


def test_distributed_adaptive_round_rejects_updates_without_a_clip_report():
    from fedfort.privacy.dp_fedavg import DpFedAvgPlan
    from fedfort.server.engine import RoundContext
    from fedfort.server.privacy import PrivateAggregate

    plan = DpFedAvgPlan(
        "distributed", 1.0, 4, "fixed", sample_size=4, adaptive=True, count_stddev=2
    )
    stage = PrivateAggregate(plan, 1.0, secure=False, seed=0, noise_shares=3)
    delta = np.zeros(5, dtype=np.float32)

    def ctx(indicators):
        c = RoundContext(
            1, 1, np.zeros(5, np.float32), np.random.default_rng(0), ("a", "b", "c", "d"), None
        )  # type: ignore[arg-type]
        c.accepted = [
            ClientUpdate(1, cid, delta, 1, clip_indicator=ind)
            for cid, ind in zip("abcd", indicators, strict=True)
        ]
        return c

    good = ctx([0.5, -0.5, 0.5, float("nan")])
    stage.run(good)
    assert [r.reason for r in good.rejections] == ["missing_clip_indicator"]
    assert good.discarded is None and len(good.accepted) == 3
    assert good.measurements["aggregate"]["noisy_unclipped_fraction"] == pytest.approx(
        0.5 / 4 + 0.5
    )
    short = ctx([0.5, None, None, 0.5])
    stage.run(short)
    assert short.discarded is not None and "noise shares" in short.discarded
    assert short.aggregate is None  # nothing released


def test_dp_fedavg_defeats_a_membership_distinguisher_that_breaks_plain_fedavg():
    """The attack: the curious observer knows every update but one, which is either x or x0,
    and guesses which by projecting the released mean on x - x0. Against FedAvg it always
    wins; against DP-FedAvg its accuracy is held near the Gaussian bound Phi(1 / z)."""
    from scipy.stats import norm

    from fedfort.aggregation.mean import WeightedMean
    from fedfort.privacy.dp_fedavg import DpFedAvgPlan
    from fedfort.server.engine import RoundContext
    from fedfort.server.privacy import PrivateAggregate
    from fedfort.server.stages import Aggregate

    rng = np.random.default_rng(0)
    n, d, z = 10, 50, 4.0
    others = rng.normal(size=(n - 1, d)).astype(np.float32) * 0.1
    x = np.zeros(d, np.float32)
    x[0] = 1.0
    x0 = -x

    def wins(stage, trials: int = 400) -> float:
        correct = 0
        for trial in range(trials):
            secret = bool(rng.integers(2))
            rows = [*others, x if secret else x0]
            ctx = RoundContext(trial + 1, 1, np.zeros(d, np.float32), rng, (), None)
            ctx.accepted = [ClientUpdate(trial + 1, f"c{i}", r, 1) for i, r in enumerate(rows)]
            stage.run(ctx)
            guess = float(ctx.aggregate @ (x - x0)) > float(others.sum(0) @ (x - x0)) / n
            correct += guess == secret
        return correct / trials

    plain = wins(Aggregate(WeightedMean()))
    plan = DpFedAvgPlan("central", z, n, "fixed", sample_size=n)
    private = wins(PrivateAggregate(plan, 1.0, secure=False, seed=0))  # reproducible draws
    bound = norm.cdf(1.0 / z)  # best test between N(-C, zC) and N(+C, zC) shifts: Phi(C / (zC))
    assert plain == 1.0
    assert private <= bound + 0.08, (private, bound)


def test_central_dp_around_a_rule_bounds_the_rules_output_by_the_clip_ball():
    """A coordinate median of clipped updates can leave the clip ball (here by sqrt(3/2)); the
    private stage projects it back, so any rule's release has sensitivity 2C, and the noise is
    2Cz (the mean's guarantee at multiplier z)."""
    from fedfort.aggregation import CoordinateMedian
    from fedfort.privacy.dp_fedavg import DpFedAvgPlan
    from fedfort.server.engine import RoundContext
    from fedfort.server.privacy import PrivateAggregate

    a = 1 / np.sqrt(2)
    rows = np.array([[a, a, 0], [a, 0, a], [0, a, a]], dtype=np.float32)
    unprojected = np.median(rows, axis=0)
    assert np.linalg.norm(unprojected) == pytest.approx(np.sqrt(1.5))  # outside the ball

    def release(z, rule):
        plan = DpFedAvgPlan("central", z, 3, "fixed", sample_size=3)
        stage = PrivateAggregate(plan, 1.0, secure=False, seed=0, rule=rule)
        ctx = RoundContext(
            1, 1, np.zeros(3, np.float32), np.random.default_rng(0), tuple("abc"), None
        )
        ctx.accepted = [ClientUpdate(1, cid, rows[i], 1) for i, cid in enumerate("abc")]
        stage.run(ctx)
        return ctx

    quiet = release(1e-9, CoordinateMedian())
    assert np.linalg.norm(quiet.aggregate) <= 1.0 + 1e-5
    assert quiet.aggregate == pytest.approx(unprojected / np.linalg.norm(unprojected), abs=1e-5)
    noisy = release(1.3, CoordinateMedian())
    measured = noisy.measurements["aggregate"]
    assert measured["rule"] == "dp_central(median)"
    assert measured["noise_std"] == pytest.approx(2 * 1.0 * 1.3)
    # the mean's stage (no rule) keeps its C z noise on the sum
    mean = release(1.3, None).measurements["aggregate"]
    assert mean["noise_std"] == pytest.approx(1.3) and mean["rule"] == "dp_fedavg_central"
