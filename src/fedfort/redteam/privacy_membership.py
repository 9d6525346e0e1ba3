"""Membership inference against a real federated run, with and without privacy defences.

:func:`membership_run` trains one :class:`~fedfort.simulation.Simulation` (a base config with
one defence's settings merged in) while a :class:`~fedfort.redteam.server_view.ServerView`
records what the server sees, then attacks two targets:

- **the final global model** (anyone who gets the model): members are the federation's
  training rows, non-members as many held-out rows of the same distribution. Attacks: the
  loss threshold and LiRA, online and offline, with shadow models retrained as the
  federation was (:mod:`fedfort.attacks.inference.shadow_models`).
- **one round's client updates** (the curious server): for every client ``k`` the server knows
  the broadcast model ``w`` and the update it received, and scores ``loss(w) - loss(w +
  delta_k)`` on client ``k``'s rows (members) and on an equal number of held-out rows. Under
  secure aggregation the server has no ``delta_k``; its best view of the client is the round's
  aggregate, so it scores ``loss(w) - loss(w_next)``.

:func:`evaluate_membership` runs every defence for every seed and folds the seeds into means
with Student-t 95% intervals (:func:`~fedfort.attacks.inference.membership.t_interval`).
Epsilon is what fedfort's accountant reported in the run's results, never computed here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfort.attacks.inference.membership import (
    fit_lira,
    lira_scores,
    logit_confidence,
    loss_change_scores,
    membership_metrics,
    per_example_loss,
    t_interval,
)
from fedfort.attacks.inference.shadow_models import ShadowStatistics, train_shadow_models
from fedfort.client.training import LocalTrainer
from fedfort.config import RunConfig, parse_config
from fedfort.errors import ConfigError, PrivacyBudgetExhausted
from fedfort.redteam.server_view import ServerView
from fedfort.run.federation import Federation, RunResult
from fedfort.simulation import Simulation

__all__ = [
    "MEMBERSHIP_ATTACKS",
    "MembershipSettings",
    "check_defences",
    "defence_config",
    "evaluate_membership",
    "membership_run",
]

#: attack labels, by target, in report order
MEMBERSHIP_ATTACKS: dict[str, tuple[str, ...]] = {
    "global_model": ("loss_threshold", "lira_online", "lira_offline"),
    "client_update": ("loss_change",),
}


@dataclass(frozen=True)
class MembershipSettings:
    """Attack settings: LiRA's shadow count (even; 0 skips LiRA), the FPR of the TPR figure,
    which round's updates the server attacks (``None`` = the last), and the CI level."""

    shadows: int = 8
    fpr: float = 0.01
    update_round: int | None = None
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.shadows < 0 or self.shadows % 2:
            raise ConfigError(f"shadows must be an even number >= 0, got {self.shadows}")
        if not 0.0 < self.fpr < 1.0 or not 0.0 < self.level < 1.0:
            raise ConfigError(f"fpr and level must be in (0, 1), got {self.fpr}, {self.level}")
        if self.update_round is not None and self.update_round < 1:
            raise ConfigError(f"update_round must be >= 1, got {self.update_round}")


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def defence_config(base: Mapping[str, Any], defence: Mapping[str, Any], seed: int) -> RunConfig:
    """The run config of one defence and seed: ``defence`` merged onto ``base`` (no audit log:
    the evaluation keeps no run directory)."""
    body = _merge(dict(base), defence)
    body["seed"] = seed
    body = _merge(body, {"governance": {"audit": False}})
    return parse_config(body)


@dataclass(frozen=True)
class _Candidates:
    x: np.ndarray
    y: np.ndarray
    member: np.ndarray  # 1 for members, 0 for non-members
    client: np.ndarray  # owning client for members; the paired client for non-members


