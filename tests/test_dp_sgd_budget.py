"""Record-level DP-SGD with a budget: the plan, each client's own ledger and refusal, CSPRNG
noise, the run's report of every client's epsilon, and identities of existing configs."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, rdp

from conftest import tiny_config
from fedfort import Simulation
from fedfort.cli import main
from fedfort.cli.network import _dp_sgd_line
from fedfort.client import ClientData, FederatedClient, LocalTrainer
from fedfort.client.dp_sgd import train_dp_sgd
from fedfort.client.policy import ClientPrivacyPolicy
from fedfort.config import ClientPolicyConfig, DpSgdConfig, load_config, parse_config
from fedfort.errors import ConfigError, PolicyRefused, PrivacyBudgetExhausted
from fedfort.messages import DpSgdSettings, LocalTrainingConfig, TrainTask
from fedfort.models import MLP
from fedfort.monitoring.run_state import read_run
from fedfort.params import ParamSpec
from fedfort.privacy.dp_sgd import dp_sgd_epsilon, dp_sgd_schedule, plan_dp_sgd
from fedfort.privacy.modes import DPSGD
from fedfort.report.html import build_report
from fedfort.run.privacy import dp_sgd_sizes
from fedfort.run.resume import resumed_config
from fedfort.simulation.lazy_clients import LazyClients

DELTA = 1e-5
FEATURES, CLASSES = 8, 3


def dp_accounting_epsilon(z: float, q: float, steps: int, delta: float = DELTA) -> float:
    """Epsilon of ``steps`` sampled Gaussian steps by dp-accounting's RDP accountant."""
    accountant = rdp.RdpAccountant()
    event = GaussianDpEvent(z) if q == 1 else PoissonSampledDpEvent(q, GaussianDpEvent(z))
    accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))


# -- the plan ------------------------------------------------------------------------------


def test_target_three_is_met_within_a_hundredth_for_the_smallest_client() -> None:
    sizes = {"small": 400, "medium": 1000, "large": 2500}
    plan = plan_dp_sgd(sizes, batch_size=16, epochs=1, rounds=5, delta=DELTA, target_epsilon=3.0)
    worst = plan.worst
    assert worst.client_id == "small"  # fewest records: least amplification, most epsilon
    q, per_round = dp_sgd_schedule(400, 16, 1)
    assert (worst.sample_rate, worst.steps) == (q, 5 * per_round) == (0.04, 125)
    # the bar, checked against dp-accounting directly: within [2.9, 3.0] after the planned steps
    direct = dp_accounting_epsilon(plan.noise_multiplier, q, 5 * per_round)
    assert 2.9 <= direct <= 3.0
    assert 2.99 <= worst.epsilon <= 3.0  # Opacus' accountant, the one each client's ledger uses
    eps = {c.client_id: c.epsilon for c in plan.clients}
    for client in plan.clients:
        assert client.epsilon == dp_sgd_epsilon(
            plan.noise_multiplier, client.sample_rate, client.steps, DELTA
        )
    assert eps["small"] > eps["medium"] > eps["large"]


def test_a_fixed_multiplier_is_reported_not_calibrated() -> None:
    plan = plan_dp_sgd(
        {"a": 100}, batch_size=25, epochs=2, rounds=3, delta=DELTA, noise_multiplier=1.0
    )
    assert plan.noise_multiplier == 1.0 and plan.clients[0].steps == 3 * 2 * 4
    # the same quantity by dp-accounting's RDP accountant (other orders: within 1%)
    assert plan.clients[0].epsilon == pytest.approx(dp_accounting_epsilon(1.0, 0.25, 24), rel=1e-2)
    with pytest.raises(ConfigError, match="noise multiplier or a target"):
        plan_dp_sgd({"a": 100}, batch_size=25, epochs=1, rounds=3, delta=DELTA)
    with pytest.raises(ConfigError, match="training-set size"):
        plan_dp_sgd({}, batch_size=25, epochs=1, rounds=3, delta=DELTA, target_epsilon=1.0)


