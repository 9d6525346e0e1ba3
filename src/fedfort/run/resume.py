"""What a resume trusts: the run's signed checkpoint, checked before anything is built.

A run directory can be written by someone who should not steer the run: a poisoned model with
a recomputed SHA-256, a defence switched off in the stored config, an ``[access]`` table
pointed at another token store. Every resume therefore

1. loads the run's audit key (:func:`fedfort.audit.run_audit_key`: a key file, encrypted when
   ``FEDFORT_KEY_PASSPHRASE`` is set, or a PKCS#11 token) and opens ``checkpoints.sqlite``
   with it, so every row and meta value it reads is checked against the key's public part
   (:class:`~fedfort.server.CheckpointStore`);
2. compares the stored, signed config with the one this process is about to use, key by key,
   and refuses any difference outside :data:`fedfort.config.RESUMABLE_KEYS`, naming the keys;
3. verifies the run's audit log (chain, signed head, checkpoints) against the run's audit key
   from its first entry to its last, so a run whose last round was erased together with its
   checkpoint is not continued, nor one whose log was rewritten under another key and
   rotated back to the run's.
4. applies a pending rollback request (a signed meta value) only if the audit log does not
   show it applied and committed already -- a signature says who wrote a request, not that it
   is still pending, so a request put back after it was cleared would roll the run back
   again -- and refuses to go on when the log's last request was never applied and is no
   longer pending (deleted, so the run would continue from the version it was to leave).

The guarantee holds against whoever can write the run directory but cannot use the audit key.
A plain (unencrypted) audit key file in the run directory gives the key to anyone who can read
it: keep it encrypted or on a token (docs/key-custody.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedfort import jsonio
from fedfort.audit import AUDIT_FILE, AuditTrail, read_entries, verify_run
from fedfort.audit.chain import key_id
from fedfort.audit.log import AUDIT_KEY_NAME, audit_keystore
from fedfort.config import RunConfig, config_differences, parse_config
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import CheckpointError
from fedfort.server.checkpoint import CheckpointStore
from fedfort.server.engine import RoundRecord, Stage

__all__ = [
    "CHECKPOINT_FILE",
    "PIPELINE_META",
    "check_audit_log",
    "check_rollback_request",
    "pipeline_identity",
    "resume_key",
    "resumed_config",
    "stage_list",
    "stored_config",
]

CHECKPOINT_FILE = "checkpoints.sqlite"


def resume_key(out_dir: Path) -> SigningKey:
    """The run's audit key, which signed its checkpoints; refused when it is missing."""
    if not (Path(out_dir) / CHECKPOINT_FILE).exists():
        raise CheckpointError(
            f"{out_dir} holds no run to resume ({CHECKPOINT_FILE} is missing): pass the --out "
            "of the run to continue, or start a new run without --resume"
        )
    store = audit_keystore(out_dir)
    if not store.exists(AUDIT_KEY_NAME):
        raise CheckpointError(
            f"the audit key {AUDIT_KEY_NAME!r} of {out_dir} is missing: it signs the run's "
            "checkpoints, and a resume verifies them with it; restore the key (or the token "
            "that holds it) before resuming"
        )
    return store.get(AUDIT_KEY_NAME)


def stored_config(out_dir: str | Path) -> dict[str, Any]:
    """The config stored with the run in ``out_dir``, its signature checked."""
    out = Path(out_dir)
    path = out / CHECKPOINT_FILE
    if not path.exists():
        raise CheckpointError(f"no run to resume: {path} does not exist")
    with CheckpointStore(path, resume_key(out)) as store:
        raw = store.verified_meta("config")
        identity = store.verified_meta("config_identity")
    config = parse_config(json.loads(raw))
    if config.config_identity() != identity:
        raise CheckpointError(
            f"the stored configuration of {path} does not match its stored identity: the "
            "checkpoint is inconsistent; do not resume from it"
        )
    return config.to_dict()


def resumed_config(out_dir: str | Path, given: RunConfig) -> RunConfig:
    """``given`` checked against the run's signed config; refused naming every differing key.

    A noise multiplier calibrated for the run (``privacy.target_epsilon``, and DP-SGD's
    ``privacy.dp_sgd.target_epsilon``) is taken from the stored config when ``given`` leaves it
    to calibration, so changing ``rounds`` on resume keeps the run's noise.
    """
    stored = stored_config(out_dir)
    privacy = stored["privacy"]
    calibrated = privacy.get("noise_multiplier")
    if (
        given.privacy.noise_multiplier is None
        and calibrated is not None
        and given.privacy.target_epsilon == privacy.get("target_epsilon")
    ):
        given = given.with_overrides({"privacy.noise_multiplier": calibrated})
    sgd = privacy.get("dp_sgd", {})
    if (
        given.privacy.dp_sgd.noise_multiplier is None
        and sgd.get("noise_multiplier") is not None
        and given.privacy.dp_sgd.target_epsilon == sgd.get("target_epsilon")
    ):  # DP-SGD's calibrated noise, likewise
        given = given.with_overrides({"privacy.dp_sgd.noise_multiplier": sgd["noise_multiplier"]})
    differing = config_differences(stored, given.to_dict())
    if differing:
        shown = ", ".join(differing[:12]) + (" ..." if len(differing) > 12 else "")
        raise CheckpointError(
            f"the run in {out_dir} was checkpointed with a different configuration: the given "
            f"one differs in: {shown}. A resume continues the same run: restore those settings "
            "(only the keys listed in docs/deployment.md may change), or start a new run in "
            "another --out directory"
        )
    return given


