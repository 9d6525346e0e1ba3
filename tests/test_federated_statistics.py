"""The statistics round of [data] standardize: through the runtime, over secure aggregation,
with DP noise when private, accounted, checked by the clients and kept across a resume."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedfort import Simulation
from fedfort.cli import main
from fedfort.client.client import FederatedClient
from fedfort.client.statistics import local_statistics, statistics_sensitivity
from fedfort.client.training import ClientData
from fedfort.config import RunConfig, parse_config
from fedfort.data.preprocessing import FeatureStatistics, Preprocessing
from fedfort.errors import ConfigError, PolicyRefused
from fedfort.messages import (
    FeatureTransform,
    LocalTrainingConfig,
    StatisticsReply,
    StatisticsRequest,
    TrainTask,
)
from fedfort.privacy.accounting import make_accountant
from fedfort.redteam.server_view import ServerView
from fedfort.run.preprocess import fit_preprocessing, transform_message
from fedfort.run.privacy import dp_plan, statistics_event
from fedfort.secagg.encoding import LIMB_BOUND, FixedPointCodec, join_limbs, split_limbs
from fedfort.secagg.messages import MaskedInput
from fedfort.secagg.policy import ClientPolicy
from hospitals import hospitals_toml, write_hospitals

#: three clients in one session: no dropout tolerance, so a safe threshold exists
SECURE = {"dropout_fraction": 0.0}


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hospitals")
    write_hospitals(root)
    return root


def config(root: Path, rounds: int = 1, **sections: dict[str, Any]) -> RunConfig:
    body = tomllib.loads(hospitals_toml(root, rounds=rounds))
    for name, values in sections.items():
        body[name] = {**body.get(name, {}), **values}
    return parse_config(body)


def pooled(sim: Simulation) -> Preprocessing:
    """The transform from every client's training rows in one place."""
    return fit_preprocessing(
        sim.config, [c.raw_data.x.numpy() for c in sim.clients.clients.values()]
    )


def own_statistics(sim: Simulation) -> dict[str, np.ndarray]:
    return {
        cid: FeatureStatistics.of(c.raw_data.x.numpy()).vector()
        for cid, c in sim.clients.clients.items()
    }


@pytest.mark.parametrize("mode", ["none", "secagg", "secagg+"])
def test_the_statistics_round_gives_the_pooled_transform(hospitals: Path, mode: str) -> None:
    cfg = config(hospitals, secure_aggregation={"mode": mode, **SECURE})
    with Simulation(cfg) as sim:
        view = ServerView.attach(sim)
        transform = sim.fit_preprocessing()
        reference = pooled(sim)
        assert transform is not None and transform is sim.preprocessing
        np.testing.assert_allclose(transform.shift, reference.shift, rtol=1e-12)
        np.testing.assert_allclose(transform.scale, reference.scale, rtol=1e-8)
        assert not np.allclose(reference.scale, 1.0), "the hospitals' features are not scaled"
        # every client trains on its rows through the same transform
        for client in sim.clients.clients.values():
            assert client.transform is None  # it arrives with the first task
        sim.run(rounds=1)
        for k, client in enumerate(sim.clients.clients.values()):
            expected = transform.apply(client.raw_data.x.numpy())
            np.testing.assert_array_equal(client.data.x.numpy(), expected)
            holdout = sim.data.client_test_arrays(k)
            assert client.holdout is not None and holdout is not None
            np.testing.assert_array_equal(client.holdout.x.numpy(), transform.apply(holdout[0]))
        asked = view.exchanged[(0, 1, 0)]
        assert set(asked) == set(sim.ids)


def test_without_secure_aggregation_the_server_sees_each_clients_statistics(
    hospitals: Path,
) -> None:
    with Simulation(config(hospitals)) as sim:
        view = ServerView.attach(sim)
        sim.fit_preprocessing()
        own = own_statistics(sim)
        assert set(view.statistics) == set(own)
        for cid, vector in own.items():
            np.testing.assert_array_equal(view.statistics[cid], vector)


