"""What the privacy of the federated feature statistics costs, on the three hospitals' CSVs.

``[data] standardize`` fits one transform from the clients' summed statistics. Under
user-level DP (``[privacy] mode``) the statistics are a Gaussian release at the run's noise
multiplier, with every value clipped to ``[-value_bound, value_bound]`` and each client's
rows capped at ``count_bound`` (docs/privacy.md, "Federated feature statistics"). For each
target epsilon this prints:

- the transform's error against the pooled statistics (the exact transform that the round
  gives without DP): the shift error in units of the pooled standard deviation, and the
  scale's relative error (median and worst feature);
- the hold-out accuracy (all hospitals' test files) of the same non-private training on the
  exact and on the DP transform, which isolates what the noisy statistics cost;
- the hold-out accuracy of the whole private run (DP statistics and DP-FedAvg rounds).

    .venv/bin/python benchmarks/bench_federated_statistics.py [--rounds 20] [--epsilons 3 8 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fedfort import Simulation
from fedfort.config import RunConfig, parse_config
from fedfort.data.preprocessing import Preprocessing
from fedfort.errors import FedfortError
from fedfort.run.preprocess import fit_preprocessing
from hospitals import hospitals_toml, write_hospitals

#: the declared range covers every feature of the breast-cancer set (the largest, mean
#: area, stays below 4,300) and the cap the largest hospital's 180 training rows
VALUE_BOUND = 5000.0
COUNT_BOUND = 200


def config(root: Path, rounds: int, privacy: dict[str, Any] | None) -> RunConfig:
    body = tomllib.loads(hospitals_toml(root, rounds=rounds))
    if privacy is not None:
        body["privacy"] = privacy
        body["data"].update(value_bound=VALUE_BOUND, count_bound=COUNT_BOUND)
    return parse_config(body)


def holdout_accuracy(sim: Simulation) -> float:
    """Accuracy of the global model on every client's own hold-out (through the transform)."""
    module = sim.global_module().eval()
    hits = total = 0
    for client in sim.clients.clients.values():
        assert client.holdout is not None
        with torch.no_grad():
            predicted = module(client.holdout.x).argmax(dim=1)
        hits += int((predicted == client.holdout.y).sum())
        total += int(client.holdout.y.shape[0])
    return hits / total


def train_with(cfg: RunConfig, transform: Preprocessing | None) -> tuple[float, Preprocessing]:
    """A run of ``cfg``, on ``transform`` instead of its own statistics round when given; its
    hold-out accuracy (NaN when training diverged) and transform."""
    with Simulation(cfg) as sim:
        if transform is not None:
            sim._install_preprocessing(transform, {})
        else:
            sim.fit_preprocessing()
        assert sim.preprocessing is not None
        try:
            sim.run()
        except FedfortError:  # updates that overflowed: the run diverged
            return float("nan"), sim.preprocessing
        return holdout_accuracy(sim), sim.preprocessing


def errors(dp: Preprocessing, exact: Preprocessing) -> tuple[float, float, float, float]:
    shift = np.abs(dp.shift - exact.shift) / exact.scale
    scale = np.abs(dp.scale / exact.scale - 1.0)
    return (
        float(np.median(shift)),
        float(shift.max()),
        float(np.median(scale)),
        float(scale.max()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[3.0, 8.0, 100.0, 1e4])
    parser.add_argument("--mode", default="central", choices=["central", "distributed"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_hospitals(root)
        plain = config(root, args.rounds, None)
        exact_accuracy, exact = train_with(plain, None)
        with Simulation(plain) as sim:
            pooled = fit_preprocessing(
                plain, [c.raw_data.x.numpy() for c in sim.clients.clients.values()]
            )
        same = np.array_equal(exact.shift, pooled.shift) and np.allclose(
            exact.scale, pooled.scale, rtol=1e-12
        )
        print(
            f"hospitals' CSVs, {args.rounds} rounds, no DP: the statistics round gives the "
            f"pooled transform: {same}; hold-out accuracy {exact_accuracy:.3f}"
        )
        print(
            f"DP ({args.mode}): value_bound {VALUE_BOUND:g}, count_bound {COUNT_BOUND}; shift "
            "error in pooled std units, scale relative error (median / worst feature)"
        )
        print(
            f"{'epsilon':>8} {'z':>7} {'shift med':>10} {'shift max':>10} {'scale med':>10} "
            f"{'scale max':>10} {'acc (DP stats)':>15} {'acc (private run)':>18}"
        )
        for eps in args.epsilons:
            privacy = {"mode": args.mode, "target_epsilon": eps, "clip_norm": 1.0}
            private = config(root, args.rounds, privacy)
            run_accuracy, dp = train_with(private, None)
            stats_accuracy, _ = train_with(plain, dp)
            z = private.privacy.noise_multiplier
            with Simulation(private) as sim:
                z = sim.config.privacy.noise_multiplier
            shift_med, shift_max, scale_med, scale_max = errors(dp, exact)
            print(
                f"{eps:>8g} {z:>7.3f} {shift_med:>10.3g} {shift_max:>10.3g} {scale_med:>10.3g} "
                f"{scale_max:>10.3g} {stats_accuracy:>15.3f} {run_accuracy:>18.3f}"
            )


if __name__ == "__main__":
    main()
