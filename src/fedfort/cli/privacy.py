"""``fedfort privacy plan``: the noise multiplier that meets a target (epsilon, delta).

With ``--epsilon`` and ``--rounds`` it plans user-level DP-FedAvg; with ``--config`` it plans
the run's record-level DP-SGD (``[privacy.dp_sgd]``): the noise multiplier and every client's
epsilon after the planned rounds, for the clients' training-set sizes the run knows.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fedfort.errors import ConfigError, FedfortError

if TYPE_CHECKING:
    from fedfort.config import RunConfig
    from fedfort.privacy.dp_sgd import DpSgdPlan

__all__ = ["add_parsers", "run"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``privacy plan`` to the ``fedfort`` sub-parsers."""
    priv = sub.add_parser("privacy", help="privacy planning").add_subparsers(
        dest="privacy_command", required=True
    )
    plan = priv.add_parser(
        "plan",
        help="noise multiplier for a target (epsilon, delta)",
        description="Calibrate the DP-FedAvg noise multiplier that meets a target epsilon at "
        "delta over the given rounds, with Poisson client sampling at the given rate (1 = "
        "every client every round, no amplification), and print the epsilon curve. With "
        "--config, plan the run's record-level DP-SGD instead ([privacy.dp_sgd]): the noise "
        "multiplier and each client's epsilon after the planned rounds (--epsilon and "
        "--rounds, when given, override the config's target_epsilon and rounds).",
    )
    plan.add_argument("--config", help="a run's TOML: plan its DP-SGD for its clients' data")
    plan.add_argument("--epsilon", type=float, help="target epsilon")
    plan.add_argument("--delta", type=float, default=None, help="delta (default 1e-5)")
    plan.add_argument("--rounds", type=int, help="rounds the run will take")
    plan.add_argument(
        "--sampling-rate", type=float, default=1.0, help="client sampling rate q (default 1)"
    )
    plan.add_argument("--accountant", default="rdp", choices=["rdp", "pld"])
    plan.add_argument(
        "--statistics",
        action="store_true",
        help="the run fits [data] standardize / impute: one more release (every client, the "
        "same multiplier) before round 1",
    )
    plan.add_argument("--points", type=int, default=10, help="points of the epsilon curve")


def run(args: argparse.Namespace) -> int:
    """``fedfort privacy plan``."""
    from fedfort.privacy.accounting import PrivacyEvent
    from fedfort.privacy.planning import plan_noise

    if args.config:
        return _plan_dp_sgd(args)
    if args.epsilon is None or args.rounds is None:
        raise FedfortError(
            "privacy plan needs --epsilon and --rounds (DP-FedAvg), or --config (a run's DP-SGD)"
        )
    if args.delta is None:
        args.delta = 1e-5
    if not 0.0 < args.sampling_rate <= 1.0:
        raise FedfortError(f"--sampling-rate must be in (0, 1], got {args.sampling_rate}")

    def event(z: float) -> PrivacyEvent:
        return PrivacyEvent("gaussian", z, sampling_rate=args.sampling_rate)

    once = None
    if args.statistics:
        from fedfort.run.privacy import statistics_event

        once = statistics_event
    plan = plan_noise(
        args.epsilon, args.delta, args.rounds, event, args.accountant, points=args.points, once=once
    )
    sampling = (
        "every client every round"
        if args.sampling_rate == 1.0
        else f"Poisson sampling rate {args.sampling_rate:g}"
    )
    print(
        f"noise multiplier {plan.noise_multiplier:.4f} meets epsilon {args.epsilon:g} at delta "
        f"{args.delta:g} over {args.rounds} rounds ({sampling}, {args.accountant} accountant); "
        f"accounted epsilon {plan.epsilon:.4f}"
    )
    if plan.before_rounds:
        print(
            "the federated feature statistics ([data] standardize / impute) are released once "
            f"before round 1 (Gaussian, multiplier {plan.noise_multiplier:.4f}, every client): "
            f"epsilon {plan.before_rounds:.4f} on their own"
        )
    print(f"{'round':>7}  {'epsilon':>9}")
    for round_, eps in plan.curve:
        print(f"{round_:>7}  {eps:>9.4f}")
    return 0


def _plan_dp_sgd(args: argparse.Namespace) -> int:
    """``fedfort privacy plan --config``: the run's DP-SGD noise and each client's epsilon."""
    from fedfort.config import load_config, parse_config
    from fedfort.run.privacy import dp_sgd_plan, dp_sgd_sizes

    config = load_config(args.config)
    sgd = config.privacy.dp_sgd
    if not sgd.enabled:
        raise ConfigError(
            f"{args.config} does not enable [privacy.dp_sgd]; set enabled = true and "
            "target_epsilon, or plan DP-FedAvg with --epsilon and --rounds"
        )
    overrides: dict[str, object] = {"rounds": args.rounds, "privacy.dp_sgd.delta": args.delta}
    if args.epsilon is not None:  # a new target means a new calibration
        overrides["privacy.dp_sgd.target_epsilon"] = args.epsilon
    config = config.with_overrides(overrides)
    if args.epsilon is not None:
        body = config.to_dict()
        body["privacy"]["dp_sgd"]["noise_multiplier"] = None
        config = parse_config(body)
    ids = config.clients.ids()
    sizes = dp_sgd_sizes(config, _known_sizes(config, ids), ids)
    _print_plan(config, dp_sgd_plan(config, sizes))
    return 0


def _known_sizes(config: RunConfig, ids: list[str]) -> dict[str, int]:
    """The clients' training-set sizes a run would plan with: its partition when the data is
    at hand (a simulation), else ``server.declared_sample_counts``."""
    from fedfort.run.data import split_data

    declared = dict(config.server.declared_sample_counts)
    try:
        partition = split_data(config).partition
    except FedfortError:
        return declared  # the clients' data is theirs: plan from what they declared
    return {cid: int(n) for cid, n in zip(ids, partition.sizes(), strict=True)}


def _print_plan(config: RunConfig, plan: DpSgdPlan) -> None:
    target = plan.target_epsilon
    aim = (
        f"keeps every client within epsilon {target:g}"
        if target is not None and config.privacy.dp_sgd.target_epsilon is not None
        else "(configured)"
    )
    worst = plan.worst
    print(
        f"DP-SGD noise multiplier {plan.noise_multiplier:.4f} {aim} at delta {plan.delta:g} "
        f"over {plan.rounds} rounds (one record of one client; Opacus RDP accountant); "
        f"largest epsilon {worst.epsilon:.4f} ({worst.client_id}, {worst.num_samples} records)"
    )
    width = max(6, *(len(c.client_id) for c in plan.clients))
    print(f"{'client':<{width}}  {'records':>7}  {'rate':>7}  {'steps':>6}  {'epsilon':>9}")
    for c in plan.clients:
        print(
            f"{c.client_id:<{width}}  {c.num_samples:>7}  {c.sample_rate:>7.4f}  "
            f"{c.steps:>6}  {c.epsilon:>9.4f}"
        )
