"""Show what the [edge] pipeline of examples/edge/breast-cancer.toml does, end to end.

    python examples/edge/check_protection.py [--out runs/edge-check]

1. trains the example (with synthetic identifying columns) and prints each client's counts;
2. trains it again with the identifying columns absent and compares the two final models;
3. scans every file the run wrote for the clients' raw names, patient ids and birth dates.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from fedfort.config import load_config
from fedfort.measurements import DataProtectionMeasurement, MeasurementSet
from fedfort.params import vector_sha256
from fedfort.run.federation import partition_records, split_data
from fedfort.simulation import Simulation
from fedfort.simulation.results import write_results

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/edge-check")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    config = load_config(HERE / "breast-cancer.toml").with_overrides({"rounds": args.rounds})
    with Simulation(config, out_dir=out) as sim:
        with_ids = sim.run()
        in_features = sim.model_spec.in_features
    write_results(with_ids, out)
    print(f"model input: {in_features} features (the measurements; no identifying column)")
    print(f"test accuracy after {args.rounds} rounds: {with_ids.final['accuracy']:.4f}")
    edge = MeasurementSet.of_record(with_ids.records[-1]).require(DataProtectionMeasurement)
    for client, counts in edge.clients.items():
        print(f"  {client}: " + ", ".join(f"{k}={v}" for k, v in counts.items() if v))

    plain = config.edge.model_dump(mode="json")
    plain.update(fields={}, synthetic_identifiers=False, deduplicate_on=None)
    with Simulation(config.with_overrides({"edge": plain})) as sim:
        without = sim.run()
    same = vector_sha256(with_ids.model) == vector_sha256(without.model)
    print(f"model with identifying columns    {vector_sha256(with_ids.model)[:16]}")
    print(f"model without identifying columns {vector_sha256(without.model)[:16]}  same: {same}")

    data = split_data(config)
    raw: set[str] = set()
    for k in range(config.clients.count):
        columns = partition_records(config, data, k).columns
        for name in ("patient_name", "patient_id", "birth_date"):
            raw.update(str(v) for v in columns[name].tolist())
    files = [p for p in sorted(out.iterdir()) if p.is_file()]
    leaks = [(p.name, v) for p in files for v in raw if v.encode() in p.read_bytes()]
    print(f"scanned {len(files)} run files for {len(raw)} raw identifying values: ", end="")
    print(f"{len(leaks)} found")
    return 0 if same and not leaks else 1


if __name__ == "__main__":
    raise SystemExit(main())
