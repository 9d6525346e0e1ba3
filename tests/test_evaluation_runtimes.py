"""Federated evaluation gives the same records in every runtime: sequential, process pool
and gRPC (one engine; only the runtime that carries the evaluation tasks differs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedfort
from fedfort.config import RunConfig
from netfed import ServerThread, make_pki, net_config, start_clients

FEDERATED = {"client_holdout": 0.25, "every": 1}


def _evaluations(records: list[dict]) -> list[dict]:
    return [r["evaluation"] for r in records]


def _simulate(config: RunConfig, workers: int) -> tuple[np.ndarray, list[dict]]:
    cfg = config.with_overrides({"simulation.workers": workers})
    with fedfort.Simulation(cfg) as run:
        result = run.run()
    return result.model, _evaluations(result.records)


@pytest.mark.slow
def test_federated_evaluation_is_identical_across_runtimes(tmp_path: Path) -> None:
    config = net_config(
        3,
        2,
        evaluation=FEDERATED,
        data={"dataset": "breast_cancer", "partition": "iid"},
        privacy={"client": {"reproducible": True}},
    )
    model, sequential = _simulate(config, 0)
    ids = ["client-000", "client-001", "client-002"]
    assert [sorted(e["clients"]) for e in sequential] == [ids, ids]
    assert all(e["rejected"] == {} for e in sequential)
    pool_model, pool = _simulate(config, 2)
    assert np.array_equal(pool_model, model) and pool == sequential

    pki = make_pki(tmp_path, 3)
    srv = ServerThread(config, tmp_path / "server", pki)
    clients, threads = start_clients(config, pki, tmp_path, srv.port, [0, 1, 2])
    result = srv.join()
    for t in threads:
        t.join(30)
    assert np.array_equal(result.model, model)
    assert _evaluations(result.records) == sequential
    assert all(c.report.rounds_evaluated == [1, 2] for c in clients)
