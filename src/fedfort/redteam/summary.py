"""Aggregate the cells of a red-team matrix into rows and per-attack verdicts.

A *cell* is one finished training run of ``fedfort redteam``: one attack, one defence, one
seed. :func:`summarize` folds the seeds of each (attack, defence) pair into a *row* holding
the mean and sample standard deviation of clean accuracy, backdoor attack success rate (ASR)
and detection precision/recall, plus the damage the attack did:

* ``accuracy_drop_mean`` -- accuracy lost relative to the *same defence* without an attack
  (does the attack hurt this defence?), paired by seed;
* ``drop_vs_fedavg_mean`` -- accuracy lost relative to the *undefended, unattacked* FedAvg run
  (is the attacked, defended model as good as the model we would have without adversaries?),
  paired by seed.

It then gives one *verdict* per attack: the best defence against it, whether that defence
survives the attack (keeps accuracy within ``tolerance`` of the no-attack FedAvg run and, for
backdoors, keeps the ASR at or below ``asr_limit``), every defence that survives it, and the
defences it measurably hurts. The result is a JSON-friendly dict that
:mod:`fedfort.redteam.report` renders.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

__all__ = [
    "BACKDOOR_KIND",
    "CELL_KEYS",
    "NO_ATTACK",
    "SUMMARY_METRICS",
    "UNDEFENDED",
    "summarize",
]

NO_ATTACK: Final = "none"
"""Attack label of the run without adversaries."""

UNDEFENDED: Final = "fedavg"
"""Defence label of the undefended baseline."""

BACKDOOR_KIND: Final = "backdoor"
"""Attack kind judged on its attack success rate as well as on clean accuracy."""

CELL_KEYS: Final[tuple[str, ...]] = (
    "attack",
    "attack_kind",
    "defense",
    "seed",
    "accuracy",
    "backdoor_asr",
    "detection_precision",
    "detection_recall",
    "malicious_quarantined",
    "first_quarantine_round",
    "honest_quarantined_at_end",
    "duration_s",
)
"""Keys every cell must have."""

SUMMARY_METRICS: Final[tuple[str, ...]] = (
    "accuracy",
    "backdoor_asr",
    "detection_precision",
    "detection_recall",
)
"""Metrics reported as ``<metric>_mean`` and ``<metric>_std`` over seeds."""

# Absorbs float rounding so that e.g. 0.93 - 0.90 counts as a drop of exactly 0.03.
_EPS: Final = 1e-9

Cell = dict[str, Any]
Row = dict[str, Any]
_Key = tuple[str, str]


def summarize(
    cells: list[dict[str, Any]],
    *,
    attacks: list[str],
    defenses: list[str],
    tolerance: float = 0.03,
    asr_limit: float = 0.10,
) -> dict[str, Any]:
    """Fold red-team cells into per-(attack, defence) rows and per-attack verdicts.

    ``attacks`` and ``defenses`` fix the order of rows, verdicts and report tables; they must
    cover every label in ``cells`` (labels without cells are allowed and skipped).
    ``tolerance`` is the accuracy drop (a fraction, 0.03 = 3 points) still counted as
    surviving; ``asr_limit`` the highest backdoor attack success rate still counted as such.

    Raises:
        ValueError: a cell misses a key, a label is not listed, a label is listed twice, an
            attack has two kinds, or an (attack, defence, seed) triple appears twice.
    """
    _validate(cells, attacks, defenses)
    groups = _group(cells)
    accuracy = {(c["attack"], c["defense"], c["seed"]): float(c["accuracy"]) for c in cells}
    rows = [
        _row(groups[(attack, defense)], accuracy)
        for attack in attacks
        for defense in defenses
        if (attack, defense) in groups
    ]
    verdicts = [
        _verdict(attack, [r for r in rows if r["attack"] == attack], tolerance, asr_limit)
        for attack in attacks
        if attack != NO_ATTACK and any(r["attack"] == attack for r in rows)
    ]
    return {
        "attacks": list(attacks),
        "defenses": list(defenses),
        "rows": rows,
        "verdicts": verdicts,
        "tolerance": tolerance,
        "asr_limit": asr_limit,
    }


# --------------------------------------------------------------------------- validation


def _validate(cells: Sequence[Cell], attacks: Sequence[str], defenses: Sequence[str]) -> None:
    for name, labels in (("attacks", attacks), ("defenses", defenses)):
        duplicates = sorted(label for label, n in Counter(labels).items() if n > 1)
        if duplicates:
            raise ValueError(f"{name} lists labels more than once: {duplicates}")
    for index, cell in enumerate(cells):
        missing = [key for key in CELL_KEYS if key not in cell]
        if missing:
            raise ValueError(f"red-team cell #{index} is missing keys {missing}: {cell!r}")
    _check_covered("attack", {c["attack"] for c in cells}, attacks)
    _check_covered("defense", {c["defense"] for c in cells}, defenses)
    kinds: dict[str, str] = {}
    seen: set[tuple[str, str, int]] = set()
    for cell in cells:
        kind = kinds.setdefault(cell["attack"], cell["attack_kind"])
        if kind != cell["attack_kind"]:
            raise ValueError(
                f"attack {cell['attack']!r} has two kinds: {kind!r} and {cell['attack_kind']!r}"
            )
        triple = (cell["attack"], cell["defense"], cell["seed"])
        if triple in seen:
            raise ValueError(f"duplicate red-team cell for (attack, defense, seed) {triple}")
        seen.add(triple)


def _check_covered(what: str, present: set[str], listed: Sequence[str]) -> None:
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise ValueError(
            f"{what} labels {unlisted} appear in the cells but not in the {what}s list "
            f"{list(listed)}"
        )


# --------------------------------------------------------------------------- rows


def _group(cells: Sequence[Cell]) -> dict[_Key, list[Cell]]:
    groups: dict[_Key, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell["attack"], cell["defense"]), []).append(cell)
    for group in groups.values():
        group.sort(key=lambda c: c["seed"])
    return groups


def _row(group: list[Cell], accuracy: dict[tuple[str, str, int], float]) -> Row:
    first = group[0]
    row: Row = {
        "attack": first["attack"],
        "attack_kind": first["attack_kind"],
        "defense": first["defense"],
        "seeds": len(group),
    }
    for metric in SUMMARY_METRICS:
        values = [c[metric] for c in group]
        row[f"{metric}_mean"] = _mean(values)
        row[f"{metric}_std"] = _std(values)
    row["accuracy_drop_mean"] = _drop_mean(group, accuracy, first["defense"])
    row["drop_vs_fedavg_mean"] = _drop_mean(group, accuracy, UNDEFENDED)
    row["malicious_quarantined_mean"] = _mean([c["malicious_quarantined"] for c in group])
    row["honest_quarantined_at_end_max"] = _max([c["honest_quarantined_at_end"] for c in group])
    rounds = [c["first_quarantine_round"] for c in group]
    row["first_quarantine_round_max"] = None if None in rounds else max(rounds)
    return row


def _drop_mean(
    group: list[Cell], accuracy: dict[tuple[str, str, int], float], reference: str
) -> float | None:
    """Mean over seeds of (no-attack ``reference`` accuracy - this accuracy).

    Seeds without a matching no-attack cell are skipped; None when no seed has one.
    """
    drops = [
        accuracy[(NO_ATTACK, reference, c["seed"])] - float(c["accuracy"])
        for c in group
        if (NO_ATTACK, reference, c["seed"]) in accuracy
    ]
    return _mean(drops)


def _present(values: Sequence[float | int | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


def _mean(values: Sequence[float | int | None]) -> float | None:
    present = _present(values)
    return statistics.fmean(present) if present else None


def _std(values: Sequence[float | int | None]) -> float | None:
    present = _present(values)
    if not present:
        return None
    return statistics.stdev(present) if len(present) > 1 else 0.0


def _max(values: Sequence[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


# --------------------------------------------------------------------------- verdicts


def _verdict(attack: str, rows: list[Row], tolerance: float, asr_limit: float) -> dict[str, Any]:
    kind: str = rows[0]["attack_kind"]
    best = _best_row(rows, kind, tolerance)
    undefended = next((r for r in rows if r["defense"] == UNDEFENDED), None)
    return {
        "attack": attack,
        "attack_kind": kind,
        "best_defense": best["defense"],
        "survives": _survives(best, kind, tolerance, asr_limit),
        "surviving_defenses": [
            r["defense"] for r in rows if _survives(r, kind, tolerance, asr_limit)
        ],
        "hurt_defenses": [
            r["defense"]
            for r in rows
            if r["defense"] != UNDEFENDED and _hurts(r, kind, tolerance, asr_limit)
        ],
        "undefended_accuracy": undefended["accuracy_mean"] if undefended else None,
        "undefended_asr": undefended["backdoor_asr_mean"] if undefended else None,
    }


def _effective_drop(row: Row) -> float | None:
    """Drop vs the no-attack FedAvg run, else vs the same defence's no-attack run."""
    drop: float | None = row["drop_vs_fedavg_mean"]
    return drop if drop is not None else row["accuracy_drop_mean"]


