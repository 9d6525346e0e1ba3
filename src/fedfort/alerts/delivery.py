"""Delivering alerts: a log line per alert, and a webhook on a background thread.

:class:`WebhookSender` POSTs each alert as JSON (``Content-Type: application/json``) with the
standard library's HTTP client. A connection error, a timeout, ``429`` or a ``5xx`` answer is
retried with exponential backoff (``backoff_s * 2**(attempt-1)``, capped at ``backoff_max_s``)
up to ``attempts`` tries in all; any other ``4xx`` is a permanent failure (a wrong URL or a
receiver that rejects the body) and is not retried. Alerts wait in a bounded queue served by
one daemon thread, so a slow or dead receiver never blocks a round; when the queue is full the
new alert is dropped and an ERROR line says so (it is still in the log).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from fedfort import jsonio
from fedfort._version import __version__
from fedfort.alerts.rules import Alert
from fedfort.errors import ConfigError

__all__ = ["Delivery", "WebhookSender", "log_alert"]

log = logging.getLogger("fedfort.alerts")

_LEVELS: Final = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


def log_alert(alert: Alert) -> None:
    """The alert as one WARNING (``warning``) or ERROR (``critical``) line."""
    log.log(
        _LEVELS[alert.severity],
        "ALERT %s [%s] run=%s round=%s value=%.4g threshold=%.4g: %s",
        alert.rule,
        alert.severity,
        alert.run_id,
        alert.round,
        alert.value,
        alert.threshold,
        alert.message,
    )


@dataclass
class Delivery:
    """What happened to one alert at the webhook."""

    alert: Alert
    attempts: int = 0
    delivered: bool = False
    status: int | None = None
    error: str | None = None
    timings: list[float] = field(default_factory=list)


def _redacted(url: str) -> str:
    """``scheme://host[:port]`` only: webhook paths and queries often carry a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class WebhookSender:
    """Posts alerts to ``url`` from a background thread, with bounded retries and backoff.

    ``sleep`` is injectable for tests. :meth:`flush` waits until every queued alert was
    delivered or given up; :meth:`close` stops the thread after a bounded drain.
    """

    def __init__(
        self,
        url: str,
        *,
        attempts: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 5.0,
        queue_size: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"the alert webhook must be an http:// or https:// URL, got {_redacted(url)!r}"
            )
        if attempts < 1 or backoff_s <= 0 or backoff_max_s < backoff_s or timeout_s <= 0:
            raise ConfigError(
                "webhook delivery needs attempts >= 1, backoff_s > 0, backoff_max_s >= "
                "backoff_s and timeout_s > 0"
            )
        self.url = url
        self.target = _redacted(url)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.deliveries: list[Delivery] = []
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_size)
        self._idle = threading.Condition()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="fedfort-alerts", daemon=True)
        self._thread.start()

    def submit(self, alert: Alert) -> bool:
        """Queue ``alert``; ``False`` (and an ERROR line) when the queue is full or closed."""
        with self._idle:
            if self._closed:
                log.error("alert webhook closed; %s not sent", alert.rule)
                return False
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                log.error("alert webhook queue full; %s not sent to %s", alert.rule, self.target)
                return False
            self._pending += 1
        return True

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))

    def _serve(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            try:
                self.deliveries.append(self._deliver(alert))
            except Exception:  # never let one alert kill the sender
                log.exception("alert webhook: unexpected error while sending %s", alert.rule)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _post(self, body: bytes) -> int:
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"fedfort/{__version__} alerts",
            },
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return int(response.status)

    def _deliver(self, alert: Alert) -> Delivery:
        body = jsonio.dumps(alert.to_dict(), sort_keys=True, non_finite="null").encode()
        delivery = Delivery(alert)
        for attempt in range(1, self.attempts + 1):
            delivery.attempts = attempt
            delivery.timings.append(time.monotonic())
            retry = True
            try:
                delivery.status = self._post(body)
                delivery.delivered = True
                log.info("alert %s delivered to %s (attempt %d)", alert.rule, self.target, attempt)
                return delivery
            except urllib.error.HTTPError as exc:
                delivery.status, delivery.error = exc.code, f"HTTP {exc.code}"
                retry = exc.code == 429 or exc.code >= 500
            except (urllib.error.URLError, OSError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                delivery.status, delivery.error = None, str(reason)
            if not retry:
                break
            if attempt < self.attempts:
                wait = self.delay(attempt)
                log.warning(
                    "alert %s: webhook %s failed (%s), retry %d/%d in %.2f s",
                    alert.rule,
                    self.target,
                    delivery.error,
                    attempt,
                    self.attempts - 1,
                    wait,
                )
                self.sleep(wait)
        log.error(
            "alert %s NOT delivered to %s after %d attempt(s): %s",
            alert.rule,
            self.target,
            delivery.attempts,
            delivery.error,
        )
        return delivery

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until the queue is empty and nothing is in flight; ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (waiting at most ``timeout_s``), then stop the thread."""
        self.flush(timeout_s)
        with self._idle:
            if self._closed:
                return
            self._closed = True
        try:
            self._queue.put(None, timeout=max(timeout_s, 0.1))
        except queue.Full:  # a stuck receiver: the daemon thread dies with the process
            return
        self._thread.join(timeout=max(timeout_s, 0.1))