def test_sizes_over_the_network_come_from_declared_counts_or_min_samples() -> None:
    cfg = tiny_config({"privacy": {"dp_sgd": {"enabled": True, "target_epsilon": 2.0}}})
    ids = [f"client-{i:03d}" for i in range(3)]
    with pytest.raises(ConfigError, match="min_samples"):
        dp_sgd_sizes(cfg, {"client-000": 50}, ids)
    floor = cfg.with_overrides({"privacy.dp_sgd.min_samples": 80})
    assert dp_sgd_sizes(floor, {"client-000": 50, "client-001": 900}, ids) == {
        "client-000": 50,
        "client-001": 80,
        "client-002": 80,
    }


# -- config and identity --------------------------------------------------------------------


def test_new_keys_at_their_defaults_keep_the_identity_of_existing_configs() -> None:
    # identities of these configs as stored before target_epsilon and min_samples existed
    enabled = parse_config({"privacy": {"dp_sgd": {"enabled": True}}})
    assert enabled.privacy.dp_sgd.noise_multiplier == 1.0
    assert enabled.identity_hash() == (
        "e189dfde38e0869cd65dac99e3e6cea2e0cb1977e0f38a767f2abd498c6f9ca5"
    )
    assert enabled.config_identity() == (
        "6ec965da8904e975b892c20a7a74e95185a2f90917e7aa73cc49d5b81be8dc95"
    )
    tuned = parse_config(
        {
            "privacy": {
                "dp_sgd": {
                    "enabled": True,
                    "noise_multiplier": 1.1,
                    "max_grad_norm": 0.5,
                    "delta": 1e-6,
                }
            }
        }
    )
    assert tuned.identity_hash() == (
        "bf14db58a4aec778ff02ed8d89a9d7bbd8c259fa485bd1a4856496292d9aa0da"
    )
    target = enabled.with_overrides({"privacy.dp_sgd.target_epsilon": 3.0})
    assert target.privacy.dp_sgd.noise_multiplier == 1.0  # kept: explicit multiplier, a budget
    assert target.identity_hash() != enabled.identity_hash()


def test_dp_sgd_settings_are_checked() -> None:
    assert DpSgdConfig(enabled=True, target_epsilon=3.0).noise_multiplier is None
    # the Python API's mode object writes the same table
    mode = parse_config({"privacy": DPSGD(target_epsilon=3.0, min_samples=50).table()})
    assert mode.privacy.dp_sgd == DpSgdConfig(enabled=True, target_epsilon=3.0, min_samples=50)
    plain = parse_config({"privacy": DPSGD().table()})
    assert (
        plain.identity_hash()
        == parse_config({"privacy": {"dp_sgd": {"enabled": True}}}).identity_hash()
    )
    with pytest.raises(ConfigError, match=r"dp_sgd\.enabled"):
        parse_config({"privacy": {"dp_sgd": {"target_epsilon": 3.0}}})
    with pytest.raises(ConfigError, match="min_samples"):
        parse_config({"privacy": {"dp_sgd": {"enabled": True, "min_samples": 0}}})


# -- the client's own ledger and budget -----------------------------------------------------


def client_data(n: int = 128, seed: int = 0) -> ClientData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    return ClientData.from_numpy(x, (np.arange(n) % CLASSES).astype(np.int64))


def make_trainer() -> LocalTrainer:
    torch.manual_seed(0)
    return LocalTrainer(MLP(FEATURES, CLASSES, hidden=[8]))


def dp_task(
    round_: int, trainer: LocalTrainer, z: float = 1.0, *, seed: int = 5, attempt: int = 1
) -> TrainTask:
    config = LocalTrainingConfig(
        batch_size=8, lr=0.1, dp_sgd=DpSgdSettings(noise_multiplier=z, max_grad_norm=1.0)
    )
    weights = ParamSpec.from_module(trainer.model).flatten(trainer.model)
    return TrainTask(round_, attempt, "c", weights, config, seed=seed)


def budget_policy(budget: float, **kw: object) -> ClientPrivacyPolicy:
    dp = DpSgdConfig(enabled=True, noise_multiplier=1.0, target_epsilon=budget)
    return ClientPrivacyPolicy.from_config(ClientPolicyConfig(**kw), dp)


