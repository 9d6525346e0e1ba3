"""The alert manager: a commit hook of the round engine that evaluates the rules and delivers."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from fedfort import jsonio
from fedfort.alerts.delivery import WebhookSender, log_alert
from fedfort.alerts.rules import Alert, Episodes, RoundRules, RoundThresholds, SignatureFloodRule
from fedfort.errors import ConfigError

if TYPE_CHECKING:
    from fedfort.config import AlertsConfig
    from fedfort.server.engine import RoundEngine, RoundRecord

__all__ = ["AlertManager", "webhook_url"]

log = logging.getLogger("fedfort.alerts")


def webhook_url(config: AlertsConfig) -> str | None:
    """The webhook URL of ``[alerts]``: ``webhook_url``, or the variable ``webhook_url_env``."""
    if config.webhook_url_env is None:
        return config.webhook_url
    value = os.environ.get(config.webhook_url_env, "").strip()
    if not value:
        raise ConfigError(
            f"alerts.webhook_url_env names {config.webhook_url_env}, which is not set: export "
            "the webhook URL in it, or unset alerts.webhook_url_env"
        )
    return value


class AlertManager:
    """Watches a run and raises alerts to the log and a webhook (see docs/alerting.md).

    What it defends against: attacks and failures that the defences survive but an operator
    must still learn about while the run is live — poisoning campaigns (flagged clients,
    accuracy collapse), a privacy budget about to run out, mass dropouts, a tampered audit
    trail and forged or replayed messages at the network gate. Every rule fires once per
    episode (see :mod:`fedfort.alerts.rules`).

    Append it to ``engine.hooks`` like :class:`~fedfort.monitoring.FederationMetrics`; the
    network gate reports refusals through :meth:`refused` (thread-safe). With ``run_dir`` and
    the ``audit_chain`` rule on, the run's audit log is verified every that many rounds.
    """

    def __init__(
        self,
        config: AlertsConfig,
        *,
        run_id: str,
        epsilon_budget: float | None = None,
        run_dir: str | Path | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.run_id = run_id
        on = set(config.rules)
        budget = config.epsilon_budget if config.epsilon_budget is not None else epsilon_budget
        self.rules = RoundRules(
            RoundThresholds(
                flag_rate=config.flag_rate if "client_flag_rate" in on else None,
                accuracy_drop=config.accuracy_drop if "accuracy_drop" in on else None,
                accuracy_drop_round=config.accuracy_drop_round if "accuracy_drop" in on else None,
                epsilon_margin=config.epsilon_margin if "privacy_budget" in on else None,
                epsilon_budget=budget,
                dropout_rate=config.dropout_rate if "dropout_spike" in on else None,
            ),
            run_id,
        )
        self.signatures = (
            SignatureFloodRule(
                config.bad_signatures,
                config.bad_signature_window_s,
                config.bad_signature_reasons,
                run_id,
            )
            if "bad_signatures" in on
            else None
        )
        self.verify_audit = "audit_chain" in on
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.audit_episode = Episodes()
        self.fired: list[Alert] = []
        self.round: int | None = None
        self._lock = threading.Lock()
        url = webhook_url(config)
        self.webhook = (
            None
            if url is None
            else WebhookSender(
                url,
                attempts=config.webhook_attempts,
                backoff_s=config.webhook_backoff_s,
                backoff_max_s=config.webhook_backoff_max_s,
                timeout_s=config.webhook_timeout_s,
                queue_size=config.webhook_queue_size,
            )
        )
        self._counter = (
            None
            if registry is None
            else Counter(
                "fedfort_alerts_total",
                "Alerts fired, by rule.",
                ["rule", "severity"],
                registry=registry,
            )
        )

    def fire(self, alert: Alert) -> None:
        """Log ``alert`` and queue it for the webhook (never blocks on the network)."""
        with self._lock:
            self.fired.append(alert)
        log_alert(alert)
        if self._counter is not None:
            self._counter.labels(rule=alert.rule, severity=alert.severity).inc()
        if self.webhook is not None:
            self.webhook.submit(alert)

    def on_commit(self, engine: RoundEngine, record: RoundRecord) -> None:
        """Evaluate the round rules on ``record`` (the engine's commit-hook protocol)."""
        del engine
        self.round = record.round
        for alert in self.rules.evaluate(record):
            self.fire(alert)
        if self.signatures is not None:
            with self._lock:
                self.signatures.expire()
        every = self.config.audit_verify_every
        if self.verify_audit and self.run_dir is not None and record.round % every == 0:
            self.check_audit(record.round)

    def check_audit(self, round_: int | None = None) -> bool:
        """Verify the run's audit log now; fire ``audit_chain`` when it fails. ``True`` if ok."""
        from fedfort.audit import AUDIT_FILE, verify_run
        from fedfort.errors import AuditError

        if self.run_dir is None or not (self.run_dir / AUDIT_FILE).exists():
            return True
        try:
            result = verify_run(self.run_dir)
            ok, problem, bad = result.ok, result.problem, result.bad_seq
        except AuditError as exc:
            ok, problem, bad = False, str(exc), None
        if self.audit_episode.update("audit_chain", not ok):
            where = "" if bad is None else f" at entry {bad}"
            self.fire(
                Alert(
                    "audit_chain",
                    "critical",
                    self.run_id,
                    round_,
                    1.0,
                    0.0,
                    f"the audit log of {self.run_dir} FAILED verification{where}: {problem}",
                    time.time(),
                )
            )
        return ok

    def publish_head(self, round_: int, head: Mapping[str, Any]) -> None:
        """Send the audit log's signed head after ``round_`` to the log and the webhook.

        An ``audit_head`` notice (severity ``info``, not counted as a fired alert) whose
        ``message`` is the head as JSON, the same as ``audit-head.json``: the receiver keeps a
        copy outside the run directory that ``fedfort audit verify --head`` checks the log
        against later (docs/governance.md).
        """
        notice = Alert(
            "audit_head",
            "info",
            self.run_id,
            round_,
            float(head["seq"]),
            0.0,
            jsonio.dumps(dict(head), sort_keys=True),
            time.time(),
        )
        log_alert(notice)
        if self.webhook is not None:
            self.webhook.submit(notice)

    def refused(self, client: str, reason: str, detail: str = "") -> None:
        """Count a refusal at the network gate (called from the transport's threads)."""
        del detail
        if self.signatures is None:
            return
        with self._lock:
            alert = self.signatures.refused(client, reason, self.round)
        if alert is not None:
            self.fire(alert)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait for the webhook to deliver (or give up on) every queued alert."""
        return True if self.webhook is None else self.webhook.flush(timeout_s)

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close(self.config.webhook_timeout_s)

    def summary(self) -> dict[str, Any]:
        """Fired alerts and webhook outcomes (JSON-friendly)."""
        deliveries = [] if self.webhook is None else list(self.webhook.deliveries)
        return {
            "fired": [a.to_dict() for a in self.fired],
            "delivered": sum(d.delivered for d in deliveries),
            "failed": sum(not d.delivered for d in deliveries),
        }
