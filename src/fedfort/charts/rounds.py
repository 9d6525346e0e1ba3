"""What a chart of a run shows, read from its round records and audit events.

:func:`metric_series` splits a run's metrics into scores (server test accuracy, the federated
evaluation's overall metrics such as accuracy or AUC) and losses (server test loss, federated
metrics named ``*loss*``); a round without a value is left out of that series, so a run with no
server-side test set (records without ``accuracy``) still has its federated curves.

:func:`rollback_marks` finds the rollbacks: an automatic drift rollback is in the round record
(``measurements.rollback``: the candidate was refused and an earlier version committed in its
place), an operator rollback is an audit ``rollback`` event (``automatic`` false) filed after
round ``at_round``, so the next round trains from the version it names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fedfort.measurements import MeasurementSet, RollbackMeasurement

__all__ = ["EVALUATION_KEY", "RollbackMark", "Series", "metric_series", "rollback_marks"]

#: the key of a round record's federated evaluation:
#: ``{"overall": {metric: value}, "clients": {client_id: {metric: value, "examples": n}}}``
EVALUATION_KEY: Final = "evaluation"
#: entries of an evaluation that are counts, not metrics
_COUNT_KEYS: Final = frozenset({"examples", "clients"})


@dataclass(frozen=True)
class Series:
    """One metric per round: ``rounds[i]`` measured ``values[i]``."""

    label: str
    rounds: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    @property
    def unit_interval(self) -> bool:
        """Whether every value lies in [0, 1] (an accuracy, an AUC, a rate)."""
        return all(0.0 <= v <= 1.0 for v in self.values)


@dataclass(frozen=True)
class RollbackMark:
    """A rollback on the round axis: a vertical line at ``x`` labelled ``label``.

    An automatic rollback sits on the round whose candidate was refused (``refused`` is that
    candidate's accuracy, drawn as a cross); an operator rollback sits between the round after
    which it was filed and the next one (``x`` = ``at_round + 0.5``).
    """

    x: float
    label: str
    automatic: bool
    refused: float | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _overall(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite overall metrics of a record's federated evaluation (none when absent)."""
    evaluation = record.get(EVALUATION_KEY)
    overall = evaluation.get("overall") if isinstance(evaluation, Mapping) else None
    if not isinstance(overall, Mapping):
        return {}
    found = {str(k): _number(v) for k, v in overall.items() if str(k) not in _COUNT_KEYS}
    return {k: v for k, v in found.items() if v is not None}


def _series(records: list[Mapping[str, Any]], label: str, read: Any) -> Series:
    points = [(int(r["round"]), x) for r in records if (x := read(r)) is not None]
    return Series(label, [p[0] for p in points], [p[1] for p in points])


def metric_series(records: Iterable[Mapping[str, Any]]) -> tuple[list[Series], list[Series]]:
    """(scores, losses): the non-empty series of the run's metrics, server's first."""
    rows = [r for r in records if isinstance(r.get("round"), int)]
    names = sorted({name for r in rows for name in _overall(r)})
    scores = [_series(rows, "server test accuracy", lambda r: _number(r.get("accuracy")))]
    losses = [_series(rows, "server test loss", lambda r: _number(r.get("loss")))]
    for name in names:
        series = _series(rows, f"federated {name}", lambda r, n=name: _overall(r).get(n))
        (losses if "loss" in name else scores).append(series)
    return [s for s in scores if s.values], [s for s in losses if s.values]


def rollback_marks(
    records: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]] = ()
) -> list[RollbackMark]:
    """The rollbacks of a run, in round order: automatic ones from ``records``, operator ones
    from ``events`` (audit entries as ``{"kind", "round", "body"}``)."""
    marks = []
    for r in records:
        rollback = MeasurementSet.of_record(r).get(RollbackMeasurement)
        if rollback is not None and isinstance(r.get("round"), int):
            marks.append(
                RollbackMark(
                    float(r["round"]),
                    f"rollback to v{rollback.to_version}",
                    automatic=True,
                    refused=_number(rollback.rejected_accuracy),
                )
            )
    for e in events:
        body = e.get("body")
        if e.get("kind") != "rollback" or not isinstance(body, Mapping) or body.get("automatic"):
            continue
        at = body.get("at_round", e.get("round"))
        if isinstance(at, int) and not isinstance(at, bool):
            label = f"operator rollback to v{body.get('to_version')}"
            marks.append(RollbackMark(at + 0.5, label, automatic=False))
    return sorted(marks, key=lambda m: m.x)
