"""A malicious server or client against the checks of the user's-own-data features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fedfort
from fedfort.cli import main
from fedfort.client.client import FederatedClient
from fedfort.client.training import ClientData
from fedfort.data.preprocessing import FeatureStatistics
from fedfort.data.schema import DataSchema
from fedfort.errors import DatasetError, InvalidRecord, PolicyRefused, ProtocolError
from fedfort.messages import EvaluateTask, FeatureTransform, StatisticsReply
from fedfort.server.statistics import StatisticsSettings, collect_statistics
from hospitals import HOSPITALS, hospitals_toml, write_hospitals


def _client(max_round: int | None) -> FederatedClient:
    rng = np.random.default_rng(0)
    rows = ClientData.from_numpy(rng.normal(size=(8, 3)).astype(np.float32), np.arange(8) % 2)
    return FederatedClient("hospital-a", rows, holdout=rows, max_evaluation_round=max_round)


def _task(round_: int) -> EvaluateTask:
    return EvaluateTask(round_, "hospital-a", np.zeros(5, dtype=np.float32), ("accuracy",))


def test_a_client_answers_no_evaluation_past_its_runs_last_round() -> None:
    """A server walking the round counter up (round 4, 5, ... of a 3-round run) with models of
    its choice would score without bound on the hold-out: the client stops at its rounds."""
    client = _client(3)
    for round_ in (1, 3):
        client.admit_evaluation(_task(round_), 5)
    with pytest.raises(ProtocolError, match="its run has 3 rounds"):
        client.admit_evaluation(_task(4), 5)
    assert client.evaluation.last_round == 3


def test_without_planned_rounds_the_guard_keeps_its_order_check() -> None:
    client = _client(None)
    client.admit_evaluation(_task(7), 5)
    with pytest.raises(ProtocolError, match="already evaluated round 7"):
        client.admit_evaluation(_task(7), 5)


def test_an_export_of_a_standardized_run_carries_the_transform_new_rows_need(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The model of a ``standardize = true`` run was trained on transformed rows; exported
    alone, it is applied to raw rows by anyone who deploys it (and scores like a coin)."""
    write_hospitals(tmp_path / "data")
    (tmp_path / "run.toml").write_text(hospitals_toml(tmp_path / "data", rounds=3))
    fedfort.Simulation(fedfort.load_config(tmp_path / "run.toml"), out_dir=tmp_path / "run").run()
    assert main(["model", "export", str(tmp_path / "run"), "--format", "pt"]) == 0
    sidecar = tmp_path / "run" / "export" / "model-v3.preprocessing.json"
    assert str(sidecar) in capsys.readouterr().out
    pre = json.loads(sidecar.read_text())
    model = fedfort.load_model(tmp_path / "run")
    model.load_state_dict(torch.load(tmp_path / "run" / "export" / "model-v3.pt"))
    frame = pd.concat([pd.read_csv(tmp_path / "data" / h / "test.csv") for h in HOSPITALS])
    x = frame[pre["features"]].to_numpy(np.float64)
    y = np.array([pre["classes"].index(v) for v in frame["diagnosis"]])
    fill = np.array([np.nan if v is None else v for v in pre["fill"]])
    rows = (np.where(np.isnan(x), fill, x) - np.array(pre["shift"])) / np.array(pre["scale"])
    with torch.no_grad():
        scores = model(torch.tensor(rows, dtype=torch.float32)).argmax(1).numpy()
    assert (scores == y).mean() > 0.85


def test_a_round_every_update_of_which_is_refused_says_why(tmp_path: Path) -> None:
    """A regression label in the hundreds diverges at the default rate; the failed round
    named only the quorum, not that every update was non-finite."""
    write_hospitals(tmp_path / "data")
    toml = hospitals_toml(tmp_path / "data", rounds=1)
    toml = toml.replace('label = "diagnosis"', 'label = "mean_area"\ntask = "regression"')
    toml = toml.replace('drop = ["patient_id", "postcode"]', 'drop = ["patient_id", "diagnosis"]')
    (tmp_path / "run.toml").write_text(toml.replace("lr = 0.05", "lr = 5.0"))
    sim = fedfort.Simulation(fedfort.load_config(tmp_path / "run.toml"))
    with pytest.raises(fedfort.errors.RoundFailed, match=r"updates rejected: non_finite .* x9"):
        sim.run()


