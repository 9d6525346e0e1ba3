"""The statistics round: the sum of every client's feature statistics, before round 1.

``[data] standardize`` / ``impute`` need the federation's per-feature counts, sums and sums of
squares. :func:`collect_statistics` asks every client for them through the runtime
(:class:`~fedfort.messages.StatisticsRequest` over
:meth:`SecureChannel.exchange <fedfort.server.engine.SecureChannel.exchange>`, like a
secure-aggregation step) and obtains their sum:

- with secure aggregation (``secagg`` or ``secagg+``) each client answers with a sealed reply
  and its vector enters one masking session (:class:`~fedfort.secagg.server.MaskingServer`,
  the protocol of the rounds) at session round 0, as exact fixed-point limbs
  (:func:`~fedfort.secagg.encoding.split_limbs`: 64-bit words, every value to ``2**-40``),
  so the server sees masked words and the sum, never one client's statistics;
- without it, each client sends its vector in the clear and the server adds them (it then
  sees every client's statistics).

Under differential privacy the clients clip, rescale and cap their statistics as the request
says; ``client_noise_std`` is each client's share of the noise (distributed or local) and
``central_noise_std`` the server's (central), added to the sum from the OS CSPRNG. A
distributed release needs ``shares`` noise shares in the sum. An attempt that fails (too few
replies, an aborted session) is retried with a fresh nonce up to ``max_attempts`` times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedfort.errors import ConfigError, ProtocolError, RoundFailed, SecAggAbort
from fedfort.messages import (
    SecureAggregation,
    SecureMode,
    StatisticsReply,
    StatisticsRequest,
    statistics_digest,
)
from fedfort.privacy.noise import make_noise, snap, snapping_grid
from fedfort.secagg.encoding import LIMB_BOUND, MAX_LIMB_INPUTS, join_limbs
from fedfort.secagg.params import MaskingParams, graph_seed_for
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import Session
from fedfort.server.engine import SecureChannel

__all__ = ["CollectedStatistics", "StatisticsSettings", "collect_statistics"]

#: the session round of the statistics (training rounds count from 1)
STATISTICS_ROUND = 0


@dataclass(frozen=True)
class StatisticsSettings:
    """How the server asks for and sums the clients' statistics."""

    run_id: str
    num_features: int
    mode: SecureMode | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    max_count: float | None = None
    client_noise_std: float = 0.0
    central_noise_std: float = 0.0
    shares: int = 1
    threshold: int | None = None
    degree: int | None = None
    corrupt_fraction: float = 1 / 3
    dropout_fraction: float = 0.1
    deadline_s: float | None = None
    step_deadline_s: float | None = None
    max_attempts: int = 3
    #: the most rows one client may count (``[server] max_sample_count``), checked on the
    #: statistics a client sends in the clear without noise
    max_rows: int | None = None

    def __post_init__(self) -> None:
        if self.mode == "ckks":
            raise ConfigError(
                "[data] standardize / impute sum the clients' statistics exactly, which CKKS "
                "(approximate arithmetic) cannot: use secure_aggregation.mode = 'secagg' or "
                "'secagg+'"
            )

    def request(self, attempt: int) -> StatisticsRequest:
        """The request of one attempt (a fresh session nonce from the OS)."""
        nonce = os.urandom(16)
        secure = None
        if self.mode is not None:
            secure = SecureAggregation(mode=self.mode, run_id=self.run_id, nonce=nonce)
        return StatisticsRequest(
            round=STATISTICS_ROUND,
            attempt=attempt,
            run_id=self.run_id,
            nonce=nonce,
            num_features=self.num_features,
            lower=self.lower,
            upper=self.upper,
            max_count=self.max_count,
            noise_std=self.client_noise_std,
            secure=secure,
        )


@dataclass
class CollectedStatistics:
    """The summed statistics (``3 d`` float64, with the central noise when there is some),
    who is in the sum, and what the round measured."""

    total: np.ndarray
    included: tuple[str, ...]
    attempts: int
    measurements: dict[str, Any] = field(default_factory=dict)


def _inconsistent(vector: np.ndarray, d: int, max_rows: int | None) -> str | None:
    """Why a client's exact (unclipped, noise-free) statistics cannot be those of any rows, or
    ``None``: a count that is not a whole number of rows in ``[0, max_rows]``, a negative sum
    of squares, or a sum whose square exceeds ``count * squares`` (Cauchy-Schwarz). One
    client's made-up counts and sums would otherwise set every hospital's scaling."""
    count, total, squares = vector[:d], vector[d : 2 * d], vector[2 * d :]
    if (count < 0).any() or (count != np.round(count)).any():
        return "statistics: a feature count is not a whole number of rows"
    if max_rows is not None and (count > max_rows).any():
        return f"statistics: a feature count exceeds the cap of {max_rows} rows"
    if (squares < 0).any() or (total**2 > count * squares * (1 + 1e-9) + 1e-9).any():
        return "statistics: the sums are not those of any rows (sum^2 > count * squares)"
    return None


