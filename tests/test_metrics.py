"""Prometheus metrics of real runs, scraped over HTTP, and the deploy files that consume them."""

from __future__ import annotations

import importlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conftest import tiny_config
from fedfort import Simulation
from fedfort.config import RunConfig
from fedfort.errors import ConfigError
from fedfort.monitoring import metrics as metrics_module
from fedfort.monitoring.metrics import REPUTATION_STATS, FederationMetrics, MetricsServer
from fedfort.server.engine import RoundEngine, RoundRecord

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "fedfort-dashboard.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def run_with_metrics(
    cfg: RunConfig, metrics: FederationMetrics
) -> tuple[list[dict[str, Any]], RoundEngine]:
    """Run ``cfg`` with ``metrics`` as a commit hook; the round records and the engine."""
    with Simulation(cfg) as sim:
        sim.engine.hooks.append(metrics)
        result = sim.run()
        return result.records, sim.engine


def parse(text: str | bytes) -> Samples:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        body: bytes = response.read()
    return parse(body)


@pytest.fixture(scope="module")
def engine() -> Iterator[RoundEngine]:
    """A real engine for hand-built records (the metrics hook only reads the record)."""
    with Simulation(tiny_config(rounds=1)) as sim:
        yield sim.engine


def full_record(round_: int = 1) -> RoundRecord:
    """A record with every measurement the metrics read, as the stages write them."""
    return RoundRecord(
        round=round_,
        attempt=2,
        accuracy=0.75,
        loss=0.8,
        participants=4,
        selected=["c0", "c1", "c2", "c3", "c4", "c5"],
        dropped=["c5"],
        rejected=[{"client_id": "c4", "reason": "non_finite", "detail": "contains NaN or Inf"}],
        duration_s=1.25,
        train_loss=0.9,
        train_time_s=1.0,
        model_sha256="0" * 64,
        measurements={
            "detect": {"action": "exclude", "flagged": ["c3"]},
            "reputation": {
                "penalised": ["c3", "c4"],
                "quarantined": ["c3"],
                "mean": 0.5,
                "min": 0.1,
                "max": 0.6,
                "p10": 0.2,
                "median": 0.55,
                "p90": 0.6,
            },
            "aggregate": {"rule": "secagg", "protocol_dropped": {"c2": "masked"}},
            "privacy": {"epsilon": 1.5, "delta": 1e-5},
            "rollback": {"to_round": 0},
            "federated_evaluation": {
                "overall": {"accuracy": 0.7, "loss": 0.9},
                "examples": {"c0": 10, "c1": 12},
                "rejected": {"c4": "examples: 1000000000 exceeds the client's cap of 100"},
                "missing": [],
            },
        },
        discarded_attempts=[{"attempt": 1, "reason": "below quorum"}],
        epsilon=1.5,
        delta=1e-5,
        accepted=["c0", "c1", "c2"],
    )


def test_attacked_run_with_detection_and_reputation_is_scraped_over_http() -> None:
    cfg = tiny_config(
        attack={"name": "sign_flip", "scale": 10.0, "fraction": 0.34},
        detection={"enabled": True, "action": "exclude"},
        reputation={"enabled": True},
    )
    metrics = FederationMetrics()
    records, _ = run_with_metrics(cfg, metrics)
    assert len(records) == 3
    last = records[-1]
    with MetricsServer(metrics.registry, "127.0.0.1:0") as server:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        samples = scrape(server.url)

    assert value(samples, "fedfort_round") == 3
    assert value(samples, "fedfort_rounds_total") == 3
    assert last["accuracy"] is not None
    assert value(samples, "fedfort_validation_accuracy") == pytest.approx(last["accuracy"])
    assert value(samples, "fedfort_validation_loss") == pytest.approx(last["loss"])
    assert value(samples, "fedfort_round_participants") == last["participants"]
    assert value(samples, "fedfort_round_selected") == len(last["selected"])
    assert value(samples, "fedfort_round_dropped") == len(last["dropped"])

    durations = [r["duration_s"] for r in records]
    assert value(samples, "fedfort_round_duration_seconds_count") == 3
    assert value(samples, "fedfort_round_duration_seconds_sum") == pytest.approx(sum(durations))
    assert value(samples, "fedfort_round_duration_seconds_bucket", le="+Inf") == 3
    assert value(samples, "fedfort_last_round_duration_seconds") == pytest.approx(durations[-1])

    flagged = [r["measurements"]["detect"]["flagged"] for r in records]
    assert sum(map(len, flagged)) > 0  # the sign flippers were caught
    assert value(samples, "fedfort_clients_flagged_total") == sum(map(len, flagged))
    assert value(samples, "fedfort_round_clients_flagged") == len(flagged[-1])

    reputation = last["measurements"]["reputation"]
    for stat in REPUTATION_STATS:
        assert value(samples, "fedfort_reputation", stat=stat) == pytest.approx(reputation[stat])
    assert value(samples, "fedfort_clients_quarantined") == len(reputation["quarantined"])

    # no secure aggregation and no verification failures in this run
    assert value(samples, "fedfort_secagg_dropouts_total") == 0
    assert not any(name == "fedfort_updates_rejected_total" for name, _ in samples)


