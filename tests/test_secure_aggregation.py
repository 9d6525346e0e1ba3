"""Secure aggregation in the round engine: same models as plain runs, composition with DP,
sealed updates, aborted sessions, config refusals and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import demo_config, tiny_config
from fedfort import Simulation
from fedfort.cli import main
from fedfort.config import ClientsConfig, RunConfig
from fedfort.errors import ConfigError
from fedfort.messages import ClientUpdate, LocalTrainingConfig, SecureAggregation, TrainTask
from fedfort.server.verify import verify_update


def small(secure: dict | None = None, **sections) -> RunConfig:
    """A tiny run of 8 clients with secure aggregation ``secure`` (off by default)."""
    return tiny_config(
        {"clients.count": 8, "secure_aggregation": secure or {"mode": "none"}}, **sections
    )


def run(cfg: RunConfig):
    with Simulation(cfg) as sim:
        return sim.run()


@pytest.mark.parametrize("mode", ["secagg", "secagg+", "ckks"])
def test_secure_run_gives_the_plain_model_up_to_encoding_error(mode):
    plain = run(small())
    secure = run(small({"mode": mode, "value_range": 2.0}))
    # the same clients, seeds and weights: only fixed-point (or CKKS) rounding differs
    np.testing.assert_allclose(secure.model, plain.model, atol=1e-4, rtol=0)
    assert not np.array_equal(secure.model, plain.model) or mode == "ckks"
    for record in secure.records:
        assert record["measurements"]["aggregate"]["rule"] == f"secure_{mode}"
        assert record["participants"] == 8
        assert record["train_loss"] is None  # nothing per client reaches the server
    assert secure.secure_aggregation is not None
    assert secure.secure_aggregation["mode"] == mode


def test_weighted_mean_uses_hidden_sample_counts():
    # Dirichlet partitions give unequal sample counts: the secure mean weights by them
    skewed = {"dataset": "digits", "partition": "dirichlet", "alpha": 0.3}
    plain = run(small(data=skewed))
    secure = run(small({"mode": "secagg", "value_range": 2.0}, data=skewed))
    unweighted = run(small({"mode": "secagg", "value_range": 2.0, "max_weight": 1}, data=skewed))
    np.testing.assert_allclose(secure.model, plain.model, atol=1e-4, rtol=0)
    assert np.abs(unweighted.model - plain.model).max() > 1e-3


def _server_view(mode: str) -> tuple[list[ClientUpdate], int]:
    """What a curious server reads from the runtime in one round."""
    with Simulation(small({"mode": mode})) as sim:
        seen: list[ClientUpdate] = []
        original = sim.executor.execute

        def spy(tasks, deadline):
            outcome = original(tasks, deadline)
            seen.extend(outcome.received)
            return outcome

        sim.executor.execute = spy  # type: ignore[method-assign]
        sim.run(1)
        return seen, sim.spec.dim


def test_a_curious_server_reads_every_update_without_secure_aggregation_and_none_with_it():
    plain, dim = _server_view("none")
    assert len(plain) == 8
    for update in plain:  # the attack works: each client's full update and sample count
        assert not update.sealed and update.delta.shape == (dim,)
        assert np.abs(update.delta).max() > 0 and update.num_samples > 1
    sealed, _ = _server_view("secagg")
    assert len(sealed) == 8
    for update in sealed:
        assert update.sealed and update.delta.shape == (0,)
        assert update.num_samples == 1 and update.metrics == {}


def test_sealed_and_plain_updates_are_refused_in_the_wrong_round():
    plain = ClientUpdate(1, "a", np.zeros(4, np.float32), 3)
    sealed = ClientUpdate(1, "a", np.zeros(0, np.float32), 1, sealed=True)
    args = {"round_": 1, "dim": 4, "selected": {"a"}, "seen": set()}
    from fedfort.errors import InvalidUpdate

    with pytest.raises(InvalidUpdate, match="not_sealed"):
        verify_update(plain, sealed=True, **args)
    with pytest.raises(InvalidUpdate, match="not_sealed"):
        verify_update(sealed, **args)
    assert verify_update(sealed, sealed=True, **args) is sealed


def test_client_answers_a_secure_task_with_a_sealed_update_and_keeps_its_vector():
    with Simulation(small({"mode": "secagg"})) as sim:
        client = sim.clients.get("client-000")
        task = TrainTask(
            1,
            1,
            "client-000",
            sim.model,
            LocalTrainingConfig(),
            7,
            secure=SecureAggregation("secagg", "run", b"n" * 16, max_weight=1000),
        )
        update = client.handle(task, sim.trainer)
        sealed = client.seal(task, update, sim.clients.directory)
        assert sealed.sealed and sealed.delta.size == 0
        assert client.secure.unsealed(sealed) is update


@pytest.mark.parametrize("placement", ["distributed", "central"])
def test_secure_aggregation_composes_with_dp_fedavg(placement):
    # the clients' explicit, non-secure reproducible mode: the same seeded noise in both runs
    privacy = {
        "mode": placement,
        "noise_multiplier": 0.5,
        "clip_norm": 0.5,
        "secure_noise": False,
        "client": {"reproducible": True},
    }
    plain = run(small(privacy=privacy, clients={"count": 12, "lr": 0.1}))
    secure = run(small({"mode": "secagg+"}, privacy=privacy, clients={"count": 12, "lr": 0.1}))
    last = secure.records[-1]
    assert last["measurements"]["aggregate"]["rule"] == f"dp_fedavg_{placement}"
    assert last["epsilon"] == pytest.approx(plain.records[-1]["epsilon"])
    # distributed: the same seeded noise shares, summed securely instead of in the clear;
    # central: the clients clip (the server cannot) and the server adds the same seeded noise
    np.testing.assert_allclose(secure.model, plain.model, atol=1e-4, rtol=0)


def test_adaptive_clipping_bit_travels_inside_the_secure_sum():
    privacy = {
        "mode": "distributed",
        "noise_multiplier": 0.5,
        "clip_norm": 0.05,
        "adaptive_clipping": True,
        "clip_count_stddev": 1.0,
        "secure_noise": False,
        "client": {"reproducible": True},  # the same seeded noise shares in both runs
    }
    clients = {"count": 12, "batch_size": 16, "lr": 0.1}
    cfg = small({"mode": "secagg"}, privacy=privacy, clients=clients)
    plain = run(cfg.with_overrides({"secure_aggregation.mode": "none"}))
    secure = run(cfg)
    ours = [r["measurements"]["aggregate"]["next_clip_norm"] for r in secure.records]
    theirs = [r["measurements"]["aggregate"]["next_clip_norm"] for r in plain.records]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    assert ours[-1] != pytest.approx(0.05)  # the clip norm moved


def _retried(**sections) -> RunConfig:
    return small(
        {"mode": "secagg", "simulated_dropout": 0.05},
        server={"max_attempts": 6, "quorum": 0.0},
        clients={"count": 10},
        rounds=8,
        **sections,
    )


def test_an_aborted_session_discards_the_attempt_and_the_round_is_retried():
    # clients that add their own fresh noise may put a second masked input into the same model
    client_noise = {"client": {"max_clip_norm": 100.0, "min_noise_std": 1e-4}}
    result = run(_retried(privacy=client_noise))
    discarded = [d for r in result.records for d in r["discarded_attempts"]]
    assert any("secure aggregation (secagg) aborted" in d["reason"] for d in discarded)
    dropped = [r["measurements"]["aggregate"]["protocol_dropped"] for r in result.records]
    assert any(dropped)  # some rounds committed despite clients vanishing mid-protocol
    summary = result.secure_aggregation
    assert summary is not None and summary["aborted_attempts"] == len(discarded)
    assert summary["protocol_dropouts"] >= 1


def test_without_client_noise_a_retry_after_the_masked_inputs_gets_none_of_them_again():
    # one masked input per model version: the clients that released theirs in the aborted
    # attempt refuse to release another for the same global model, so the retry cannot run
    from fedfort.errors import RoundFailed

    with pytest.raises(RoundFailed, match="after masked input collection") as failed:
        run(_retried())
    # the failure says why the retries found no inputs, and what would let them run
    assert "refuse a second one unless their own policy adds noise" in str(failed.value)
    assert "One masked input per global model version" in str(failed.value)


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ({"defense": {"aggregator": "krum", "num_byzantine": 1}}, "'krum'"),
        ({"defense": {"aggregator": "median"}}, "'median'"),
        ({"defense": {"aggregator": "trimmed_mean"}}, "'trimmed_mean'"),
        ({"defense": {"norm_bound": 1.0}}, "defense.norm_bound"),
        ({"detection": {"enabled": True}}, "anomaly scores"),
        ({"reputation": {"enabled": True}}, "reputation"),
        ({"clients": ClientsConfig(algorithm="scaffold")}, "SCAFFOLD"),
    ],
)
def test_defences_that_need_single_updates_are_refused_with_secure_aggregation(sections, needle):
    with pytest.raises(ConfigError, match="only the sum") as err:
        small({"mode": "secagg"}, **sections)
    assert needle in str(err.value)
    small(**sections)  # the same defence is fine without secure aggregation


def test_broken_secure_aggregation_settings_are_refused():
    with pytest.raises(ConfigError, match="degree"):
        small({"mode": "secagg", "degree": 4})
    with pytest.raises(ConfigError, match="threshold"):
        small({"mode": "secagg", "threshold": 40})
    with pytest.raises(ConfigError, match="bits"):
        small({"mode": "secagg", "bits": 8})
    with pytest.raises(ConfigError, match="simulated_dropout"):
        small({"mode": "none", "simulated_dropout": 0.1})


@pytest.mark.slow
def test_secure_aggregation_reaches_the_plain_accuracy_on_the_demo_config(tmp_path):
    """The bar: digits, the foundation's 10-client config, SecAgg on vs off, within 1 point."""
    base = demo_config()
    plain = run(base)
    secure = run(base.with_overrides({"secure_aggregation.mode": "secagg"}))
    assert abs(secure.final["accuracy"] - plain.final["accuracy"]) <= 0.01
    assert secure.final["accuracy"] > 0.9


