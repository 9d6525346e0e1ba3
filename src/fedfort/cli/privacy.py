"""``fedfort privacy plan``: the noise multiplier that meets a target (epsilon, delta)."""

from __future__ import annotations

import argparse

from fedfort.errors import FedfortError

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
        "every client every round, no amplification), and print the epsilon curve.",
    )
    plan.add_argument("--epsilon", type=float, required=True, help="target epsilon")
    plan.add_argument("--delta", type=float, default=1e-5, help="delta (default %(default)s)")
    plan.add_argument("--rounds", type=int, required=True, help="rounds the run will take")
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
