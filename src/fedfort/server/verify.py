"""Verification of client updates before they can touch the model.

:func:`verify_update` checks one update against what the server expects and raises
:class:`~fedfort.errors.InvalidUpdate` with a reason code; :class:`VerifyUpdates` runs it over a
round's updates, records every rejection and keeps the rest. Reason codes:

``not_an_update``, ``unknown_client`` (not selected for this attempt), ``duplicate``,
``wrong_round``, ``bad_dtype``, ``bad_shape``, ``non_finite``, ``bad_sample_count``,
``bad_control``, ``not_sealed`` (a plain update in a securely aggregated round, or a sealed
one in a plain round).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from fedfort.errors import InvalidUpdate
from fedfort.messages import ClientUpdate
from fedfort.server.engine import RoundContext, Stage

__all__ = ["VerifyUpdates", "verify_update"]


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
        ctx.measure(self.name, accepted=len(accepted), rejected=reasons)
