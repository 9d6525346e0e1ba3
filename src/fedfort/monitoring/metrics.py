"""Prometheus metrics of a federation run, and a small HTTP server that exposes them.

:class:`FederationMetrics` is a commit hook of the :class:`~fedfort.server.RoundEngine`: append
it to ``engine.hooks`` (``sim.engine.hooks.append(metrics)``) and every committed round updates
its series from the :class:`~fedfort.server.engine.RoundRecord`. The network gate reports the
updates it refuses before they reach a round through :meth:`FederationMetrics.refused`, and a
rollback of the global model through :meth:`FederationMetrics.rolled_back`.

Every instance owns a fresh :class:`~prometheus_client.CollectorRegistry` (never the process-wide
default one), so several runs, or several tests, live side by side in one process.
:class:`MetricsServer` serves such a registry at ``http://host:port/metrics`` for Prometheus to
scrape (``deploy/prometheus/prometheus.yml``; dashboard: ``deploy/grafana``).

The series, all prefixed ``fedfort_``:

==========================================  =========  ============================================
series                                      type       meaning
==========================================  =========  ============================================
``fedfort_round``                           gauge      last committed round number
``fedfort_rounds_total``                    counter    rounds committed by this process
``fedfort_round_duration_seconds``          histogram  wall time of each committed round
``fedfort_last_round_duration_seconds``     gauge      wall time of the last committed round
``fedfort_round_participants``              gauge      updates aggregated in the last round
``fedfort_round_selected``                  gauge      clients selected for the last round
``fedfort_round_dropped``                   gauge      selected clients that did not answer
``fedfort_updates_rejected_total``          counter    refused updates, label ``reason`` (the
                                                       verifier's code, e.g. ``non_finite``, or a
                                                       network-gate code such as ``bad_signature``)
``fedfort_clients_flagged_total``           counter    updates flagged by the anomaly detector
``fedfort_round_clients_flagged``           gauge      updates flagged in the last round
``fedfort_reputation``                      gauge      reputation scores, label ``stat`` in min,
                                                       p10, median, p90, max, mean
``fedfort_clients_quarantined``             gauge      clients currently quarantined
``fedfort_privacy_epsilon_spent``           gauge      epsilon spent so far (privacy accounting)
``fedfort_privacy_delta``                   gauge      the delta that epsilon is reported at
``fedfort_privacy_epsilon_budget``          gauge      the run's target epsilon, when it has one
``fedfort_validation_accuracy``             gauge      held-out accuracy of the global model
``fedfort_validation_loss``                 gauge      held-out loss of the global model
``fedfort_secagg_dropouts_total``           counter    clients that vanished mid-protocol in
                                                       committed secure-aggregation sessions
``fedfort_round_secagg_dropouts``           gauge      such dropouts in the last round
``fedfort_rollbacks_total``                 counter    rollbacks of the global model
``fedfort_round_attempts_discarded_total``  counter    round attempts discarded before a commit
``fedfort_federated_metric``               gauge      the clients' example-weighted evaluation on
                                                       their hold-outs, label ``metric``
``fedfort_federated_reports_rejected_total`` counter   client evaluation reports the server dropped
==========================================  =========  ============================================

The series fed by a round's measurements (flagged, reputation, quarantined, secagg dropouts,
rollbacks, federated evaluation) are declared by the measurement types themselves
(:attr:`fedfort.measurements.Measurement.metrics`), and each round adds what the published
records report (:meth:`~fedfort.measurements.Measurement.metric_values`): a user's own
measurement type brings its own series the same way, created the first time it is published.

Gauges fed by optional measurements (accuracy and loss, privacy, reputation) keep their last
value through rounds that do not report them (e.g. rounds between evaluations); the per-round
gauges (participants, flagged, secagg dropouts...) describe the last round, 0 included. An
unlabelled gauge never set reads 0 (e.g. epsilon spent in a run without privacy). Rejections
inside discarded attempts are not counted under ``fedfort_updates_rejected_total``; only the
discard itself is, under ``fedfort_round_attempts_discarded_total``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from fedfort.errors import ConfigError
from fedfort.measurements import REPUTATION_STATS, MetricSpec, MetricValue, measurement_types
from fedfort.monitoring.guarding import RequestGuard
from fedfort.monitoring.metrics_http import GuardedMetricsHTTP
from fedfort.monitoring.serving import BackgroundServer, check_exposure

if TYPE_CHECKING:
    import ssl

    from fedfort.server.engine import RoundEngine, RoundRecord

__all__ = ["DURATION_BUCKETS", "REPUTATION_STATS", "FederationMetrics", "MetricsServer"]

#: histogram buckets (seconds) of round durations: a tiny simulated round to a slow deployment
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    60.0,
    120.0,
    300.0,
    600.0,
)


class FederationMetrics:
    """Prometheus series of one federation; a commit hook of the round engine.

    ``epsilon_budget`` (the run's target epsilon) is exported as
    ``fedfort_privacy_epsilon_budget`` so dashboards can plot spent against budget. Without
    ``registry`` the series live in a new registry of their own, never in the global default.
    """

    def __init__(
        self,
        *,
        epsilon_budget: float | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        reg = self.registry

        self._round = Gauge("fedfort_round", "Last committed round number.", registry=reg)
        self._rounds = Counter(
            "fedfort_rounds_total", "Rounds committed by this process.", registry=reg
        )
        self._duration = Histogram(
            "fedfort_round_duration_seconds",
            "Wall time of each committed round, from selection to commit.",
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self._last_duration = Gauge(
            "fedfort_last_round_duration_seconds",
            "Wall time of the last committed round.",
            registry=reg,
        )
        self._participants = Gauge(
            "fedfort_round_participants",
            "Updates that went into the last round's aggregate.",
            registry=reg,
        )
        self._selected = Gauge(
            "fedfort_round_selected", "Clients selected for the last round.", registry=reg
        )
        self._dropped = Gauge(
            "fedfort_round_dropped",
            "Selected clients that did not answer in the last round.",
            registry=reg,
        )
        self._rejected = Counter(
            "fedfort_updates_rejected_total",
            "Updates refused by the server's verification or the network gate, by reason.",
            ["reason"],
            registry=reg,
        )
        self._epsilon = Gauge(
            "fedfort_privacy_epsilon_spent",
            "Differential-privacy epsilon spent so far.",
            registry=reg,
        )
        self._delta = Gauge(
            "fedfort_privacy_delta",
            "The delta at which the spent epsilon is reported.",
            registry=reg,
        )
        self._budget = Gauge(
            "fedfort_privacy_epsilon_budget",
            "The run's target epsilon (privacy budget).",
            registry=reg,
        )
        self._accuracy = Gauge(
            "fedfort_validation_accuracy",
            "Held-out accuracy of the global model at its last evaluation.",
            registry=reg,
        )
        self._loss = Gauge(
            "fedfort_validation_loss",
            "Held-out loss of the global model at its last evaluation.",
            registry=reg,
        )
        # the series of the published measurements, declared by their types
        self._series: dict[str, Counter | Gauge] = {}
        self._per_round: list[Gauge] = []
        for cls in measurement_types():
            self._declare(cls.metrics)
        self._discarded = Counter(
            "fedfort_round_attempts_discarded_total",
            "Round attempts discarded (e.g. below quorum) before a commit.",
            registry=reg,
        )
        if epsilon_budget is not None:
            self._budget.set(float(epsilon_budget))

    def on_commit(self, engine: RoundEngine, record: RoundRecord) -> None:
        """Update every series from a committed round (the engine's commit-hook protocol)."""
        del engine  # everything needed is in the record
        self._round.set(record.round)
        self._rounds.inc()
        self._duration.observe(record.duration_s)
        self._last_duration.set(record.duration_s)
        self._participants.set(record.participants)
        self._selected.set(len(record.selected))
        self._dropped.set(len(record.dropped))
        for rejection in record.rejected:
            self._rejected.labels(reason=str(rejection.get("reason") or "unknown")).inc()

        if record.accuracy is not None:
            self._accuracy.set(record.accuracy)
        if record.loss is not None:
            self._loss.set(record.loss)
        if record.epsilon is not None:
            self._epsilon.set(record.epsilon)
        if record.delta is not None:
            self._delta.set(record.delta)

        # per-round gauges describe this round: 0 unless a measurement sets them
        for gauge in self._per_round:
            gauge.set(0)
        for measurement in record.published:
            self._declare(type(measurement).metrics)
            for value in measurement.metric_values():
                self._apply(value)
        self._discarded.inc(len(record.discarded_attempts))

    def _declare(self, specs: Iterable[MetricSpec]) -> None:
        """Create the series of ``specs`` not created yet (a user's type on first use)."""
        for spec in specs:
            if spec.name in self._series:
                continue
            kind = Counter if spec.kind == "counter" else Gauge
            series = kind(spec.name, spec.help, list(spec.labels), registry=self.registry)
            self._series[spec.name] = series
            if spec.per_round and isinstance(series, Gauge) and not spec.labels:
                self._per_round.append(series)

    def _apply(self, value: MetricValue) -> None:
        series = self._series.get(value.name)
        if series is None:
            raise ConfigError(
                f"a measurement reported metric {value.name}, which its type does not declare: "
                "add a MetricSpec for it to the type's `metrics`"
            )
        target = series.labels(**value.labels) if value.labels else series
        if isinstance(target, Counter):
            target.inc(value.value)
        else:
            target.set(value.value)

    def refused(self, reason: str) -> None:
        """Count an update the network gate refused (bad signature, replay, ...) by reason."""
        self._rejected.labels(reason=reason).inc()

    def rolled_back(self) -> None:
        """Count a rollback of the global model."""
        series = self._series["fedfort_rollbacks_total"]
        assert isinstance(series, Counter)
        series.inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format, as ``/metrics`` serves it."""
        return generate_latest(self.registry)


class MetricsServer(BackgroundServer):
    """Serves /metrics of a registry over HTTP on a background thread.

    ``address`` is ``host:port``; port 0 picks a free port (read it from :attr:`port` after
    :meth:`start`). A bad address raises :class:`~fedfort.errors.ConfigError` here, one that
    cannot be bound (in use, unknown host) raises it from :meth:`start`. Usable as a context
    manager: ``with MetricsServer(metrics.registry, "127.0.0.1:9464") as server: ...``.

    With ``guard`` (access control) a scrape needs a bearer token allowed ``metrics.read``
    (Prometheus: ``authorization`` in the scrape config) and ``tls`` serves HTTPS (required
    off loopback); without a guard only a loopback address may be bound, and only requests
    whose ``Host`` names a loopback address are answered (no DNS rebinding).
    """

    what = "metrics"
    path = "/metrics"

    def __init__(
        self,
        registry: CollectorRegistry,
        address: str = "127.0.0.1:0",
        *,
        guard: RequestGuard | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(address, 9464, guard=guard)
        check_exposure(self.what, self.host, guard, tls)
        self.registry = registry
        self.tls = tls

    def _bind(self, host: str, port: int) -> tuple[Any, threading.Thread]:
        guarded = GuardedMetricsHTTP(host, port, self)
        return guarded, guarded.serve_in_background("metrics")