def _within(value: float | None, limit: float) -> bool:
    """``value <= limit`` up to float rounding; an unknown value never passes."""
    return value is not None and value <= limit + _EPS


def _best_row(rows: list[Row], kind: str, tolerance: float) -> Row:
    order = {id(r): i for i, r in enumerate(rows)}
    if kind == BACKDOOR_KIND:
        qualifying = [r for r in rows if _within(_effective_drop(r), tolerance)] or rows
        return min(
            qualifying,
            key=lambda r: (
                r["backdoor_asr_mean"] is None,
                r["backdoor_asr_mean"] or 0.0,
                -r["accuracy_mean"],
                order[id(r)],
            ),
        )
    return min(rows, key=lambda r: (-r["accuracy_mean"], order[id(r)]))


def _survives(row: Row, kind: str, tolerance: float, asr_limit: float) -> bool:
    accurate = _within(_effective_drop(row), tolerance)
    if kind == BACKDOOR_KIND:
        return accurate and _within(row["backdoor_asr_mean"], asr_limit)
    return accurate


def _hurts(row: Row, kind: str, tolerance: float, asr_limit: float) -> bool:
    drop = row["accuracy_drop_mean"]
    if drop is not None and drop > tolerance + _EPS:
        return True
    asr = row["backdoor_asr_mean"]
    return kind == BACKDOOR_KIND and asr is not None and asr > asr_limit + _EPS
