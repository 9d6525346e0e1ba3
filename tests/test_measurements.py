"""Typed measurements: stored form, the one registry of names, and the readers that use them.

The audit trail, the metrics hook and the alert rules read what a round published by type, so
a stage renamed in the pipeline still gets its audit entries and series; a user's own
measurement type brings its own audit entry and series; a reader that requires a record the
round did not publish fails with a message instead of reading nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedfort import Simulation
from fedfort.alerts.rules import RoundRules, RoundThresholds
from fedfort.config import RunConfig, parse_config
from fedfort.errors import ConfigError, MeasurementMissing
from fedfort.measurements import (
    AggregateMeasurement,
    DetectMeasurement,
    Measurement,
    MeasurementSet,
    MetricSpec,
    MetricValue,
    PrivacyMeasurement,
    ReputationMeasurement,
    RollbackMeasurement,
    UntypedMeasurement,
    measurement_type,
    register_measurement,
)
from fedfort.measurements import base as measurement_base
from fedfort.monitoring.metrics import FederationMetrics
from fedfort.server import RoundContext, RoundRecord, Stage
from fedfort.server.engine import RoundEngine


def small(**sections: Any) -> RunConfig:
    """A run of a few seconds: digits, logistic regression, full-batch single-epoch clients."""
    body: dict[str, Any] = {
        "rounds": 1,
        "data": {"dataset": "digits", "partition": "iid"},
        "model": {"name": "logreg"},
        "clients": {"count": 6, "epochs": 1, "batch_size": 0, "lr": 0.5},
        "simulation": {"workers": 0},
        **sections,
    }
    return parse_config(body)


def attacked() -> RunConfig:
    """Two of six clients flip and boost their updates; the detector excludes them."""
    return small(
        attack={"name": "sign_flip", "scale": 10.0, "fraction": 0.34},
        detection={"enabled": True, "action": "exclude"},
        reputation={"enabled": True},
    )


def samples(metrics: FederationMetrics) -> dict[str, float]:
    """Unlabelled samples of the exposition by name."""
    text = metrics.exposition().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Types registered by a test leave the process-wide registry as it was."""
    monkeypatch.setattr(measurement_base, "_REGISTRY", dict(measurement_base._REGISTRY))
    monkeypatch.setattr(measurement_base, "_METRIC_OWNERS", dict(measurement_base._METRIC_OWNERS))


def _context() -> RoundContext:
    return RoundContext(
        round=1,
        attempt=1,
        model=np.zeros(2, dtype=np.float32),
        rng=np.random.default_rng(0),
        client_ids=("c0",),
        executor=None,  # type: ignore[arg-type]
    )


# --- the stored form ---------------------------------------------------------------------


def test_records_serialise_to_the_dictionaries_stages_always_wrote() -> None:
    reputation = ReputationMeasurement(
        penalised=["c1"], quarantined=[], mean=0.5, min=0.1, max=0.9, p10=0.2, median=0.5, p90=0.8
    )
    assert list(reputation.to_dict()) == [
        "penalised",
        "quarantined",
        "mean",
        "min",
        "max",
        "p10",
        "median",
        "p90",
    ]
    # without scores the quantiles are left out, and mean/min/max are null
    empty = ReputationMeasurement(penalised=[], quarantined=[])
    assert empty.to_dict() == {
        "penalised": [],
        "quarantined": [],
        "mean": None,
        "min": None,
        "max": None,
    }
    robust = AggregateMeasurement(rule="multi_krum", extra={"selected": ["c0"], "f": 1})
    assert list(robust.to_dict().items()) == [
        ("rule", "multi_krum"),
        ("selected", ["c0"]),
        ("f", 1),
    ]
    privacy = PrivacyMeasurement(mode="central", epsilon=1.0, delta=1e-5)
    assert privacy.to_dict() == {"mode": "central", "epsilon": 1.0, "delta": 1e-5}


def test_secure_aggregation_is_a_typed_field_stored_in_the_rule() -> None:
    secure = AggregateMeasurement(
        rule="secagg+", secure=True, included=4, protocol_dropped={"c3": "masked_input"}
    )
    stored = secure.to_dict()
    assert stored == {
        "rule": "secure_secagg+",
        "included": 4,
        "protocol_dropped": {"c3": "masked_input"},
    }
    back = AggregateMeasurement.from_dict(stored)
    assert (back.secure, back.rule, back.included) == (True, "secagg+", 4)
    assert back.to_dict() == stored
    kinds = [kind for kind, _ in back.audit_entries()]
    assert kinds == ["aggregation", "secure_aggregation"]
    assert back.audit_entries()[1][1] == {
        "mode": "secagg+",
        "included": 4,
        "protocol_dropped": {"c3": "masked_input"},
    }
    plain = AggregateMeasurement.from_dict({"rule": "fedavg", "weighted": True})
    assert not plain.secure and [k for k, _ in plain.audit_entries()] == ["aggregation"]


