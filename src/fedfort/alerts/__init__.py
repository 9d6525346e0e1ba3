"""Alerting: rules over a run's metrics, delivered to the log and to a webhook.

- :mod:`~fedfort.alerts.rules`: the rules and their once-per-episode deduplication;
- :mod:`~fedfort.alerts.delivery`: log lines and the retrying, non-blocking webhook;
- :mod:`~fedfort.alerts.manager`: :class:`AlertManager`, a commit hook of the round engine.

Configured by ``[alerts]`` (:class:`fedfort.config.AlertsConfig`); see ``docs/alerting.md``.
"""

from fedfort.alerts.delivery import Delivery, WebhookSender, log_alert
from fedfort.alerts.manager import AlertManager, webhook_url
from fedfort.alerts.rules import Alert, Episodes, RoundRules, RoundThresholds, SignatureFloodRule

__all__ = [
    "Alert",
    "AlertManager",
    "Delivery",
    "Episodes",
    "RoundRules",
    "RoundThresholds",
    "SignatureFloodRule",
    "WebhookSender",
    "log_alert",
    "webhook_url",
]
