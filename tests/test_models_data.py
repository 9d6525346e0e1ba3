"""Tests for fedfort.models, fedfort.data.datasets and fedfort.data.partition."""

import numpy as np
import pytest
import torch
from torch import nn

from fedfort import models
from fedfort.data import load_dataset, partition_dataset
from fedfort.data.datasets import available_datasets
from fedfort.data.partition import available_partitions
from fedfort.errors import ConfigError, DatasetError
from fedfort.models import (
    MLP,
    LogisticRegression,
    ModelSpec,
    SmallCNN,
    available_models,
    build_model,
    register_model,
)

# --------------------------------------------------------------------------------------------
# models


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a, b):
    sa, sb = _state(a), _state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("name", "cls"), [("logreg", LogisticRegression), ("mlp", MLP), ("cnn", SmallCNN)]
)
def test_build_model_by_name_is_seeded(name, cls):
    spec = ModelSpec(name, 64, 10)
    a = build_model(spec, seed=3)
    b = build_model(spec, seed=3)
    c = build_model(spec, seed=4)
    assert type(a) is cls
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
    # ModelSpec.build is the same recipe.
    assert _same_weights(spec.build(seed=3), a)


def test_build_model_does_not_disturb_global_rng():
    torch.manual_seed(1234)
    expected = torch.rand(5)

    torch.manual_seed(1234)
    build_model(ModelSpec("mlp", 64, 10), seed=7)
    build_model(ModelSpec("cnn", 64, 10), seed=None)
    assert torch.equal(torch.rand(5), expected)


def test_build_model_options_are_passed():
    model = build_model(ModelSpec("mlp", 30, 2, {"hidden": [8, 4]}), seed=0)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(30, 8), (8, 4), (4, 2)]
    out = model(torch.zeros(3, 30))
    assert out.shape == (3, 2)


def test_unknown_model_name_raises_helpful_config_error():
    with pytest.raises(ConfigError) as info:
        build_model(ModelSpec("resnet9000", 64, 10))
    message = str(info.value)
    assert "resnet9000" in message
    for known in ("cnn", "logreg", "mlp"):
        assert known in message
    assert "register_model" in message


def test_bad_model_options_raise_config_error():
    with pytest.raises(ConfigError) as info:
        build_model(ModelSpec("mlp", 64, 10, {"hiden": [8]}))
    message = str(info.value)
    assert "mlp" in message
    assert "hiden" in message


def test_register_model(monkeypatch):
    # Work on a copy of the registry so other tests never see the new name.
    monkeypatch.setattr(models.MODEL_REGISTRY, "_entries", dict(models.MODEL_REGISTRY._entries))

    class Tiny(nn.Module):
        def __init__(self, in_features, num_classes, width=3):
            super().__init__()
            self.fc = nn.Linear(in_features, width)
            self.out = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.out(self.fc(x))

    register_model("my_tiny-net", Tiny)
    assert "my_tiny-net" in available_models()
    model = build_model(ModelSpec("my_tiny-net", 5, 2, {"width": 7}), seed=0)
    assert isinstance(model, Tiny)
    assert model.fc.out_features == 7
    assert _same_weights(model, build_model(ModelSpec("my_tiny-net", 5, 2, {"width": 7}), seed=0))


@pytest.mark.parametrize("bad", ["", "has space", "semi;colon", "a/b"])
def test_register_model_rejects_bad_names(monkeypatch, bad):
    monkeypatch.setattr(models.MODEL_REGISTRY, "_entries", dict(models.MODEL_REGISTRY._entries))
    with pytest.raises(ConfigError):
        register_model(bad, MLP)
    assert bad not in models.MODEL_REGISTRY.names()


def test_smallcnn_refuses_non_square_inputs():
    with pytest.raises(ConfigError, match="30") as info:
        build_model(ModelSpec("cnn", 30, 2))
    assert "mlp" in str(info.value) or "logreg" in str(info.value)
    with pytest.raises(ConfigError):
        SmallCNN(30, 2)


def test_smallcnn_forward_on_digits_shape():
    model = SmallCNN(64, 10, channels=4)
    assert model(torch.zeros(2, 64)).shape == (2, 10)


# --------------------------------------------------------------------------------------------
# datasets


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_available_lists():
    assert available_datasets() == [
        "breast_cancer",
        "diabetes",
        "digits",
        "fedprox_synthetic",
        "mnist",
        "synthetic",
    ]
    assert available_partitions() == ["dirichlet", "iid", "shards"]


