"""The fedfort exception tree.

Every error fedfort raises on purpose derives from :class:`FedfortError`, so callers can catch
one type. Misuse (a broken config, an impossible setting) is kept apart from problems caused by
peers (a malformed or stale update) and from run-time failures (a round that could not reach its
quorum)::

    FedfortError
    ├── ConfigError              the configuration or an argument is invalid; fix it and rerun
    │   └── DatasetError         the data cannot be built or split as asked
    │       └── InvalidRecord    a client's record breaks its declared schema (field, row)
    ├── PeerError                a peer sent something unacceptable; the server keeps running
    │   ├── InvalidUpdate        an update failed verification (shape, dtype, NaN/Inf, round...)
    │   ├── ProtocolError        a secure-aggregation message is malformed, forged or inconsistent
    │   ├── MalformedMessage     bytes from the network do not decode to an expected message
    │   ├── Refused              the transport refused a message or a peer (reason code attached)
    │   └── PolicyRefused        a task asks for less privacy than the client's own policy
    │                            allows in a way it cannot override (unknown mechanism, ...)
    ├── SecAggAbort              a secure-aggregation session ended without a result (too few
    │                            survivors, or an honest party detected cheating); nothing leaked
    ├── AggregationError         a rule's precondition does not hold for this round's updates
    │                            (e.g. Krum needs n > 2f + 2); the attempt is discarded
    ├── RoundFailed              a round could not commit (e.g. below quorum after all retries)
    ├── PrivacyBudgetExhausted   one more round would spend more privacy than the target
    ├── CheckpointError          a checkpoint is missing, corrupt or belongs to another run
    ├── AuditError               an audit log cannot be opened or written, or fails its check
    ├── NonFiniteValue           a NaN or infinity was about to be written to a JSON document
    ├── MeasurementMissing       a reader requires a measurement the round did not publish
    └── AccessDenied             a credential is missing, unknown, expired or revoked (401), or
                                 its role lacks the permission (403); the action did not run

Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessDenied",
    "AggregationError",
    "AuditError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "FedfortError",
    "InvalidRecord",
    "InvalidUpdate",
    "MalformedMessage",
    "MeasurementMissing",
    "NonFiniteValue",
    "PeerError",
    "PolicyRefused",
    "PrivacyBudgetExhausted",
    "ProtocolError",
    "Refused",
    "RoundFailed",
    "SecAggAbort",
]


class FedfortError(Exception):
    """Base class of every error fedfort raises on purpose."""


class ConfigError(FedfortError, ValueError):
    """A configuration value or argument is invalid or the combination is impossible."""


class DatasetError(ConfigError):
    """A dataset cannot be loaded or partitioned as configured."""


class InvalidRecord(DatasetError):
    """A client's record breaks the declared schema of its dataset (``fedfort.edge``).

    ``field`` names the column (``x[:, j]`` for feature ``j``, ``y`` for the label), ``row``
    the 0-based row and ``problem`` what is wrong. The message never holds a whole record.
    """

    def __init__(self, field: str, row: int, problem: str) -> None:
        super().__init__(f"field {field!r}, row {row}: {problem}")
        self.field = field
        self.row = row
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (InvalidRecord, (self.field, self.row, self.problem))


class PeerError(FedfortError):
    """A peer (client or server) sent something the protocol does not accept."""


class InvalidUpdate(PeerError):
    """A client update failed verification.

    ``reason`` is a short machine-readable code (``non_finite``, ``bad_shape``, ``wrong_round``,
    ...) that is counted in round records and, later, in metrics and the audit log.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


class ProtocolError(PeerError):
    """A secure-aggregation message is malformed, forged, out of order or inconsistent.

    The receiving state machine is left unchanged, so the caller may drop the sender and go on.
    """


