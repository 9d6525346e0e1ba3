"""The [edge] pipeline in a run: identifying columns never reach the model or leave a client."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedfort.cli.client_data import client_records
from fedfort.client.training import LocalTrainer
from fedfort.config import RunConfig, load_config
from fedfort.edge import EdgeConfig, Records
from fedfort.errors import ConfigError, InvalidRecord
from fedfort.messages import TrainTask
from fedfort.models import build_model
from fedfort.run.federation import local_training_data, partition_records, split_data
from fedfort.server.engine import CollectOutcome
from fedfort.simulation import Simulation
from fedfort.simulation.results import write_results
from fedfort.transport import codec
from fedfort.transport.client import NetworkClient
from fedfort.transport.enrollment import declaration
from fedfort.transport.server import Credentials
from netfed import ServerThread, make_pki, net_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "edge" / "breast-cancer.toml"
DROPPED = ("patient_name", "birth_date", "notes")


def _config(**overrides: Any) -> RunConfig:
    return load_config(EXAMPLE).with_overrides({"rounds": 2, **overrides})


def _without_identifiers(config: RunConfig) -> RunConfig:
    edge = config.edge.model_dump(mode="json")
    edge.update(fields={}, synthetic_identifiers=False, deduplicate_on=None)
    return config.with_overrides({"edge": edge})


class _Wiretap:
    """Every task and update of a run, encoded with the wire codec."""

    def __init__(self, sim: Simulation) -> None:
        self.wire: list[bytes] = []
        self.inner = sim.engine.executor
        sim.engine.executor = self  # type: ignore[assignment]

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        self.wire += [codec.dumps(task) for task in tasks]
        outcome = self.inner.execute(tasks, deadline_s)
        self.wire += [codec.dumps(update) for update in outcome.received]
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _sensitive_values(config: RunConfig, names: Sequence[str]) -> list[str]:
    """The raw identifying values of every client in columns ``names`` (and the notes)."""
    data = split_data(config)
    values: set[str] = set()
    for k in range(config.clients.count):
        records = partition_records(config, data, k)
        for name in names:
            values.update(str(v) for v in records.columns[name].tolist())
        values.update(v for v in records.columns["notes"].tolist() if v)
    return sorted(values)


def test_identifying_columns_never_leave_a_client(tmp_path: Path) -> None:
    config = _config()
    with Simulation(config, out_dir=tmp_path) as sim:
        tap = _Wiretap(sim)
        result = sim.run()
    write_results(result, tmp_path)
    assert tap.wire and result.final["accuracy"] > 0.85

    record = result.records[-1]["measurements"]["edge"]
    assert set(record["clients"]) == set(sim.ids)
    counts = record["clients"]["client-000"]
    assert counts["fields_dropped"] == 3 and counts["fields_pseudonymised"] == 1
    assert counts["fields_generalised"] == 2 and counts["values_imputed"] > 0
    assert counts["rows_out"] == counts["rows_in"] - counts["rows_removed_sanitise"]
    assert record["totals"]["rows_in"] == sum(c["rows_in"] for c in record["clients"].values())

    values = _sensitive_values(config, ("patient_name", "patient_id", "birth_date"))
    assert len(values) > 400
    wire = b"\n".join(tap.wire)
    # the ZIP codes are the schema's declared categories, so the stored config names them;
    # which patient lives where is never sent
    for value in _sensitive_values(config, ("zip",)):
        assert value.encode() not in wire
    records_text = json.dumps(result.records)
    for name in (*DROPPED, "patient_id", "zip", "boston", "[40, 65)"):
        assert name.encode() not in wire, name
        assert f'"{name}"' not in records_text, name
    # the run directory: results, checkpoints and the audit log (binary scanned as bytes)
    files = [p.read_bytes() for p in sorted(tmp_path.iterdir()) if p.is_file()]
    assert len(files) >= 4
    for value in values:
        needle = value.encode()
        assert needle not in wire, value
        assert not any(needle in blob for blob in files), value


def test_identifying_columns_do_not_influence_the_model() -> None:
    config = _config(**{"clients.count": 3})
    with Simulation(config) as sim:
        with_ids = sim.run()
        assert sim.model_spec.in_features == 30  # the measurements only
    with Simulation(_without_identifiers(config)) as sim:
        without = sim.run()
    assert np.array_equal(with_ids.model, without.model)
    assert with_ids.records[-1]["measurements"]["edge"]["totals"]["fields_dropped"] == 9


def test_a_run_without_edge_is_unchanged() -> None:
    config = _config(**{"clients.count": 3}).with_overrides({"edge": {}})
    assert config.edge == EdgeConfig()
    with Simulation(config) as sim:
        result = sim.run()
    assert "edge" not in result.records[-1]["measurements"]


def test_private_updates_carry_no_counts() -> None:
    # the counts are data-dependent: under user-level DP an update carries public metrics only
    config = _config(**{"clients.count": 3}).with_overrides(
        {"privacy.mode": "central", "privacy.noise_multiplier": 0.5}
    )
    with Simulation(config) as sim:
        result = sim.run()
    assert "edge" not in result.records[-1]["measurements"]
    assert result.records[-1]["epsilon"] is not None


def test_network_client_reads_records_and_runs_the_same_pipeline(tmp_path: Path) -> None:
    config = _config()
    data = split_data(config)
    records = partition_records(config, data, 1)
    path = tmp_path / "records.npz"
    np.savez(path, x=records.x, y=records.y, **records.columns)
    loaded = client_records(str(path), config)
    assert set(loaded.columns) == set(records.columns)
    key_dir = tmp_path / "state"
    net, net_metrics = local_training_data(config, loaded, "client-001", 2, key_dir)
    sim, sim_metrics = local_training_data(config, records, "client-001", 2, key_dir)
    assert np.array_equal(net.x.numpy(), sim.x.numpy()) and net_metrics == sim_metrics
    assert (key_dir / "client-001.pseudonym.key").stat().st_mode & 0o077 == 0
    via_partition = client_records("partition:1", config)
    assert np.array_equal(via_partition.columns["zip"], records.columns["zip"])

    bad = dict(records.columns)
    bad["age"] = bad["age"].copy()
    bad["age"][5] = 150
    np.savez(path, x=records.x, y=records.y, **bad)
    with pytest.raises(InvalidRecord, match=r"'age', row 5: 150.0 is above the maximum"):
        local_training_data(config, client_records(str(path), config), "c", 2, key_dir)
    plain = config.with_overrides({"edge": {}})
    with pytest.raises(ConfigError, match=r"declare them in \[edge.fields\]"):
        local_training_data(plain, Records(records.x, records.y, records.columns), "c", 2)


@pytest.mark.slow
def test_networked_clients_run_the_same_pipeline_as_simulated_ones(tmp_path: Path) -> None:
    edge = load_config(EXAMPLE).edge.model_dump(mode="json")
    config = net_config(3, 2, data={"dataset": "breast_cancer", "partition": "iid"}, edge=edge)
    pki = make_pki(tmp_path, 3)
    srv = ServerThread(config, tmp_path / "server", pki)
    data = split_data(config)
    threads = []
    for k, cid in enumerate(config.clients.ids()):
        records = partition_records(config, data, k)
        local, metrics = local_training_data(config, records, cid, 2, tmp_path / cid)
        client = NetworkClient(
            cid,
            local,
            LocalTrainer(build_model(srv.server.model_spec, seed=config.seed)),
            target=f"localhost:{srv.port}",
            credentials=Credentials.from_pki(pki, cid),
            state_dir=tmp_path / cid,
            network=config.network,
            data_metrics=metrics,
            declaration=declaration(config, None),
        )
        thread = threading.Thread(target=client.run, kwargs={"timeout_s": 120}, daemon=True)
        thread.start()
        threads.append(thread)
    result = srv.join()
    for thread in threads:
        thread.join(30)
    with Simulation(config) as sim:
        simulated = sim.run()
    assert np.array_equal(result.model, simulated.model)
    net_edge = result.records[-1]["measurements"]["edge"]
    assert net_edge == simulated.records[-1]["measurements"]["edge"]
    assert net_edge["totals"]["fields_dropped"] == 9
