"""The red-team matrix: every attack against every defence, for several seeds.

A red-team config (TOML) names a base run, the attacks and the defences::

    seeds = [0, 1, 2]

    [base]                      # any run config (see docs/configuration.md), without [attack]
    rounds = 30
    clients = { count = 20 }

    [attacks.sign_flip]         # label = an [attack] table
    name = "sign_flip"
    scale = 10.0

    [defenses.multi_krum]       # label = a partial run config merged onto [base]
    defense = { aggregator = "multi_krum", num_byzantine = 4 }

A no-attack run (label ``none``) is added when missing, since every damage figure is
measured against it. Every cell's config is validated before the first run starts. Cells run
in a process pool (one sequential simulation per process, one thread each), and every cell
is one :class:`~fedfort.simulation.Simulation`: the same engine, clients and defences as any
other run.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedfort import jsonio
from fedfort.attacks.config import attack_kind
from fedfort.config import RunConfig, parse_config, read_toml
from fedfort.errors import ConfigError

__all__ = [
    "REDTEAM_FILE",
    "Cell",
    "RedteamConfig",
    "load_redteam_config",
    "plan_cells",
    "run_cell",
    "run_matrix",
    "run_redteam",
    "summarize_matrix",
]

REDTEAM_FILE = "redteam.json"


class RedteamConfig(BaseModel):
    """A red-team matrix: base run, attacks and defences by label, seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    workers: int = Field(0, ge=0, description="processes; 0 = one per CPU core")
    tolerance: float = Field(0.03, ge=0, le=1, description="accuracy points a defence may lose")
    asr_limit: float = Field(0.10, ge=0, le=1, description="backdoor success a defence may allow")
    base: dict[str, Any] = Field(default_factory=dict)
    attacks: dict[str, dict[str, Any]] = Field(min_length=1)
    defenses: dict[str, dict[str, Any]] = Field(min_length=1)


def load_redteam_config(path: str | Path) -> RedteamConfig:
    """Read and validate a red-team TOML file."""
    p = Path(path)
    raw = read_toml(p, "red-team config")
    try:
        return RedteamConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid red-team config {p}:\n  {problems}") from None


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Cell:
    """One run of the matrix: labels and the validated run config."""

    attack: str
    defense: str
    seed: int
    config: RunConfig

    @property
    def attack_kind(self) -> str:
        return attack_kind(self.config.attack)


def plan_cells(cfg: RedteamConfig, overrides: Mapping[str, Any] | None = None) -> list[Cell]:
    """Every (attack, defence, seed) cell with its config, validated up front."""
    if "attack" in cfg.base:
        raise ConfigError("[base] must not contain [attack]; list attacks under [attacks.LABEL]")
    attacks = dict(cfg.attacks)
    attacks.setdefault("none", {"name": "none"})
    cells: list[Cell] = []
    for a_label, attack in attacks.items():
        for d_label, defense in cfg.defenses.items():
            if "attack" in defense:
                raise ConfigError(f"defenses.{d_label} must not contain [attack]")
            for seed in cfg.seeds:
                body = _merge(_merge(cfg.base, defense), {"seed": seed, "attack": attack})
                try:
                    config = parse_config(body).with_overrides(dict(overrides or {}))
                except ConfigError as exc:
                    raise ConfigError(f"cell attack={a_label} defense={d_label}: {exc}") from None
                if config.simulation.workers:
                    config = config.with_overrides({"simulation.workers": 0})
                cells.append(Cell(a_label, d_label, seed, config))
    return cells


def run_cell(cell: Cell) -> dict[str, Any]:
    """Train one cell and return its figures (the keys of :data:`summary.CELL_KEYS`)."""
    from fedfort.simulation.simulation import Simulation

    start = time.perf_counter()
    with Simulation(cell.config) as sim:
        result = sim.run()
    security = result.security or {}
    return {
        "attack": cell.attack,
        "attack_kind": cell.attack_kind,
        "defense": cell.defense,
        "seed": cell.seed,
        "accuracy": result.final["accuracy"],
        "backdoor_asr": security.get("backdoor_asr"),
        "detection_precision": security.get("detection_precision"),
        "detection_recall": security.get("detection_recall"),
        "malicious_quarantined": security.get("malicious_quarantined"),
        "first_quarantine_round": security.get("first_quarantine_round"),
        "honest_quarantined_at_end": security.get("honest_quarantined_at_end"),
        "duration_s": time.perf_counter() - start,
        "malicious": security.get("malicious", []),
        "detection_counts": security.get("detection_counts"),
        "model_sha256": result.final["model_sha256"],
    }


def run_matrix(
    cells: list[Cell],
    *,
    workers: int = 0,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell (in a spawn process pool when ``workers != 1``), in plan order."""
    count = workers or os.cpu_count() or 1
    results: dict[int, dict[str, Any]] = {}
    if count == 1 or len(cells) == 1:
        for i, cell in enumerate(cells):
            results[i] = run_cell(cell)
            if on_cell is not None:
                on_cell(results[i])
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(count, len(cells)), mp_context=context) as pool:
            futures = {pool.submit(run_cell, cell): i for i, cell in enumerate(cells)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_cell is not None:
                    on_cell(results[futures[future]])
    return [results[i] for i in range(len(cells))]


def summarize_matrix(
    cfg: RedteamConfig, cells: list[Cell], results: list[dict[str, Any]]
) -> dict[str, Any]:
    """Rows and verdicts of run ``cells`` in plan order, with the config's tolerances."""
    from fedfort.redteam.summary import summarize

    return summarize(
        results,
        attacks=list(dict.fromkeys(c.attack for c in cells)),
        defenses=list(dict.fromkeys(c.defense for c in cells)),
        tolerance=cfg.tolerance,
        asr_limit=cfg.asr_limit,
    )


def run_redteam(
    cfg: RedteamConfig,
    out_dir: str | Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Plan, run, summarise and report a matrix; write ``redteam.json`` and the report."""
    from tqdm import tqdm

    from fedfort.redteam.report import write_report

    cells = plan_cells(cfg, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bar = tqdm(total=len(cells), desc="red team", unit="run", disable=not progress)

    def advance(cell: dict[str, Any]) -> None:
        bar.set_postfix(last=f"{cell['attack']}/{cell['defense']}", acc=f"{cell['accuracy']:.3f}")
        bar.update(1)

    try:
        results = run_matrix(
            cells, workers=cfg.workers if workers is None else workers, on_cell=advance
        )
    finally:
        bar.close()
    wall = time.perf_counter() - start
    summary = summarize_matrix(cfg, cells, results)
    first = cells[0].config
    meta = {
        "dataset": first.data.dataset,
        "model": first.model.name,
        "clients": first.clients.count,
        "partition": f"{first.data.partition} (alpha {first.data.alpha})",
        "rounds": first.rounds,
        "seeds": ", ".join(str(s) for s in cfg.seeds),
        "wall time": f"{wall:.0f} s",
    }
    body = {
        "config": cfg.model_dump(mode="json"),
        "meta": meta,
        "wall_time_s": wall,
        "cells": results,
        "summary": summary,
    }
    (out / REDTEAM_FILE).write_text(
        jsonio.dumps(body, indent=2, non_finite="null"), encoding="utf-8"
    )
    write_report(summary, results, out, meta=meta)
    return body
