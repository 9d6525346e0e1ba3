"""Alert rules over a run's round records, each firing once per episode of its condition.

A rule watches one signal of the committed :class:`~fedfort.server.engine.RoundRecord` (or of
the transport's refusals) and *fires* when the signal crosses its threshold. It stays quiet
while the condition holds and re-arms once the condition clears, so an attack that lasts ten
rounds gives one alert, not ten (the deduplication Prometheus Alertmanager does by grouping
firing alerts; here it is done at the source).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from fedfort.measurements import DetectMeasurement, MeasurementSet

__all__ = [
    "SEVERITIES",
    "Alert",
    "Episodes",
    "RoundRules",
    "RoundThresholds",
    "SignatureFloodRule",
]

Severity = Literal["info", "warning", "critical"]
SEVERITIES: Final[tuple[str, ...]] = ("warning", "critical")


@dataclass(frozen=True)
class Alert:
    """One fired alert: the webhook's JSON body (:meth:`to_dict`) and the log line."""

    rule: str
    severity: Severity
    run_id: str
    round: int | None
    value: float
    threshold: float
    message: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Episodes:
    """Remembers which conditions are firing, so each episode alerts once.

    :meth:`update` returns ``True`` only on the transition from clear to firing.
    """

    def __init__(self) -> None:
        self.active: set[str] = set()

    def update(self, key: str, firing: bool) -> bool:
        if not firing:
            self.active.discard(key)
            return False
        if key in self.active:
            return False
        self.active.add(key)
        return True


def _nonempty(scores: object) -> bool:
    """Whether the detector scored any update (a stored record may hold anything)."""
    return isinstance(scores, Mapping) and bool(scores)


@dataclass(frozen=True)
class RoundThresholds:
    """Thresholds of the round rules; ``None`` switches a rule off."""

    flag_rate: float | None = 0.3
    accuracy_drop: float | None = 0.1
    accuracy_drop_round: float | None = 0.05
    epsilon_margin: float | None = 0.5
    epsilon_budget: float | None = None
    dropout_rate: float | None = 0.5


class RoundRules:
    """The rules evaluated on every committed round record.

    - ``client_flag_rate``: share of the round's scored updates the anomaly detector flagged
      is above ``flag_rate`` (a poisoning campaign, cf. the detection of Fang et al. 2020);
    - ``accuracy_drop``: held-out accuracy fell more than ``accuracy_drop`` below the best so
      far, or more than ``accuracy_drop_round`` below the previous evaluation (model poisoning
      or a broken update; the signal FLTrust's and FLAME's evaluations rest on);
    - ``privacy_budget``: epsilon spent is within ``epsilon_margin`` of the budget;
    - ``dropout_spike``: dropped / selected above ``dropout_rate`` (an outage, or clients
      dropping on purpose to bias selection or abort secure aggregation).
    """

    def __init__(self, thresholds: RoundThresholds, run_id: str) -> None:
        self.t = thresholds
        self.run_id = run_id
        self.episodes = Episodes()
        self.best: float | None = None
        self.previous: float | None = None

    def _alert(
        self,
        rule: str,
        severity: Severity,
        round_: int,
        value: float,
        threshold: float,
        message: str,
    ) -> Alert:
        return Alert(rule, severity, self.run_id, round_, value, threshold, message, time.time())

    def evaluate(self, record: Any) -> list[Alert]:
        """The alerts ``record`` (a :class:`RoundRecord`) fires, deduplicated by episode."""
        fired: list[Alert] = []
        r, t = int(record.round), self.t
        detect = MeasurementSet(record.measurements).get(DetectMeasurement)
        scored = None if detect is None else detect.scores
        if t.flag_rate is not None and detect is not None and _nonempty(scored):
            assert isinstance(scored, Mapping)
            flagged = list(detect.flagged or [])
            rate = len(flagged) / len(scored)
            if self.episodes.update("client_flag_rate", rate > t.flag_rate):
                fired.append(
                    self._alert(
                        "client_flag_rate",
                        "warning",
                        r,
                        rate,
                        t.flag_rate,
                        f"round {r}: the anomaly detector flagged {len(flagged)} of "
                        f"{len(scored)} updates ({rate:.0%} > {t.flag_rate:.0%}): "
                        f"{', '.join(sorted(flagged)[:10])}",
                    )
                )
        fired += self._accuracy(record, r)
        eps, budget = record.epsilon, t.epsilon_budget
        if t.epsilon_margin is not None and budget is not None and eps is not None:
            near = float(eps) >= budget - t.epsilon_margin
            if self.episodes.update("privacy_budget", near):
                fired.append(
                    self._alert(
                        "privacy_budget",
                        "warning",
                        r,
                        float(eps),
                        budget - t.epsilon_margin,
                        f"round {r}: epsilon spent {float(eps):.3f} is within "
                        f"{t.epsilon_margin} of the budget {budget} (delta "
                        f"{record.delta}); the run stops before it would exceed it",
                    )
                )
        selected = len(record.selected)
        if t.dropout_rate is not None and selected:
            rate = len(record.dropped) / selected
            if self.episodes.update("dropout_spike", rate > t.dropout_rate):
                fired.append(
                    self._alert(
                        "dropout_spike",
                        "warning",
                        r,
                        rate,
                        t.dropout_rate,
                        f"round {r}: {len(record.dropped)} of {selected} selected clients "
                        f"dropped out ({rate:.0%} > {t.dropout_rate:.0%})",
                    )
                )
        return fired

    def _accuracy(self, record: Any, r: int) -> list[Alert]:
        acc = record.accuracy
        if acc is None:  # not an evaluation round: the episode state carries over
            return []
        acc, t = float(acc), self.t
        fired: list[Alert] = []
        from_best = None if self.best is None else self.best - acc
        from_last = None if self.previous is None else self.previous - acc
        firing_best = (
            t.accuracy_drop is not None and from_best is not None and from_best > t.accuracy_drop
        )
        firing_round = (
            t.accuracy_drop_round is not None
            and from_last is not None
            and from_last > t.accuracy_drop_round
        )
        # one episode for both: a collapse that shows in both gives one alert
        if self.episodes.update("accuracy_drop", firing_best or firing_round):
            if firing_best:
                assert from_best is not None and t.accuracy_drop is not None
                value, threshold = from_best, t.accuracy_drop
                what = f"{from_best:.3f} below the best {self.best:.3f}"
            else:
                assert from_last is not None and t.accuracy_drop_round is not None
                value, threshold = from_last, t.accuracy_drop_round
                what = f"{from_last:.3f} below the previous round's {self.previous:.3f}"
            fired.append(
                self._alert(
                    "accuracy_drop",
                    "critical",
                    r,
                    value,
                    threshold,
                    f"round {r}: validation accuracy {acc:.3f} is {what}",
                )
            )
        self.previous = acc
        self.best = acc if self.best is None else max(self.best, acc)
        return fired