def test_central_dp_run_exports_epsilon_spent_and_budget() -> None:
    cfg = tiny_config(
        clients={"count": 8},
        privacy={"mode": "central", "target_epsilon": 3.0, "secure_noise": False},
    )
    budget = cfg.privacy.target_epsilon
    assert budget is not None
    metrics = FederationMetrics(epsilon_budget=budget)
    records, _ = run_with_metrics(cfg, metrics)
    samples = parse(metrics.exposition())
    epsilons = [r["epsilon"] for r in records]
    assert all(e is not None for e in epsilons) and epsilons == sorted(epsilons)
    assert value(samples, "fedfort_privacy_epsilon_spent") == pytest.approx(epsilons[-1])
    assert 0 < value(samples, "fedfort_privacy_epsilon_spent") <= budget
    assert value(samples, "fedfort_privacy_epsilon_budget") == budget
    assert value(samples, "fedfort_privacy_delta") == pytest.approx(records[-1]["delta"])


def test_secure_aggregation_dropouts_are_counted() -> None:
    cfg = tiny_config(
        clients={"count": 8},
        secure_aggregation={"mode": "secagg", "simulated_dropout": 0.1},
        server={"max_attempts": 6, "quorum": 0.0},
        # clients adding their own fresh noise may retry a round on the same model
        privacy={"client": {"max_clip_norm": 100.0, "min_noise_std": 1e-4}},
    )
    metrics = FederationMetrics()
    records, _ = run_with_metrics(cfg, metrics)
    samples = parse(metrics.exposition())
    dropped = [r["measurements"]["aggregate"]["protocol_dropped"] for r in records]
    assert sum(map(len, dropped)) > 0
    assert value(samples, "fedfort_secagg_dropouts_total") == sum(map(len, dropped))
    assert value(samples, "fedfort_round_secagg_dropouts") == len(dropped[-1])
    discarded = sum(len(r["discarded_attempts"]) for r in records)
    assert value(samples, "fedfort_round_attempts_discarded_total") == discarded


def test_refusals_rejections_and_rollbacks_are_counted_by_reason(engine: RoundEngine) -> None:
    metrics = FederationMetrics()
    metrics.refused("bad_signature")
    metrics.refused("bad_signature")
    metrics.refused("replay")
    record = full_record()
    metrics.on_commit(engine, record)
    metrics.rolled_back()
    samples = parse(metrics.exposition())
    rejected = "fedfort_updates_rejected_total"
    assert value(samples, rejected, reason="bad_signature") == 2
    assert value(samples, rejected, reason="replay") == 1
    assert value(samples, rejected, reason="non_finite") == 1
    assert value(samples, "fedfort_rollbacks_total") == 2  # the record's rollback + rolled_back()
    assert value(samples, "fedfort_round_attempts_discarded_total") == 1
    assert value(samples, "fedfort_secagg_dropouts_total") == 1
    assert value(samples, "fedfort_clients_quarantined") == 1
    # the budget is only exported when the run has one
    assert value(samples, "fedfort_privacy_epsilon_budget") == 0

    # missing optional values keep the last reported ones; per-round gauges follow the round
    later = full_record(round_=2)
    later.accuracy = later.loss = later.epsilon = None
    later.rejected = []
    later.measurements = {"reputation": {"mean": 0.4, "min": None, "quarantined": []}}
    metrics.on_commit(engine, later)
    samples = parse(metrics.exposition())
    assert value(samples, "fedfort_round") == 2
    assert value(samples, "fedfort_validation_accuracy") == 0.75
    assert value(samples, "fedfort_privacy_epsilon_spent") == 1.5
    assert value(samples, "fedfort_reputation", stat="mean") == 0.4
    assert value(samples, "fedfort_reputation", stat="min") == 0.1
    assert value(samples, "fedfort_clients_quarantined") == 0
    assert value(samples, "fedfort_round_clients_flagged") == 0
    assert value(samples, "fedfort_round_secagg_dropouts") == 0
    assert value(samples, rejected, reason="non_finite") == 1
    assert value(samples, "fedfort_rollbacks_total") == 2


