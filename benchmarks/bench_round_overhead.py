"""How much of a round's wall time the engine adds on top of local training.

Runs the demo configuration with 100 clients on digits (sequential runtime, checkpoints to
SQLite on) and, per round, compares the round's wall time (``engine.run_round()``, which
includes selection, broadcast, verification, aggregation, the server optimizer, evaluation
and the checkpoint commit) with the time the clients spent in local training (the sum of
their ``train_time_s``, which covers loading the global vector, the SGD steps and computing
the delta). The baseline is local training measured in the same run, so the printed share
does not depend on the machine's speed.

    .venv/bin/python benchmarks/bench_round_overhead.py [--rounds 10] [--clients 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from fedfort import Simulation, load_config

TARGET_SHARE = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    config = load_config("examples/demo.toml").with_overrides(
        {"clients.count": args.clients, "rounds": args.rounds}
    )
    walls, trains = [], []
    with tempfile.TemporaryDirectory() as out, Simulation(config, out) as sim:
        sim.engine.run_round()  # warm-up: first-call allocations and imports
        for _ in range(args.rounds):
            start = time.perf_counter()
            record = sim.engine.run_round()
            walls.append(time.perf_counter() - start)
            trains.append(record.train_time_s)
        dim = sim.spec.dim
    wall, train = np.array(walls), np.array(trains)
    share = 1.0 - train.sum() / wall.sum()
    print(f"clients={args.clients} rounds={args.rounds} model_dim={dim}")
    print(f"round wall time      mean {wall.mean() * 1e3:8.1f} ms")
    print(f"local training time  mean {train.mean() * 1e3:8.1f} ms (baseline)")
    print(f"engine overhead      mean {(wall - train).mean() * 1e3:8.1f} ms")
    print(f"share of round outside local training: {share:.1%} (target < {TARGET_SHARE:.0%})")
    print(f"ratio wall/training: {wall.sum() / train.sum():.3f}")


if __name__ == "__main__":
    main()