def test_a_client_stops_when_its_own_budget_is_spent() -> None:
    trainer = make_trainer()
    q, steps = dp_sgd_schedule(128, 8, 1)
    per_round = dp_sgd_epsilon(1.0, q, steps, DELTA)
    two_rounds = dp_sgd_epsilon(1.0, q, 2 * steps, DELTA)
    # room for two rounds, not three
    budget = (two_rounds + dp_sgd_epsilon(1.0, q, 3 * steps, DELTA)) / 2
    client = FederatedClient("c", client_data(), policy=budget_policy(budget))
    first = client.handle(dp_task(1, trainer), trainer)
    assert first.metrics["dp_sgd_epsilon"] == pytest.approx(per_round, rel=1e-9)
    client.acknowledge(first)
    # round 2 is released but never committed: it is spent all the same
    client.handle(dp_task(2, trainer), trainer)
    assert client.dp_sgd_ledger().epsilon(DELTA) == pytest.approx(per_round, rel=1e-9)
    assert client.dp_sgd_ledger().released_epsilon(DELTA) == pytest.approx(two_rounds, rel=1e-9)
    before = ParamSpec.from_module(trainer.model).flatten(trainer.model).copy()
    with pytest.raises(PrivacyBudgetExhausted, match="budget") as refused:
        client.handle(dp_task(3, trainer), trainer)
    assert refused.value.spent == pytest.approx(two_rounds, rel=1e-9)
    assert refused.value.next_epsilon > budget == refused.value.target
    # nothing was trained for the refused round
    after = ParamSpec.from_module(trainer.model).flatten(trainer.model)
    np.testing.assert_array_equal(before, after)
    # the releases survive a checkpoint of the client's state
    restored = FederatedClient("c", client_data(), policy=budget_policy(budget))
    restored.load_state_dict(json.loads(json.dumps(client.state_dict(), default=list)))
    with pytest.raises(PrivacyBudgetExhausted):
        restored.training_task(dp_task(3, trainer))


def test_the_budget_is_checked_with_the_clients_own_size_and_delta() -> None:
    trainer = make_trainer()
    # the server cannot lower the cost: no noise is an unbounded epsilon, whatever it claims
    client = FederatedClient("c", client_data(), policy=budget_policy(50.0))
    with pytest.raises(PrivacyBudgetExhausted, match="inf"):
        client.training_task(dp_task(1, trainer, z=0.0))
    with pytest.raises(PolicyRefused, match="noise multiplier"):
        client.training_task(dp_task(1, trainer, z=math.nan))
    # the same round costs a client with fewer records more (its sampling rate is larger)
    q_small, s_small = dp_sgd_schedule(64, 8, 1)
    q_big, s_big = dp_sgd_schedule(256, 8, 1)
    small_cost = dp_sgd_epsilon(1.0, q_small, s_small, DELTA)
    big_cost = dp_sgd_epsilon(1.0, q_big, s_big, DELTA)
    assert small_cost > big_cost
    between = (small_cost + big_cost) / 2
    FederatedClient("c", client_data(256), policy=budget_policy(between)).training_task(
        dp_task(1, trainer)
    )
    with pytest.raises(PrivacyBudgetExhausted):
        FederatedClient("c", client_data(64), policy=budget_policy(between)).training_task(
            dp_task(1, trainer)
        )
    # max_total_epsilon bounds the DP-SGD ledger when no DP-SGD target is set (with a
    # client-level noise floor, so the client-level ledger admits the release)
    policy = ClientPrivacyPolicy(max_total_epsilon=between, max_clip_norm=1.0, min_noise_std=200.0)
    assert policy.dp_sgd_budget == between
    with pytest.raises(PrivacyBudgetExhausted, match="DP-SGD"):
        FederatedClient("c", client_data(64), policy=policy).training_task(dp_task(1, trainer))


# -- noise from the CSPRNG ------------------------------------------------------------------


def trained(secure: bool, seed: int) -> torch.Tensor:
    torch.manual_seed(0)
    model = MLP(FEATURES, CLASSES, hidden=[8])
    settings = DpSgdSettings(noise_multiplier=1.0, max_grad_norm=1.0, secure_noise=secure)
    train_dp_sgd(model, client_data(), LocalTrainingConfig(batch_size=16, dp_sgd=settings), seed)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_same_seed_draws_different_noise_unless_reproducible() -> None:
    assert torch.equal(trained(False, seed=3), trained(False, seed=3))
    a, b = trained(True, seed=3), trained(True, seed=3)
    assert not torch.equal(a, b)
    # the noise is what differs: its size is that of z * C over the expected batch
    assert float((a - b).abs().max()) > 1e-3