def _candidates(sim: Federation, seed: int) -> _Candidates:
    xs, ys, owner = [], [], []
    for k in range(len(sim.ids)):
        x, y = sim.data.client_arrays(k)
        xs.append(x)
        ys.append(y)
        owner.append(np.full(y.shape[0], k))
    xm, ym, om = np.concatenate(xs), np.concatenate(ys), np.concatenate(owner)
    held_x, held_y = sim.dataset.x_test, sim.dataset.y_test
    if held_y.shape[0] < ym.shape[0]:
        raise ConfigError(
            f"membership inference needs as many held-out rows as training rows: the run has "
            f"{ym.shape[0]} training and {held_y.shape[0]} held-out rows; raise "
            "data.test_fraction"
        )
    pick = np.random.default_rng([seed, 7]).permutation(held_y.shape[0])[: ym.shape[0]]
    return _Candidates(
        x=np.concatenate([xm, held_x[pick]]),
        y=np.concatenate([ym, held_y[pick]]),
        member=np.r_[np.ones(ym.shape[0], np.int64), np.zeros(ym.shape[0], np.int64)],
        client=np.concatenate([om, om]),
    )


def _metrics(scores: np.ndarray, labels: np.ndarray, fpr: float) -> dict[str, float]:
    m = membership_metrics(scores, labels, fpr)
    return {"auc": m.auc, "tpr_at_fpr": m.tpr_at_fpr}


def _update_scores(
    trainer: LocalTrainer,
    view: ServerView,
    sim: Federation,
    cand: _Candidates,
    final: np.ndarray,
    round_: int,
) -> tuple[np.ndarray, str]:
    if round_ not in view.broadcast:
        raise ConfigError(f"update_round {round_} did not run (the run has {sim.engine.round})")
    before = view.broadcast[round_]
    received = view.updates[round_]
    scores = np.empty(cand.y.shape[0], dtype=np.float64)
    seen = "aggregate"
    for k, cid in enumerate(sim.ids):
        rows = cand.client == k
        if cid in received:
            after = before + received[cid]
            seen = "individual update"
        else:  # sealed (secure aggregation) or not selected: only the round's result is known
            after = view.model_after(round_, final)
        scores[rows] = loss_change_scores(trainer, before, after, cand.x[rows], cand.y[rows])
    return scores, seen


def membership_run(
    base: Mapping[str, Any],
    defence: Mapping[str, Any],
    seed: int,
    settings: MembershipSettings,
    shadows: Callable[[Federation, np.ndarray, np.ndarray], ShadowStatistics] | None = None,
) -> dict[str, Any]:
    """Train one run of ``defence`` and attack its final model and its client updates.

    ``shadows(sim, x, y)`` supplies LiRA's shadow statistics for the candidate pool (so a
    caller can train them once per seed for every defence); by default they are trained here.
    Returns the run's accuracy, epsilon and, per attack, ``{"auc", "tpr_at_fpr"}``.
    """
    config = defence_config(base, defence, seed)
    with Simulation(config) as sim:
        initial = sim.engine.model.copy()
        view = ServerView.attach(sim)
        try:
            result = sim.run()
        except PrivacyBudgetExhausted as exc:  # the budget ended the run: attack what it made
            if not isinstance(exc.result, RunResult) or not exc.result.records:
                raise
            result = exc.result
        cand = _candidates(sim, seed)
        trainer = LocalTrainer(sim.build_module())
        final = result.model
        out: dict[str, Any] = {
            "seed": seed,
            "accuracy": result.final["accuracy"],
            "epsilon": result.final["epsilon"],
            "delta": result.final["delta"],
            "members": int(cand.member.sum()),
        }
        labels = cand.member
        model: dict[str, dict[str, float]] = {
            "loss_threshold": _metrics(
                -per_example_loss(trainer, final, cand.x, cand.y), labels, settings.fpr
            )
        }
        if settings.shadows > 0:
            stats = (
                shadows(sim, cand.x, cand.y)
                if shadows is not None
                else shadow_statistics(sim, initial, cand.x, cand.y, settings.shadows, seed)
            )
            fit = fit_lira(stats.phi, stats.in_mask)
            phi = logit_confidence(trainer, final, cand.x, cand.y)
            model["lira_online"] = _metrics(
                lira_scores(fit, phi, online=True), labels, settings.fpr
            )
            model["lira_offline"] = _metrics(
                lira_scores(fit, phi, online=False), labels, settings.fpr
            )
        round_ = settings.update_round or sim.engine.round
        scores, seen = _update_scores(trainer, view, sim, cand, final, round_)
        out["global_model"] = model
        out["client_update"] = {"loss_change": _metrics(scores, labels, settings.fpr)}
        out["server_sees"] = seen
        out["update_round"] = round_
    return out


