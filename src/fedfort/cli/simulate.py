"""``fedfort simulate``: a federated training on simulated clients.

It runs from a TOML config with overrides for the common knobs, shows a progress bar with live
accuracy, and writes ``results.json``, ``training.png`` and ``checkpoints.sqlite`` to ``--out``.
``--resume`` continues a run from its last committed round.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedfort.cli._options import monitoring_arguments
from fedfort.errors import ConfigError, FedfortError, PrivacyBudgetExhausted

if TYPE_CHECKING:
    from fedfort.config import RunConfig
    from fedfort.run.result import RunResult
    from fedfort.server.engine import RoundRecord

__all__ = ["add_parsers", "run"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` to the ``fedfort`` sub-parsers."""
    sim = sub.add_parser(
        "simulate",
        help="run a federated training on simulated clients",
        description="Run a federated training on simulated clients from a TOML config.",
    )
    sim.add_argument("--config", help="TOML config file (defaults apply to missing keys)")
    sim.add_argument("--rounds", type=int, help="number of rounds to commit")
    sim.add_argument("--clients", type=int, help="number of clients in the federation")
    sim.add_argument("--dataset", help="digits, mnist, breast_cancer or synthetic")
    sim.add_argument(
        "--model",
        help="logreg, mlp, cnn, a registered model or your nn.Module class by import path "
        "(mypkg.nets:TabularNet, built as TabularNet(in_features, num_classes, **[model] options))",
    )
    sim.add_argument("--partition", help="iid, dirichlet or shards")
    sim.add_argument("--alpha", type=float, help="Dirichlet concentration for label skew")
    sim.add_argument("--algorithm", help="fedavg, fedprox or scaffold")
    sim.add_argument("--server-optimizer", help="fedavg, fedavgm or fedadam")
    sim.add_argument("--workers", type=int, help="worker processes (0 = sequential)")
    sim.add_argument(
        "--runtime",
        choices=["inprocess", "ray"],
        help="where clients train: this process (default) or Ray actors (docs/ray-runtime.md)",
    )
    sim.add_argument(
        "--ray-address",
        help="join a running Ray cluster: 'auto' or HOST:PORT of its head (implies --runtime ray)",
    )
    sim.add_argument("--seed", type=int, help="seed for data split, selection and training")
    sim.add_argument(
        "--out",
        help="output directory; one that holds a run is refused (use --resume or another) "
        "(default: a new runs/CONFIG-YYYYmmdd-HHMMSS, printed at start)",
    )
    sim.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last round"
    )
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument(
        "--attack",
        help="attack run by a share of the clients (see docs/attacks.md), e.g. sign_flip",
    )
    sim.add_argument("--attack-fraction", type=float, help="share of malicious clients")
    sim.add_argument("--privacy", help="user-level DP: central, distributed, local or none")
    sim.add_argument(
        "--target-epsilon",
        type=float,
        help="privacy budget; calibrates the noise multiplier when none is configured",
    )
    sim.add_argument("--noise-multiplier", type=float, help="DP-FedAvg noise multiplier z")
    sim.add_argument(
        "--secure-aggregation",
        help="secagg, secagg+, ckks or none: the server learns only the sum of the updates",
    )
    sim.add_argument("--delta", type=float, help="delta of the privacy guarantee")
    sim.add_argument(
        "--rollback-drop",
        type=float,
        help="roll back to the best version when validation accuracy falls this far below it",
    )
    monitoring_arguments(sim)