def test_a_stored_record_reads_back_with_exactly_its_keys() -> None:
    # hand-built and older records may lack fields: reading and re-serialising keeps them as
    # they were, so audit entries rebuilt from a checkpoint equal the ones first written
    partial = {"quarantined": ["c3"], "mean": 0.4}
    record = ReputationMeasurement.from_dict(partial)
    assert record.quarantined == ["c3"] and record.penalised == []
    assert record.to_dict() == partial
    assert record.audit_entries() == [("reputation", partial)]


def test_unknown_names_read_back_untyped() -> None:
    published = MeasurementSet({"clip": {"clipped": 2}, "detect": {"flagged": ["c1"]}})
    records = list(published)
    assert isinstance(records[0], DetectMeasurement)  # registered types first
    assert records[1] == UntypedMeasurement(stage="clip", extra={"clipped": 2})
    assert records[1].audit_entries() == [] and records[1].metric_values() == []


# --- publishing ----------------------------------------------------------------------------


def test_typed_and_untyped_publications_land_in_the_same_round_record() -> None:
    ctx = _context()
    ctx.measure(AggregateMeasurement(rule="secagg+", secure=True, included=3, protocol_dropped={}))
    # a DP release over the session's sum publishes its own rule: merged as before
    ctx.measure(AggregateMeasurement(rule="dp_fedavg_central", extra={"noise_std": 0.5}))
    ctx.measure("clip", clipped=1)
    ctx.measure("clip", norm=2.0)
    assert ctx.measurements == {
        "aggregate": {
            "rule": "dp_fedavg_central",
            "included": 3,
            "protocol_dropped": {},
            "noise_std": 0.5,
        },
        "clip": {"clipped": 1, "norm": 2.0},
    }
    merged = ctx.measurement(AggregateMeasurement)
    assert merged is not None and not merged.secure and merged.secure_session
    with pytest.raises(ConfigError, match="takes no keyword values"):
        ctx.measure(AggregateMeasurement(rule="fedavg"), extra=1)


def test_a_name_is_declared_once(private_registry: None) -> None:
    assert measurement_type("aggregate") is AggregateMeasurement
    assert measurement_type("clip") is None
    with pytest.raises(ConfigError, match="already declared by AggregateMeasurement"):

        @register_measurement
        @dataclasses.dataclass(frozen=True)
        class Other(Measurement):
            name = "aggregate"

    with pytest.raises(ConfigError, match="already fed by measurement 'detect'"):

        @register_measurement
        @dataclasses.dataclass(frozen=True)
        class Thief(Measurement):
            name = "thief"
            metrics = (MetricSpec("fedfort_clients_flagged_total", "stolen", "counter"),)

    with pytest.raises(ConfigError, match="declares no name"):
        register_measurement(Measurement)


def test_a_reader_that_requires_a_measurement_fails_loudly() -> None:
    record = _record({"aggregate": {"rule": "fedavg"}})
    assert record.measurement(PrivacyMeasurement) is None
    with pytest.raises(MeasurementMissing, match=r"no PrivacyMeasurement .*published aggregate\)"):
        record.require(PrivacyMeasurement)
    assert record.require(AggregateMeasurement).rule == "fedavg"


def _record(measurements: dict[str, Any]) -> RoundRecord:
    return RoundRecord(
        round=1,
        attempt=1,
        accuracy=0.5,
        loss=1.0,
        participants=2,
        selected=["c0", "c1"],
        dropped=[],
        rejected=[],
        duration_s=0.1,
        train_loss=None,
        train_time_s=0.0,
        model_sha256="0" * 64,
        measurements=measurements,
        discarded_attempts=[],
        accepted=["c0", "c1"],
    )


# --- readers follow the type, not the stage's name ------------------------------------------


@pytest.fixture(scope="module")
def renamed_run() -> Iterator[tuple[RoundRecord, FederationMetrics, RoundEngine]]:
    """An attacked round whose detect, aggregate and reputation stages carry other names."""
    metrics = FederationMetrics()
    records: list[RoundRecord] = []

    class Keep:
        def on_commit(self, engine: RoundEngine, record: RoundRecord) -> None:
            records.append(record)

    with Simulation(attacked()) as sim:
        for stage in sim.engine.stages:
            if stage.name in ("detect", "aggregate", "reputation"):
                stage.name = f"my_{stage.name}"
        sim.engine.hooks += [metrics, Keep()]
        sim.run()
        yield records[0], metrics, sim.engine


