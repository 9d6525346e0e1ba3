"""How much an attack achieved and how well the defences saw it, from a run's round records.

- **Detection precision / recall** on malicious clients, micro-averaged over rounds: every
  scored update is one decision; a flagged malicious update is a true positive, a flagged
  honest one a false positive, an unflagged malicious one a false negative.
- **Quarantine:** which malicious clients the reputation ledger quarantined and the first
  round by which all of them had been quarantined at least once; honest clients still in
  quarantine after the last round.
- **Backdoor attack success rate** is measured by the simulation's evaluator each evaluated
  round (``measurements.evaluate.backdoor_asr``): the share of triggered test inputs whose
  true label is not the target that the model classifies as the target.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from fedfort.measurements import (
    DetectMeasurement,
    EvaluationMeasurement,
    MeasurementSet,
    ReputationMeasurement,
)

__all__ = ["security_summary"]


def _detection(records: Sequence[dict[str, Any]], malicious: frozenset[str]) -> dict[str, Any]:
    tp = fp = fn = scored_rounds = 0
    for record in records:
        detect = MeasurementSet.of_record(record).get(DetectMeasurement)
        if detect is None:
            continue
        scored = set(detect.scores)
        if not scored:
            continue
        scored_rounds += 1
        flagged = set(detect.flagged)
        tp += len(flagged & malicious)
        fp += len(flagged - malicious)
        fn += len((scored & malicious) - flagged)
    if scored_rounds == 0:
        return {"detection_precision": None, "detection_recall": None}
    return {
        "detection_precision": tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0),
        "detection_recall": tp / (tp + fn) if tp + fn else None,
        "detection_counts": {"true_positive": tp, "false_positive": fp, "false_negative": fn},
    }


def _quarantine(records: Sequence[dict[str, Any]], malicious: frozenset[str]) -> dict[str, Any]:
    seen_reputation = False
    first: dict[str, int] = {}
    last_quarantined: set[str] = set()
    for record in records:
        rep = MeasurementSet.of_record(record).get(ReputationMeasurement)
        if rep is None:
            continue
        seen_reputation = True
        last_quarantined = set(rep.quarantined or ())
        for cid in last_quarantined:
            first.setdefault(cid, record["round"])
    if not seen_reputation:
        return {
            "malicious_quarantined": None,
            "first_quarantine_round": None,
            "honest_quarantined_at_end": None,
        }
    caught = {c: r for c, r in first.items() if c in malicious}
    all_caught = bool(malicious) and len(caught) == len(malicious)
    return {
        "malicious_quarantined": len(caught),
        "first_quarantine_round": max(caught.values()) if all_caught else None,
        "honest_quarantined_at_end": len(last_quarantined - malicious),
        "quarantine_rounds": dict(sorted(first.items())),
    }


def security_summary(
    records: Sequence[dict[str, Any]], malicious: Collection[str]
) -> dict[str, Any]:
    """Detection, quarantine and backdoor figures of a run whose malicious clients are known."""
    bad = frozenset(malicious)
    evaluations = [MeasurementSet.of_record(r).get(EvaluationMeasurement) for r in records]
    asr = [e.backdoor_asr for e in evaluations if e is not None and e.backdoor_asr is not None]
    return {
        "malicious": sorted(bad),
        "backdoor_asr": asr[-1] if asr else None,
        "max_backdoor_asr": max(asr) if asr else None,
        **_detection(records, bad),
        **_quarantine(records, bad),
    }