def shadow_statistics(
    sim: Federation, initial: np.ndarray, x: np.ndarray, y: np.ndarray, count: int, seed: int
) -> ShadowStatistics:
    """LiRA shadows trained like ``sim``'s federation (same model, initial weights, local
    training, clients and rounds) on balanced halves of ``(x, y)``."""
    cfg = sim.config
    return train_shadow_models(
        LocalTrainer(sim.build_module()),
        initial,
        x,
        y,
        num_shadows=count,
        clients=cfg.clients.count,
        rounds=cfg.rounds,
        local=cfg.clients.local_training(),
        server_lr=cfg.server.lr,
        seed=seed,
    )


def _fold(runs: Sequence[dict[str, Any]], level: float) -> dict[str, Any]:
    row: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    for key in ("accuracy", "epsilon"):
        values = [r[key] for r in runs if r.get(key) is not None]
        bounds = (0.0, 1.0) if key == "accuracy" else (0.0, math.inf)
        row[key] = t_interval(values, level, bounds).to_dict() if values else None
    row["delta"] = runs[0]["delta"]
    row["server_sees"] = runs[0]["server_sees"]
    for target, attacks in MEMBERSHIP_ATTACKS.items():
        row[target] = {}
        for attack in attacks:
            if attack not in runs[0][target]:
                continue
            row[target][attack] = {
                metric: t_interval(
                    [r[target][attack][metric] for r in runs], level, (0.0, 1.0)
                ).to_dict()
                for metric in ("auc", "tpr_at_fpr")
            }
    return row


def check_defences(
    base: Mapping[str, Any],
    defences: Mapping[str, Mapping[str, Any]],
    seed: int,
    settings: MembershipSettings,
) -> None:
    """Validate every defence's run config and the attacked round before anything runs."""
    for name, defence in defences.items():
        try:
            rounds = defence_config(base, defence, seed).rounds
        except ConfigError as exc:
            raise ConfigError(f"defence {name!r}: {exc}") from None
        if settings.update_round is not None and settings.update_round > rounds:
            raise ConfigError(
                f"membership.update_round = {settings.update_round} but defence {name!r} runs "
                f"{rounds} rounds"
            )


def evaluate_membership(
    base: Mapping[str, Any],
    defences: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    settings: MembershipSettings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every defence x seed; returns ``{"settings", "rows": {defence: folded row}, "runs"}``.

    LiRA's shadows do not depend on the defence (the attacker models plain training), so they
    are trained once per seed and shared by that seed's defences.
    """
    if not seeds:
        raise ConfigError("membership evaluation needs at least one seed")
    if not defences:
        raise ConfigError("membership evaluation needs at least one defence")
    check_defences(base, defences, seeds[0], settings)
    plain = defence_config(base, {}, seeds[0])
    cache: dict[int, ShadowStatistics] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in defences}
    for seed in seeds:

        def shadows(
            sim: Federation, x: np.ndarray, y: np.ndarray, seed: int = seed
        ) -> ShadowStatistics:
            if seed not in cache:
                with Simulation(defence_config(base, {}, seed)) as twin:
                    initial = twin.engine.model.copy()
                    cache[seed] = shadow_statistics(twin, initial, x, y, settings.shadows, seed)
            return cache[seed]

        for name, defence in defences.items():
            if progress is not None:
                progress(f"membership: {name}, seed {seed}")
            runs[name].append(membership_run(base, defence, seed, settings, shadows))
        cache.pop(seed, None)
    return {
        "settings": {
            "shadows": settings.shadows,
            "fpr": settings.fpr,
            "update_round": settings.update_round or plain.rounds,
            "interval": f"Student-t {settings.level:.0%} over seeds",
        },
        "rows": {name: _fold(r, settings.level) for name, r in runs.items()},
        "runs": runs,
    }