def test_a_renamed_stage_still_writes_its_audit_entries(
    renamed_run: tuple[RoundRecord, FederationMetrics, RoundEngine],
) -> None:
    record, _, engine = renamed_run
    assert {"my_detect", "my_aggregate", "my_reputation"} <= {s.name for s in engine.stages}
    detect = record.require(DetectMeasurement)
    assert detect.flagged, "the attack should be flagged"
    kinds = [kind for kind, _, _ in record.audit_entries()]
    assert kinds == [
        "round_start",
        "clients_selected",
        "clients_flagged",
        "reputation",
        "aggregation",
        "model_version",
        "round_end",
    ]
    flagged = next(body for kind, _, body in record.audit_entries() if kind == "clients_flagged")
    assert flagged["flagged"] == detect.flagged and flagged["action"] == "exclude"


def test_a_renamed_stage_still_feeds_its_metrics_and_alerts(
    renamed_run: tuple[RoundRecord, FederationMetrics, RoundEngine],
) -> None:
    record, metrics, _ = renamed_run
    flagged = len(record.require(DetectMeasurement).flagged)
    values = samples(metrics)
    assert values["fedfort_clients_flagged_total"] == flagged > 0
    assert values["fedfort_round_clients_flagged"] == flagged
    alerts = RoundRules(RoundThresholds(flag_rate=0.1), "run").evaluate(record)
    assert [a.rule for a in alerts] == ["client_flag_rate"]


# --- a user's own stage brings its own audit entry and series -------------------------------


def test_a_users_measurement_type_adds_an_audit_entry_and_a_metric(
    private_registry: None,
) -> None:
    @register_measurement
    @dataclasses.dataclass(frozen=True)
    class ClipMeasurement(Measurement):
        """Updates scaled down to the norm bound."""

        name = "clip"
        metrics = (MetricSpec("fedfort_updates_clipped_total", "Updates clipped.", "counter"),)

        clipped: int = 0

        def audit_entries(self) -> list[tuple[str, dict[str, Any]]]:
            return [("updates_clipped", {"clipped": self.clipped})]

        def metric_values(self) -> list[MetricValue]:
            return [MetricValue("fedfort_updates_clipped_total", self.clipped)]

    class ClipUpdates(Stage):
        name = "clip_everything"

        def run(self, ctx: RoundContext) -> None:
            ctx.accepted = [dataclasses.replace(u, delta=u.delta * 0.5) for u in ctx.accepted]
            ctx.measure(ClipMeasurement(clipped=len(ctx.accepted)))

    metrics = FederationMetrics()
    with Simulation(small()) as sim:
        stages = sim.engine.stages
        stages.insert([s.name for s in stages].index("verify") + 1, ClipUpdates())
        sim.engine.hooks.append(metrics)
        record = sim.engine.run_round(final=True)

    assert record.measurements["clip"] == {"clipped": 6}
    entries = record.audit_entries()
    kinds = [kind for kind, _, _ in entries]
    assert kinds[-3:] == ["updates_clipped", "model_version", "round_end"]
    assert entries[-3][2] == {"clipped": 6}
    assert samples(metrics)["fedfort_updates_clipped_total"] == 6


def test_an_undeclared_metric_value_is_refused(private_registry: None) -> None:
    @register_measurement
    @dataclasses.dataclass(frozen=True)
    class Sloppy(Measurement):
        name = "sloppy"

        def metric_values(self) -> list[MetricValue]:
            return [MetricValue("fedfort_undeclared", 1.0)]

    with pytest.raises(ConfigError, match="fedfort_undeclared, which its type does not declare"):
        FederationMetrics().on_commit(None, _record({"sloppy": {}}))  # type: ignore[arg-type]


def test_rollback_and_privacy_entries_come_from_their_types() -> None:
    record = _record(
        {
            "rollback": RollbackMeasurement(reason="drift", to_version=1).to_dict(),
            "privacy": PrivacyMeasurement(mode="central", epsilon=2.0, delta=1e-5).to_dict(),
        }
    )
    kinds = [kind for kind, _, _ in record.audit_entries()]
    assert kinds[-4:] == ["privacy", "rollback", "model_version", "round_end"]
    metrics = FederationMetrics()
    metrics.on_commit(None, record)  # type: ignore[arg-type]
    assert samples(metrics)["fedfort_rollbacks_total"] == 1


# --- the audit log sits above the server -------------------------------------------------------


def test_the_server_never_imports_the_audit_log() -> None:
    """Not even inside a function: the server reaches the audit log through no import chain."""
    import grimp

    graph = grimp.build_graph("fedfort", cache_dir=None)
    chains = graph.find_shortest_chains(
        importer="fedfort.server", imported="fedfort.audit", as_packages=True
    )
    assert not chains, f"server imports the audit log via {sorted(chains)}"
    below = graph.find_shortest_chains(
        importer="fedfort.measurements", imported="fedfort.server", as_packages=True
    )
    assert not below, f"measurements must stay below the server: {sorted(below)}"