def test_cli_switches_secure_aggregation_on(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "simulate",
            "--rounds",
            "2",
            "--clients",
            "5",
            "--model",
            "logreg",
            "--secure-aggregation",
            "secagg+",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    body = json.loads((out / "results.json").read_text())
    assert body["secure_aggregation"]["mode"] == "secagg+"
    assert body["rounds"][-1]["measurements"]["aggregate"]["rule"] == "secure_secagg+"


def test_a_roster_without_a_safe_threshold_discards_the_attempt():
    """4 clients against 2 corrupt ones with a dropout allowance: no safe and live t, so the
    round attempt is discarded with the reason and no session message is sent."""
    from fedfort.server.engine import RoundContext
    from fedfort.server.secure import SecureAggregate

    class Channel:
        def exchange(self, *args: object) -> dict[str, object]:
            raise AssertionError("no session may start")

    ids = ("a", "b", "c", "d")
    sealed = [
        ClientUpdate(1, c, np.empty(0, np.float32), 1, sealed=True)  # type: ignore[call-arg]
        for c in ids
    ]
    ctx = RoundContext(1, 1, np.zeros(3, np.float32), np.random.default_rng(0), ids, Channel())  # type: ignore[arg-type]
    ctx.accepted = sealed
    SecureAggregate("secagg", 3, run_id="r", directory=lambda: {}).run(ctx)
    assert ctx.discarded is not None and "no safe threshold for 4 clients" in ctx.discarded
