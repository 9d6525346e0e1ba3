"""What the audit log adds to a round's wall time on the foundation's configuration.

Runs the demo configuration (digits, MLP, 10 clients, checkpoints to SQLite) twice in the
same process, interleaving rounds: one federation with ``governance.audit = true`` (every
round appends ~8 signed, hash-chained entries to ``audit.sqlite`` and records the head in
the checkpoint database) and one with it off, the baseline measured in the same run. Each
timed round is ``engine.run_round()`` including every commit hook. It also times
``fedfort audit verify`` on the resulting log. The bar is an overhead under 5%.

    .venv/bin/python benchmarks/bench_audit_overhead.py [--rounds 30] [--clients 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from fedfort import Simulation, load_config
from fedfort.audit import AUDIT_FILE, read_entries, verify_run

TARGET = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    base = load_config("examples/demo.toml").with_overrides(
        {"clients.count": args.clients, "rounds": args.rounds + 1}
    )
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        sims = {
            audit: Simulation(
                base.with_overrides({"governance.audit": audit}), Path(tmp) / f"audit-{audit}"
            )
            for audit in (True, False)
        }
        try:
            for sim in sims.values():
                sim.engine.run_round()  # warm-up
            for i in range(args.rounds):
                # alternate which goes first so drift in machine load hits both alike
                order = (True, False) if i % 2 == 0 else (False, True)
                for audit in order:
                    start = time.perf_counter()
                    sims[audit].engine.run_round()
                    times[audit].append(time.perf_counter() - start)
        finally:
            for sim in sims.values():
                sim.close()
        run = Path(tmp) / "audit-True"
        entries = sum(1 for _ in read_entries(run / AUDIT_FILE))
        start = time.perf_counter()
        result = verify_run(run)
        verify_s = time.perf_counter() - start
    with_audit, without = np.array(times[True]), np.array(times[False])
    overhead = with_audit.sum() / without.sum() - 1.0
    median = float(np.median(with_audit) / np.median(without) - 1.0)
    print(f"clients={args.clients} rounds={args.rounds} entries={entries}")
    print(f"round wall time without audit  mean {without.mean() * 1e3:8.2f} ms (baseline)")
    print(f"round wall time with audit     mean {with_audit.mean() * 1e3:8.2f} ms")
    print(f"audit cost per round           mean {(with_audit - without).mean() * 1e3:8.2f} ms")
    print(f"overhead: {overhead:+.1%} of total, {median:+.1%} by median (target < {TARGET:.0%})")
    print(f"ratio with/without: {with_audit.sum() / without.sum():.3f}")
    print(f"verify: {entries} entries in {verify_s * 1e3:.1f} ms ({result.describe()[:40]}...)")


if __name__ == "__main__":
    main()