def test_digits_shapes_and_range(digits):
    assert digits.name == "digits"
    assert digits.num_features == 64
    assert digits.num_classes == 10
    assert digits.image_shape == (8, 8)
    n = len(digits.y_train) + len(digits.y_test)
    assert n == 1797
    assert digits.x_train.shape == (len(digits.y_train), 64)
    assert digits.x_test.shape == (len(digits.y_test), 64)
    assert digits.x_train.dtype == np.float32
    assert digits.y_train.dtype == np.int64
    for x in (digits.x_train, digits.x_test):
        assert x.min() >= 0.0
        assert x.max() <= 1.0
    assert digits.x_train.max() == 1.0  # scaled by 16, not standardised
    assert abs(len(digits.y_test) / n - 0.2) < 0.01


def test_digits_test_split_is_stratified(digits):
    all_counts = np.bincount(np.r_[digits.y_train, digits.y_test], minlength=10)
    test_counts = np.bincount(digits.y_test, minlength=10)
    expected = all_counts * len(digits.y_test) / all_counts.sum()
    assert np.all(np.abs(test_counts - expected) <= 1.0)


def test_dataset_split_is_seeded():
    a = load_dataset("digits", seed=5)
    b = load_dataset("digits", seed=5)
    c = load_dataset("digits", seed=6)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)


def test_breast_cancer_standardised_on_train_stats():
    data = load_dataset("breast_cancer", seed=0)
    assert data.num_features == 30
    assert data.num_classes == 2
    assert data.image_shape is None
    assert len(data.y_train) + len(data.y_test) == 569
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-3)
    # The test split uses the train statistics, so it is not exactly centred.
    assert np.abs(data.x_test.mean(axis=0)).max() > 1e-3
    assert np.abs(data.x_test.mean(axis=0)).max() < 1.0


def test_synthetic_size_and_classes():
    data = load_dataset(
        "synthetic",
        seed=1,
        test_fraction=0.25,
        synthetic_samples=400,
        synthetic_features=12,
        synthetic_classes=3,
    )
    assert len(data.y_train) + len(data.y_test) == 400
    assert len(data.y_test) == 100
    assert data.num_features == 12
    assert data.num_classes == 3
    assert set(np.unique(data.y_train)) == {0, 1, 2}
    assert data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-4)


def test_synthetic_rejects_impossible_settings():
    with pytest.raises(DatasetError):
        load_dataset("synthetic", synthetic_samples=10)
    with pytest.raises(DatasetError, match="synthetic_features"):
        load_dataset("synthetic", synthetic_samples=200, synthetic_features=4, synthetic_classes=5)


def test_unknown_dataset_raises():
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10")
    assert "cifar10" in str(info.value)
    assert "digits" in str(info.value)
    assert "mnist" in str(info.value)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_test_fraction_raises(fraction):
    with pytest.raises(DatasetError, match="test_fraction"):
        load_dataset("digits", test_fraction=fraction)


def test_too_small_test_fraction_raises_dataset_error():
    # 0.001 passes the range check (and config validation: gt=0) but leaves 2 test samples
    # for 10 classes, which a stratified split cannot do. The failure should be a DatasetError,
    # not scikit-learn's bare ValueError.
    with pytest.raises(DatasetError):
        load_dataset("digits", test_fraction=0.001)


# --------------------------------------------------------------------------------------------
# partitions


def _assert_exact_cover(partition, n):
    joined = np.concatenate(partition.indices)
    assert joined.dtype == np.int64
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards"])
def test_partitions_are_disjoint_and_cover(digits, method):
    labels = digits.y_train
    part = partition_dataset(labels, 10, method, seed=0)
    assert part.num_clients == 10
    _assert_exact_cover(part, len(labels))
    assert part.sizes().sum() == len(labels)
    for idx in part.indices:
        assert np.all(np.diff(idx) > 0)  # sorted, no duplicates inside a client


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards"])
def test_partitions_are_seeded(digits, method):
    labels = digits.y_train
    a = partition_dataset(labels, 8, method, seed=11)
    b = partition_dataset(labels, 8, method, seed=11)
    c = partition_dataset(labels, 8, method, seed=12)
    assert all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.indices, c.indices, strict=True))


