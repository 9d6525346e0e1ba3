"""Wall time of the aggregation rules on a large update matrix, against naive references.

For n clients in (50, 100) and d = 1_000_000 float32 coordinates (a random normal matrix with a
fixed seed) every rule in ``AGGREGATORS`` is timed (best of ``--repeat`` runs) and compared with
the naive implementations in ``REFERENCES``; ``speedup`` is reference seconds / rule seconds.
Krum-family rules use f = n // 5 (lowered to the largest valid f where the rule needs it).
Targets: Krum and Multi-Krum >= 10x faster than the naive per-client loop (every client
computes its distance to every other client in Python, n(n-1) distances; the table also shows
the half-as-slow loop over unordered pairs), the median no slower
than ``np.median`` and the weighted mean within 2x of a bare ``X.T @ w``. Nothing asserts on the
timings; the table says whether each target was met on this machine.

    .venv/bin/python benchmarks/bench_aggregators.py [--quick] [--rules krum,median] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from fedfort.aggregation.base import Aggregator, UpdateBatch
from fedfort.aggregation.bulyan import Bulyan
from fedfort.aggregation.krum import Krum, MultiKrum
from fedfort.aggregation.mean import WeightedMean
from fedfort.aggregation.median import CoordinateMedian
from fedfort.aggregation.trimmed_mean import TrimmedMean

# name -> factory(n, f); add a rule here to benchmark it (with or without a reference below).
AGGREGATORS: dict[str, Callable[[int, int], Aggregator]] = {
    "fedavg": lambda n, f: WeightedMean(),
    "median": lambda n, f: CoordinateMedian(),
    "trimmed_mean": lambda n, f: TrimmedMean(num_trimmed=f),
    "krum": lambda n, f: Krum(f),
    "multi_krum": lambda n, f: MultiKrum(f),
    "bulyan": lambda n, f: Bulyan(min(f, (n - 3) // 4)),
}

Reference = Callable[[np.ndarray, np.ndarray, int], object]
LAYERS = 10


def naive_krum(x: np.ndarray, f: int, m: int) -> np.ndarray:
    """Krum / Multi-Krum with a per-pair Python loop for the distances."""
    n = x.shape[0]
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = float(np.sum((x[i] - x[j]) ** 2))
    scores = [np.sort(np.delete(dist[i], i))[: n - f - 2].sum() for i in range(n)]
    chosen = np.argsort(scores)[:m]
    mean: np.ndarray = x[chosen].mean(axis=0)
    return mean


def naive_krum_per_client(x: np.ndarray, f: int, m: int) -> np.ndarray:
    """Krum / Multi-Krum as naive code writes it: each client loops over all the others."""
    n = x.shape[0]
    scores = []
    for i in range(n):
        dists = [float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i]
        scores.append(sum(sorted(dists)[: n - f - 2]))
    chosen = np.argsort(scores)[:m]
    mean: np.ndarray = x[chosen].mean(axis=0)
    return mean


def per_layer(fn: Callable[[np.ndarray], np.ndarray]) -> Reference:
    """Apply ``fn`` to each of ``LAYERS`` column blocks separately, as a per-tensor loop would."""

    def run(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
        blocks = np.array_split(np.arange(x.shape[1]), LAYERS)
        return np.concatenate([fn(x[:, b[0] : b[-1] + 1]) for b in blocks])

    return run


def sort_trimmed(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def fn(x: np.ndarray) -> np.ndarray:
        mean: np.ndarray = np.sort(x, axis=0)[k : x.shape[0] - k].mean(axis=0)
        return mean

    return fn


# name -> [(label, reference, minimum speedup or None)]
REFERENCES: dict[str, list[tuple[str, Reference, float | None]]] = {
    "fedavg": [("X.T @ w", lambda x, w, f: x.T @ (w / w.sum()).astype(np.float32), 0.5)],
    "median": [
        ("np.median", lambda x, w, f: np.median(x, axis=0), 1.0),
        ("per-layer np.median", per_layer(lambda b: np.median(b, axis=0)), None),
    ],
    "trimmed_mean": [
        ("np.median", lambda x, w, f: np.median(x, axis=0), None),
        ("per-layer sort", lambda x, w, f: per_layer(sort_trimmed(f))(x, w, f), None),
    ],
    "krum": [
        ("per-client loop", lambda x, w, f: naive_krum_per_client(x, f, 1), 10.0),
        ("pairwise loop", lambda x, w, f: naive_krum(x, f, 1), None),
    ],
    "multi_krum": [
        ("per-client loop", lambda x, w, f: naive_krum_per_client(x, f, x.shape[0] - f), 10.0),
        ("pairwise loop", lambda x, w, f: naive_krum(x, f, x.shape[0] - f), None),
    ],
}


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 100_000 instead of 1_000_000")
    parser.add_argument("--rules", default=",".join(AGGREGATORS), help="comma-separated names")
    parser.add_argument("--repeat", type=int, default=3, help="runs per rule (references: 1)")
    parser.add_argument("--clients", default="50,100", help="comma-separated values of n")
    args = parser.parse_args()
    names = [r.strip() for r in args.rules.split(",") if r.strip()]
    unknown = [r for r in names if r not in AGGREGATORS]
    if unknown:
        parser.error(f"unknown rules {unknown}; known: {sorted(AGGREGATORS)}")
    d = 100_000 if args.quick else 1_000_000
    rng = np.random.default_rng(0)
    header = f"{'n':>4} {'rule':<13} {'seconds':>8}  {'reference':<20} {'ref s':>8} {'speedup':>8}"
    print(f"d={d:_} float32, best of {args.repeat} (references: 1 run)\n{header}  target")
    for n in (int(v) for v in args.clients.split(",")):
        x = rng.standard_normal((n, d), dtype=np.float32)
        w = rng.integers(10, 1000, size=n).astype(np.float64)
        batch = UpdateBatch(x, w, tuple(f"c{i}" for i in range(n)))
        f = n // 5
        for name in names:
            rule = AGGREGATORS[name](n, f)
            seconds = best_time(partial(rule.aggregate, batch), args.repeat)
            refs = REFERENCES.get(name) or [("-", lambda x, w, f: None, None)]
            for label, ref, target in refs:
                line = f"{n:>4} {name:<13} {seconds:>8.3f}  {label:<20}"
                if label == "-":
                    print(line)
                    continue
                ref_s = best_time(partial(ref, x, w, f), 1)
                ratio = ref_s / seconds
                line += f" {ref_s:>8.3f} {ratio:>7.1f}x"
                if target is not None:
                    line += f"  >= {target:g}x {'ok' if ratio >= target else 'MISSED'}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
