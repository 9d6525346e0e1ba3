"""``fedfort redteam privacy``: what a curious server or a model's user learns, per defence.

A privacy red-team config (TOML) names a base run, the defences and the attack settings::

    seeds = [0, 1, 2]

    [base]                        # any run config (docs/configuration.md)
    rounds = 3
    clients = { count = 5, epochs = 100, batch_size = 0, lr = 0.5 }

    [defenses.none]               # label = a partial run config merged onto [base]
    [defenses.local_dp_eps10]
    privacy = { mode = "local", local_epsilon = 10.0, clip_norm = 1.0 }

    [membership]                  # LiRA shadows, FPR of the TPR figure, attacked round
    shadows = 8

    [inversion]                   # fields of InversionExperiment; enabled = false skips it
    trials = 4

:func:`run_privacy_redteam` runs membership inference
(:mod:`fedfort.redteam.privacy_membership`: every defence x seed on fedfort's real
federation) and the gradient-inversion defence evaluation
(:func:`fedfort.redteam.privacy_inversion.evaluate_inversion_defences`), writes
``privacy.json`` and the report (:mod:`fedfort.redteam.privacy_report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedfort import jsonio
from fedfort.config import read_toml
from fedfort.errors import ConfigError
from fedfort.redteam.privacy_inversion import InversionExperiment, evaluate_inversion_defences
from fedfort.redteam.privacy_membership import (
    MembershipSettings,
    check_defences,
    defence_config,
    evaluate_membership,
)

__all__ = [
    "PRIVACY_FILE",
    "MembershipSection",
    "PrivacyRedteamConfig",
    "defence_kind",
    "load_privacy_redteam_config",
    "run_privacy_redteam",
]

PRIVACY_FILE = "privacy.json"


class MembershipSection(BaseModel):
    """Membership-inference settings (see :class:`MembershipSettings`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shadows: int = Field(8, ge=0, description="LiRA shadow models per seed (even; 0 = no LiRA)")
    fpr: float = Field(0.01, gt=0, lt=1, description="false-positive rate of the TPR figure")
    update_round: int | None = Field(None, ge=1, description="round whose updates are attacked")
    level: float = Field(0.95, gt=0, lt=1, description="confidence level over seeds")

    @field_validator("shadows")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("LiRA draws balanced halves: shadows must be even")
        return value


class PrivacyRedteamConfig(BaseModel):
    """A privacy red team: base run, defences by label, seeds, attack settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    base: dict[str, Any] = Field(default_factory=dict)
    defenses: dict[str, dict[str, Any]] = Field(min_length=1)
    membership: MembershipSection = Field(default_factory=MembershipSection)
    inversion: dict[str, Any] = Field(default_factory=dict)

    def experiment(self) -> InversionExperiment | None:
        """The gradient-inversion settings (``None`` when ``inversion.enabled = false``)."""
        body = dict(self.inversion)
        if not body.pop("enabled", True):
            return None
        body.setdefault("seed", self.seeds[0])
        try:
            fields: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in body.items()
            }
            return InversionExperiment(**fields)
        except TypeError as exc:
            raise ConfigError(f"[inversion]: {exc}") from None


def load_privacy_redteam_config(path: str | Path) -> PrivacyRedteamConfig:
    """Read and validate a privacy red-team TOML file (every defence's run config included)."""
    raw = read_toml(path, "privacy red-team config")
    try:
        cfg = PrivacyRedteamConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid privacy red-team config {path}:\n  {problems}") from None
    m = cfg.membership
    check_defences(
        cfg.base,
        cfg.defenses,
        cfg.seeds[0],
        MembershipSettings(m.shadows, m.fpr, m.update_round, m.level),
    )
    cfg.experiment()
    return cfg


def defence_kind(base: dict[str, Any], defence: dict[str, Any]) -> str:
    """The kind of a configured defence, in the gradient-inversion evaluation's vocabulary."""
    cfg = defence_config(base, defence, 0)
    mode = cfg.privacy.mode
    secure = cfg.secure_aggregation.enabled
    if mode == "distributed":
        return "secure_distributed_dp" if secure else "distributed_dp"
    if mode in ("local", "central"):
        return f"{mode}_dp"
    if secure:
        return "secure_aggregation"
    if cfg.defense.norm_bound is not None:
        return "clipping"
    return "none"


def run_privacy_redteam(
    cfg: PrivacyRedteamConfig,
    out_dir: str | Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run both evaluations, write ``privacy.json`` and the report; return the JSON body."""
    from fedfort.redteam.privacy_report import write_privacy_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    m = cfg.membership
    membership = evaluate_membership(
        cfg.base,
        cfg.defenses,
        cfg.seeds,
        MembershipSettings(m.shadows, m.fpr, m.update_round, m.level),
        progress,
    )
    for name, row in membership["rows"].items():
        row["kind"] = defence_kind(cfg.base, cfg.defenses[name])
    membership_s = time.perf_counter() - start
    experiment = cfg.experiment()
    inversion: dict[str, Any] | None = None
    if experiment is not None:
        if progress is not None:
            progress("gradient inversion")
        inversion = evaluate_inversion_defences(experiment).to_json()
    base = defence_config(cfg.base, {}, cfg.seeds[0])
    body: dict[str, Any] = {
        "meta": {
            "dataset": base.data.dataset,
            "model": base.model.name,
            "clients": base.clients.count,
            "rounds": base.rounds,
            "seeds": list(cfg.seeds),
            "membership_s": round(membership_s, 1),
            "wall_s": round(time.perf_counter() - start, 1),
        },
        "membership": membership,
        "inversion": inversion,
    }
    (out / PRIVACY_FILE).write_text(
        jsonio.dumps(body, indent=2, non_finite="null"), encoding="utf-8"
    )
    write_privacy_report(body, out)
    return body