class MalformedMessage(PeerError):
    """Bytes received from the network do not decode to a message fedfort expects.

    Raised by the wire codec for garbage, truncated or oversized input, unknown record types,
    and fields whose type does not match the message's declaration. Nothing is built from such
    input, so the receiver's state is unchanged.
    """


class Refused(PeerError):
    """The transport refused a peer or a message before it reached the round engine.

    ``reason`` is a machine-readable code (``bad_signature``, ``replayed``, ``stale_round``,
    ``unknown_client``, ``revoked_certificate``, ...; see ``docs/deployment.md``) that the
    server counts and logs; ``detail`` says what was wrong.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PolicyRefused(PeerError):
    """A client refused a task: its privacy directive cannot be reconciled with the client's
    own policy (an unknown or different local mechanism, a release without noise under a
    finite privacy budget, a second masked input for the same global model).

    The client sent nothing; the server should treat it as a dropout.
    """


class SecAggAbort(FedfortError):
    """A secure-aggregation session ended without a result.

    Raised when fewer than the threshold of clients remain at some step, or when an honest
    client detects a cheating server (e.g. different participant lists sent to different
    clients). The session reveals nothing when it aborts: unmasking shares are only sent once
    the consistency check has passed.
    """


class AggregationError(FedfortError):
    """An aggregation rule cannot run on this batch, e.g. too few updates for its ``f``.

    The round engine discards the attempt with this message and retries.
    """


class RoundFailed(FedfortError):
    """A round could not be committed, for example because too few clients took part."""


class PrivacyBudgetExhausted(FedfortError):
    """The next round would push the accounted epsilon past the run's target.

    Raised *before* the round does any work, so the last committed round (and its checkpoint)
    is the run's clean final state. ``spent`` is the epsilon spent so far, ``next_epsilon``
    what one more round would bring it to, and ``result`` (set by the simulation) the run up
    to the last committed round.
    """

    def __init__(self, message: str, *, spent: float, next_epsilon: float, target: float) -> None:
        super().__init__(message)
        self.spent = spent
        self.next_epsilon = next_epsilon
        self.target = target
        self.result: object | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only arguments need this to cross process boundaries (worker pools)
        return (
            _rebuild_budget_error,
            (str(self), self.spent, self.next_epsilon, self.target),
        )


def _rebuild_budget_error(
    message: str, spent: float, next_epsilon: float, target: float
) -> PrivacyBudgetExhausted:
    return PrivacyBudgetExhausted(message, spent=spent, next_epsilon=next_epsilon, target=target)


class CheckpointError(FedfortError):
    """A checkpoint cannot be read, is corrupt, or does not match the current run."""


class MeasurementMissing(FedfortError, LookupError):
    """A reader requires a measurement (e.g. the privacy accounting) the round did not publish.

    The message names the measurement type and what the round did publish; add the stage
    that publishes it, or read it with ``MeasurementSet.get`` where it is optional.
    """


class AuditError(FedfortError):
    """An audit log cannot be opened or appended to, or does not verify."""


class NonFiniteValue(FedfortError, ValueError):
    """A NaN or an infinity was about to be written where strict JSON needs a number.

    Raised by :func:`fedfort.jsonio.dumps` under its ``"error"`` rule; ``path`` locates the
    value in the document (``rounds[3].loss``).
    """

    def __init__(self, path: str, value: float) -> None:
        super().__init__(
            f"{path} is {value!r}, which strict JSON (RFC 8259) cannot hold: find what produced "
            "it, or write it with non_finite='null' if 'no value' is what it means"
        )
        self.path = path
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.value))


class AccessDenied(FedfortError):
    """An operator, auditor or viewer request was refused by access control.

    ``status`` is 401 (no credential, or one that is unknown, expired or revoked) or 403 (a
    valid credential whose role lacks the permission); ``reason`` is a machine-readable code
    (``missing_credential``, ``unknown_token``, ``expired_token``, ``revoked_token``,
    ``role_not_permitted``, ...; see ``docs/access-control.md``).
    """

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
