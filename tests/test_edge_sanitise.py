"""Sanitisation before local training: outliers and label noise, with and without the filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedfort.attacks.data_poisoning import LabelFlip
from fedfort.client.training import ClientData, LocalTrainer, evaluate_vector
from fedfort.data.datasets import Dataset, load_dataset
from fedfort.edge import EdgeConfig, Records, SanitiseConfig, protect, sanitise
from fedfort.edge.sanitise import confident_learning_flags, knn_label_flags, outlier_flags
from fedfort.errors import DatasetError
from fedfort.messages import LocalTrainingConfig, TrainTask
from fedfort.models import ModelSpec


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


def _corrupted(
    data: Dataset, n: int, noise: float, outliers: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A client's rows with fedfort's reverse label flip on a share and wild rows added."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(data.y_train.shape[0], n, replace=False)
    x, y = data.x_train[idx].copy(), data.y_train[idx].copy()
    noisy = rng.random(n) < noise
    _, y[noisy] = LabelFlip(mode="reverse").poison_data(x[noisy], y[noisy], 10, rng)
    wild = rng.choice(n, outliers, replace=False)
    x[wild] = rng.uniform(0, 8, size=(outliers, x.shape[1])).astype(np.float32)
    bad = np.zeros(n, dtype=bool)
    bad[wild] = True
    return x, y, noisy & ~bad, bad


def _local_accuracy(data: Dataset, x: np.ndarray, y: np.ndarray) -> float:
    """Mean test accuracy of a linear model the client trains on ``x, y`` (3 batch orders)."""
    torch.set_num_threads(1)  # as every fedfort runtime does; keeps the figures reproducible
    trainer = LocalTrainer.from_spec(ModelSpec("mlp", 64, 10, {"hidden": []}))
    start = trainer.bound.flatten()
    config = LocalTrainingConfig(epochs=40, batch_size=32, lr=0.2)
    test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    accuracies = []
    for seed in range(3):
        task = TrainTask(1, 0, "c", start, config, seed=seed)
        update = trainer.fit(task, ClientData.from_numpy(x, y))
        accuracies.append(evaluate_vector(trainer, start + update.delta, *test)["accuracy"])
    return float(np.mean(accuracies))


POLICY = SanitiseConfig(outliers="isolation_forest", contamination=0.04, label_noise="knn", k=5)


def _gap(data: Dataset, seed: int) -> tuple[float, float]:
    """Accuracy without and with sanitisation for a client whose records are corrupted."""
    x, y, noisy, wild = _corrupted(data, 600, noise=0.4, outliers=20, seed=seed)
    protected = protect(
        EdgeConfig(enabled=True, sanitise=POLICY), Records(x, y), num_classes=10, key=None
    )
    counts = protected.counts
    assert counts["outliers_flagged"] >= 20 and counts["label_issues_flagged"] > 100
    assert counts["rows_out"] == 600 - counts["rows_removed_sanitise"] == protected.x.shape[0]
    result = sanitise(x, y, POLICY, seed=0)
    assert result.keep[wild].sum() <= 2  # the wild rows are gone
    assert (~result.keep)[noisy].mean() > 0.6  # most flipped labels are gone
    return _local_accuracy(data, x, y), _local_accuracy(data, protected.x, protected.y)


def test_sanitisation_defends_a_client_against_its_own_corrupted_records(
    digits: Dataset,
) -> None:
    without, with_filter = _gap(digits, seed=0)
    assert with_filter >= without + 0.05, (without, with_filter)  # measured 0.634 -> 0.723


@pytest.mark.slow
def test_sanitisation_gain_holds_across_corruptions(digits: Dataset) -> None:
    gaps = [b - a for a, b in (_gap(digits, seed) for seed in range(1, 4))]
    assert min(gaps) > 0.04, gaps  # measured 0.071, 0.090, 0.104


def test_confident_learning_finds_flipped_labels() -> None:
    data = load_dataset("breast_cancer", seed=0)
    rng = np.random.default_rng(1)
    y = data.y_train.copy()
    flipped = rng.random(y.shape[0]) < 0.15
    y[flipped] = 1 - y[flipped]
    flags = confident_learning_flags(data.x_train, y, folds=3, seed=0)
    assert flags is not None
    precision = flipped[flags].mean()
    recall = flags[flipped].mean()
    assert precision > 0.75 and recall > 0.6, (precision, recall)  # measured 0.86, 0.75
    # a clean dataset has few label issues
    clean = confident_learning_flags(data.x_train, data.y_train, folds=3, seed=0)
    assert clean is not None and clean.mean() < 0.03  # measured 0.004


def test_filters_edge_cases() -> None:
    x = np.random.default_rng(0).normal(size=(50, 3))
    x[7] = [30.0, 0.0, 0.0]
    flags = outlier_flags(x, SanitiseConfig(outliers="robust_z", z_threshold=6.0), seed=0)
    assert flags.tolist().index(True) == 7 and flags.sum() == 1
    # a class with one row cannot be cross-validated: it is kept, not judged
    assert confident_learning_flags(x[:4], np.array([0, 0, 0, 1]), 5, 0) is None
    assert knn_label_flags(x[:3], np.array([0, 1, 0]), k=5) is None
    skipped = sanitise(x[:3], np.array([0, 1, 0]), SanitiseConfig(label_noise="knn"), 0)
    assert skipped.label_check_skipped and skipped.keep.all()
    flag_only = sanitise(
        x,
        np.zeros(50, dtype=np.int64),
        SanitiseConfig(outliers="robust_z", z_threshold=6.0, action="flag"),
        0,
    )
    assert flag_only.outliers_flagged == 1 and flag_only.keep.all()
    with pytest.raises(DatasetError, match="every row"):
        sanitise(
            x[:4],
            np.zeros(4, dtype=np.int64),
            SanitiseConfig(outliers="robust_z", z_threshold=1e-9),
            0,
        )
