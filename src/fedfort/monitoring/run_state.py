"""A run's state read from its directory: what the dashboard and the report show.

:func:`read_run` reads ``checkpoints.sqlite`` (round records, model versions, the latest
reputation ledger, through :class:`~fedfort.server.checkpoint.CheckpointReader`) and
``audit.sqlite`` (its verification and key lifecycle events) read-only, so it works while the
run is writing (SQLite WAL readers do not block the writer), for a finished run, for any
runtime, and from another process (``fedfort dashboard RUN``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from fedfort.audit import AUDIT_FILE, AUDIT_PUBLIC_KEY_FILE, read_entries, verify_run
from fedfort.errors import AuditError
from fedfort.measurements import (
    REPUTATION_STATS,
    AggregateMeasurement,
    CollectMeasurement,
    DetectMeasurement,
    MeasurementSet,
    PrivacyMeasurement,
    ReputationMeasurement,
    RollbackMeasurement,
)
from fedfort.server.checkpoint import CheckpointReader, VersionRow

__all__ = ["EVENT_KINDS", "read_run", "run_records"]

#: audit entry kinds shown as lifecycle events (keys, enrolment, rollbacks, the run itself)
EVENT_KINDS = (
    "run_start",
    "run_resumed",
    "feature_statistics",
    "run_end",
    "audit_key_rotated",
    "server_key_rotated",
    "client_enrolled",
    "client_key_rotated",
    "client_revoked",
    "update_refused",
    "rollback",
    "rollback_requested",
)
#: the most recent rejections listed individually
_MAX_REJECTIONS = 500


def _snapshot(run_dir: Path) -> tuple[dict[str, str], list[VersionRow], dict[str, Any]]:
    """Meta, every checkpoint's (round, created, hash, record) and the latest engine state,
    read in one read transaction, so a live run's rounds are never mixed across commits."""
    with CheckpointReader(run_dir / "checkpoints.sqlite") as reader:
        snapshot = reader.snapshot()
    return snapshot.meta, snapshot.versions, snapshot.latest_state


