"""Metrics, regression, the user's metric and loss, and federated evaluation.

The federated evaluation tests run the real round engine: the clients score each model on
their own hold-outs and the server checks every report (a lying client is dropped with a
reason and the round still commits).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import fedfort
import user_evaluation
from conftest import tiny_config
from fedfort.audit import AUDIT_FILE
from fedfort.audit.log import read_entries
from fedfort.cli import main
from fedfort.client.client import FederatedClient
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.config import parse_config
from fedfort.errors import ConfigError, DatasetError, ProtocolError
from fedfort.evaluation.metrics import compute_metrics, metric_spec
from fedfort.messages import EvaluateTask, EvaluationReport
from fedfort.models import ModelSpec
from fedfort.report import build_report
from fedfort.run.data import split_data
from fedfort.server.engine import EvaluationOutcome, RoundContext, Stage
from fedfort.server.federated_evaluation import weighted_overall
from fedfort.server.rollback import DriftRollback
from fedfort.transport import codec
from fedfort.transport.padding import PaddingPolicy, pad_payload
from fedfort.transport.proto import fedfort_pb2 as pb

FEDERATED = {"evaluation": {"client_holdout": 0.25}}


# --- metrics against scikit-learn -------------------------------------------------------------


def _logits(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y] * rng.random((n, 1))
    logits[: n // 3] = np.round(logits[: n // 3])  # tied scores, which the AUC counts as half
    return y.astype(np.int64), logits.astype(np.float32)


def _softmax64(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


@pytest.mark.parametrize("classes", [2, 4])
def test_classification_metrics_equal_sklearn(classes: int) -> None:
    y, logits = _logits(60, classes, seed=classes)
    prob = _softmax64(logits)
    pred = logits.argmax(1)
    names = ["accuracy", "auc", "f1", "balanced_accuracy", "loss"]
    got = compute_metrics(names, y, logits, "classification", loss=0.25)
    auc = (
        skm.roc_auc_score(y, prob[:, 1])
        if classes == 2
        else skm.roc_auc_score(y, prob, multi_class="ovr", average="macro")
    )
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["auc"] == pytest.approx(auc)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert got["loss"] == 0.25
    assert 0.5 < got["auc"] < 1.0  # the logits carry signal, and not perfectly


def test_auc_with_an_absent_class_averages_the_present_ones_and_is_nan_with_one() -> None:
    y, logits = _logits(60, 4, seed=1)
    keep = y != 3  # class 3 is absent from this hold-out
    y, logits = y[keep], logits[keep]
    prob = _softmax64(logits)
    expected = np.mean([skm.roc_auc_score(y == c, prob[:, c]) for c in (0, 1, 2)])
    assert compute_metrics(["auc"], y, logits, "classification")["auc"] == pytest.approx(expected)
    only = compute_metrics(["auc", "accuracy"], y[y == 0], logits[y == 0], "classification")
    assert math.isnan(only["auc"]) and not math.isnan(only["accuracy"])


def test_regression_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=50).astype(np.float32)
    pred = (y + rng.normal(scale=0.5, size=50)).astype(np.float32)
    got = compute_metrics(["mse", "mae", "r2"], y, pred[:, None], "regression")
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-6)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-6)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-6)


def test_metric_names_are_checked_against_the_task() -> None:
    with pytest.raises(ConfigError, match="scores classification"):
        metric_spec("auc", "regression")
    with pytest.raises(ConfigError, match="unknown metric 'acuracy'"):
        metric_spec("acuracy")
    with pytest.raises(ConfigError, match="task is regression"):
        tiny_config(data={"dataset": "diabetes"}, evaluation={"metrics": ["accuracy"]})


def test_weighted_overall_is_the_example_weighted_mean_per_metric() -> None:
    values = {"a": {"accuracy": 0.5, "auc": 0.9}, "b": {"accuracy": 1.0}, "c": {"accuracy": 0.0}}
    examples = {"a": 10, "b": 30, "c": 60}
    overall = weighted_overall(values, examples, ["accuracy", "auc", "f1"])
    assert overall == {"accuracy": pytest.approx((5 + 30) / 100), "auc": pytest.approx(0.9)}


# --- the user's metric and loss -----------------------------------------------------------


def test_user_metric_and_loss_by_import_path_are_used_by_the_run() -> None:
    before = user_evaluation.CALLS["focal"]
    cfg = tiny_config(
        FEDERATED,
        rounds=2,
        data={"dataset": "breast_cancer"},
        clients={"count": 3, "loss": "user_evaluation:focal"},
        evaluation={"metrics": ["accuracy", "loss", "user_evaluation:sensitivity"]},
    )
    with fedfort.Simulation(cfg) as run:
        result = run.run()
    assert user_evaluation.CALLS["focal"] > before  # the clients trained with the focal loss
    last = result.records[-1]
    overall = last["evaluation"]["overall"]
    assert set(overall) == {"accuracy", "loss", "user_evaluation:sensitivity"}
    assert 0.5 < overall["user_evaluation:sensitivity"] <= 1.0
    assert "user_evaluation:sensitivity" in last["measurements"]["evaluate"]


def test_an_unmarked_function_or_a_builtin_is_refused_with_how_to_mark_it() -> None:
    with pytest.raises(ConfigError, match=r"@fedfort\.metric"):
        tiny_config(evaluation={"metrics": ["user_evaluation:unmarked"]})
    with pytest.raises(ConfigError, match=r"@fedfort\.loss"):
        tiny_config(clients={"loss": "os:system"})
    with pytest.raises(ConfigError, match=r"@fedfort\.loss"):
        tiny_config(clients={"loss": "user_evaluation:sensitivity"})  # a metric, not a loss
    with pytest.raises(ConfigError, match="does not train classification"):
        tiny_config(clients={"loss": "mse"})


# --- configuration --------------------------------------------------------------------------


def test_new_keys_at_their_defaults_keep_the_identity() -> None:
    base = tiny_config()
    explicit = tiny_config(
        evaluation={"client_holdout": 0.0, "server": True, "every": 1},
        data={"task": "classification"},
        clients={"loss": None},
        governance={"rollback_on": "server"},
    )
    assert explicit.identity_hash() == base.identity_hash()
    assert explicit.config_identity() == base.config_identity()
    assert tiny_config(FEDERATED).identity_hash() != base.identity_hash()


def test_regression_refuses_class_based_splits_attacks_and_rollback() -> None:
    assert tiny_config(data={"dataset": "diabetes"}).data.partition == "iid"
    with pytest.raises(ConfigError, match="partition = 'iid'"):
        parse_config({"data": {"dataset": "diabetes", "partition": "dirichlet"}})
    with pytest.raises(ConfigError, match="regression"):
        tiny_config(data={"dataset": "digits", "task": "regression"})
    with pytest.raises(ConfigError, match="changes class labels"):
        tiny_config(data={"dataset": "diabetes"}, attack={"name": "label_flip", "fraction": 0.2})
    with pytest.raises(ConfigError, match="regression run has not"):
        tiny_config(data={"dataset": "diabetes"}, governance={"rollback_drop": 0.1})
    with pytest.raises(DatasetError, match="continuous"):
        fedfort.partition_dataset(np.zeros(20, np.float32), 2, "dirichlet")


def test_rollback_needs_the_accuracy_it_watches() -> None:
    with pytest.raises(ConfigError, match="rollback_on = 'federated'"):
        tiny_config(evaluation={"server": False}, governance={"rollback_drop": 0.1})
    with pytest.raises(ConfigError, match="client_holdout"):
        tiny_config(governance={"rollback_drop": 0.1, "rollback_on": "federated"})
    tiny_config(
        FEDERATED,
        evaluation={"server": False},
        governance={"rollback_drop": 0.1, "rollback_on": "federated"},
    )


def test_client_holdout_is_seeded_disjoint_and_stratified() -> None:
    cfg = tiny_config(FEDERATED)
    data, again = split_data(cfg), split_data(cfg)
    plain = split_data(tiny_config())
    for k in range(cfg.clients.count):
        x, y = data.client_arrays(k)
        held = data.client_test_arrays(k)
        assert held is not None and plain.client_test_arrays(k) is None
        hx, hy = held
        assert np.array_equal(hx, again.client_test_arrays(k)[0])  # type: ignore[index]
        px, _ = plain.client_arrays(k)
        assert len(x) + len(hx) == len(px)
        rows = {r.tobytes() for r in px}
        assert {r.tobytes() for r in x}.isdisjoint({r.tobytes() for r in hx})
        assert {r.tobytes() for r in hx} <= rows
        # stratified: every class of the client's rows is in its hold-out
        assert set(np.unique(hy)) == set(np.unique(np.concatenate([y, hy])))


def test_messages_cross_the_wire_codec() -> None:
    task = EvaluateTask(3, "client-001", np.arange(4, dtype=np.float32), ("accuracy", "auc"))
    back = codec.loads(codec.dumps(task), expected=EvaluateTask)
    assert isinstance(back, EvaluateTask) and back.metrics == ("accuracy", "auc")
    assert np.array_equal(back.weights, task.weights)
    report = EvaluationReport(3, "client-001", 12, {"accuracy": 0.5})
    assert codec.loads(codec.dumps(report), expected=EvaluationReport) == report


# --- the client guards its hold-out ----------------------------------------------------------


@pytest.fixture
def client_and_trainer() -> tuple[FederatedClient, LocalTrainer]:
    trainer = LocalTrainer.from_spec(ModelSpec("logreg", 4, 3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = (np.arange(30) % 3).astype(np.int64)
    data = ClientData.from_numpy(x, y)
    return FederatedClient("c0", data, holdout=data), trainer


def _task(trainer: LocalTrainer, round_: int, client: str = "c0") -> EvaluateTask:
    return EvaluateTask(round_, client, trainer.bound.flatten(), ("accuracy", "loss"))


def test_client_answers_once_per_round_for_increasing_rounds_only(
    client_and_trainer: tuple[FederatedClient, LocalTrainer],
) -> None:
    client, trainer = client_and_trainer
    report = client.evaluate(_task(trainer, 2), trainer)
    assert report.num_examples == 30 and set(report.metrics) == {"accuracy", "loss"}
    with pytest.raises(ProtocolError, match="one evaluation per round"):
        client.evaluate(_task(trainer, 2), trainer)  # twice in a round
    with pytest.raises(ProtocolError, match="one evaluation per round"):
        client.evaluate(_task(trainer, 1), trainer)  # an older round
    with pytest.raises(ProtocolError, match="only for itself"):
        client.evaluate(_task(trainer, 5, client="c9"), trainer)
    bad = dataclasses.replace(_task(trainer, 6), weights=np.full(3, np.nan, np.float32))
    with pytest.raises(ProtocolError, match="finite vector"):
        client.evaluate(bad, trainer)
    assert client.evaluate(_task(trainer, 7), trainer).round == 7
    # the guard survives a checkpoint: a resumed client still refuses round 7
    restored = FederatedClient("c0", client.data, holdout=client.holdout)
    restored.load_state_dict(client.state_dict())
    with pytest.raises(ProtocolError, match="one evaluation per round"):
        restored.evaluate(_task(trainer, 7), trainer)
    without = FederatedClient("c1", client.data)
    with pytest.raises(ProtocolError, match="no hold-out"):
        without.evaluate(_task(trainer, 1, client="c1"), trainer)


# --- federated evaluation in a run ---------------------------------------------------------


def test_federated_evaluation_is_recorded_per_client_and_weighted_overall() -> None:
    cfg = tiny_config(FEDERATED, evaluation={"every": 2}, rounds=3)
    with fedfort.Simulation(cfg) as run:
        result = run.run()
    evaluated = [r for r in result.records if "evaluation" in r]
    assert [r["round"] for r in evaluated] == [2, 3]  # every 2 rounds, and the final one
    ev = evaluated[-1]["evaluation"]
    assert sorted(ev["clients"]) == run.ids and ev["rejected"] == {}
    examples = np.array([c["examples"] for c in ev["clients"].values()], dtype=np.float64)
    for metric in ("accuracy", "loss", "auc", "f1", "balanced_accuracy"):
        values = np.array([c[metric] for c in ev["clients"].values()])
        assert ev["overall"][metric] == pytest.approx(np.dot(values, examples) / examples.sum())
    measured = evaluated[-1]["measurements"]["federated_evaluation"]
    assert measured["overall"] == ev["overall"]
    assert 0.5 < ev["overall"]["accuracy"] <= 1.0


def _lies(reports: Sequence[EvaluationReport], round_: int) -> list[EvaluationReport]:
    first, second, third, fourth, *rest = reports
    return [
        dataclasses.replace(first, metrics={**first.metrics, "accuracy": float("nan")}),
        dataclasses.replace(second, metrics={**second.metrics, "accuracy": 7.0}),
        dataclasses.replace(third, num_examples=10**9),
        fourth,
        dataclasses.replace(fourth, metrics={"accuracy": 1.0}),  # the same client again
        EvaluationReport(round_, "intruder", 50, {"accuracy": 1.0}),
        *rest,
    ]


def test_lying_reports_are_dropped_with_a_reason_and_the_round_commits() -> None:
    cfg = tiny_config(FEDERATED, rounds=2)
    with fedfort.Simulation(cfg) as run:
        honest = run.executor.evaluate

        def lying(tasks: Sequence[EvaluateTask], deadline_s: float | None) -> EvaluationOutcome:
            outcome = honest(tasks, deadline_s)
            return EvaluationOutcome(_lies(outcome.reports, tasks[0].round), outcome.missing)

        run.executor.evaluate = lying  # type: ignore[method-assign]
        result = run.run()
    assert [r["round"] for r in result.records] == [1, 2]
    ev = result.records[-1]["evaluation"]
    ids = run.ids
    rejected = ev["rejected"]
    assert set(rejected) == {ids[0], ids[1], ids[2], ids[3], "intruder"}
    assert "accuracy = nan" in rejected[ids[0]]
    assert "accuracy = 7.0" in rejected[ids[1]]
    assert "exceeds the client's cap" in rejected[ids[2]]
    assert rejected[ids[3]].startswith("duplicate")
    assert rejected["intruder"].startswith("not asked")
    assert sorted(ev["clients"]) == ids[4:]
    examples = np.array([ev["clients"][c]["examples"] for c in ids[4:]], dtype=np.float64)
    accuracy = np.array([ev["clients"][c]["accuracy"] for c in ids[4:]])
    assert ev["overall"]["accuracy"] == pytest.approx(np.dot(accuracy, examples) / examples.sum())


def test_regression_on_diabetes_reduces_mse_without_a_server_test_set() -> None:
    cfg = tiny_config(
        FEDERATED,
        data={"dataset": "diabetes", "partition": "iid"},
        model={"name": "mlp"},
        clients={"count": 4, "lr": 0.05, "batch_size": 16},
        evaluation={"server": False},
        rounds=4,
    )
    with fedfort.Simulation(cfg) as run:
        assert run.evaluate(run.model) == {}  # no server-side validation set
        module = run.global_module()
        assert module(torch.zeros(2, 10)).shape == (2, 1)  # one output
        data = run.data
        held = [data.client_test_arrays(k) for k in range(4)]
        x = np.concatenate([h[0] for h in held if h is not None])
        y = np.concatenate([h[1] for h in held if h is not None])
        with torch.no_grad():
            start = float(((module(torch.from_numpy(x))[:, 0].numpy() - y) ** 2).mean())
        result = run.run()
    records = result.records
    assert all(r["accuracy"] is None and r["loss"] is None for r in records)
    final = records[-1]["evaluation"]["overall"]
    assert set(final) == {"loss", "mse", "mae", "r2"}
    assert final["mse"] < 0.75 * start
    assert final["r2"] > 0.2


# --- what a user sees: results.json, the summary, the report, the audit log -----------------


def test_cli_run_without_server_data_reports_the_federated_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        "rounds = 2\n[clients]\ncount = 3\n[data]\ndataset = 'breast_cancer'\n"
        "partition = 'iid'\n[model]\nname = 'logreg'\n"
        "[evaluation]\nclient_holdout = 0.25\nserver = false\n"
    )
    out = tmp_path / "out"
    assert main(["simulate", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "no server test set" in printed
    assert "federated evaluation (round 2, 3 clients): accuracy 0." in printed
    results = json.loads((out / "results.json").read_text())
    assert results["final"]["accuracy"] is None and results["final"]["loss"] is None
    federated = results["federated_evaluation"]
    assert federated["round"] == 2 and len(federated["clients"]) == 3
    assert federated["overall"] == results["rounds"][-1]["evaluation"]["overall"]
    report = build_report(out)
    assert "Federated evaluation" in report and "overall (example-weighted)" in report
    entries = [e for e in read_entries(out / AUDIT_FILE) if e.kind == "federated_evaluation"]
    assert [e.round for e in entries] == [1, 2]
    assert json.loads(entries[-1].body)["overall"] == federated["overall"]
    ends = [json.loads(e.body) for e in read_entries(out / AUDIT_FILE) if e.kind == "round_end"]
    assert ends[-1]["federated"] == federated["overall"] and ends[-1]["accuracy"] is None
    # a resume rebuilds the pipeline and the clients' guards; round 3 is evaluated too
    assert main(["simulate", "--out", str(out), "--resume", "--rounds", "3", "--quiet"]) == 0
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["federated_evaluation"]["round"] == 3
    assert len(resumed["federated_evaluation"]["clients"]) == 3


def test_an_evaluation_report_is_padded_to_one_size_whatever_it_leaves_out() -> None:
    policy = PaddingPolicy()
    task = EvaluateTask(1, "client-000", np.zeros(3, np.float32), ("accuracy", "loss", "auc"))
    rule = policy.reply_rule(task)
    assert rule is not None and rule.exact is not None
    full = EvaluationReport(1, "client-000", 40, {"accuracy": 0.5, "loss": 0.7, "auc": 0.8})
    partial = EvaluationReport(12345, "client-000-long-name", 9, {"accuracy": 0.5})
    sizes = {len(pad_payload(pb.Payload(body=codec.to_value(r)), rule)) for r in (full, partial)}
    assert sizes == {rule.exact}


class _Optimizer(Stage):
    name = "server_optimizer"

    def run(self, ctx: RoundContext) -> None:
        return None


def test_drift_rollback_can_watch_the_federated_accuracy() -> None:
    rollback = DriftRollback(0.1, _Optimizer(), source="federated")
    models = [np.full(2, float(i), np.float32) for i in range(3)]

    def round_(r: int, accuracy: float) -> RoundContext:
        ctx = RoundContext(r, 1, models[r - 1], np.random.default_rng(0), ("a",), None)  # type: ignore[arg-type]
        ctx.new_model = models[r]
        ctx.evaluation = {"accuracy": 0.99}  # the server's value is not the one watched
        ctx.federated_evaluation = {"overall": {"accuracy": accuracy, "loss": 0.3}}
        rollback.run(ctx)
        rollback.commit(ctx)
        return ctx

    assert round_(1, 0.8).new_model is models[1]
    dropped = round_(2, 0.6)  # 0.2 below the best federated accuracy
    assert np.array_equal(dropped.new_model, models[1])
    assert dropped.measurements["rollback"]["rejected_accuracy"] == 0.6
