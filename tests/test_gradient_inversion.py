"""Gradient inversion: label recovery, the attacks on one update, scores and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import nn
from torch.nn import functional as F  # noqa: N812

from fedfort.attacks.inference import (
    DLG,
    IDLG,
    InvertingGradients,
    recover_labels,
    target_from_update,
)
from fedfort.attacks.inference.image_quality import label_accuracy, mse, psnr, ssim
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.data.datasets import load_dataset
from fedfort.errors import ConfigError, FedfortError, InvalidUpdate
from fedfort.messages import LocalTrainingConfig, TrainTask
from fedfort.models import ModelSpec
from fedfort.params import ParamSpec
from fedfort.redteam.privacy_inversion import InversionExperiment, evaluate_inversion_defences

LR = 0.1


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _update(model: nn.Module, x: np.ndarray, y: int, steps: int = 1) -> np.ndarray:
    """A real client's update: ``steps`` SGD steps of batch 1 on one image from ``model``."""
    trainer = LocalTrainer(model)
    weights = trainer.spec.flatten(model)
    task = TrainTask(0, 0, "c", weights, LocalTrainingConfig(epochs=steps, batch_size=1, lr=LR), 0)
    delta = trainer.fit(task, ClientData.from_numpy(x[None], np.array([y]))).delta
    trainer.bound.load(weights)  # back to the global weights the server holds
    return delta


def _mlp(seed: int) -> nn.Module:
    return ModelSpec("mlp", 64, 10, {"hidden": [64]}).build(seed=seed)


def _target(model: nn.Module, update: np.ndarray, steps: int = 1):
    return target_from_update(
        model,
        update,
        lr=LR,
        local_steps=steps,
        input_shape=(64,),
        num_classes=10,
        image_shape=(8, 8),
    )


# -- label recovery (iDLG) --


@pytest.mark.parametrize("name", ["mlp", "logreg"])
def test_idlg_recovers_the_label_from_the_last_layer(digits, name):
    options = {"hidden": [64]} if name == "mlp" else {}
    recovered, truth = [], []
    for i in range(10):
        model = ModelSpec(name, 64, 10, options).build(seed=i)
        update = _update(model, digits.x_train[i], int(digits.y_train[i]))
        recovered.append(int(recover_labels(_target(model, update))[0]))
        truth.append(int(digits.y_train[i]))
    assert recovered == truth


def test_label_recovery_without_a_bias_reads_the_weight_rows(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10, bias=False))
    for i in range(5):
        update = _update(model, digits.x_train[i], int(digits.y_train[i]))
        assert int(recover_labels(_target(model, update))[0]) == digits.y_train[i]


def test_label_recovery_refuses_a_model_without_a_class_layer(digits):
    model = nn.Sequential(nn.Linear(64, 10), nn.Linear(10, 1))
    target = target_from_update(
        model,
        np.zeros(ParamSpec.from_module(model).dim, np.float32),
        lr=LR,
        input_shape=(64,),
        num_classes=10,
    )
    with pytest.raises(ConfigError, match="final linear layer"):
        recover_labels(target)


# -- the observed update --


def test_one_step_update_over_lr_is_the_gradient(digits):
    model = _mlp(3)
    x, y = digits.x_train[3], int(digits.y_train[3])
    update = _update(model, x, y)
    target = _target(model, update)
    loss = F.cross_entropy(model(torch.from_numpy(x[None])), torch.tensor([y]))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for observed, true in zip(target.gradients, grads, strict=True):
        torch.testing.assert_close(observed, true, rtol=1e-3, atol=1e-6)


