"""``fedfort redteam`` and ``fedfort redteam privacy``.

``fedfort redteam`` runs a matrix of attacks x defences x seeds and writes a report;
``fedfort redteam privacy`` runs membership inference and gradient inversion per privacy
defence.
"""

from __future__ import annotations

import argparse
from typing import Any

from fedfort.cli._format import number
from fedfort.errors import FedfortError

__all__ = ["add_parsers", "run"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``redteam`` (and its ``privacy`` subcommand) to the ``fedfort`` sub-parsers."""
    red = sub.add_parser(
        "redteam",
        help="run attacks x defences x seeds and report the damage",
        description="Run a red-team matrix from a TOML file and write redteam.json, "
        "report.md, report.html and heatmaps to --out.",
    )
    red.add_argument("--config", help="red-team TOML (see examples/redteam.toml); required")
    red.add_argument("--out", default="runs/redteam", help="output directory (default %(default)s)")
    red.add_argument("--workers", type=int, help="processes (default: the config's; 0 = all cores)")
    red.add_argument("--rounds", type=int, help="override the rounds of every cell")
    red.add_argument("--seeds", help="comma-separated seeds overriding the config's, e.g. 0,1")
    red.add_argument("--quiet", action="store_true", help="no progress bar")
    red_sub = red.add_subparsers(dest="redteam_command", metavar="{privacy}")
    red_priv = red_sub.add_parser(
        "privacy",
        help="membership inference and gradient inversion against every privacy defence",
        description="Run membership inference (loss threshold, LiRA) on real federated runs "
        "and gradient inversion on client updates, with and without each privacy defence; "
        "write privacy.json, report.md and a self-contained report.html to --out.",
    )
    red_priv.add_argument(
        "--config",
        dest="privacy_config",
        required=True,
        help="privacy red-team TOML (see examples/redteam-privacy.toml)",
    )
    red_priv.add_argument(
        "--out",
        dest="privacy_out",
        default="runs/redteam-privacy",
        help="output directory (default %(default)s)",
    )
    red_priv.add_argument("--quiet", dest="privacy_quiet", action="store_true", help="no progress")


def _verdict_line(verdict: dict[str, Any], best: dict[str, Any]) -> str:
    """One line per attack: what it does to FedAvg and what the best defence keeps."""
    backdoor = verdict["attack_kind"] == "backdoor"
    metric, key = (
        ("backdoor success", "backdoor_asr_mean") if backdoor else ("acc", "accuracy_mean")
    )
    undefended = verdict["undefended_asr"] if backdoor else verdict["undefended_accuracy"]
    status = "holds" if verdict["survives"] else "DOES NOT HOLD"
    return (
        f"{verdict['attack']:>22}: FedAvg {metric} {number(undefended, 3, 'n/a')} -> "
        f"{verdict['best_defense']} {number(best.get(key), 3, 'n/a')} ({status})"
    )


def _redteam_privacy(args: argparse.Namespace) -> int:
    from fedfort.redteam.privacy import (
        PRIVACY_FILE,
        load_privacy_redteam_config,
        run_privacy_redteam,
    )

    cfg = load_privacy_redteam_config(args.privacy_config)
    quiet = args.privacy_quiet or args.quiet
    body = run_privacy_redteam(cfg, args.privacy_out, None if quiet else print)
    for name, row in body["membership"]["rows"].items():
        model = max(row["global_model"].values(), key=lambda c: c["auc"]["mean"])["auc"]
        update = row["client_update"]["loss_change"]["auc"]
        eps = row["epsilon"]["mean"] if row["epsilon"] else None
        print(
            f"{name:>24}: membership AUC model {model['mean']:.3f} [{model['low']:.3f}, "
            f"{model['high']:.3f}], update {update['mean']:.3f}"
            + ("" if eps is None else f", epsilon {eps:.3g}")
        )
    out = args.privacy_out
    print(f"report: {out}/report.md, {out}/report.html, {out}/{PRIVACY_FILE}")
    return 0


def run(args: argparse.Namespace) -> int:
    """``fedfort redteam`` and ``fedfort redteam privacy``."""
    from fedfort.redteam.matrix import REDTEAM_FILE, load_redteam_config, run_redteam

    if getattr(args, "redteam_command", None) == "privacy":
        return _redteam_privacy(args)
    if args.config is None:
        raise FedfortError("fedfort redteam needs --config FILE (or: fedfort redteam privacy)")
    cfg = load_redteam_config(args.config)
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise FedfortError(
                f"--seeds must be comma-separated integers, got {args.seeds!r}"
            ) from None
        cfg = cfg.model_copy(update={"seeds": seeds})
    body = run_redteam(
        cfg,
        args.out,
        overrides={"rounds": args.rounds},
        workers=args.workers,
        progress=not args.quiet,
    )
    summary = body["summary"]
    rows = {(r["attack"], r["defense"]): r for r in summary["rows"]}
    for verdict in summary["verdicts"]:
        print(_verdict_line(verdict, rows.get((verdict["attack"], verdict["best_defense"]), {})))
    print(f"report: {args.out}/report.md, {args.out}/report.html, {args.out}/{REDTEAM_FILE}")
    return 0