def _privacy_overrides(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """Apply --privacy, --target-epsilon, --noise-multiplier and --delta in one step."""
    from fedfort.config import parse_config

    given = {
        "mode": args.privacy,
        "target_epsilon": args.target_epsilon,
        "noise_multiplier": args.noise_multiplier,
        "delta": args.delta,
    }
    if all(v is None for v in given.values()):
        return config
    body = config.to_dict()
    section = body["privacy"]
    if args.target_epsilon is not None and args.noise_multiplier is None:
        # a new target means a new calibration, not the configured noise multiplier
        section["noise_multiplier"] = None
    section.update({k: v for k, v in given.items() if v is not None})
    if args.privacy == "none":
        # the non-private twin of a private config: keep only the clients' DP-SGD setting
        body["privacy"] = {"dp_sgd": section["dp_sgd"]}
    return parse_config(body)


def fresh_run_dir(config: str | None, root: Path = Path("runs")) -> Path:
    """A new run directory ``root/<config stem>-YYYYmmdd-HHMMSS`` (``-2``, ``-3``, ... when
    one of that name exists), created here so two runs started in the same second differ."""
    stem = Path(config).stem if config else "simulate"
    base = f"{stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def run(args: argparse.Namespace) -> int:
    """``fedfort simulate``."""
    from tqdm import tqdm

    from fedfort.config import load_config
    from fedfort.run.outputs import RESULTS_FILE
    from fedfort.run.result import RunResult
    from fedfort.simulation.simulation import Simulation

    if args.resume:
        if args.out is None:
            raise FedfortError("--resume continues the run in --out DIR: name its directory")
        if args.config or any(
            getattr(args, k) is not None
            for k in ("clients", "dataset", "model", "partition", "alpha", "algorithm", "seed")
        ):
            raise FedfortError(
                "--resume continues the stored configuration; only --rounds, --workers, "
                "--runtime and --ray-address may be given with it"
            )
        sim = Simulation.resume(
            args.out,
            rounds=args.rounds,
            workers=args.workers,
            runtime=args.runtime,
            ray_address=args.ray_address,
        )
    else:
        overrides: dict[str, Any] = {
            "rounds": args.rounds,
            "seed": args.seed,
            "clients.count": args.clients,
            "clients.algorithm": args.algorithm,
            "data.dataset": args.dataset,
            "data.partition": args.partition,
            "data.alpha": args.alpha,
            "model.name": args.model,
            "server.optimizer": args.server_optimizer,
            "simulation.workers": args.workers,
            "simulation.runtime": "ray" if args.ray_address and not args.runtime else args.runtime,
            "simulation.ray_address": args.ray_address,
            "secure_aggregation.mode": args.secure_aggregation,
            "governance.rollback_drop": args.rollback_drop,
        }
        config = load_config(args.config)
        if args.attack is not None:
            # a new attack replaces the whole [attack] table: its keys belong to the old one
            config = config.with_overrides({"attack": {"name": args.attack}})
        overrides["attack.fraction"] = args.attack_fraction
        config = config.with_overrides(overrides)
        config = _privacy_overrides(config, args)
        if args.out is not None:
            sim = Simulation(config, args.out)
        else:
            args.out = fresh_run_dir(args.config)
            print(f"fedfort: writing this run to {args.out}", file=sys.stderr)
            try:
                sim = Simulation(config, args.out)
            except BaseException:
                if not any(args.out.iterdir()):  # a run refused before it starts leaves nothing
                    args.out.rmdir()
                raise
    with sim:
        from fedfort.access.setup import start_monitoring

        urls = start_monitoring(sim, args.metrics, args.dashboard, getattr(args, "operator", None))
        if sim.control.state == "held" and "operator" not in urls:
            raise ConfigError(
                "access.hold_at_start waits for `fedfort operator start`: serve the operator "
                "API too (access.operator_address or --operator)"
            )
        for name, url in urls.items():
            print(f"fedfort: {name} at {url}", file=sys.stderr)
        done = sim.engine.round
        target = sim.config.rounds
        bar = tqdm(total=target, initial=done, desc="rounds", unit="round", disable=args.quiet)

        def on_round(record: RoundRecord) -> None:
            postfix = {"participants": record.participants}
            if record.accuracy is not None:
                postfix["acc"] = f"{record.accuracy:.3f}"  # type: ignore[assignment]
            bar.set_postfix(postfix)
            bar.update(1)

        exhausted: PrivacyBudgetExhausted | None = None
        try:
            result = sim.run(on_round=on_round)
        except PrivacyBudgetExhausted as exc:
            if not isinstance(exc.result, RunResult):
                raise
            exhausted, result = exc, exc.result
        finally:
            bar.close()
        path = Path(args.out) / RESULTS_FILE  # written by the run, with training.png
    if exhausted is not None:
        print(f"fedfort: {exhausted}", file=sys.stderr)
    final = result.final
    first, *more = result.summary_lines()
    eps = final.get("epsilon")
    eps_text = "" if eps is None else f", epsilon {eps:.3f} at delta {final['delta']:g}"
    done_text = f"finished {final['rounds']} rounds"
    if final.get("stopped") == "operator_stop":
        done_text = f"stopped by an operator after {final['rounds']} rounds (--resume continues)"
    print(f"{done_text}: {first}{eps_text}{_dp_sgd_text(result)}; results in {path}")
    for line in more:
        print(line)
    for line in _dp_sgd_stops(result):
        print(f"fedfort: {line}", file=sys.stderr)
    return 0


def _dp_sgd_text(result: RunResult) -> str:
    """The summary's DP-SGD part: the largest per-record epsilon any client reported."""
    sgd = (result.privacy or {}).get("dp_sgd")
    if not sgd or not sgd["client_epsilon"]:
        return ""
    worst = max(sgd["client_epsilon"].items(), key=lambda kv: kv[1])
    budget = sgd.get("target_epsilon")
    return (
        f", DP-SGD epsilon per record {worst[1]:.3f} at delta {sgd['delta']:g} (largest, "
        f"{worst[0]}, of {len(sgd['client_epsilon'])} clients"
        + (f"; budget {budget:g})" if budget is not None else ")")
    )


def _dp_sgd_stops(result: RunResult) -> list[str]:
    """One line per client that stopped training because its DP-SGD budget was spent."""
    sgd = (result.privacy or {}).get("dp_sgd") or {}
    return [
        f"{cid} stopped training from round {round_}: its own DP-SGD privacy budget is spent"
        for cid, round_ in sgd.get("budget_exhausted", {}).items()
    ]