def test_bad_updates_raise_clear_errors(digits):
    model = _mlp(0)
    dim = ParamSpec.from_module(model).dim
    with pytest.raises(InvalidUpdate, match="bad_shape") as short:
        _target(model, np.zeros(dim - 1, np.float32))
    assert short.value.reason == "bad_shape" and isinstance(short.value, FedfortError)
    with pytest.raises(InvalidUpdate, match="bad_shape"):
        _target(model, np.zeros((1, dim), np.float32))
    bad = np.zeros(dim, np.float32)
    bad[5] = np.nan
    with pytest.raises(InvalidUpdate, match="non_finite"):
        _target(model, bad)
    with pytest.raises(ConfigError, match="learning rate"):
        target_from_update(
            model, np.zeros(dim, np.float32), lr=0.0, input_shape=(64,), num_classes=10
        )
    with pytest.raises(ConfigError, match="local_steps"):
        _target(model, np.zeros(dim, np.float32), steps=0)
    with pytest.raises(ConfigError, match="image_shape"):
        target_from_update(
            model,
            np.zeros(dim, np.float32),
            lr=LR,
            input_shape=(64,),
            num_classes=10,
            image_shape=(7, 7),
        )


def test_attack_settings_are_checked():
    with pytest.raises(ConfigError):
        DLG(iterations=0)
    with pytest.raises(ConfigError):
        InvertingGradients(lr=-1.0)
    with pytest.raises(ConfigError):
        InvertingGradients(tv_weight=float("nan"))
    with pytest.raises(ConfigError, match="batch_size"):
        IDLG().invert(_target(_mlp(0), np.zeros(4810, np.float32) + 1e-3), batch_size=0)


# -- the attacks --


def test_idlg_and_dlg_rebuild_one_image_from_one_sgd_step(digits):
    model = _mlp(1)
    x, y = digits.x_train[1], int(digits.y_train[1])
    target = _target(model, _update(model, x, y))
    truth = x.reshape(1, 8, 8)
    exact = IDLG(iterations=100, seed=1).invert(target)
    assert psnr(truth, exact.images.reshape(1, 8, 8))[0] >= 40.0  # essentially exact
    for attack in (IDLG(iterations=100, seed=1), DLG(iterations=100, seed=1)):
        result = attack.invert(target)
        assert result.images.shape == (1, 64) and result.labels.tolist() == [y]
        assert 0 < result.iterations <= 100 and math.isfinite(result.loss)
        rebuilt = result.images.reshape(1, 8, 8)
        assert psnr(truth, rebuilt)[0] >= 25.0 or ssim(truth, rebuilt)[0] >= 0.8
        # the starting point was noise: it scores nowhere near the reconstruction
        assert ssim(truth, result.initial.reshape(1, 8, 8))[0] < 0.3


def test_inverting_gradients_ignores_the_update_scale(digits):
    model = _mlp(2)
    x, y = digits.x_train[2], int(digits.y_train[2])
    attack = InvertingGradients(iterations=200, restarts=1, seed=2)
    rescaled = attack.invert(_target(model, _update(model, x, y) * 0.01))  # as clipping does
    assert ssim(x.reshape(1, 8, 8), rescaled.images.reshape(1, 8, 8))[0] >= 0.9
    assert rescaled.iterations == 200 and rescaled.labels.tolist() == [y]


def test_a_few_local_steps_still_identify_the_image(digits):
    model = _mlp(3)
    x, y = digits.x_train[3], int(digits.y_train[3])
    attack = InvertingGradients(iterations=200, restarts=1, seed=3)
    result = attack.invert(_target(model, _update(model, x, y, steps=5), steps=5))
    image = result.images.reshape(8, 8)
    held_out = digits.x_test[:200].reshape(-1, 8, 8)
    closest_other = ssim(held_out, np.broadcast_to(image, held_out.shape)).max()
    own = ssim(x.reshape(8, 8), image)[0]
    # closer to the client's own digit than to any of 200 digits it never saw
    assert own >= 0.7 and own > closest_other
    assert result.labels.tolist() == [y]


def test_attacks_are_deterministic_for_a_seed(digits):
    model = _mlp(4)
    target = _target(model, _update(model, digits.x_train[4], int(digits.y_train[4])))
    a = InvertingGradients(iterations=30, restarts=2, seed=7).invert(target)
    b = InvertingGradients(iterations=30, restarts=2, seed=7).invert(target)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.loss == b.loss


