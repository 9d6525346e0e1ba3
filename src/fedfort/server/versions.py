"""The model registry of a run: every committed global model is a version.

Version ``k`` is the global model committed by round ``k`` (version 0 is the initial model).
Each is stored in the run's ``checkpoints.sqlite`` with its SHA-256 (checked on every read),
its round record (accuracy, loss, participants) and the state to continue from it, and the
audit log holds a ``model_version`` entry for it. :class:`ModelRegistry` lists and shows
versions and exports one. An operator's rollback is filed by
:func:`fedfort.audit.rollback_request.request_rollback` (audited at once, applied by the server
when the run resumes, :meth:`fedfort.run.federation.Federation.rollback`), so the rolled-back model
is what the next round trains from; the pending request is read back by
:meth:`ModelRegistry.pending`. Automatic rollback on accuracy drift is
:class:`~fedfort.server.rollback.DriftRollback`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedfort.errors import ConfigError
from fedfort.measurements import MeasurementSet, RollbackMeasurement
from fedfort.server.checkpoint import CheckpointReader

__all__ = ["PENDING_ROLLBACK_META", "ModelRegistry", "ModelVersion"]

#: checkpoint-database meta key of an operator's rollback, applied when the run resumes
PENDING_ROLLBACK_META = "pending_rollback"


@dataclass(frozen=True)
class ModelVersion:
    """One committed global model."""

    version: int
    created: float
    sha256: str
    accuracy: float | None
    loss: float | None
    participants: int | None
    rollback: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelRegistry:
    """The versions of the run in ``run_dir``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        # read-only: listing, showing and exporting versions never writes to the run
        self.store = CheckpointReader(self.run_dir / "checkpoints.sqlite")

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first."""
        out = []
        for round_, created, digest, record in self.store.versions():
            rollback = MeasurementSet.of_record(record).get(RollbackMeasurement)
            out.append(
                ModelVersion(
                    round_,
                    created,
                    digest,
                    record.get("accuracy"),
                    record.get("loss"),
                    record.get("participants"),
                    None if rollback is None else rollback.to_dict(),
                )
            )
        return out

    def show(self, version: int) -> dict[str, Any]:
        """A version in detail; its model is read and its hash checked."""
        checkpoint = self.store.load(self.check_version(version))
        record = checkpoint.record
        return {
            **next(v for v in self.versions() if v.version == version).to_dict(),
            "hash_verified": True,
            "parameters": int(checkpoint.model.shape[0]),
            "norm": float(np.linalg.norm(checkpoint.model)),
            "selected": record.get("selected", []),
            "accepted": record.get("accepted", []),
            "rejected": record.get("rejected", []),
            "measurements": record.get("measurements", {}),
            "epsilon": record.get("epsilon"),
            "delta": record.get("delta"),
        }

    def export(self, version: int, out: str | Path) -> Path:
        """Write version ``version``'s parameter vector to an ``.npy`` file (hash-checked)."""
        checkpoint = self.store.load(self.check_version(version))
        path = Path(out)
        np.save(path, checkpoint.model, allow_pickle=False)
        return path

    def pending(self) -> dict[str, Any] | None:
        """The rollback filed for the next resume, if any."""
        raw = self.store.get_meta(PENDING_ROLLBACK_META)
        return None if raw is None else dict(json.loads(raw))

    def check_version(self, version: int) -> int:
        """``version``, or :class:`~fedfort.errors.ConfigError` when the run has no such version."""
        rounds = self.store.rounds()
        if version not in rounds:
            raise ConfigError(
                f"version {version} does not exist: the run has versions "
                f"{rounds[0] if rounds else 0}..{rounds[-1] if rounds else 0}"
            )
        return version
