"""The attacks do what their papers say, on small matrices where the answer is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import norm

from fedfort.attacks import (
    ALIE,
    IPM,
    AdversarialClient,
    AttackView,
    Backdoor,
    Coalition,
    FreeRider,
    GaussianNoise,
    LabelFlip,
    MinMax,
    MinSum,
    SignFlip,
    StaleReplay,
    Trigger,
    alie_z,
    choose_malicious,
    security_summary,
)
from fedfort.client import ClientData, FederatedClient, LocalTrainer
from fedfort.config import parse_config
from fedfort.errors import ConfigError
from fedfort.messages import ClientUpdate, LocalTrainingConfig, TrainTask
from fedfort.models import ModelSpec


def _view(own: np.ndarray, observed: np.ndarray | None = None, **kw: object) -> AttackView:
    fields = {
        "round": 1,
        "model": np.ones(own.shape[1], dtype=np.float32),
        "client_ids": tuple(f"m{i}" for i in range(own.shape[0])),
        "own": own.astype(np.float32),
        "num_samples": np.ones(own.shape[0]),
        "observed": (own if observed is None else observed).astype(np.float32),
        "num_selected": 20,
        "num_malicious": own.shape[0],
        "rng": np.random.default_rng(0),
    }
    fields.update(kw)
    return AttackView(**fields)  # type: ignore[arg-type]


def _benign(n: int = 16, d: int = 50, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0.5, 1.0, size=(n, d))).astype(np.float32)


def test_label_flip_modes() -> None:
    x = np.zeros((6, 2), dtype=np.float32)
    y = np.array([0, 1, 2, 1, 3, 9])
    rng = np.random.default_rng(0)
    _, targeted = LabelFlip("targeted", source=1, target=7).poison_data(x, y, 10, rng)
    np.testing.assert_array_equal(targeted, [0, 7, 2, 7, 3, 9])
    _, one = LabelFlip("all_to_one", target=4).poison_data(x, y, 10, rng)
    np.testing.assert_array_equal(one, [4] * 6)
    _, rev = LabelFlip("reverse").poison_data(x, y, 10, rng)
    np.testing.assert_array_equal(rev, [9, 8, 7, 8, 6, 0])
    with pytest.raises(ConfigError, match="not a class"):
        LabelFlip("targeted", source=1, target=12).poison_data(x, y, 10, rng)
    with pytest.raises(ConfigError, match="source != target"):
        LabelFlip("targeted", source=3, target=3)


def test_trigger_stamps_a_square_in_the_chosen_corner() -> None:
    np.testing.assert_array_equal(Trigger(2, image_shape=(4, 4)).indices(16), [0, 1, 4, 5])
    np.testing.assert_array_equal(
        Trigger(2, image_shape=(4, 4), corner="bottom_right").indices(16), [10, 11, 14, 15]
    )
    np.testing.assert_array_equal(Trigger(2).indices(10), [6, 7, 8, 9])  # tabular: last 4
    x = np.zeros((3, 16), dtype=np.float32)
    stamped = Trigger(2, value=0.5, image_shape=(4, 4)).apply(x)
    assert stamped[:, [0, 1, 4, 5]].tolist() == [[0.5] * 4] * 3
    assert stamped.sum() == pytest.approx(3 * 4 * 0.5) and x.sum() == 0  # input untouched
    with pytest.raises(ConfigError, match="does not fit"):
        Trigger(5, image_shape=(4, 4)).indices(16)


def test_backdoor_poisons_the_chosen_share_and_scales_its_update() -> None:
    attack = Backdoor(Trigger(2, image_shape=(4, 4)), target=3, poison_fraction=0.5, boost=4.0)
    x = np.zeros((10, 16), dtype=np.float32)
    y = np.arange(10) % 3
    px, py = attack.poison_data(x, y, 10, np.random.default_rng(0))
    stamped = px[:, 0] == 1.0
    assert stamped.sum() == 5 and (py[stamped] == 3).all()
    np.testing.assert_array_equal(py[~stamped], y[~stamped])
    own = np.full((2, 4), 0.5, dtype=np.float32)
    np.testing.assert_allclose(attack.craft(_view(own)), own * 4)
    bounded = Backdoor(Trigger(2), boost=4.0, norm_bound=1.5).craft(_view(own))
    np.testing.assert_allclose(np.linalg.norm(bounded, axis=1), [1.5, 1.5], rtol=1e-6)

    task = TrainTask(1, 1, "c", np.zeros(3, np.float32), LocalTrainingConfig(epochs=1), seed=0)
    adjusted = Backdoor(Trigger(2), proximal_mu=0.2, epochs=5).adjust_task(task)
    assert adjusted.config.algorithm == "fedprox" and adjusted.config.mu == 0.2
    assert adjusted.config.epochs == 5 and task.config.epochs == 1


def test_sign_flip_noise_and_free_rider() -> None:
    own = _benign(3, 8)
    np.testing.assert_allclose(SignFlip(10).craft(_view(own)), -10 * own)
    noise = GaussianNoise(2.0).craft(_view(np.zeros((4, 5000), np.float32)))
    assert noise.std() == pytest.approx(2.0, rel=0.05)
    model = np.full(5000, 3.0, dtype=np.float32)  # RMS 3
    rel = GaussianNoise(2.0, relative=True).craft(
        _view(np.zeros((4, 5000), np.float32), model=model)
    )
    assert rel.std() == pytest.approx(6.0, rel=0.05)
    assert not FreeRider("zero").craft(_view(own)).any()
    assert FreeRider("noise", sigma=1e-3).craft(_view(own)).std() < 2e-3


def test_alie_uses_the_papers_z_and_the_observed_statistics() -> None:
    # n = 20, m = 4: s = floor(20/2 + 1) - 4 = 7, z = Phi^-1(13 / 20)
    assert alie_z(20, 4) == pytest.approx(norm.ppf(0.65))
    assert alie_z(20, 4) == pytest.approx(0.3853, abs=1e-4)
    benign = _benign()
    own = _benign(4, seed=9)
    crafted = ALIE().craft(_view(own, benign))
    expected = benign.astype(np.float64).mean(0) - norm.ppf(0.65) * benign.std(0)
    np.testing.assert_allclose(crafted, np.broadcast_to(expected, own.shape), rtol=1e-5)
    strong = ALIE(z=1.5).craft(_view(own, benign))
    np.testing.assert_allclose(strong[0], benign.mean(0) - 1.5 * benign.std(0), rtol=1e-4)


def test_ipm_sends_the_negated_scaled_mean() -> None:
    benign = _benign()
    crafted = IPM(0.5).craft(_view(_benign(3), benign))
    np.testing.assert_allclose(crafted[2], -0.5 * benign.mean(0), rtol=1e-5)


@pytest.mark.parametrize("perturbation", ["unit_vec", "std", "sign"])
def test_min_max_finds_the_largest_gamma_inside_the_benign_spread(perturbation: str) -> None:
    benign = _benign().astype(np.float64)
    attack = MinMax(perturbation)  # type: ignore[arg-type]
    crafted = attack.craft(_view(_benign(4), benign)).astype(np.float64)
    pair = np.linalg.norm(benign[:, None] - benign[None], axis=-1).max()
    dist = np.linalg.norm(benign - crafted[0], axis=1).max()
    assert dist <= pair * (1 + 1e-5)
    assert attack.last_gamma is not None and attack.last_gamma > 0.1
    # a slightly larger gamma would leave the benign spread: the search is tight
    mean = benign.mean(0)
    direction = (crafted[0] - mean) / attack.last_gamma
    beyond = mean + (attack.last_gamma * 1.01) * direction
    assert np.linalg.norm(benign - beyond, axis=1).max() > pair
    assert (crafted == crafted[0]).all()


def test_min_sum_keeps_the_summed_distance_within_the_worst_benign_one() -> None:
    benign = _benign().astype(np.float64)
    attack = MinSum()
    crafted = attack.craft(_view(_benign(4), benign)).astype(np.float64)
    worst = (np.linalg.norm(benign[:, None] - benign[None], axis=-1) ** 2).sum(1).max()
    assert (np.linalg.norm(benign - crafted[0], axis=1) ** 2).sum() <= worst * (1 + 1e-5)
    assert attack.last_gamma is not None and attack.last_gamma > 0.1


def test_stale_replay_resends_the_first_update_and_checkpoints_it() -> None:
    attack = StaleReplay()
    first = _benign(2, 6, seed=1)
    later = _benign(2, 6, seed=2)
    np.testing.assert_array_equal(attack.craft(_view(first)), first)
    np.testing.assert_array_equal(attack.craft(_view(later, round=5)), first)
    restored = StaleReplay()
    restored.load_state_dict(attack.state_dict())
    np.testing.assert_array_equal(restored.craft(_view(later)), first)


def _update(cid: str, delta: np.ndarray, round_: int = 1) -> ClientUpdate:
    return ClientUpdate(round_, cid, delta.astype(np.float32), num_samples=10)


def _tasks(ids: list[str], round_: int = 1) -> list[TrainTask]:
    weights = np.zeros(4, dtype=np.float32)
    return [TrainTask(round_, 1, c, weights, LocalTrainingConfig(), seed=0) for c in ids]


def test_coalition_sees_honest_updates_only_when_omniscient() -> None:
    rng = np.random.default_rng(3)
    honest = {f"h{i}": rng.normal(size=4) for i in range(6)}
    bad = {"m0": rng.normal(size=4) + 5, "m1": rng.normal(size=4) - 5}
    received = [_update(c, v) for c, v in {**honest, **bad}.items()]
    tasks = _tasks(list(honest) + list(bad))
    h = np.stack(list(honest.values()))
    z = alie_z(8, 2)

    omniscient = Coalition(ALIE(), ["m0", "m1"], omniscient=True).craft(tasks, received)
    np.testing.assert_allclose(omniscient[-1].delta, h.mean(0) - z * h.std(0), rtol=1e-5)
    for before, after in zip(received[:6], omniscient[:6], strict=True):
        assert after is before  # honest updates are never touched

    own = np.stack(list(bad.values()))
    blind = Coalition(ALIE(), ["m0", "m1"], omniscient=False).craft(tasks, received)
    np.testing.assert_allclose(blind[-1].delta, own.mean(0) - z * own.std(0), rtol=1e-5)

    alone = Coalition(ALIE(), ["m0", "m1"], colluding=False, omniscient=False)
    for update, original in zip(alone.craft(tasks, received)[6:], bad.values(), strict=True):
        np.testing.assert_allclose(update.delta, original, rtol=1e-5)  # std of one is zero

    late = Coalition(SignFlip(2), ["m0"], start_round=3)
    assert late.craft(tasks, received) == received
    flipped = late.craft(_tasks(list(honest) + list(bad), round_=3), received)
    np.testing.assert_allclose(flipped[6].delta, -2 * bad["m0"], rtol=1e-6)


def test_malicious_clients_are_a_seeded_share() -> None:
    ids = [f"c{i}" for i in range(20)]
    chosen = choose_malicious(ids, 0.2, seed=4)
    assert len(chosen) == 4 and chosen == choose_malicious(ids, 0.2, seed=4)
    assert chosen != choose_malicious(ids, 0.2, seed=5)
    assert choose_malicious(ids, 0.0, seed=4) == []
    assert len(choose_malicious(ids, 0.01, seed=4)) == 1


def test_a_standalone_adversarial_client_wraps_an_honest_one() -> None:
    rng = np.random.default_rng(0)
    data = ClientData.from_numpy(
        rng.normal(size=(30, 6)).astype(np.float32), rng.integers(0, 3, 30)
    )
    trainer = LocalTrainer(ModelSpec("logreg", 6, 3).build(seed=0))
    honest = FederatedClient("c0", data)
    task = TrainTask(1, 1, "c0", trainer.bound.flatten(), LocalTrainingConfig(), seed=7)
    reference = honest.handle(task, trainer)
    evil = AdversarialClient(honest, SignFlip(3.0), num_classes=3)
    answer = evil.handle(task, trainer)
    np.testing.assert_allclose(answer.delta, -3.0 * reference.delta, rtol=1e-5)
    assert answer.num_samples == reference.num_samples


def test_attack_config_is_checked_per_attack() -> None:
    cfg = parse_config({"attack": {"name": "min_max", "perturbation": "std"}})
    assert cfg.attack.name == "min_max"
    with pytest.raises(ConfigError, match=r"attack\.sign_flip\.sigma"):
        parse_config({"attack": {"name": "sign_flip", "sigma": 2.0}})
    with pytest.raises(ConfigError, match="attack"):
        parse_config({"attack": {"name": "teleport"}})
    with pytest.raises(ConfigError, match="fraction"):
        parse_config({"attack": {"name": "sign_flip", "fraction": 1.0}})
    assert parse_config({}).attack.name == "none"


def test_security_summary_counts_detection_and_quarantine() -> None:
    def record(round_: int, flagged: list[str], quarantined: list[str]) -> dict[str, object]:
        scores = dict.fromkeys(["m0", "m1", "h0", "h1", "h2"], 0.0)
        return {
            "round": round_,
            "measurements": {
                "detect": {"flagged": flagged, "scores": scores},
                "reputation": {"quarantined": quarantined},
                "evaluate": {"backdoor_asr": 0.1 * round_},
            },
        }

    records = [
        record(1, ["m0", "h0"], []),
        record(2, ["m0", "m1"], ["m0"]),
        record(3, [], ["m0", "m1", "h2"]),
    ]
    summary = security_summary(records, ["m0", "m1"])
    # TP = 3 (m0, m0, m1), FP = 1 (h0), FN = 1 (m1 in round 1) + 2 (round 3)
    assert summary["detection_precision"] == pytest.approx(3 / 4)
    assert summary["detection_recall"] == pytest.approx(3 / 6)
    assert summary["malicious_quarantined"] == 2
    assert summary["first_quarantine_round"] == 3
    assert summary["honest_quarantined_at_end"] == 1
    assert summary["backdoor_asr"] == pytest.approx(0.3)
    plain = security_summary([{"round": 1, "measurements": {}}], ["m0"])
    assert plain["detection_precision"] is None and plain["malicious_quarantined"] is None


def test_attack_objects_survive_pickling_for_worker_processes() -> None:
    import pickle

    attack = Backdoor(Trigger(3, image_shape=(8, 8)), target=2, boost=3.0)
    clone = pickle.loads(pickle.dumps(attack))
    assert dataclasses.asdict(clone.trigger) == dataclasses.asdict(attack.trigger)
    assert clone.boost == 3.0