def test_each_instance_has_its_own_registry(engine: RoundEngine) -> None:
    a, b = FederationMetrics(), FederationMetrics()
    assert a.registry is not b.registry
    a.on_commit(engine, full_record())
    assert value(parse(a.exposition()), "fedfort_rounds_total") == 1
    assert value(parse(b.exposition()), "fedfort_rounds_total") == 0
    shared = CollectorRegistry()
    assert FederationMetrics(registry=shared).registry is shared


def dashboard_series() -> set[str]:
    """The series names used in the dashboard's PromQL expressions."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            expr = node.get("expr")
            if isinstance(expr, str):
                names.update(re.findall(r"fedfort_[a-z_]+", expr))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    board = json.loads(DASHBOARD.read_text())
    walk(board["panels"])
    return names


def test_dashboard_uses_exactly_the_exported_series(engine: RoundEngine) -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert 36 <= board["schemaVersion"] <= 41
    metrics = FederationMetrics(epsilon_budget=2.0)
    metrics.on_commit(engine, full_record())
    families = [
        f
        for f in text_string_to_metric_families(metrics.exposition().decode())
        if not f.name.endswith("_created")
    ]
    exported = {s.name for f in families for s in f.samples}
    used = dashboard_series()
    assert used, "no fedfort_ series found in the dashboard"
    assert used <= exported, f"dashboard uses series that are not exported: {used - exported}"
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in families:
        names = {family.name + s for s in suffixes.get(family.type, ("",))}
        assert names & used, f"{family.name} is exported but on no dashboard panel"
        documented = family.name + ("_total" if family.type == "counter" else "")
        assert f"``{documented}``" in (metrics_module.__doc__ or "")


def test_prometheus_config_scrapes_the_fedfort_job() -> None:
    text = PROMETHEUS.read_text()
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError:  # PyYAML is not a dependency; check the text instead
        assert re.search(r"^\s*-\s*job_name:\s*fedfort\s*$", text, re.MULTILINE)
        assert re.search(r"targets:\s*\[\s*\"localhost:9464\"\s*\]", text)
        assert re.search(r"^\s*scrape_interval:\s*5s\s*$", text, re.MULTILINE)
        assert "--metrics 127.0.0.1:9464" in text
    else:
        config = yaml.safe_load(text)
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "fedfort"]
        assert job["static_configs"][0]["targets"] == ["localhost:9464"]
        assert job["scrape_interval"] == "5s"


@pytest.mark.parametrize(
    "address",
    ["", "9464", "localhost", "localhost:", ":9464", "localhost:http", "localhost:70000",
     "::1:9464", "[not-v6]:9464", "local host:9464", "localhost:-1"],
)  # fmt: skip
def test_bad_metrics_addresses_are_refused(address: str) -> None:
    with pytest.raises(ConfigError, match="host:port"):
        MetricsServer(CollectorRegistry(), address)


def test_server_refuses_a_busy_port_and_close_frees_it() -> None:
    metrics = FederationMetrics()
    server = MetricsServer(metrics.registry)
    with pytest.raises(RuntimeError, match="start"):
        _ = server.port
    assert server.start() is server
    assert server.start() is server  # already running: no second socket
    port = server.port
    assert port > 0
    assert value(scrape(server.url), "fedfort_rounds_total") == 0
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
        MetricsServer(metrics.registry, f"127.0.0.1:{port}").start()
    url = server.url
    server.close()
    server.close()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)
    with MetricsServer(metrics.registry, f"127.0.0.1:{port}") as again:
        assert again.port == port
        assert value(scrape(again.url), "fedfort_round") == 0


def test_metrics_without_access_refuse_a_foreign_host_header() -> None:
    """DNS rebinding: a page on attacker.example re-points its name at 127.0.0.1 and reads
    /metrics from the victim's browser; the request still says ``Host: attacker.example``."""
    registry = CollectorRegistry()
    with MetricsServer(registry, "127.0.0.1:0") as server:
        rebound = urllib.request.Request(
            server.url, headers={"Host": f"attacker.example:{server.port}"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(rebound, timeout=10)
        assert info.value.code == 403
        for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]"):
            request = urllib.request.Request(server.url, headers={"Host": host})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
