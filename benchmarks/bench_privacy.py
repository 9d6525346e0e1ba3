"""What privacy costs in time: noise sources and the DP-FedAvg aggregation step.

Measured in one run on this machine (best of ``--repeat``):

- Gaussian noise for d coordinates from the OS CSPRNG (``SecureNoise``) against the seeded
  source (``SeededNoise``, same transforms) and against numpy's own ``standard_normal``;
- central DP-FedAvg on an (n, d) float32 update matrix (row-wise L2 clip without copying the
  matrix, CSPRNG noise, snapping) against the plain FedAvg mean (``WeightedMean``, no privacy)
  and against the straightforward version that copies the matrix to float64 and clips it
  (``clip_rows_l2``) before summing.

Targets: CSPRNG noise within 5x of ``standard_normal``; DP-FedAvg within 10x of the plain mean
(it must read the matrix twice and draw d Gaussians) and at least 3x faster than the float64
copy. Nothing asserts on timings; the table says whether each target was met.

    .venv/bin/python benchmarks/bench_privacy.py [--clients 100] [--dim 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from fedfort.aggregation.base import UpdateBatch
from fedfort.aggregation.mean import WeightedMean
from fedfort.privacy.dp_fedavg import DpFedAvgPlan
from fedfort.privacy.mechanisms import clip_rows_l2, clipped_sum
from fedfort.privacy.noise import SecureNoise, SeededNoise, snap, snapping_grid


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def dp_fedavg(matrix: np.ndarray, plan: DpFedAvgPlan, clip: float) -> np.ndarray:
    """The central DP-FedAvg step as :class:`fedfort.server.privacy.PrivateAggregate` runs it."""
    total, _ = clipped_sum(matrix, clip)
    std = plan.update_noise_multiplier * clip
    total = snap(total + SecureNoise().gaussian(matrix.shape[1], std), snapping_grid(std))
    return (total / plan.expected_participants).astype(np.float32)


def copying_dp_fedavg(matrix: np.ndarray, plan: DpFedAvgPlan, clip: float) -> np.ndarray:
    """The straightforward version: a float64 copy of the matrix, clipped, then summed."""
    clipped, _ = clip_rows_l2(matrix.astype(np.float64), clip)
    std = plan.update_noise_multiplier * clip
    total = clipped.sum(axis=0) + SecureNoise().gaussian(matrix.shape[1], std)
    return (snap(total, snapping_grid(std)) / plan.expected_participants).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, d, r = args.clients, args.dim, args.repeat
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((n, d), dtype=np.float32)
    plan = DpFedAvgPlan("central", 1.0, n, "fixed", sample_size=n)
    batch = UpdateBatch(
        updates=matrix,
        weights=np.ones(n),
        client_ids=tuple(f"c{i}" for i in range(n)),
        model=np.zeros(d, dtype=np.float32),
        round=1,
    )

    numpy_normal = best(lambda: rng.standard_normal(d), r)
    secure = best(lambda: SecureNoise().gaussian(d, 1.0), r)
    seeded = best(lambda: SeededNoise(0).gaussian(d, 1.0), r)
    plain = best(lambda: WeightedMean().aggregate(batch), r)
    private = best(lambda: dp_fedavg(matrix, plan, 1.0), r)
    copying = best(lambda: copying_dp_fedavg(matrix, plan, 1.0), r)

    rows = [
        ("numpy standard_normal, d values", numpy_normal, "baseline"),
        ("SeededNoise.gaussian", seeded, f"{seeded / numpy_normal:.2f}x baseline"),
        (
            "SecureNoise.gaussian (CSPRNG)",
            secure,
            f"{secure / numpy_normal:.2f}x baseline (target <= 5x: "
            f"{'met' if secure <= 5 * numpy_normal else 'missed'})",
        ),
        (f"plain FedAvg mean, n={n}", plain, "baseline"),
        (
            "central DP-FedAvg (clip + CSPRNG noise + snap)",
            private,
            f"{private / plain:.2f}x plain (target <= 10x: "
            f"{'met' if private <= 10 * plain else 'missed'})",
        ),
        (
            "DP-FedAvg on a float64 copy of the matrix",
            copying,
            f"no-copy version is {copying / private:.2f}x faster (target >= 3x: "
            f"{'met' if copying >= 3 * private else 'missed'})",
        ),
    ]
    print(f"privacy cost, n = {n} clients, d = {d:,} (best of {r})")
    width = max(len(name) for name, _, _ in rows)
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds:8.4f} s  {note}")


if __name__ == "__main__":
    main()
