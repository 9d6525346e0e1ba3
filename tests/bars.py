"""The red-team bars: a shipped matrix (examples/redteam.toml unless a test names another), run
for the pairs a test needs.

Tests run exactly the cells of the shipped red-team config (same attacks, strengths, defences
and three seeds), so what the tests assert is what `fedfort redteam` reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedfort.redteam import load_redteam_config, plan_cells
from fedfort.redteam.matrix import run_matrix, summarize_matrix

REDTEAM_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "redteam.toml"


def bar_summary(
    pairs: Iterable[tuple[str, str]],
    config: Path = REDTEAM_CONFIG,
    *,
    own_baselines: bool = True,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Run the cells of the shipped matrix ``config`` for ``pairs`` plus no-attack FedAvg (and,
    with ``own_baselines``, every defence's no-attack run); rows by pair."""
    wanted = set(pairs)
    if own_baselines:
        wanted |= {("none", d) for _, d in wanted}
    wanted |= {("none", "fedavg")}
    cfg = load_redteam_config(config)
    cells = [c for c in plan_cells(cfg) if (c.attack, c.defense) in wanted]
    assert {(c.attack, c.defense) for c in cells} == wanted, "pair missing from the config"
    summary = summarize_matrix(cfg, cells, run_matrix(cells, workers=1))
    return {(r["attack"], r["defense"]): r for r in summary["rows"]}