def _arrays(message: object) -> list[np.ndarray]:
    if isinstance(message, np.ndarray):
        return [message]
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return [a for f in dataclasses.fields(message) for a in _arrays(getattr(message, f.name))]
    if isinstance(message, dict | tuple | list):
        items = message.values() if isinstance(message, dict) else message
        return [a for item in items for a in _arrays(item)]
    return []


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
def test_under_secure_aggregation_the_server_sees_only_masked_statistics(
    hospitals: Path, mode: str
) -> None:
    with Simulation(config(hospitals, secure_aggregation={"mode": mode, **SECURE})) as sim:
        view = ServerView.attach(sim)
        sim.fit_preprocessing()
        own = own_statistics(sim)
    assert view.statistics == {}
    first = view.exchanged[(0, 1, 0)]
    assert all(
        isinstance(r, StatisticsReply) and r.sealed and r.vector.size == 0 for r in first.values()
    )
    received = [a for replies in view.exchanged.values() for a in _arrays(replies)]
    masked = [
        r
        for replies in view.exchanged.values()
        for r in replies.values()
        if isinstance(r, MaskedInput)
    ]
    assert len(masked) == len(own)
    codec = FixedPointCodec(64, LIMB_BOUND, len(own))
    for vector in own.values():
        # no float array the server holds carries a client's statistics (or their limbs)
        for array in received:
            if array.dtype.kind == "f" and array.size:
                assert array.shape != vector.shape or not np.allclose(array, vector)
        # and no masked word is a client's encoded coarse limb (those encode exactly)
        d3 = vector.shape[0]
        coarse = codec.encode(split_limbs(vector))[:d3]
        for message in masked:
            words = _arrays(message)[0]
            assert np.mean(words[:d3] == coarse) < 0.1


def test_limbs_sum_exactly_through_the_64_bit_codec() -> None:
    rng = np.random.default_rng(0)
    inputs = [rng.normal(0, 1, 90) * 10.0 ** rng.integers(-6, 12, 90) for _ in range(5)]
    codec = FixedPointCodec(64, LIMB_BOUND, len(inputs))
    assert codec.scale == 4.0
    words = sum(codec.encode(split_limbs(v)).astype(np.uint64) for v in inputs)
    total = join_limbs(codec.decode(words, len(inputs)))
    exact = np.sum(inputs, axis=0)
    np.testing.assert_allclose(total, exact, rtol=1e-15, atol=len(inputs) * 2.0**-40)


def _client(x: np.ndarray, **kwargs: Any) -> FederatedClient:
    return FederatedClient(
        "c", ClientData.from_numpy(x.astype(np.float32), np.zeros(len(x), np.int64)), **kwargs
    )


def _task(transform: FeatureTransform) -> TrainTask:
    return TrainTask(
        1, 1, "c", np.zeros(3, np.float32), LocalTrainingConfig(), 0, transform=transform
    )


def _transform(d: int = 3, **changes: np.ndarray) -> FeatureTransform:
    base = {"fill": np.full(d, np.nan), "shift": np.zeros(d), "scale": np.ones(d)}
    return FeatureTransform(**{**base, **changes})


@pytest.mark.parametrize(
    "bad",
    [
        {"shift": np.array([0.0, np.nan, 0.0])},
        {"shift": np.array([0.0, np.inf, 0.0])},
        {"scale": np.array([1.0, 0.0, 1.0])},
        {"scale": np.array([1.0, -2.0, 1.0])},
        {"scale": np.array([1.0, np.inf, 1.0])},
        {"fill": np.array([np.inf, 0.0, 0.0])},
        {"shift": np.zeros(4)},
        {"scale": np.ones(2)},
    ],
)
def test_a_client_refuses_a_malformed_transform(bad: dict[str, np.ndarray]) -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    client = _client(x)
    with pytest.raises(PolicyRefused):
        client.training_task(_task(_transform(**bad)))
    assert client.transform is None
    np.testing.assert_array_equal(client.data.x.numpy(), x)


def test_a_client_applies_one_transform_and_refuses_another() -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    client = _client(x)
    first = _transform(shift=np.ones(3), scale=np.full(3, 2.0))
    client.training_task(_task(first))
    client.training_task(_task(first))  # the same transform again: applied once
    np.testing.assert_array_equal(client.data.x.numpy(), (x - 1.0) / 2.0)
    with pytest.raises(PolicyRefused, match="already applies"):
        client.training_task(_task(_transform(shift=np.zeros(3), scale=np.full(3, 2.0))))


def test_a_client_that_requires_secure_aggregation_keeps_its_statistics() -> None:
    client = _client(np.ones((4, 3)), secure_policy=ClientPolicy(required_mode="secagg"))
    request = StatisticsRequest(0, 1, "run", b"n" * 16, 3)
    with pytest.raises(PolicyRefused, match="requires secagg"):
        client.answer_statistics(request, {})