def check_audit_log(
    out_dir: Path, key: SigningKey, store: CheckpointStore, trail: AuditTrail
) -> None:
    """Refuse to resume a run whose audit log fails verification or is not ``key``'s.

    One state is repaired rather than refused: the server stopped after checkpointing its last
    round and before auditing it. When the log is otherwise intact (chain, signed heads, every
    earlier round), that round's entries are rebuilt from its signed checkpoint and appended
    with a ``round_recovered`` entry.
    """
    if not (out_dir / AUDIT_FILE).exists():
        return
    latest = store.latest_round()
    logged = {e.round for e in read_entries(out_dir / AUDIT_FILE) if e.kind == "model_version"}
    pending = None
    if latest is not None and latest > 0 and latest not in logged and latest - 1 in logged | {0}:
        pending = latest
    # pinned to the run's audit key, not to the run directory's audit-key.pub: a log rewritten
    # under another key would otherwise verify and could hand itself back to the run's key
    # with an audit_key_rotated entry (the run's checkpoints are all signed by this one key)
    result = verify_run(out_dir, public_key=key.public, unaudited_round=pending)
    if result.ok and result.keys[-1] != key_id(key.public):
        raise CheckpointError(
            f"the audit log of {out_dir} is signed by key {result.keys[-1]}, not by the run's "
            f"audit key {key_id(key.public)}: it was rewritten; the run is not resumed"
        )
    if not result.ok:
        raise CheckpointError(
            f"the audit log of {out_dir} fails verification, so the run is not resumed: "
            f"{result.describe()}"
        )
    if pending is not None:
        record = RoundRecord(**store.load(pending).record)
        reason = (
            f"the server stopped after checkpointing round {pending} and before auditing it; "
            "its entries are rebuilt from the signed checkpoint"
        )
        trail.events(
            [*AuditTrail.round_entries(record), ("round_recovered", pending, {"reason": reason})]
        )


def check_rollback_request(out_dir: Path, request: dict[str, Any] | None) -> None:
    """Refuse a resume whose pending rollback ``request`` disagrees with the verified log.

    - a request the log shows applied and then committed was cleared at that commit, so it is
      back only because someone replayed its signed row into ``checkpoints.sqlite``;
    - the log's last ``rollback_requested`` entry, never applied, must still be pending: a
      request deleted from ``checkpoints.sqlite`` would let the run go on from the version
      the operator asked to leave.
    """
    if not (out_dir / AUDIT_FILE).exists():
        return
    fields = ("to_version", "at_round", "requested_at")
    applied = filed = None
    filed_applied = False
    for entry in read_entries(out_dir / AUDIT_FILE):
        data = entry.data
        if entry.kind == "rollback_requested":
            filed, filed_applied = entry, False
        elif entry.kind == "rollback":
            if filed is not None and data.get("requested_at") == filed.data.get("requested_at"):
                filed_applied = True
            if request is not None and all(data.get(f) == request.get(f) for f in fields):
                applied = entry
        elif entry.kind == "model_version" and applied is not None:
            raise CheckpointError(
                f"the pending rollback to version {request.get('to_version') if request else ''}"
                f" in {out_dir} was already applied (audit entry {applied.seq}) and committed "
                f"(entry {entry.seq}): its signed request was put back into checkpoints.sqlite "
                "(restore the run directory from a trusted copy), or the server stopped between "
                "committing that round and clearing the request (then delete the "
                "'pending_rollback' row of the meta table); applying it again would discard the "
                "rounds since"
            )
    pending_at = None if request is None else request.get("requested_at")
    if filed is not None and not filed_applied and pending_at != filed.data.get("requested_at"):
        raise CheckpointError(
            f"the audit log of {out_dir} records a rollback request to version "
            f"{filed.data.get('to_version')} (entry {filed.seq}) that was never applied, but "
            "checkpoints.sqlite no longer holds it as pending: it was deleted, so the run would "
            "go on from the version the operator asked to leave; file the rollback again "
            "(fedfort model rollback) or restore the run directory from a trusted copy"
        )


#: checkpoint meta key of the run's stage pipeline (see
#: :meth:`fedfort.run.federation.Federation._check_pipeline`)
PIPELINE_META = "pipeline"


def pipeline_identity(stages: list[Stage]) -> list[dict[str, Any]]:
    """Each stage's name and class (module:qualname), in pipeline order; a stage defined
    outside fedfort also with the arguments it was built with (fedfort's own stages are built
    from the config, which the run's identity already covers)."""
    identity: list[dict[str, Any]] = []
    for stage in stages:
        cls = type(stage)
        entry: dict[str, Any] = {
            "name": stage.name,
            "class": f"{cls.__module__}:{cls.__qualname__}",
        }
        if cls.__module__.split(".")[0] != "fedfort":
            args = getattr(stage, "component_args", {})
            entry["options"] = {k: _recordable(v) for k, v in args.items()}
        identity.append(entry)
    return identity


def _recordable(value: Any) -> Any:
    """``value`` as JSON; a value JSON cannot hold is recorded by its type."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple):
        return [_recordable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _recordable(v) for k, v in value.items()}
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def stage_list(text: str) -> str:
    """A stored pipeline (JSON) as a readable list of stages."""

    def one(stage: dict[str, Any]) -> str:
        options = stage.get("options")
        extra = f" {jsonio.dumps(options)}" if options else ""
        return f"{stage['name']} ({stage['class']}{extra})"

    return "[" + ", ".join(one(s) for s in json.loads(text)) + "]"
