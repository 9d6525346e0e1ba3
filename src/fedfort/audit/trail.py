"""What a run writes to its audit log: its start and end, runtime events, committed rounds.

:class:`AuditTrail` is a commit hook of the :class:`~fedfort.server.RoundEngine`. For every
committed round it appends, in one transaction, the entries the round record supplies
(``record.audit_entries()``, built by :mod:`fedfort.server.round_audit`): ``round_start``,
``attempt_discarded``, ``clients_selected``, ``update_rejected``, then what each published
measurement adds (``clients_flagged``, ``reputation``, ``aggregation``, ``secure_aggregation``,
``privacy``, ``rollback``, ``federated_evaluation``, a user's own), ``model_version`` and
``round_end``. The trail reads a round only through that small protocol
(:class:`AuditedRound`) and keeps its signed head in any :class:`MetaStore`; the server below
never imports the audit package.

The run adds ``run_start`` (the full config and its hash, the model spec, the audit key),
``feature_statistics`` (the statistics round of ``[data] standardize``: the transform's hash,
how it was summed, its privacy release), ``run_resumed``, ``run_end``, and the runtime adds
key lifecycle events and the transport gate's refusals. Entries hold metadata and hashes
only, never an update or a data sample.
Every write goes through the one :class:`~fedfort.audit.AuditLog` writer, which advances the
log's signed head (:mod:`fedfort.audit.head`); the trail also records that head in the
checkpoint database (any :class:`MetaStore`), and after each committed round hands it to
``round_head_listeners`` (the per-round print and the alert webhook of
``governance.publish_head``), so copies of it live outside the run directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol

from fedfort import jsonio
from fedfort._version import __version__
from fedfort.audit.head import SignedHead
from fedfort.audit.log import AuditLog
from fedfort.audit.verify import AUDIT_HEAD_META
from fedfort.config import RunConfig

__all__ = ["AuditTrail", "AuditedRound", "MetaStore", "config_sha256"]

#: one audit entry to append: ``(kind, round, body)``
Entry = tuple[str, int | None, dict[str, Any]]


class AuditedRound(Protocol):
    """A committed round as the audit trail reads it (a :class:`~fedfort.server.RoundRecord`)."""

    @property
    def round(self) -> int: ...

    def audit_entries(self) -> list[Entry]: ...


class MetaStore(Protocol):
    """Where the trail keeps a copy of the log's signed head (the checkpoint database)."""

    def set_meta(self, key: str, value: str) -> None: ...


def config_sha256(config: RunConfig) -> str:
    """SHA-256 of the full configuration (every section, canonical JSON)."""
    text = jsonio.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class AuditTrail:
    """Writes a run's events to its :class:`~fedfort.audit.AuditLog`."""

    def __init__(self, log: AuditLog, store: MetaStore | None = None) -> None:
        self.log = log
        self.store = store
        #: called with ``(round, signed head)`` after each committed round's entries
        self.round_head_listeners: list[Callable[[int, SignedHead], None]] = []

    def run_start(
        self, config: RunConfig, *, runtime: str, model_sha256: str, param_spec: Any
    ) -> None:
        """The first entry: what this run is, and the key that signs its log."""
        privacy = config.privacy
        self._write(
            [
                (
                    "run_start",
                    None,
                    {
                        "fedfort_version": __version__,
                        "runtime": runtime,
                        "config_sha256": config_sha256(config),
                        "identity_sha256": config.identity_hash(),
                        "config_identity": config.config_identity(),
                        "config": config.to_dict(),
                        "param_spec_sha256": hashlib.sha256(
                            jsonio.dumps(param_spec, sort_keys=True).encode()
                        ).hexdigest(),
                        "initial_model_sha256": model_sha256,
                        "aggregation_rule": config.defense.aggregator,
                        "detection": config.detection.enabled,
                        "privacy_mode": privacy.mode,
                        "dp_sgd": privacy.dp_sgd.enabled,
                        "secure_aggregation": config.secure_aggregation.mode,
                        "audit_key": self.log.key_id,
                        "audit_public_key": self.log.public_key.hex(),
                    },
                )
            ]
        )

    def event(self, kind: str, body: dict[str, Any], round_: int | None = None) -> None:
        """A runtime event (key lifecycle, a transport refusal, an operator action)."""
        self._write([(kind, round_, body)])

    def events(self, items: list[tuple[str, int | None, dict[str, Any]]]) -> None:
        """Several runtime events ``(kind, round, body)`` in one transaction."""
        if items:
            self._write(items)

    def on_commit(self, engine: object, record: AuditedRound) -> None:
        """Append ``record``'s entries (the engine's commit-hook protocol)."""
        self._write(self.round_entries(record))
        head = self.log.signed_head
        if head is not None:
            for listener in self.round_head_listeners:
                listener(record.round, head)

    def run_end(self, *, rounds: int, model_sha256: str, stopped: str | None) -> None:
        self._write(
            [
                (
                    "run_end",
                    rounds,
                    {"rounds": rounds, "model_sha256": model_sha256, "stopped": stopped},
                )
            ]
        )

    def _write(self, items: list[tuple[str, int | None, dict[str, Any]]]) -> None:
        self.log.append_many(items)
        head = self.log.signed_head
        if self.store is not None and head is not None:
            self.store.set_meta(AUDIT_HEAD_META, jsonio.dumps(head.to_dict(), sort_keys=True))

    @staticmethod
    def round_entries(record: AuditedRound) -> list[Entry]:
        """The entries of one committed round (see the module docstring)."""
        return record.audit_entries()