def test_the_client_chooses_its_noise_source_not_the_server() -> None:
    trainer = make_trainer()
    server_asks_seeded = dp_task(1, trainer)  # DpSgdSettings(secure_noise=False) from the server
    secure = FederatedClient("c", client_data()).training_task(server_asks_seeded)
    assert secure.config.dp_sgd is not None and secure.config.dp_sgd.secure_noise
    assert secure.seed != server_asks_seeded.seed
    repro = ClientPrivacyPolicy(reproducible=True)
    seeded = FederatedClient("c", client_data(), policy=repro).training_task(
        dataclasses.replace(
            server_asks_seeded,
            config=dataclasses.replace(
                server_asks_seeded.config,
                dp_sgd=DpSgdSettings(1.0, 1.0, secure_noise=True),
            ),
        )
    )
    assert seeded.config.dp_sgd is not None and not seeded.config.dp_sgd.secure_noise
    assert seeded.seed == server_asks_seeded.seed
    # two reproducible clients given the same task train the same model, bit for bit
    updates = []
    for _ in range(2):
        t = make_trainer()
        client = FederatedClient("c", client_data(), policy=repro)
        updates.append(client.handle(dp_task(1, t), t).delta)
    np.testing.assert_array_equal(updates[0], updates[1])


# -- a run: calibration, each client's epsilon, a budget that stops it ------------------------


DP_RUN = (
    'rounds = 2\n[data]\ndataset = "digits"\npartition = "dirichlet"\nalpha = 0.1\n'
    '[model]\nname = "logreg"\n[clients]\ncount = 3\nbatch_size = 64\nepochs = 1\n'
    "[privacy.dp_sgd]\nenabled = true\ntarget_epsilon = 3.0\n"
)


