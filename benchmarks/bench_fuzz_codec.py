"""Fuzzing the wire codec at scale: only whitelisted messages or MalformedMessage come out.

Runs the three strategies of ``tests/test_transport_codec.py`` with many more examples than
the test suite does (``--examples`` per strategy, 10,000 by default):

1. ``bytes``: arbitrary byte strings of up to 4 KiB, into :func:`fedfort.transport.codec.loads`;
2. ``mutated``: valid encodings of realistic messages (tasks, updates, every secure-aggregation
   message) with one to four bytes flipped, set, inserted or deleted;
3. ``trees``: random protobuf ``Value`` trees (records with right or random field names, maps,
   lists, arrays of good and bad dtypes and lengths), and realistic messages' trees with one
   node replaced by a random tree; each goes through ``loads`` (serialised) and ``from_value``.

For each strategy the table gives the inputs tried, how many decoded to a valid message and
how many were rejected with ``MalformedMessage``, the count of any other exception (a bug:
``loads`` may raise nothing else, and a decoded message must re-encode; the script then exits
with status 1 and lists them), and the microseconds per input spent in the codec and in
total (hypothesis's generation included).

    .venv/bin/python benchmarks/bench_fuzz_codec.py [--examples 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

TESTS = Path(__file__).resolve().parents[1] / "tests"


@dataclass
class Tally:
    """What one strategy produced."""

    tried: int = 0
    valid: int = 0
    malformed: int = 0
    codec_s: float = 0.0
    other: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)


def run_strategy(
    strategy: st.SearchStrategy[object],
    check: Callable[[object], object | None],
    examples: int,
    rng_seed: int,
) -> tuple[Tally, float]:
    """Feed ``examples`` inputs to ``check``; returns the tally and the wall-clock seconds."""
    tally = Tally()

    @seed(rng_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(strategy)
    def fuzz(data: object) -> None:
        tally.tried += 1
        start = time.perf_counter()
        try:
            outcome = check(data)
        except Exception as exc:  # a property violation: anything but MalformedMessage
            name = type(exc).__name__
            tally.other[name] += 1
            tally.samples.setdefault(name, f"{exc!s:.200} on {data!r:.200}")
        else:
            if outcome is None:
                tally.malformed += 1
            else:
                tally.valid += 1
        finally:
            tally.codec_s += time.perf_counter() - start

    start = time.perf_counter()
    fuzz()
    return tally, time.perf_counter() - start


def load_strategies() -> ModuleType:
    """The fuzz strategies and properties, shared with the test suite."""
    sys.path.insert(0, str(TESTS))
    return importlib.import_module("test_transport_codec")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="inputs per strategy")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis's random seed")
    args = parser.parse_args()
    fuzzing = load_strategies()
    strategies: list[tuple[str, st.SearchStrategy[object], Callable[[object], object | None]]] = [
        ("bytes", fuzzing.random_bytes(), fuzzing.check_loads),
        ("mutated", fuzzing.mutated_encodings(), fuzzing.check_loads),
        ("trees", fuzzing.value_trees(), fuzzing.check_value),
    ]
    print(f"{args.examples:,} examples per strategy, seed {args.seed}")
    header = (
        f"{'strategy':9} {'inputs':>8} {'valid':>8} {'malformed':>10} {'other':>6} "
        f"{'codec us':>9} {'total us':>9}"
    )
    print(header)
    print("-" * len(header))
    failures: dict[str, Tally] = {}
    for name, strategy, check in strategies:
        tally, wall = run_strategy(strategy, check, args.examples, args.seed)
        tried = max(tally.tried, 1)
        other = sum(tally.other.values())
        print(
            f"{name:9} {tally.tried:8,d} {tally.valid:8,d} {tally.malformed:10,d} {other:6d} "
            f"{1e6 * tally.codec_s / tried:9.1f} {1e6 * wall / tried:9.1f}"
        )
        if other:
            failures[name] = tally
    if failures:
        print("\nexceptions other than MalformedMessage (codec bugs):")
        for name, tally in failures.items():
            for kind, count in tally.other.most_common():
                print(f"  {name}: {count} x {kind}: {tally.samples[kind]}")
        return 1
    print("\nno exception other than MalformedMessage")
    return 0


if __name__ == "__main__":
    sys.exit(main())