def run_records(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The stored config and the records of every committed round (oldest first)."""
    meta, rows, _ = _snapshot(Path(run_dir))
    return meta, [record for round_, _c, _h, record in rows if round_ > 0]


def _models(rows: list[VersionRow]) -> list[dict[str, Any]]:
    return [
        {
            "version": round_,
            "round": round_,
            "created": created,
            "sha256": digest,
            "accuracy": record.get("accuracy"),
            "loss": record.get("loss"),
            "participants": record.get("participants"),
            "rollback": _rollback(record),
        }
        for round_, created, digest, record in rows
    ]


def _rollback(record: dict[str, Any]) -> dict[str, Any] | None:
    rollback = MeasurementSet.of_record(record).get(RollbackMeasurement)
    return None if rollback is None else rollback.to_dict()


def _dp_sgd_state(dp_sgd: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """With DP-SGD: each client's last reported per-record epsilon and the round it stopped
    training because its own budget was spent (``dp_sgd_clients``), its budget and delta."""
    if not dp_sgd.get("enabled", False):
        return {}
    clients: dict[str, dict[str, Any]] = {}
    for record in records:
        m = MeasurementSet.of_record(record)
        privacy = m.get(PrivacyMeasurement)
        for cid, eps in ((privacy.dp_sgd_epsilon or {}) if privacy is not None else {}).items():
            clients.setdefault(cid, {"id": cid, "epsilon": None, "stopped_round": None})
            clients[cid]["epsilon"] = eps
        collect = m.get(CollectMeasurement)
        for cid, why in ((collect.refused or {}) if collect is not None else {}).items():
            entry = clients.setdefault(cid, {"id": cid, "epsilon": None, "stopped_round": None})
            if why == "privacy_budget_exhausted" and entry["stopped_round"] is None:
                entry["stopped_round"] = record["round"]
    return {
        "dp_sgd_target_epsilon": dp_sgd.get("target_epsilon"),
        "dp_sgd_delta": dp_sgd.get("delta"),
        "dp_sgd_clients": [clients[c] for c in sorted(clients)],
    }


def _round_row(record: dict[str, Any]) -> dict[str, Any]:
    m = MeasurementSet.of_record(record)
    agg = m.get(AggregateMeasurement)
    detect = m.get(DetectMeasurement)
    rep = m.get(ReputationMeasurement)
    return {
        "round": record["round"],
        "accuracy": record.get("accuracy"),
        "loss": record.get("loss"),
        "participants": record.get("participants"),
        "selected": len(record.get("selected", [])),
        "dropped": len(record.get("dropped", [])),
        "rejected": len(record.get("rejected", [])),
        "flagged": 0 if detect is None else len(detect.flagged),
        "epsilon": record.get("epsilon"),
        "delta": record.get("delta"),
        "duration_s": record.get("duration_s"),
        "aggregation": None if agg is None or "rule" not in agg.to_dict() else agg.stored_rule,
        "secagg_dropouts": 0 if agg is None else len(agg.protocol_dropped or {}),
        "reputation": {} if rep is None else {k: getattr(rep, k) for k in REPUTATION_STATS},
        "rollback": _rollback(record),
        # the clients' example-weighted evaluation on their hold-outs, in rounds that had one
        "federated_accuracy": _federated(record).get("accuracy"),
        "federated_loss": _federated(record).get("loss"),
    }


def _federated(record: dict[str, Any]) -> dict[str, Any]:
    evaluation = record.get("evaluation") or {}
    overall: dict[str, Any] = evaluation.get("overall") or {}
    return overall


def _clients(records: list[dict[str, Any]], state: dict[str, Any]) -> list[dict[str, Any]]:
    selected: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    flagged: Counter[str] = Counter()
    last: dict[str, int] = {}
    for record in records:
        selected.update(record.get("selected", []))
        accepted.update(record.get("accepted", []))
        rejected.update(r["client_id"] for r in record.get("rejected", []))
        detect = MeasurementSet.of_record(record).get(DetectMeasurement)
        flagged.update([] if detect is None else detect.flagged)
        for cid in record.get("selected", []):
            last[cid] = record["round"]
    ledger = state.get("stages", {}).get("reputation", {})
    scores: dict[str, float] = ledger.get("scores", {})
    quarantine: dict[str, int] = ledger.get("quarantined_until", {})
    current = int(state.get("round", 0))
    ids = sorted(set(selected) | set(scores))
    return [
        {
            "id": cid,
            "reputation": scores.get(cid),
            "quarantined": quarantine.get(cid, 0) > current,
            "selected": selected[cid],
            "accepted": accepted[cid],
            "rejected": rejected[cid],
            "flagged": flagged[cid],
            "last_round": last.get(cid),
        }
        for cid in ids
    ]


def _audit(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """Verification, lifecycle events, and whether the last thing logged is the run's end."""
    if not (run_dir / AUDIT_FILE).exists():
        return {"present": False, "ok": None, "problem": "the run keeps no audit log"}, [], False
    try:
        result = verify_run(run_dir).to_dict()
        result["present"] = True
        entries = list(read_entries(run_dir / AUDIT_FILE))
    except AuditError as exc:
        return {"present": True, "ok": False, "problem": str(exc)}, [], False
    events = []
    for e in entries:
        if e.kind in EVENT_KINDS:
            try:
                body: Any = e.data
            except ValueError:  # an edited body; the verification above names the entry
                body = {"unreadable": e.body[:200]}
            events.append(
                {"seq": e.seq, "ts": e.ts, "kind": e.kind, "round": e.round, "body": body}
            )
    for event in events:
        body = event["body"]
        if isinstance(body, dict):
            body.pop("config", None)  # the config is shown on its own
    finished = bool(entries) and entries[-1].kind == "run_end"
    result["public_key_file"] = str(run_dir / AUDIT_PUBLIC_KEY_FILE)
    return result, events, finished


def read_run(run_dir: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Everything the dashboard shows about the run in ``run_dir`` (JSON-ready)."""
    run_dir = Path(run_dir)
    meta, rows, state = _snapshot(run_dir)
    records = [record for round_, _c, _h, record in rows if round_ > 0]
    config: dict[str, Any] = json.loads(meta.get("config", "{}"))
    if verify:
        audit, events, finished = _audit(run_dir)
    else:
        audit, events, finished = {"present": None, "ok": None}, [], False
    target = int(config.get("rounds", 0))
    committed = records[-1]["round"] if records else 0
    privacy_cfg = config.get("privacy", {})
    private = privacy_cfg.get("mode", "none") != "none" or privacy_cfg.get("dp_sgd", {}).get(
        "enabled", False
    )
    spent = next((r["epsilon"] for r in reversed(records) if r.get("epsilon") is not None), None)
    rejections = [{"round": r["round"], **x} for r in records for x in r.get("rejected", [])][
        -_MAX_REJECTIONS:
    ]
    reasons = Counter(x["reason"] for r in records for x in r.get("rejected", []))
    pending = meta.get("pending_rollback")
    return {
        "run": {
            "dir": str(run_dir.resolve()),
            "name": run_dir.resolve().name,
            "fedfort_version": meta.get("fedfort_version"),
            "identity": meta.get("identity"),
            "rounds_committed": committed,
            "rounds_target": target,
            "status": "finished" if finished or (target and committed >= target) else "running",
        },
        "config": config,
        "rounds": [_round_row(r) for r in records],
        "privacy": {
            "mode": privacy_cfg.get("mode"),
            "dp_sgd": privacy_cfg.get("dp_sgd", {}).get("enabled", False),
            "target_epsilon": privacy_cfg.get("target_epsilon"),
            "delta": privacy_cfg.get("delta"),
            "epsilon_spent": spent,
            **_dp_sgd_state(privacy_cfg.get("dp_sgd", {}), records),
        }
        if private
        else None,
        "secure_aggregation": config.get("secure_aggregation", {}).get("mode", "none"),
        "aggregation": config.get("defense", {}).get("aggregator"),
        "clients": _clients(records, state),
        "rejections": rejections,
        "rejection_counts": dict(sorted(reasons.items())),
        "audit": audit,
        "events": events,
        "models": _models(rows),
        "pending_rollback": None if pending is None else json.loads(pending),
    }