def _clear_sum(
    replies: Mapping[str, object], d: int, *, exact: bool = False, max_rows: int | None = None
) -> tuple[np.ndarray | None, tuple[str, ...], dict[str, str]]:
    valid: dict[str, np.ndarray] = {}
    refused: dict[str, str] = {}
    for cid, reply in sorted(replies.items()):
        if not isinstance(reply, StatisticsReply) or reply.sealed:
            refused[cid] = "not a statistics reply in the clear"
            continue
        vector = np.asarray(reply.vector, dtype=np.float64)
        if vector.shape != (3 * d,) or not np.isfinite(vector).all():
            refused[cid] = f"statistics of shape {vector.shape} or not finite"
            continue
        reason = _inconsistent(vector, d, max_rows) if exact else None
        if reason is not None:
            refused[cid] = reason
            continue
        valid[cid] = vector
    if not valid:
        return None, (), refused
    return np.sum(list(valid.values()), axis=0), tuple(valid), refused


def _secure_sum(
    channel: SecureChannel,
    settings: StatisticsSettings,
    request: StatisticsRequest,
    replies: Mapping[str, object],
    directory: Mapping[str, bytes],
) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any]]:
    roster = tuple(
        sorted(c for c, r in replies.items() if isinstance(r, StatisticsReply) and r.sealed)
    )
    if len(roster) < 2:
        raise SecAggAbort(f"only {len(roster)} clients sealed their statistics; 2 are needed")
    if len(roster) > MAX_LIMB_INPUTS:
        raise ConfigError(
            f"the statistics session sums at most {MAX_LIMB_INPUTS} clients exactly; "
            f"{len(roster)} answered"
        )
    assert settings.mode is not None and settings.mode != "ckks"  # refused by the settings
    session = Session(settings.run_id, request.round, request.attempt, request.nonce)
    d = settings.num_features
    params = MaskingParams(
        roster=roster,
        variant=settings.mode,
        dim=2 * 3 * d + 1,
        bits=64,
        bound=LIMB_BOUND,
        degree=settings.degree,
        threshold=settings.threshold,
        graph_seed=graph_seed_for(session.sid),
        corrupt_fraction=settings.corrupt_fraction,
        dropout_fraction=settings.dropout_fraction,
        task_digest=statistics_digest(request),
    )
    server = MaskingServer(session, params, directory)
    outbox, step = server.start(), 1
    while not server.done:
        answers = channel.exchange(
            request.round, request.attempt, step, outbox, settings.step_deadline_s
        )
        outbox, step = server.step(answers), step + 1
    result = server.result()
    measured = {
        "degree": server.k,
        "threshold": server.t,
        "protocol_dropped": dict(sorted(result.dropped.items())),
        "bytes_client_to_server": result.traffic.get("client_to_server", 0),
    }
    return join_limbs(result.total[: 2 * 3 * d]), tuple(result.included), measured


def collect_statistics(
    channel: object,
    client_ids: Sequence[str],
    directory: Callable[[], Mapping[str, bytes]],
    settings: StatisticsSettings,
) -> CollectedStatistics:
    """Ask ``client_ids`` for their statistics through ``channel``; their (noisy) sum.

    Raises :class:`~fedfort.errors.RoundFailed` when no attempt produced a sum.
    """
    if not isinstance(channel, SecureChannel):
        raise ConfigError("this runtime cannot carry the statistics round's messages")
    d = settings.num_features
    reasons: list[str] = []
    for attempt in range(1, settings.max_attempts + 1):
        started = time.perf_counter()
        request = settings.request(attempt)
        replies = channel.exchange(
            STATISTICS_ROUND, attempt, 0, dict.fromkeys(client_ids, request), settings.deadline_s
        )
        measured: dict[str, Any] = {"secure": settings.mode is not None, "asked": len(client_ids)}
        try:
            if settings.mode is None:
                exact = settings.lower is None and settings.client_noise_std == 0
                total, included, refused = _clear_sum(
                    replies, d, exact=exact, max_rows=settings.max_rows
                )
                if total is None:
                    raise SecAggAbort("no client sent valid statistics")
                if refused:
                    measured["refused"] = refused
            else:
                total, included, extra = _secure_sum(
                    channel, settings, request, replies, directory()
                )
                measured.update(extra)
        except (SecAggAbort, ProtocolError) as exc:
            reasons.append(f"attempt {attempt}: {exc}")
            continue
        if len(included) < settings.shares:
            reasons.append(
                f"attempt {attempt}: {len(included)} clients in the sum, {settings.shares} "
                "noise shares are needed; nothing was released"
            )
            continue
        if not np.isfinite(total).all():
            reasons.append(f"attempt {attempt}: the sum is not finite")
            continue
        if settings.central_noise_std > 0:
            std = settings.central_noise_std
            total = snap(total + make_noise(True).gaussian(total.shape[0], std), snapping_grid(std))
        measured.update(
            included=len(included),
            protocol_s=time.perf_counter() - started,
            client_noise_std=settings.client_noise_std,
            central_noise_std=settings.central_noise_std,
        )
        return CollectedStatistics(total, included, attempt, measured)
    raise RoundFailed(
        "the statistics round (the global feature means and variances for [data] standardize "
        f"/ impute) failed {settings.max_attempts} times: " + "; ".join(reasons[-3:])
    )