class _Clients:
    """A runtime whose clients answer the statistics request with fixed vectors."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def exchange(
        self, round_: int, attempt: int, step: int, outbox: object, deadline_s: float | None
    ) -> dict[str, object]:
        return {c: StatisticsReply(round_, c, v) for c, v in self.vectors.items()}


def _stats(x: np.ndarray) -> np.ndarray:
    return FeatureStatistics.of(x).vector()


@pytest.mark.parametrize(
    ("lie", "reason"),
    [
        (np.array([1e12, 1e18, 1e24]), "exceeds the cap of 1000 rows"),
        (np.array([2.5, 1.0, 1.0]), "not a whole number"),
        (np.array([-3.0, 1.0, 1.0]), "not a whole number"),
        (np.array([10.0, 1e6, 1.0]), "not those of any rows"),
    ],
)
def test_a_client_lying_in_its_clear_statistics_is_left_out(lie: np.ndarray, reason: str) -> None:
    """Without secure aggregation or noise the server sees each client's exact statistics:
    counts and sums no rows can have (or more rows than the cap) must not set the
    federation's scaling."""
    rng = np.random.default_rng(1)
    honest = {c: _stats(rng.normal(5.0, 2.0, size=(50, 1))) for c in ("a", "b")}
    settings = StatisticsSettings(run_id="r", num_features=1, max_rows=1000)
    out = collect_statistics(_Clients({**honest, "m": lie}), ["a", "b", "m"], dict, settings)
    assert out.included == ("a", "b")
    assert reason in out.measurements["refused"]["m"]
    np.testing.assert_allclose(out.total, honest["a"] + honest["b"])


def _transform(fill: float, scale: float) -> FeatureTransform:
    return FeatureTransform(np.full(3, fill), np.zeros(3), np.full(3, scale))


@pytest.mark.parametrize(
    ("fill", "scale"),
    [(float("nan"), 1.0), (0.0, 1e-300)],
    ids=["nan-fill-for-a-missing-value", "vanishing-scale"],
)
def test_a_client_refuses_a_transform_that_leaves_its_rows_non_finite(
    fill: float, scale: float
) -> None:
    """A server may send a NaN fill (no imputation) to a client that has missing values, or
    a tiny positive scale: the client would train on NaN or Inf rows."""
    x = np.random.default_rng(2).normal(size=(8, 3))
    x[2, 1] = np.nan  # a value the client imputes with the federation's fill
    rows = ClientData.from_numpy(x.astype(np.float32), np.arange(8) % 2)
    client = FederatedClient("hospital-a", rows, holdout=rows)
    with pytest.raises(PolicyRefused, match="refusing to train on it"):
        client.receive_transform(_transform(fill, scale))
    assert client.transform is None and client.data is rows
    client.receive_transform(_transform(0.0, 2.0))  # a sound one is applied
    assert np.isfinite(client.data.x.numpy()).all()


class _Counted(str):
    """A feature name that counts how often it is hashed or compared."""

    calls = 0

    def __hash__(self) -> int:
        _Counted.calls += 1
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        _Counted.calls += 1
        return str.__eq__(self, other)


def test_checking_a_huge_declared_schema_is_linear_work() -> None:
    """An enrolling client declares its schema; one listing many feature names (and one twice)
    must not make the server's check quadratic in them."""
    n = 400
    ours = DataSchema(tuple(f"f{i}" for i in range(n)), ("a", "b"))
    theirs = DataSchema(tuple(_Counted(f"g{i}") for i in range(n)), ("a", "b"))
    _Counted.calls = 0
    assert ours.differences(theirs)[0].startswith("missing columns 'f0'")
    assert _Counted.calls < 10 * n
    _Counted.calls = 0
    with pytest.raises(DatasetError, match="twice"):
        DataSchema((*theirs.features, _Counted("g7")), ("a", "b"))
    assert _Counted.calls < 10 * n


def test_data_given_in_python_can_be_imputed_and_standardized(tmp_path: Path) -> None:
    """A DataFrame with a missing value was refused with 'set [data] impute', and setting it
    was refused as 'the embedded datasets come scaled and complete'."""
    write_hospitals(tmp_path)
    frames = {h: pd.read_csv(tmp_path / h / "train.csv") for h in HOSPITALS}
    frames["hospital-b"].loc[3, "mean_radius"] = np.nan
    data = {"label": "diagnosis", "drop": ["patient_id", "postcode"]}
    config = {"rounds": 1, "data": {**data, "impute": "mean", "standardize": True}}
    sim = fedfort.Simulation(config, data=frames)
    assert sim.config.data.impute == "mean" and sim.config.data.standardize
    sim.run()
    assert np.isfinite(sim.model).all() and sim.preprocessing is not None
    with pytest.raises(InvalidRecord, match="value is missing"):
        fedfort.Simulation({"rounds": 1, "data": data}, data=frames).run()