@pytest.mark.slow
def test_a_run_meets_its_target_reports_each_client_and_stops_past_its_plan(
    tmp_path, capsys
) -> None:
    toml, out = tmp_path / "run.toml", tmp_path / "run"
    toml.write_text(DP_RUN)
    assert main(["simulate", "--config", str(toml), "--out", str(out), "--quiet"]) == 0
    summary = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    sgd = results["privacy"]["dp_sgd"]
    z, clients = sgd["noise_multiplier"], sgd["client_epsilon"]
    with Simulation.resume(out) as sim:
        sizes = {cid: int(n) for cid, n in zip(sim.ids, sim.partition.sizes(), strict=True)}
    assert len(set(sizes.values())) == 3 and set(clients) == set(sizes)
    assert sgd["budget_exhausted"] == {}
    smallest = min(sizes, key=lambda c: (sizes[c], c))
    q, per_round = dp_sgd_schedule(sizes[smallest], 64, 1)
    # the bar: dp-accounting's epsilon of the smallest client's planned steps
    assert 2.9 <= dp_accounting_epsilon(z, q, 2 * per_round) <= 3.0
    assert clients[smallest] == pytest.approx(dp_sgd_epsilon(z, q, 2 * per_round, DELTA), rel=1e-9)
    assert max(clients.values()) == clients[smallest] <= 3.0
    worst = f"DP-SGD epsilon per record {clients[smallest]:.3f} at delta 1e-05"
    assert worst in summary and "budget 3)" in summary
    # the run's own TOML (no multiplier) resumes with the calibrated one, whatever its rounds
    given = load_config(toml).with_overrides({"rounds": 7})
    assert resumed_config(out, given).privacy.dp_sgd.noise_multiplier == z
    # resumed for a third round: the smallest client has no room left and refuses; the others
    # train, and the run says who stopped and why
    assert main(["simulate", "--resume", "--out", str(out), "--rounds", "3", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"{smallest} stopped training from round 3" in captured.err
    third = json.loads((out / "results.json").read_text())["privacy"]["dp_sgd"]
    assert third["noise_multiplier"] == z and third["budget_exhausted"] == {smallest: 3}
    assert clients[smallest] == third["client_epsilon"][smallest]  # it released nothing more
    assert all(third["client_epsilon"][c] <= 3.0 for c in sizes)
    state = read_run(out, verify=False)["privacy"]
    assert {c["id"]: c["stopped_round"] for c in state["dp_sgd_clients"]}[smallest] == 3
    assert f"{smallest} (round 3)" in build_report(out)
    # further on, every client's budget is spent: the run stops at its last committed round
    assert main(["simulate", "--resume", "--out", str(out), "--rounds", "12", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "own privacy budget is spent" in captured.err
    stopped = json.loads((out / "results.json").read_text())
    assert stopped["privacy"]["stopped_by_budget"] is True
    assert len(stopped["rounds"]) < 12
    assert max(stopped["privacy"]["dp_sgd"]["client_epsilon"].values()) <= 3.0


# -- the plan command -----------------------------------------------------------------------


def test_privacy_plan_prints_the_dp_sgd_noise_and_each_clients_epsilon(tmp_path, capsys) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(
        'rounds = 4\n[data]\ndataset = "digits"\n[clients]\ncount = 3\nbatch_size = 64\n'
        "[privacy.dp_sgd]\nenabled = true\ntarget_epsilon = 2.0\n"
    )
    epochs = load_config(toml).clients.epochs
    assert main(["privacy", "plan", "--config", str(toml)]) == 0
    out = capsys.readouterr().out.splitlines()
    head = out[0]
    assert head.startswith("DP-SGD noise multiplier ") and "within epsilon 2 " in head
    z = float(head.split()[3])
    rows = [line.split() for line in out[2:]]
    assert [r[0] for r in rows] == ["client-000", "client-001", "client-002"]
    for _, records, rate, steps, eps in rows:
        q, per_round = dp_sgd_schedule(int(records), 64, epochs)
        assert float(rate) == pytest.approx(q, abs=1e-4) and int(steps) == 4 * per_round
        assert float(eps) == pytest.approx(dp_sgd_epsilon(z, q, 4 * per_round, DELTA), abs=1e-3)
        assert float(eps) <= 2.0
    assert max(float(r[4]) for r in rows) >= 1.99
    assert main(["privacy", "plan", "--config", str(toml), "--epsilon", "1", "--rounds", "2"]) == 0
    lower = capsys.readouterr().out.splitlines()[0]
    assert "within epsilon 1 " in lower and "over 2 rounds" in lower
    # a config without DP-SGD is a user error, not a traceback
    plain = tmp_path / "plain.toml"
    plain.write_text("rounds = 2\n")
    assert main(["privacy", "plan", "--config", str(plain)]) != 0
    assert "privacy.dp_sgd" in capsys.readouterr().err


def test_budget_policy_delta_is_the_clients_own() -> None:
    policy = budget_policy(3.0)
    assert (policy.max_dp_sgd_epsilon, policy.dp_sgd_delta) == (3.0, DELTA)
    off = ClientPrivacyPolicy.from_config(ClientPolicyConfig(), DpSgdConfig())
    assert off.dp_sgd_budget is None
    with pytest.raises(ConfigError, match="dp_sgd_delta"):
        ClientPrivacyPolicy(dp_sgd_delta=1.0)


def test_ray_driver_side_clients_check_the_budget_with_their_partition_size() -> None:
    trainer = make_trainer()
    q, steps = dp_sgd_schedule(64, 8, 1)
    one_round = dp_sgd_epsilon(1.0, q, steps, DELTA)
    clients = LazyClients(
        ["c", "d"], policy=budget_policy(one_round * 1.01), num_records={"c": 64, "d": 16}
    )
    assert len(clients.get("c").data) == 0 and clients.get("c").num_records == 64
    task = clients.get("c").training_task(dp_task(1, trainer))  # the actor trains on the rows
    assert task.config.dp_sgd is not None and task.config.dp_sgd.secure_noise
    with pytest.raises(PrivacyBudgetExhausted):  # fewer records: a larger rate, more epsilon
        clients.get("d").training_task(dataclasses.replace(dp_task(1, trainer), client_id="d"))


def test_fedfort_client_prints_its_own_dp_sgd_epsilon() -> None:
    trainer = make_trainer()
    policy = budget_policy(10.0)
    client = FederatedClient("c", client_data(), policy=policy)
    update = client.handle(dp_task(1, trainer), trainer)  # released, never committed
    q, steps = dp_sgd_schedule(128, 8, 1)
    released = dp_sgd_epsilon(1.0, q, steps, DELTA)
    line = _dp_sgd_line("c", client, policy)
    assert f"{0.0:.4f} over committed rounds, {released:.4f} over every release" in line
    assert "delta 1e-05 (budget 10)" in line
    client.acknowledge(update)
    assert f"{released:.4f} over committed rounds" in _dp_sgd_line("c", client, policy)
