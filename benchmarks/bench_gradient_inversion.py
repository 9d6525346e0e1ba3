"""Gradient inversion against each defence: the table in ``docs/gradient-inversion.md``.

Runs :func:`fedfort.redteam.privacy_inversion.evaluate_inversion_defences` (DLG, iDLG and Inverting
Gradients on one digits image per client, an MLP with one hidden layer of 64 at its seeded
initialisation) and prints one Markdown row per defence: the attack's best reconstruction
against the client's true image, the same score for the attack's starting noise (the
baseline) and for the closest of 200 held-out digits (a plausible digit that is not the
client's), and how many trials leaked (PSNR >= 25 dB or SSIM >= 0.8 with the right label).
The no-defence row is the baseline every other row is read against. ``--json`` also writes
the full report (images included) for plotting.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_gradient_inversion.py \
        [--trials 10] [--local-steps 1] [--json report.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fedfort.redteam.privacy_inversion import InversionExperiment, evaluate_inversion_defences


def _fmt(value: float | str | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=1)
    parser.add_argument("--model", choices=["mlp", "logreg"], default="mlp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the full report to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    exp = InversionExperiment(
        model=args.model,
        trials=args.trials,
        local_steps=args.local_steps,
        local_epsilons=(1.0, 4.0, 8.0),
        distributed_epsilons=(1.0, 8.0),
        seed=args.seed,
    )
    start = time.perf_counter()
    report = evaluate_inversion_defences(exp)
    elapsed = time.perf_counter() - start
    print(
        "| defence | epsilon (per round) | leaked | mean SSIM | max SSIM | mean PSNR (dB) "
        "| noise SSIM | held-out SSIM | label acc. |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in report.rows:
        raw = row.to_json()
        s = raw["summary"]
        if not row.applicable:
            print(f"| {row.title} | - | {row.note} | | | | | | |")
            continue
        print(
            f"| {row.title} | {_fmt(raw['epsilon'])} | {row.leak_count}/{len(row.trials)} "
            f"| {_fmt(s['mean_ssim'])} | {_fmt(s['max_ssim'])} | {_fmt(s['mean_psnr'], 1)} "
            f"| {_fmt(s['mean_baseline_ssim'])} | {_fmt(s['mean_reference_ssim'])} "
            f"| {_fmt(s['label_accuracy'])} |"
        )
    extra = [r for r in report.rows if "epsilon_of_one_share_alone" in r.parameters]
    for row in extra:
        print(
            f"\n{row.title}: one share alone is "
            f"epsilon = {row.parameters['epsilon_of_one_share_alone']:.1f}"
        )
    print(f"\n{args.trials} trials in {elapsed:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report.to_json(), fh)


if __name__ == "__main__":
    main()