# -- image quality --


def test_identical_images_score_perfectly():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 8, 8))
    assert np.all(mse(images, images) == 0)
    assert np.all(np.isinf(psnr(images, images)))
    np.testing.assert_allclose(ssim(images, images), 1.0)


def test_metrics_on_known_pairs():
    black = np.zeros((8, 8))
    grey = np.full((8, 8), 0.5)
    assert mse(black, grey)[0] == pytest.approx(0.25)
    assert psnr(black, grey)[0] == pytest.approx(10 * math.log10(4))
    assert psnr(black, np.full((8, 8), 0.1))[0] == pytest.approx(20.0)
    # out-of-range reconstructions are clipped to the data range before scoring
    assert mse(black, np.full((8, 8), -3.0))[0] == 0.0
    assert label_accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75


def test_batched_ssim_matches_scikit_image_per_image():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (5, 8, 8))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    batch = ssim(a, b)
    single = [structural_similarity(a[i], b[i], win_size=3, data_range=1.0) for i in range(5)]
    np.testing.assert_allclose(batch, single, rtol=1e-10)
    assert np.all(batch < 1.0)


def test_metric_inputs_are_checked():
    with pytest.raises(ConfigError, match="same shape"):
        mse(np.zeros((8, 8)), np.zeros((8, 7)))
    with pytest.raises(ConfigError, match="win_size"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), win_size=9)
    with pytest.raises(ConfigError, match="win_size"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), win_size=4)
    with pytest.raises(ConfigError, match="NaN"):
        psnr(np.zeros((8, 8)), np.full((8, 8), np.nan))
    with pytest.raises(ConfigError, match="data_range"):
        psnr(np.zeros((8, 8)), np.zeros((8, 8)), data_range=0.0)
    with pytest.raises(ConfigError):
        label_accuracy(np.array([1]), np.array([1, 2]))


# -- the defence evaluation, one trial --


def test_one_trial_leaks_without_defence_and_not_under_local_dp():
    exp = InversionExperiment(
        trials=1,
        defences=("none", "local_dp", "central_dp"),
        local_epsilons=(8.0,),
        attacks=("idlg", "inverting_gradients"),
        adam_iterations=100,
    )
    report = evaluate_inversion_defences(exp)
    (none,) = report.rows_for("none")
    (local,) = report.rows_for("local_dp")
    (central,) = report.rows_for("central_dp")
    assert none.leak_count == 1 and none.trials[0].psnr >= 25.0
    assert local.leak_count == 0 and local.trials[0].ssim <= 0.2
    assert local.epsilon is not None and 7.0 < local.epsilon <= 8.0
    assert local.trials[0].true_image.shape == (8, 8)
    assert set(local.trials[0].per_attack) == {"idlg", "inverting_gradients"}
    assert not central.applicable and not central.trials
    assert "sees the update before it adds noise" in central.note
    encoded = json.loads(json.dumps(report.to_json()))
    assert [r["defence"] for r in encoded["rows"]] == ["none", "local_dp", "central_dp"]
    assert encoded["rows"][2]["applicable"] is False and encoded["rows"][2]["trials"] == []
    assert len(encoded["rows"][1]["trials"][0]["reconstruction"]) == 8
    assert encoded["rows"][1]["epsilon"] == pytest.approx(local.epsilon, abs=1e-4)


def test_experiment_settings_are_checked():
    with pytest.raises(ConfigError, match="defences"):
        InversionExperiment(defences=("firewall",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="attacks"):
        InversionExperiment(attacks=("guess",))
    with pytest.raises(ConfigError, match="trials"):
        InversionExperiment(trials=0)
    with pytest.raises(ConfigError, match="epsilon"):
        InversionExperiment(local_epsilons=(0.0,))
    with pytest.raises(ConfigError, match="at least 2"):
        InversionExperiment(distributed_clients=1)
    with pytest.raises(ConfigError, match="at least 3"):
        InversionExperiment(secure_clients=2)