@pytest.mark.parametrize("num_clients", [1, 3, 7, 10, 50])
def test_iid_sizes_differ_by_at_most_one(digits, num_clients):
    part = partition_dataset(digits.y_train, num_clients, "iid", seed=0)
    sizes = part.sizes()
    assert len(sizes) == num_clients
    assert sizes.max() - sizes.min() <= 1
    _assert_exact_cover(part, len(digits.y_train))


def _mean_max_class_share(labels, partition, num_classes):
    shares = [
        np.bincount(labels[idx], minlength=num_classes).max() / len(idx)
        for idx in partition.indices
    ]
    return float(np.mean(shares))


def _mean_tv_distance(labels, partition, num_classes):
    global_dist = np.bincount(labels, minlength=num_classes) / len(labels)
    tvs = [
        0.5 * np.abs(np.bincount(labels[idx], minlength=num_classes) / len(idx) - global_dist).sum()
        for idx in partition.indices
    ]
    return float(np.mean(tvs))


def test_dirichlet_small_alpha_is_much_more_skewed(digits):
    labels = digits.y_train
    skewed = partition_dataset(labels, 10, "dirichlet", seed=0, alpha=0.1)
    uniform = partition_dataset(labels, 10, "dirichlet", seed=0, alpha=100.0)
    _assert_exact_cover(skewed, len(labels))
    _assert_exact_cover(uniform, len(labels))

    share_skewed = _mean_max_class_share(labels, skewed, 10)
    share_uniform = _mean_max_class_share(labels, uniform, 10)
    assert share_skewed > 0.4
    assert share_uniform < 0.2
    assert share_skewed - share_uniform > 0.25

    tv_skewed = _mean_tv_distance(labels, skewed, 10)
    tv_uniform = _mean_tv_distance(labels, uniform, 10)
    assert tv_skewed > 0.4
    assert tv_uniform < 0.15
    assert tv_skewed > 3 * tv_uniform


def test_dirichlet_rejects_non_positive_alpha(digits):
    with pytest.raises(DatasetError, match="alpha"):
        partition_dataset(digits.y_train, 5, "dirichlet", alpha=0.0)


def test_shards_give_few_labels_per_client(digits):
    labels = digits.y_train
    part = partition_dataset(labels, 10, "shards", seed=0, shards_per_client=2)
    _assert_exact_cover(part, len(labels))
    label_counts = [len(np.unique(labels[idx])) for idx in part.indices]
    # Two label-sorted shards of ~72 samples each span at most 4 labels, typically 2-3.
    assert max(label_counts) <= 4
    assert np.mean(label_counts) <= 3.0
    iid = partition_dataset(labels, 10, "iid", seed=0)
    assert min(len(np.unique(labels[idx])) for idx in iid.indices) == 10


def test_shards_rejects_bad_settings(digits):
    with pytest.raises(DatasetError, match="shards_per_client"):
        partition_dataset(digits.y_train, 5, "shards", shards_per_client=0)
    with pytest.raises(DatasetError, match="shards"):
        partition_dataset(np.zeros(20, dtype=np.int64), 5, "shards", shards_per_client=5)


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards"])
def test_every_client_gets_min_samples_on_digits(digits, method):
    part = partition_dataset(digits.y_train, 20, method, seed=3, alpha=0.1, min_samples=10)
    assert part.sizes().min() >= 10


@pytest.mark.parametrize("method", ["iid", "shards"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_client_gets_min_samples_when_tight(method, seed):
    # 20 samples, 5 clients, min_samples=4: feasible (5 x 4 = 20), so partition_dataset accepts
    # it and every client must end up with exactly 4 samples.
    labels = np.repeat(np.arange(4), 5)
    part = partition_dataset(labels, 5, method, seed=seed, shards_per_client=3, min_samples=4)
    _assert_exact_cover(part, 20)
    assert part.sizes().min() >= 4


def test_more_clients_than_samples_raises():
    labels = np.arange(5) % 2
    for method in ("iid", "dirichlet", "shards"):
        with pytest.raises(DatasetError, match="fewer clients"):
            partition_dataset(labels, 10, method, min_samples=1)
    with pytest.raises(DatasetError):
        partition_dataset(labels, 0, "iid")


def test_unknown_partition_method_raises(digits):
    with pytest.raises(DatasetError) as info:
        partition_dataset(digits.y_train, 5, "pathological")
    assert "pathological" in str(info.value)
    assert "dirichlet" in str(info.value)