class SignatureFloodRule:
    """``bad_signatures``: ``count`` refusals (reasons ``reasons``) of one client within
    ``window_s`` seconds: a forger or replayer probing the gate, or a client whose key was
    stolen and replaced (the signed envelopes of :mod:`fedfort.transport.identity`).

    Thread-safe use is the caller's job (the manager holds a lock). At most ``max_clients``
    clients are tracked; beyond that, refusals count under ``"*"`` so a flood of made-up ids
    cannot exhaust memory.
    """

    def __init__(
        self,
        count: int,
        window_s: float,
        reasons: Iterable[str],
        run_id: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 4096,
    ) -> None:
        self.count = count
        self.window_s = window_s
        self.reasons = frozenset(reasons)
        self.run_id = run_id
        self.clock = clock
        self.max_clients = max_clients
        self.seen: dict[str, deque[float]] = {}
        self.episodes = Episodes()

    def refused(self, client: str, reason: str, round_: int | None) -> Alert | None:
        """Count one refusal; the alert it fires, if any."""
        if reason not in self.reasons:
            return None
        client = client[:64] or "?"
        if client not in self.seen and len(self.seen) >= self.max_clients:
            client = "*"
        now = self.clock()
        times = self.seen.setdefault(client, deque())
        times.append(now)
        self._prune(client, now)
        n = len(times)
        if not self.episodes.update(client, n >= self.count):
            return None
        return Alert(
            "bad_signatures",
            "critical",
            self.run_id,
            round_,
            float(n),
            float(self.count),
            f"client {client!r}: {n} refused messages ({', '.join(sorted(self.reasons))}) "
            f"within {self.window_s:g} s; last reason {reason}",
            time.time(),
        )

    def _prune(self, client: str, now: float) -> None:
        times = self.seen[client]
        while times and now - times[0] > self.window_s:
            times.popleft()
        if len(times) < self.count:
            self.episodes.update(client, False)
        if not times:
            del self.seen[client]

    def expire(self) -> None:
        """Forget refusals older than the window (re-arms clients that went quiet)."""
        now = self.clock()
        for client in list(self.seen):
            self._prune(client, now)
