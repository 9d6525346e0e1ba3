"""Rounds per second and startup of the in-process and Ray runtimes, 10 to 1,000 clients.

For each federation size (Synthetic(1, 1) of the FedProx paper, its natural split, a logistic
regression model) the same configuration runs on the in-process runtime (sequential) and on
the Ray runtime (a private local Ray; one actor per CPU), in this one process:

- startup: seconds to build the federation (``Simulation(...)``); for Ray this includes
  starting its actors (``ray.init`` itself is paid once and printed separately);
- rounds/s: over ``--rounds`` timed rounds after one warm-up round.

10 and 100 clients train every client every round, 1,000 clients sample 10% (100 a round).
At 100 clients the Ray per-round overhead on top of local training is estimated as

    ray_round - ray_training / actors - (inprocess_round - inprocess_training)

that is, Ray's round time minus its local training spread over its actors and minus the
engine's own work, measured on the in-process baseline of the same run (so it includes any
load imbalance between actors as well as dispatch and serialisation). Target: < 0.2 s.

    .venv/bin/python benchmarks/bench_runtimes.py [--rounds 3] [--sizes 10,100,1000]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from fedfort import Simulation
from fedfort.config import RunConfig, parse_config
from fedfort.simulation.ray_runtime import RayConnection

TARGET_OVERHEAD_S = 0.2


@dataclass
class Measured:
    startup_s: float
    round_s: float
    train_s: float  # mean per round of the clients' summed train_time_s
    workers: int


def config(clients: int, runtime: str) -> RunConfig:
    return parse_config(
        {
            "rounds": 100,
            "data": {"dataset": "fedprox_synthetic", "fedprox_max_samples": 200},
            "clients": {"count": clients, "epochs": 1, "batch_size": 10, "lr": 0.05},
            "server": {"fraction": 1.0 if clients <= 100 else 0.1},
            "model": {"name": "logreg"},
            "simulation": {"runtime": runtime},
        }
    )


def measure(cfg: RunConfig, rounds: int) -> Measured:
    start = time.perf_counter()
    with Simulation(cfg) as sim:
        startup = time.perf_counter() - start
        sim.engine.run_round()  # warm-up: first-call allocations in every worker
        walls, trains = [], []
        for _ in range(rounds):
            begin = time.perf_counter()
            record = sim.engine.run_round()
            walls.append(time.perf_counter() - begin)
            trains.append(record.train_time_s)
        workers = getattr(sim.executor, "size", 1)
    return Measured(startup, float(np.mean(walls)), float(np.mean(trains)), workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="10,100,1000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    begin = time.perf_counter()
    connection = RayConnection.open(None, local_cpus=2)
    ray_init = time.perf_counter() - begin
    results: dict[tuple[int, str], Measured] = {}
    try:
        for clients in sizes:
            for runtime in ("inprocess", "ray"):
                results[clients, runtime] = measure(config(clients, runtime), args.rounds)
    finally:
        connection.close()

    print(f"ray.init of a local 2-CPU Ray: {ray_init:.2f} s (once per process)")
    print(
        f"{'clients':>8} {'runtime':>10} {'startup s':>10} {'rounds/s':>9} "
        f"{'round s':>8} {'training s':>11} {'workers':>8} {'speed-up':>9}"
    )
    for clients in sizes:
        base = results[clients, "inprocess"]
        for runtime in ("inprocess", "ray"):
            m = results[clients, runtime]
            print(
                f"{clients:>8} {runtime:>10} {m.startup_s:>10.2f} {1 / m.round_s:>9.2f} "
                f"{m.round_s:>8.3f} {m.train_s:>11.3f} {m.workers:>8} "
                f"{base.round_s / m.round_s:>8.2f}x"
            )
    if 100 in sizes:
        local, ray = results[100, "inprocess"], results[100, "ray"]
        engine = local.round_s - local.train_s
        overhead = ray.round_s - ray.train_s / ray.workers - engine
        print(
            f"100 clients: in-process round {local.round_s:.3f} s (training {local.train_s:.3f}"
            f" s, engine {engine:.3f} s); Ray round {ray.round_s:.3f} s (training "
            f"{ray.train_s:.3f} s over {ray.workers} actors)"
        )
        print(
            f"Ray per-round overhead on top of local training: {overhead:.3f} s "
            f"(target < {TARGET_OVERHEAD_S} s); Ray/in-process round time ratio "
            f"{ray.round_s / local.round_s:.2f}"
        )


if __name__ == "__main__":
    main()