def test_dp_statistics_clip_rescale_and_cap_each_client() -> None:
    x = np.array([[-10.0, 0.5], [3.0, np.nan], [1.0, 2.0], [0.0, -1.0]])
    request = StatisticsRequest(
        0,
        1,
        "run",
        b"n" * 16,
        2,
        lower=np.array([-2.0, -1.0]),
        upper=np.array([2.0, 1.0]),
        max_count=2.0,
    )
    vector = local_statistics(x, request)
    rescaled = np.array([[-1.0, 0.5], [1.0, np.nan], [0.5, 1.0], [0.0, -1.0]])
    expected = FeatureStatistics.of(rescaled).vector() * 0.5  # 4 rows capped at 2
    np.testing.assert_allclose(vector, expected)
    assert np.linalg.norm(vector) <= statistics_sensitivity(2, 2.0)


def _private(root: Path, z: float, **data: Any) -> RunConfig:
    return config(
        root,
        rounds=2,
        privacy={"mode": "central", "noise_multiplier": z, "clip_norm": 1.0},
        data={"value_bound": 5000.0, "count_bound": 200, **data},
    )


def test_private_statistics_are_noisy_close_and_accounted(hospitals: Path) -> None:
    z = 1e-4
    with Simulation(_private(hospitals, z)) as sim:
        result = sim.run()
        reference = pooled(sim)
        transform = sim.preprocessing
        ledger = sim.privacy_ledger
    assert transform is not None and ledger is not None
    assert not np.array_equal(transform.shift, reference.shift), "the release carries noise"
    # the noise on the rescaled sums is z * count_bound * sqrt(3 d); a mean moves by about
    # that over the ~430 rows, times the half-range 5000 (8 standard deviations of room)
    d = reference.shift.shape[0]
    std = z * statistics_sensitivity(d, 200.0)
    tolerance = 8 * 5000.0 * std * 2 / 400
    assert np.max(np.abs(transform.shift - reference.shift)) < tolerance
    # one more Gaussian release at the run's multiplier, in the run's reported epsilon
    rounds_only = make_accountant("rdp").epsilon(1e-5, [(dp_plan(sim.config, z).round_event(), 2)])
    with_statistics = make_accountant("rdp").epsilon(
        1e-5, [(statistics_event(z), 1), (dp_plan(sim.config, z).round_event(), 2)]
    )
    assert ledger.before_rounds == [(statistics_event(z), 1)]
    reported = result.records[-1]["measurements"]["privacy"]["epsilon"]
    assert reported == pytest.approx(with_statistics) and reported > rounds_only * 1.2


def test_calibration_leaves_room_for_the_statistics_release(hospitals: Path) -> None:
    body = {"mode": "central", "target_epsilon": 3.0, "clip_norm": 1.0}
    cfg = config(
        hospitals, rounds=2, privacy=body, data={"value_bound": 5000.0, "count_bound": 200}
    )
    with Simulation(cfg) as sim:
        result = sim.run()
    assert result.stopped is None and len(result.records) == 2
    privacy = result.records[-1]["measurements"]["privacy"]
    assert 2.9 < privacy["epsilon"] <= 3.0


