"""The statistics round in every runtime: the in-process executors, Ray and the network give
the same transform (and the same models) as the sequential simulation."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedfort import Simulation
from fedfort.client.client import FederatedClient
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.config import RunConfig, parse_config
from fedfort.data.preprocessing import Preprocessing
from fedfort.models import ModelSpec, build_model
from fedfort.run.data import with_data_schema
from fedfort.run.federation import split_data
from fedfort.run.preprocess import fit_preprocessing
from fedfort.transport.client import NetworkClient
from fedfort.transport.enrollment import declaration
from fedfort.transport.server import Credentials
from hospitals import HOSPITALS, hospitals_toml, write_hospitals
from netfed import FAST_NETWORK, ClientThread, ServerThread, make_pki


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hospitals")
    write_hospitals(root)
    return root


def config(root: Path, rounds: int = 2, **sections: dict[str, Any]) -> RunConfig:
    body = tomllib.loads(hospitals_toml(root, rounds=rounds))
    for name, values in sections.items():
        body[name] = {**body.get(name, {}), **values}
    return parse_config(body)


def run(cfg: RunConfig) -> tuple[Preprocessing, np.ndarray]:
    with Simulation(cfg) as sim:
        result = sim.run()
        assert sim.preprocessing is not None
        return sim.preprocessing, result.model


def assert_same(a: Preprocessing, b: Preprocessing) -> None:
    for name in ("fill", "shift", "scale"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.slow
def test_sequential_and_pool_runtimes_fit_the_same_transform_and_models(hospitals: Path) -> None:
    sequential = run(config(hospitals))
    pool = run(config(hospitals, simulation={"workers": 1}))
    assert_same(sequential[0], pool[0])
    np.testing.assert_array_equal(sequential[1], pool[1])


@pytest.fixture
def local_ray() -> Iterator[None]:
    pytest.importorskip("ray")
    from fedfort.simulation.ray_runtime import RayConnection

    connection = RayConnection.open(None, local_cpus=2)
    yield
    connection.close()


@pytest.mark.slow
def test_ray_workers_compute_the_statistics_and_apply_the_same_transform(
    hospitals: Path, local_ray: None
) -> None:
    """The workers that hold the clients' rows compute their statistics; the driver-side
    clients seal them into the session and check the transform the workers apply."""
    local = run(config(hospitals))
    on_ray = run(config(hospitals, simulation={"runtime": "ray"}))
    assert_same(local[0], on_ray[0])
    np.testing.assert_array_equal(local[1], on_ray[1])
    secure = {"mode": "secagg", "dropout_fraction": 0.0}
    masked = run(config(hospitals, simulation={"runtime": "ray"}, secure_aggregation=secure))
    np.testing.assert_allclose(masked[0].shift, local[0].shift, rtol=1e-12)
    np.testing.assert_allclose(masked[0].scale, local[0].scale, rtol=1e-8)


@pytest.mark.slow
def test_the_statistics_round_runs_over_the_network(hospitals: Path, tmp_path: Path) -> None:
    """Three networked clients with their own rows: the server runs the statistics round
    over gRPC under SecAgg and every client trains on the pooled transform."""
    root = tmp_path / "files"
    root.mkdir()
    for k, name in enumerate(HOSPITALS):  # the PKI names its clients client-000, ...
        (root / f"client-{k:03d}").symlink_to(hospitals / name)
    body = tomllib.loads(hospitals_toml(root, rounds=2))
    body["clients"].pop("names")
    body["clients"]["count"] = 3
    body["network"] = dict(FAST_NETWORK)
    body["secure_aggregation"] = {"mode": "secagg", "dropout_fraction": 0.0}
    body["data"].pop("test")  # no hold-outs: this run checks the statistics round only
    # a server holding no rows runs with the schema written in its config
    cfg = with_data_schema(parse_config(body))
    pki = make_pki(tmp_path, 3)
    server = ServerThread(cfg, tmp_path / "server", pki)
    data = split_data(server.server.config)
    spec = ModelSpec("mlp", data.schema.num_features, data.schema.num_classes, {})
    clients = []
    for k in range(3):
        cid = f"client-{k:03d}"
        x, y = data.client_arrays(k)
        network_client = NetworkClient(
            cid,
            ClientData.from_numpy(x, y),
            LocalTrainer(build_model(spec, seed=0)),
            target=f"localhost:{server.port}",
            credentials=Credentials.from_pki(pki, cid),
            state_dir=tmp_path / cid,
            network=cfg.network,
            declaration=declaration(cfg, data.schema),
        )
        clients.append(network_client)
    threads = [ClientThread(c, timeout_s=120) for c in clients]
    for t in threads:
        t.start()
    result = server.join()
    for t in threads:
        t.join(30)
        assert t.error is None
    assert len(result.records) == 2
    transform = server.server.preprocessing
    assert transform is not None
    reference = fit_preprocessing(cfg, [data.client_arrays(k)[0] for k in range(3)])
    np.testing.assert_allclose(transform.shift, reference.shift, rtol=1e-12)
    np.testing.assert_allclose(transform.scale, reference.scale, rtol=1e-8)
    for network_client in clients:
        inner: FederatedClient = network_client.client
        assert inner.transform is not None
        np.testing.assert_array_equal(
            inner.data.x.numpy(), transform.apply(inner.raw_data.x.numpy())
        )
