"""Synthetic(alpha, beta) of the FedProx paper and the natural per-client split it carries."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedfort import Simulation
from fedfort.config import parse_config
from fedfort.data import load_dataset
from fedfort.data.fedprox_synthetic import generate_fedprox_synthetic
from fedfort.errors import ConfigError, DatasetError
from fedfort.run.federation import split_data


def per_client(owners: np.ndarray, values: np.ndarray, clients: int) -> list[np.ndarray]:
    return [values[owners == k] for k in range(clients)]


def test_generation_is_seeded_and_shaped_like_the_paper() -> None:
    a = generate_fedprox_synthetic(40, alpha=1, beta=1, seed=3)
    b = generate_fedprox_synthetic(40, alpha=1, beta=1, seed=3)
    c = generate_fedprox_synthetic(40, alpha=1, beta=1, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape[1] == 60 and a.x_train.dtype == np.float32
    assert set(np.unique(np.r_[a.y_train, a.y_test])) <= set(range(10))
    # rows are grouped by client, every client has training rows
    assert np.all(np.diff(a.train_clients) >= 0)
    assert set(np.unique(a.train_clients)) == set(range(40))
    # sample counts: lognormal(4, 2) + 50, capped; 20% of each client's rows held out
    train = np.bincount(a.train_clients, minlength=40)
    total = train + np.floor((train / 0.8) * 0.2).astype(int)
    assert total.min() >= 40 and total.max() <= 1000
    assert a.x_test.shape[0] == pytest.approx(0.2 * (a.x_train.shape[0] + a.x_test.shape[0]), 0.05)


def test_inputs_follow_n_of_v_k_and_the_diagonal_sigma() -> None:
    """Within a client x ~ N(v_k, Sigma) with Sigma_jj = j^-1.2; across clients v_k spreads
    with sqrt(1 + beta^2) because v_k ~ N(B_k, 1) and B_k ~ N(0, beta)."""
    clients = 300
    spread = {}
    for beta in (0.0, 3.0):
        data = generate_fedprox_synthetic(clients, beta=beta, max_samples=200, seed=1)
        xs = per_client(data.train_clients, data.x_train, clients)
        means = np.stack([x.mean(axis=0) for x in xs])
        spread[beta] = float(means.std())
        within = np.mean([x.var(axis=0) for x in xs], axis=0)
        j = np.arange(1, 61)
        np.testing.assert_allclose(within, j**-1.2, rtol=0.1)
    assert spread[0.0] == pytest.approx(1.0, rel=0.1)
    assert spread[3.0] == pytest.approx(np.sqrt(10.0), rel=0.1)


def test_labels_come_from_each_clients_own_linear_model() -> None:
    """One client's labels are a linear function of its inputs (its own W_k, b_k), and
    different clients disagree; alpha shifts every logit of a client by the same u_k, so
    (as the paper defines it) it cannot change an argmax label."""
    data = generate_fedprox_synthetic(30, alpha=1, beta=1, seed=0)
    xs = per_client(data.train_clients, data.x_train, 30)
    ys = per_client(data.train_clients, data.y_train, 30)
    big = sorted(range(30), key=lambda k: -len(ys[k]))[:2]
    fits = [LogisticRegression(max_iter=3000).fit(xs[k], ys[k]) for k in big]
    for model, k in zip(fits, big, strict=True):
        assert model.score(xs[k], ys[k]) > 0.95
    # the two clients' models label the same inputs differently
    assert np.mean(fits[0].predict(xs[big[1]]) == ys[big[1]]) < 0.9
    shifted = generate_fedprox_synthetic(30, alpha=5, beta=1, seed=0)
    np.testing.assert_array_equal(shifted.x_train, data.x_train)
    assert np.mean(shifted.y_train == data.y_train) > 0.999


def test_bad_generator_arguments_raise_dataset_errors() -> None:
    with pytest.raises(DatasetError, match="at least 1 client"):
        generate_fedprox_synthetic(0)
    with pytest.raises(DatasetError, match=">= 0"):
        generate_fedprox_synthetic(3, beta=-1)
    with pytest.raises(DatasetError, match="no training rows"):
        generate_fedprox_synthetic(3, max_samples=1)


def test_the_natural_split_gives_every_client_its_own_rows() -> None:
    cfg = parse_config({"clients": {"count": 25}, "data": {"dataset": "fedprox_synthetic"}})
    assert cfg.data.partition == "natural"
    data = split_data(cfg)
    owners = data.dataset.train_clients
    assert owners is not None
    np.testing.assert_array_equal(data.partition.sizes(), np.bincount(owners, minlength=25))
    for k in (0, 7, 24):
        x, _ = data.client_arrays(k)
        np.testing.assert_array_equal(x, data.dataset.x_train[owners == k])
    # FLTrust's root rows leave the clients' splits; every remaining row keeps its owner
    fl = split_data(cfg.with_overrides({"defense.aggregator": "fltrust"}))
    assert sum(fl.partition.sizes()) == len(owners) - 100
    for k in (0, 24):
        assert np.all(owners[fl.train_idx[fl.partition.indices[k]]] == k)


def test_natural_split_config_rules() -> None:
    with pytest.raises(ConfigError, match="own per-client split"):
        parse_config({"data": {"partition": "natural"}})
    # an explicit partition re-splits the pooled rows instead
    pooled = parse_config(
        {"clients": {"count": 5}, "data": {"dataset": "fedprox_synthetic", "partition": "iid"}}
    )
    sizes = split_data(pooled).partition.sizes()
    assert sizes.max() - sizes.min() <= 1
    # keys only this dataset reads keep the identity of runs on other datasets
    assert (
        parse_config({"data": {"fedprox_beta": 2.0}}).identity_hash()
        == parse_config({}).identity_hash()
    )
    fed = {"data": {"dataset": "fedprox_synthetic"}}
    assert (
        parse_config({"data": {**fed["data"], "fedprox_beta": 2.0}}).identity_hash()
        != parse_config(fed).identity_hash()
    )
    with pytest.raises(DatasetError, match="fewer than min_samples_per_client"):
        split_data(
            parse_config(
                {
                    "clients": {"count": 4},
                    "data": {
                        "dataset": "fedprox_synthetic",
                        "fedprox_max_samples": 4,
                        "min_samples_per_client": 5,
                    },
                }
            )
        )


def test_a_federation_trains_on_synthetic_one_one() -> None:
    cfg = parse_config(
        {
            "rounds": 6,
            "data": {"dataset": "fedprox_synthetic", "fedprox_alpha": 1, "fedprox_beta": 1},
            "clients": {"count": 10, "epochs": 1, "batch_size": 10},
            "model": {"name": "logreg"},
        }
    )
    assert load_dataset("fedprox_synthetic", fedprox_clients=10).num_classes == 10
    with Simulation(cfg) as sim:
        result = sim.run()
    accuracy = [r["accuracy"] for r in result.records]
    assert accuracy[-1] > 0.4 and accuracy[-1] > accuracy[0]