def test_private_statistics_need_a_declared_range_and_count_bound(hospitals: Path) -> None:
    with pytest.raises(ConfigError, match="value_bound"):
        config(hospitals, privacy={"mode": "central", "noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match="count_bound"):
        config(
            hospitals,
            privacy={"mode": "central", "noise_multiplier": 1.0},
            data={"value_bound": 1.0},
        )
    with pytest.raises(ConfigError, match="CKKS"):
        config(hospitals, secure_aggregation={"mode": "ckks"})


def test_a_resume_keeps_the_transform_and_its_audit_record(
    hospitals: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    with Simulation(_private(hospitals, 0.5), out) as sim:
        sim.run(rounds=1)
        first = sim.preprocessing
        spent = sim.privacy_ledger.spent() if sim.privacy_ledger else None
    assert first is not None and spent is not None

    def refit(*args: object, **kwargs: object) -> None:
        raise AssertionError("a resume must not run the statistics round again")

    monkeypatch.setattr("fedfort.run.federation.fit_transform", refit)
    with Simulation.resume(out, rounds=2) as again:
        assert again.preprocessing is not None
        np.testing.assert_array_equal(again.preprocessing.shift, first.shift)
        np.testing.assert_array_equal(again.preprocessing.scale, first.scale)
        assert again.privacy_ledger is not None
        assert again.privacy_ledger.spent() == pytest.approx(spent)
        again.run()
        for client in again.clients.clients.values():
            np.testing.assert_array_equal(
                client.data.x.numpy(), first.apply(client.raw_data.x.numpy())
            )
    with sqlite3.connect(out / "audit.sqlite") as db:
        rows = [
            (kind, json.loads(body)) for kind, body in db.execute("SELECT kind, body FROM entries")
        ]
    recorded = [body for kind, body in rows if kind == "feature_statistics"]
    assert len(recorded) == 1
    assert recorded[0]["sha256"] == transform_message(first).digest()
    assert recorded[0]["privacy"]["event"]["noise_multiplier"] == 0.5


def test_privacy_plan_shows_the_statistics_release(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["privacy", "plan", "--epsilon", "3", "--rounds", "20"]
    assert main(argv) == 0
    plain = capsys.readouterr().out
    assert main([*argv, "--statistics"]) == 0
    shown = capsys.readouterr().out
    assert "statistics" in shown
    z_plain = float(plain.split("noise multiplier ")[1].split()[0])
    z_stats = float(shown.split("noise multiplier ")[1].split()[0])
    assert z_stats > z_plain
    assert math.isfinite(z_stats)


def test_the_statistics_record_is_signed_in_the_checkpoint(hospitals: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with Simulation(config(hospitals, secure_aggregation={"mode": "secagg", **SECURE}), out) as sim:
        transform = sim.fit_preprocessing()
        assert sim.store is not None
        record = json.loads(sim.store.verified_meta("feature_statistics"))
    assert transform is not None
    assert record["secure_aggregation"] == "secagg" and record["clients"] == 3
    assert Preprocessing.from_dict(record["transform"]).shift.tolist() == transform.shift.tolist()


@pytest.mark.parametrize(
    ("privacy", "secure"),
    [
        ({"mode": "distributed", "noise_multiplier": 1e-4}, "secagg"),
        ({"mode": "distributed", "noise_multiplier": 1e-4}, "none"),
        ({"mode": "central", "noise_multiplier": 1e-4}, "secagg+"),
        # local noise is sized for each client's vector alone: far from the pooled values
        ({"mode": "local", "local_epsilon": 50.0}, "none"),
    ],
)
def test_every_placement_noises_the_statistics_once(
    hospitals: Path, privacy: dict[str, Any], secure: str
) -> None:
    """Distributed: each client adds its share (into the masked sum under SecAgg); central:
    the server adds the noise to the secure sum; local: each client's vector is noised alone."""
    cfg = config(
        hospitals,
        privacy={**privacy, "clip_norm": 1.0},
        data={"value_bound": 5000.0, "count_bound": 200},
        secure_aggregation={"mode": secure, **SECURE},
    )
    with Simulation(cfg) as sim:
        view = ServerView.attach(sim)
        transform = sim.fit_preprocessing()
        reference = pooled(sim)
        own = own_statistics(sim)
        ledger = sim.privacy_ledger
    assert transform is not None and ledger is not None
    assert len(ledger.before_rounds) == 1
    assert not np.array_equal(transform.shift, reference.shift)
    assert np.isfinite(transform.shift).all() and (transform.scale > 0).all()
    if privacy["mode"] != "local":
        np.testing.assert_allclose(transform.shift, reference.shift, rtol=0, atol=500.0)
    seen = view.statistics
    if secure != "none":
        assert seen == {}
    else:  # the clients' vectors arrive noised (and rescaled), never as they are
        assert set(seen) == set(own)
        assert all(not np.allclose(seen[c], own[c]) for c in own)


def test_a_client_with_a_budget_accounts_its_statistics_and_refuses_them_without_noise() -> None:
    from fedfort.client.policy import ClientPrivacyPolicy

    client = _client(np.ones((4, 3)), policy=ClientPrivacyPolicy(max_total_epsilon=1e6))
    bare = StatisticsRequest(0, 1, "run", b"n" * 16, 3)
    with pytest.raises(PolicyRefused, match="no noise"):
        client.answer_statistics(bare, {})
    bounded = dataclasses.replace(
        bare, lower=np.full(3, -2.0), upper=np.full(3, 2.0), max_count=4.0, noise_std=50.0
    )
    reply = client.answer_statistics(bounded, {})
    assert reply.vector.shape == (9,) and not reply.sealed
    assert len(client.ledger.releases) == 1 and 0 < client.ledger.spent() < 1e6
