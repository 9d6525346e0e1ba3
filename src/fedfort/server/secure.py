"""Secure aggregation as a stage of the round engine.

With secure aggregation on, every selected client answers its task with a *sealed* update
and keeps its vector (:mod:`fedfort.client.secure`). :class:`SecureAggregate` then runs one
session of the configured protocol through the runtime's
:class:`~fedfort.server.engine.SecureChannel` and puts the result where the plain
``aggregate`` stage would: ``ctx.aggregate`` is the weighted mean ``sum(w x) / sum(w)`` of the
clients in the sum, and ``ctx.accepted`` their sealed updates.

Under differential privacy the stage hands the securely computed *sum* to
:meth:`PrivateAggregate.release_sum <fedfort.server.privacy.PrivateAggregate.release_sum>`:
distributed DP (the clients' noise shares are inside the sum) releases it over the expected
number of participants, central DP adds the server's noise first. Either way the clients
clipped their own updates.

An aborted session (fewer than ``t`` clients left at some step, or cheating detected), or a
roster too small for a safe threshold (:mod:`fedfort.secagg.thresholds`), discards the round
attempt; the engine retries with a fresh selection and a fresh session.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedfort.errors import ConfigError, ProtocolError, SecAggAbort
from fedfort.measurements import AggregateMeasurement
from fedfort.messages import ClientPrivacy, SecureAggregation, SecureMode, session_task_digest
from fedfort.secagg.params import MaskingParams, graph_seed_for
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import ServerMachine, Session
from fedfort.server.engine import RoundContext, SecureChannel, Stage
from fedfort.server.privacy import PrivateAggregate

__all__ = ["SecureAggregate", "coordinate_bound"]

_NONCE_KEY = "secure_nonce"
#: the masking protocol's exchange whose replies are the clients' masked inputs
_MASKED_INPUT_STEP = 2
_TAIL_SIGMAS = 8.0  # a Gaussian exceeds 8 std with probability 1.2e-15 per coordinate


def coordinate_bound(directive: ClientPrivacy | None, default: float) -> float:
    """The largest coordinate a client's secure input can carry.

    A clipped update has every coordinate within its L2 clip norm; noise shares add a tail
    bound of 8 standard deviations, and an adaptive-clipping bit is within 1/2 plus its noise.
    Without clipping the configured ``default`` bounds the coordinates (larger ones are
    clamped by the encoding).
    """
    if directive is None or directive.clip_norm is None:
        return default
    bound = directive.clip_norm + _TAIL_SIGMAS * directive.noise_std
    if directive.report_clipped:
        bound = max(bound, 0.5 + _TAIL_SIGMAS * directive.indicator_noise_std)
    return bound


class SecureAggregate(Stage):
    """Aggregate the round's sealed updates with SecAgg, SecAgg+ or CKKS."""

    name = "aggregate"

    def __init__(
        self,
        mode: SecureMode,
        dim: int,
        *,
        run_id: str,
        directory: Callable[[], Mapping[str, bytes]],
        bits: int = 32,
        value_range: float = 1.0,
        max_weight: int = 1,
        threshold: int | None = None,
        degree: int | None = None,
        corrupt_fraction: float = 1 / 3,
        dropout_fraction: float = 0.1,
        ckks_poly_modulus_degree: int = 8192,
        step_deadline_s: float | None = None,
        privacy: Callable[[], ClientPrivacy] | None = None,
        private: PrivateAggregate | None = None,
    ) -> None:
        if max_weight < 1 or not value_range > 0:
            raise ConfigError("secure aggregation needs max_weight >= 1 and value_range > 0")
        self.mode = mode
        self.dim = dim
        self.run_id = run_id
        self.directory = directory
        self.bits = bits
        self.value_range = value_range
        self.max_weight = max_weight
        self.threshold = threshold
        self.degree = degree
        self.corrupt_fraction = corrupt_fraction
        self.dropout_fraction = dropout_fraction
        self.ckks_poly_modulus_degree = ckks_poly_modulus_degree
        self.step_deadline_s = step_deadline_s
        self.privacy = privacy
        self.private = private
        #: (round, attempt) of the last aborted session whose clients had released masked inputs
        self._released: tuple[int, int] | None = None

    def directive(self, ctx: RoundContext) -> SecureAggregation:
        """The task field of this attempt; draws the session nonce."""
        nonce = os.urandom(16)
        ctx.extras[_NONCE_KEY] = nonce
        return SecureAggregation(
            mode=self.mode,
            run_id=self.run_id,
            nonce=nonce,
            max_weight=1 if self.private is not None else self.max_weight,
            ckks_poly_modulus_degree=self.ckks_poly_modulus_degree,
        )

    def _server(
        self,
        ctx: RoundContext,
        session: Session,
        roster: tuple[str, ...],
        width: int,
        directive: ClientPrivacy | None,
    ) -> ServerMachine:
        if self.mode == "ckks":
            from fedfort.secagg.ckks import CkksParams, CkksServer  # loads TenSEAL on demand

            owner = roster[int(ctx.rng.integers(len(roster)))]
            return CkksServer(
                session,
                roster,
                key_owner=owner,
                min_inputs=max(2, self.threshold or 2),
                params=CkksParams(poly_modulus_degree=self.ckks_poly_modulus_degree),
                dim=width + 1,
            )
        weight = 1 if self.private is not None else self.max_weight
        bound = weight * max(coordinate_bound(directive, self.value_range), 1.0)
        params = MaskingParams(
            roster=roster,
            variant=self.mode,
            dim=width + 1,
            bits=self.bits,
            bound=bound,
            degree=self.degree,
            threshold=self.threshold,
            graph_seed=graph_seed_for(session.sid),
            corrupt_fraction=self.corrupt_fraction,
            dropout_fraction=self.dropout_fraction,
            task_digest=session_task_digest(ctx.tasks[0]) if ctx.tasks else b"",
        )
        return MaskingServer(session, params, self.directory())

    def _hint(self, ctx: RoundContext, step: int) -> str:
        """Why a retry on the same model may find no inputs (and remember this attempt's).

        Masking step 2 releases the clients' masked inputs; a client releases one per global
        model version unless its own policy adds fresh noise, so after an abort past that step a
        retry of the round meets refusals rather than dropouts.
        """
        earlier = self._released
        if self.mode != "ckks" and step >= _MASKED_INPUT_STEP and (earlier or (0,))[0] != ctx.round:
            self._released = (ctx.round, ctx.attempt)
        if earlier is None or earlier[0] != ctx.round or earlier[1] >= ctx.attempt:
            return ""
        return (
            f" (clients that released a masked input for this global model in attempt "
            f"{earlier[1]} refuse a second one unless their own policy adds noise: "
            "[privacy.client] min_noise_std with max_clip_norm, or local DP; see "
            "docs/secure-aggregation.md, 'One masked input per global model version')"
        )

    def run(self, ctx: RoundContext) -> None:
        channel = ctx.executor
        if not isinstance(channel, SecureChannel):
            raise ConfigError("this runtime cannot carry secure-aggregation messages")
        sealed = {u.client_id: u for u in ctx.accepted}  # verified as sealed
        roster = tuple(sorted(sealed))
        if len(roster) < 2:
            ctx.discard("secure aggregation needs at least 2 clients with sealed updates")
            return
        directive = None if self.privacy is None else self.privacy()
        extra = 1 if directive is not None and directive.report_clipped else 0
        session = Session(self.run_id, ctx.round, ctx.attempt, ctx.extras.get(_NONCE_KEY, b""))
        started = time.perf_counter()
        try:
            server = self._server(ctx, session, roster, self.dim + extra, directive)
        except ConfigError as exc:  # this attempt's roster is too small for a safe threshold
            ctx.measure(AggregateMeasurement(rule=self.mode, extra={"aborted": str(exc)}))
            ctx.discard(f"secure aggregation ({self.mode}) cannot run safely: {exc}")
            return
        try:
            outbox, step = server.start(), 0
            while not server.done:
                replies = channel.exchange(
                    ctx.round, ctx.attempt, step, outbox, self.step_deadline_s
                )
                outbox, step = server.step(replies), step + 1
        except (SecAggAbort, ProtocolError) as exc:
            ctx.measure(AggregateMeasurement(rule=self.mode, extra={"aborted": str(exc)}))
            ctx.discard(f"secure aggregation ({self.mode}) aborted: {exc}{self._hint(ctx, step)}")
            return
        result = server.result()
        for cid, reason in getattr(server, "rejected", {}).items():
            if cid in sealed:
                ctx.reject(cid, "secagg_protocol", reason)
        included = set(result.included)
        ctx.accepted = [sealed[c] for c in roster if c in included]
        totals = result.total
        ctx.measure(
            AggregateMeasurement(
                rule=self.mode,
                secure=True,
                included=len(included),
                protocol_dropped=dict(sorted(result.dropped.items())),
                extra={
                    "protocol_s": time.perf_counter() - started,
                    "bytes_client_to_server": result.traffic.get("client_to_server", 0),
                    "bytes_server_to_client": result.traffic.get("server_to_client", 0),
                    **self._graph_measures(server),
                },
            )
        )
        if not (np.isfinite(totals).all() and math.isfinite(result.weight)):
            ctx.discard("the secure aggregate is not finite")
            return
        if self.private is not None:
            count = float(totals[self.dim]) if extra else 0.0
            self.private.release_sum(ctx, totals[: self.dim], count, len(included))
            return
        if not result.weight > 0:
            ctx.discard("the secure aggregate carries no weight")
            return
        ctx.aggregate = (totals[: self.dim] / result.weight).astype(np.float32)

    @staticmethod
    def _graph_measures(server: ServerMachine) -> dict[str, Any]:
        if isinstance(server, MaskingServer):
            return {"degree": server.k, "threshold": server.t}
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {} if self.private is None else self.private.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.private is not None:
            self.private.load_state_dict(state)
