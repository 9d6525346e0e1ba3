"""Verification of client updates before they can touch the model.

:func:`verify_update` checks one update against what the server expects and raises
:class:`~fedfort.errors.InvalidUpdate` with a reason code; :class:`VerifyUpdates` runs it over a
round's updates, records every rejection and keeps the rest. Reason codes:

``not_an_update``, ``unknown_client`` (not selected for this attempt), ``duplicate``,
``wrong_round``, ``bad_dtype``, ``bad_shape``, ``non_finite``, ``bad_sample_count``,
``bad_control``, ``not_sealed`` (a plain update in a securely aggregated round, or a sealed
one in a plain round), ``bad_metrics`` and ``non_finite_metric``.

Metrics are client-reported numbers and are checked like the vector (:func:`check_metrics`):
they feed the round record (the weighted ``train_loss``), the privacy summary (the clients'
DP-SGD epsilons) and the data-protection counts, and a single ``inf`` or ``NaN`` there would
poison a run's averages and, written as ``Infinity``, make its ``results.json`` unreadable to
strict JSON parsers. An update whose metrics break the rules is rejected whole (zero trust: a
client that lies in its metrics has no claim on the aggregate either). The rules: a ``dict``
of at most :data:`MAX_METRICS` entries; names of at most :data:`MAX_METRIC_NAME` characters
matching ``[a-z][a-z0-9_]*``; values real numbers (``int`` or ``float``, NumPy scalars
included, never ``bool``) that are finite; the metrics fedfort's own clients send within
their ranges (:data:`METRIC_RANGES`; ``edge_*`` counts and step counts whole numbers >= 0).
Other names are accepted within those bounds and ignored by fedfort.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import Final

import numpy as np

from fedfort.errors import InvalidUpdate
from fedfort.measurements import VerifyMeasurement
from fedfort.messages import ClientUpdate
from fedfort.server.engine import RoundContext, Stage

__all__ = [
    "MAX_METRICS",
    "MAX_METRIC_NAME",
    "METRIC_RANGES",
    "VerifyUpdates",
    "check_metrics",
    "verify_update",
]

#: most metrics one update may carry
MAX_METRICS: Final = 64
#: longest metric name, in characters
MAX_METRIC_NAME: Final = 64
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]*")
_INF = math.inf
#: the metrics fedfort's clients send: ``(low, high, whole)`` bounds, inclusive
METRIC_RANGES: Final[dict[str, tuple[float, float, bool]]] = {
    "train_loss": (0.0, _INF, False),
    "local_steps": (0.0, _INF, True),
    "train_time_s": (0.0, _INF, False),
    "dp_sgd_steps": (0.0, _INF, True),
    "dp_sgd_sample_rate": (0.0, 1.0, False),
    "dp_sgd_noise_multiplier": (0.0, _INF, False),
    "dp_sgd_epsilon": (0.0, _INF, False),
}
#: the data-protection counts (``edge_rows_in``, ...; see :mod:`fedfort.edge`)
_COUNT_PREFIX = "edge_"


def check_metrics(metrics: object) -> None:
    """Raise :class:`InvalidUpdate` (``bad_metrics`` / ``non_finite_metric``) unless
    ``metrics`` follows the rules in the module docstring."""
    if not isinstance(metrics, dict):
        raise InvalidUpdate("bad_metrics", f"metrics is a {type(metrics).__name__}, not a dict")
    if len(metrics) > MAX_METRICS:
        raise InvalidUpdate(
            "bad_metrics", f"{len(metrics)} metrics, at most {MAX_METRICS} are accepted"
        )
    for name, value in metrics.items():
        if (
            not isinstance(name, str)
            or len(name) > MAX_METRIC_NAME
            or _METRIC_NAME.fullmatch(name) is None
        ):
            shown = repr(name)[:MAX_METRIC_NAME]
            raise InvalidUpdate(
                "bad_metrics",
                f"metric name {shown} is not [a-z][a-z0-9_]* of at most {MAX_METRIC_NAME} chars",
            )
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise InvalidUpdate(
                "bad_metrics", f"metric {name} is a {type(value).__name__}, not a number"
            )
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            raise InvalidUpdate("non_finite_metric", f"metric {name} overflows a float") from None
        if not math.isfinite(number):
            raise InvalidUpdate("non_finite_metric", f"metric {name} is {number}")
        if name.startswith(_COUNT_PREFIX):
            low, high, whole = 0.0, _INF, True
        else:
            low, high, whole = METRIC_RANGES.get(name, (-_INF, _INF, False))
        if not low <= number <= high or (whole and not number.is_integer()):
            kind = "a whole number" if whole else "a number"
            raise InvalidUpdate(
                "bad_metrics", f"metric {name} = {number!r} is not {kind} in [{low}, {high}]"
            )


def _check_vector(value: object, dim: int, what: str, reason_prefix: str = "") -> None:
    if not isinstance(value, np.ndarray):
        raise InvalidUpdate(f"{reason_prefix}bad_dtype", f"{what} is a {type(value).__name__}")
    if value.dtype != np.float32:
        raise InvalidUpdate(f"{reason_prefix}bad_dtype", f"{what} has dtype {value.dtype}")
    if value.shape != (dim,):
        raise InvalidUpdate(
            f"{reason_prefix}bad_shape", f"{what} has shape {value.shape}, expected ({dim},)"
        )
    if not np.isfinite(value).all():
        raise InvalidUpdate(f"{reason_prefix}non_finite", f"{what} contains NaN or Inf")


def verify_update(
    update: object,
    *,
    round_: int,
    dim: int,
    selected: Collection[str],
    seen: Collection[str],
    expect_control: bool = False,
    sealed: bool = False,
) -> ClientUpdate:
    """Return ``update`` if acceptable for this round, else raise :class:`InvalidUpdate`."""
    if not isinstance(update, ClientUpdate):
        raise InvalidUpdate("not_an_update", f"received a {type(update).__name__}")
    if update.client_id not in selected:
        raise InvalidUpdate(
            "unknown_client", f"{update.client_id!r} was not selected for round {round_}"
        )
    if update.client_id in seen:
        raise InvalidUpdate("duplicate", f"second update from {update.client_id!r} this round")
    if update.round != round_:
        raise InvalidUpdate("wrong_round", f"update is for round {update.round}, not {round_}")
    if update.sealed is not sealed:
        raise InvalidUpdate(
            "not_sealed",
            "a plain update in a securely aggregated round"
            if sealed
            else "a sealed update in a round without secure aggregation",
        )
    _check_vector(update.delta, 0 if sealed else dim, "delta")
    n = update.num_samples
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InvalidUpdate("bad_sample_count", f"num_samples must be a positive int, got {n!r}")
    check_metrics(update.metrics)
    if expect_control:
        if update.control_delta is None:
            raise InvalidUpdate("bad_control", "SCAFFOLD update without a control delta")
        try:
            _check_vector(update.control_delta, dim, "control_delta")
        except InvalidUpdate as exc:
            raise InvalidUpdate("bad_control", exc.detail) from exc
    elif update.control_delta is not None:
        raise InvalidUpdate("bad_control", "unexpected control delta for this algorithm")
    return update


class VerifyUpdates(Stage):
    """Keep the updates that pass :func:`verify_update`; record the others as rejections."""

    name = "verify"

    def __init__(self, dim: int, expect_control: bool = False, sealed: bool = False) -> None:
        self.dim = dim
        self.expect_control = expect_control
        self.sealed = sealed

    def run(self, ctx: RoundContext) -> None:
        selected = set(ctx.selected)
        seen: set[str] = set()
        accepted: list[ClientUpdate] = []
        for raw in ctx.received:
            try:
                update = verify_update(
                    raw,
                    round_=ctx.round,
                    dim=self.dim,
                    selected=selected,
                    seen=seen,
                    expect_control=self.expect_control,
                    sealed=self.sealed,
                )
            except InvalidUpdate as exc:
                client = getattr(raw, "client_id", "?")
                ctx.reject(client if isinstance(client, str) else "?", exc.reason, exc.detail)
                continue
            seen.add(update.client_id)
            accepted.append(update)
        ctx.accepted = accepted
        reasons: dict[str, int] = {}
        for r in ctx.rejections:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        ctx.measure(VerifyMeasurement(accepted=len(accepted), rejected=reasons))
