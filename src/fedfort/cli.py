"""The ``fedfort`` command line.

``fedfort simulate`` runs a federated training from a TOML config with overrides for the common
knobs, shows a progress bar with live accuracy, and writes ``results.json``, ``training.png``
and ``checkpoints.sqlite`` to ``--out``. ``--resume`` continues a run from its last committed
round. ``fedfort redteam`` runs a matrix of attacks x defences x seeds and writes a report.
``fedfort redteam privacy`` runs membership inference and gradient inversion per privacy defence.
``fedfort privacy plan`` finds the noise multiplier that meets a target (epsilon, delta).
``fedfort audit|model|dashboard|report`` work on a run directory (:mod:`fedfort.governance_cli`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Literal

from tqdm import tqdm

from fedfort import __version__
from fedfort.config import RunConfig, load_config, parse_config
from fedfort.errors import ConfigError, FedfortError, PrivacyBudgetExhausted
from fedfort.governance_cli import monitoring_arguments
from fedfort.server.engine import RoundRecord

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedfort", description="Secure federated learning for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"fedfort {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser(
        "simulate",
        help="run a federated training on simulated clients",
        description="Run a federated training on simulated clients from a TOML config.",
    )
    sim.add_argument("--config", help="TOML config file (defaults apply to missing keys)")
    sim.add_argument("--rounds", type=int, help="number of rounds to commit")
    sim.add_argument("--clients", type=int, help="number of clients in the federation")
    sim.add_argument("--dataset", help="digits, breast_cancer or synthetic")
    sim.add_argument("--model", help="logreg, mlp, cnn or a registered model")
    sim.add_argument("--partition", help="iid, dirichlet or shards")
    sim.add_argument("--alpha", type=float, help="Dirichlet concentration for label skew")
    sim.add_argument("--algorithm", help="fedavg, fedprox or scaffold")
    sim.add_argument("--server-optimizer", help="fedavg, fedavgm or fedadam")
    sim.add_argument("--workers", type=int, help="worker processes (0 = sequential)")
    sim.add_argument(
        "--runtime",
        choices=["inprocess", "ray"],
        help="where clients train: this process (default) or Ray actors (docs/ray-runtime.md)",
    )
    sim.add_argument(
        "--ray-address",
        help="join a running Ray cluster: 'auto' or HOST:PORT of its head (implies --runtime ray)",
    )
    sim.add_argument("--seed", type=int, help="seed for data split, selection and training")
    sim.add_argument("--out", default="runs/latest", help="output directory (default %(default)s)")
    sim.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last round"
    )
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument(
        "--attack",
        help="attack run by a share of the clients (see docs/attacks.md), e.g. sign_flip",
    )
    sim.add_argument("--attack-fraction", type=float, help="share of malicious clients")
    sim.add_argument("--privacy", help="user-level DP: central, distributed, local or none")
    sim.add_argument(
        "--target-epsilon",
        type=float,
        help="privacy budget; calibrates the noise multiplier when none is configured",
    )
    sim.add_argument("--noise-multiplier", type=float, help="DP-FedAvg noise multiplier z")
    sim.add_argument(
        "--secure-aggregation",
        help="secagg, secagg+, ckks or none: the server learns only the sum of the updates",
    )
    sim.add_argument("--delta", type=float, help="delta of the privacy guarantee")
    sim.add_argument(
        "--rollback-drop",
        type=float,
        help="roll back to the best version when validation accuracy falls this far below it",
    )
    monitoring_arguments(sim)

    red = sub.add_parser(
        "redteam",
        help="run attacks x defences x seeds and report the damage",
        description="Run a red-team matrix from a TOML file and write redteam.json, "
        "report.md, report.html and heatmaps to --out.",
    )
    red.add_argument("--config", help="red-team TOML (see examples/redteam.toml); required")
    red.add_argument("--out", default="runs/redteam", help="output directory (default %(default)s)")
    red.add_argument("--workers", type=int, help="processes (default: the config's; 0 = all cores)")
    red.add_argument("--rounds", type=int, help="override the rounds of every cell")
    red.add_argument("--seeds", help="comma-separated seeds overriding the config's, e.g. 0,1")
    red.add_argument("--quiet", action="store_true", help="no progress bar")
    red_sub = red.add_subparsers(dest="redteam_command", metavar="{privacy}")
    red_priv = red_sub.add_parser(
        "privacy",
        help="membership inference and gradient inversion against every privacy defence",
        description="Run membership inference (loss threshold, LiRA) on real federated runs "
        "and gradient inversion on client updates, with and without each privacy defence; "
        "write privacy.json, report.md and a self-contained report.html to --out.",
    )
    red_priv.add_argument(
        "--config",
        dest="privacy_config",
        required=True,
        help="privacy red-team TOML (see examples/redteam-privacy.toml)",
    )
    red_priv.add_argument(
        "--out",
        dest="privacy_out",
        default="runs/redteam-privacy",
        help="output directory (default %(default)s)",
    )
    red_priv.add_argument("--quiet", dest="privacy_quiet", action="store_true", help="no progress")
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
    plan.add_argument("--points", type=int, default=10, help="points of the epsilon curve")

    certs = sub.add_parser(
        "certs",
        help="the federation's certificate authority for mutual TLS",
        description="Create the federation's CA, issue server and client certificates, and "
        "revoke certificates (see fedfort.crypto.pki).",
    ).add_subparsers(dest="certs_command", required=True)
    cinit = certs.add_parser(
        "init",
        help="create the federation's CA",
        description="Create ca.pem, ca.key, crl.pem and federation.json in --dir.",
    )
    cinit.add_argument("--dir", required=True, help="CA directory (ca.key must not exist yet)")
    cinit.add_argument("--federation", required=True, help="federation id, e.g. hospitals-eu")
    cinit.add_argument(
        "--days", type=int, default=3650, help="CA validity in days (default %(default)s)"
    )
    cissue = certs.add_parser(
        "issue",
        help="issue server or client certificates",
        description="Issue one certificate (--name) or N client certificates client-000, ... "
        "(--clients N), signed by the CA in --dir, into --out together with ca.pem (and, for a "
        "server, crl.pem): what that party needs, never the CA's key. Use an --out other than "
        "--dir: a server refuses to start beside ca.key.",
    )
    cissue.add_argument("--dir", required=True, help="CA directory")
    cissue.add_argument("--out", required=True, help="output directory")
    who = cissue.add_mutually_exclusive_group(required=True)
    who.add_argument("--name", help="certificate name (its common name)")
    who.add_argument("--clients", type=int, metavar="N", help="issue N client certificates")
    cissue.add_argument(
        "--role", choices=["client", "server"], help="role of --name (default client)"
    )
    cissue.add_argument(
        "--host",
        action="append",
        help="server host name or IP address, repeatable (default localhost and 127.0.0.1)",
    )
    cissue.add_argument(
        "--days", type=int, default=365, help="validity in days (default %(default)s)"
    )
    crevoke = certs.add_parser(
        "revoke",
        help="revoke a certificate",
        description="Add a certificate's serial number to the CA's crl.pem and re-sign it.",
    )
    crevoke.add_argument("--dir", required=True, help="CA directory")
    what = crevoke.add_mutually_exclusive_group(required=True)
    what.add_argument("--cert", help="certificate file to revoke")

    def serial_number(text: str) -> int:
        return int(text, 0)

    what.add_argument(
        "--serial", type=serial_number, help="serial number to revoke (decimal or 0x...)"
    )
    crevoke.add_argument(
        "--publish",
        action="append",
        metavar="DIR",
        help="also copy the new crl.pem into DIR (a server's --pki directory), repeatable; a "
        "running server honours it within a second",
    )
    from fedfort.access.cli import add_parsers as add_access
    from fedfort.governance_cli import add_parsers as add_governance
    from fedfort.transport.cli import add_parsers

    add_parsers(sub)
    add_governance(sub)
    add_access(sub)
    return parser


def _privacy_plan(args: argparse.Namespace) -> int:
    from fedfort.privacy.accounting import PrivacyEvent
    from fedfort.privacy.planning import plan_noise

    if not 0.0 < args.sampling_rate <= 1.0:
        raise FedfortError(f"--sampling-rate must be in (0, 1], got {args.sampling_rate}")

    def event(z: float) -> PrivacyEvent:
        return PrivacyEvent("gaussian", z, sampling_rate=args.sampling_rate)

    plan = plan_noise(
        args.epsilon, args.delta, args.rounds, event, args.accountant, points=args.points
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
    print(f"{'round':>7}  {'epsilon':>9}")
    for round_, eps in plan.curve:
        print(f"{round_:>7}  {eps:>9.4f}")
    return 0


def _privacy_overrides(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """Apply --privacy, --target-epsilon, --noise-multiplier and --delta in one step."""
    given = {
        "mode": args.privacy,
        "target_epsilon": args.target_epsilon,
        "noise_multiplier": args.noise_multiplier,
        "delta": args.delta,
    }
    if all(v is None for v in given.values()):
        return config
    body = config.to_dict()
    section = body["privacy"]
    if args.target_epsilon is not None and args.noise_multiplier is None:
        # a new target means a new calibration, not the configured noise multiplier
        section["noise_multiplier"] = None
    section.update({k: v for k, v in given.items() if v is not None})
    if args.privacy == "none":
        # the non-private twin of a private config: keep only the clients' DP-SGD setting
        body["privacy"] = {"dp_sgd": section["dp_sgd"]}
    return parse_config(body)


def _simulate(args: argparse.Namespace) -> int:
    from fedfort.access.setup import start_monitoring
    from fedfort.simulation.results import write_results
    from fedfort.simulation.simulation import Simulation, SimulationResult

    if args.resume:
        if args.config or any(
            getattr(args, k) is not None
            for k in ("clients", "dataset", "model", "partition", "alpha", "algorithm", "seed")
        ):
            raise FedfortError(
                "--resume continues the stored configuration; only --rounds, --workers, "
                "--runtime and --ray-address may be given with it"
            )
        sim = Simulation.resume(
            args.out,
            rounds=args.rounds,
            workers=args.workers,
            runtime=args.runtime,
            ray_address=args.ray_address,
        )
    else:
        overrides: dict[str, Any] = {
            "rounds": args.rounds,
            "seed": args.seed,
            "clients.count": args.clients,
            "clients.algorithm": args.algorithm,
            "data.dataset": args.dataset,
            "data.partition": args.partition,
            "data.alpha": args.alpha,
            "model.name": args.model,
            "server.optimizer": args.server_optimizer,
            "simulation.workers": args.workers,
            "simulation.runtime": "ray" if args.ray_address and not args.runtime else args.runtime,
            "simulation.ray_address": args.ray_address,
            "secure_aggregation.mode": args.secure_aggregation,
            "governance.rollback_drop": args.rollback_drop,
        }
        config = load_config(args.config)
        if args.attack is not None:
            # a new attack replaces the whole [attack] table: its keys belong to the old one
            config = config.with_overrides({"attack": {"name": args.attack}})
        overrides["attack.fraction"] = args.attack_fraction
        config = config.with_overrides(overrides)
        config = _privacy_overrides(config, args)
        sim = Simulation(config, args.out)
    with sim:
        urls = start_monitoring(sim, args.metrics, args.dashboard, getattr(args, "operator", None))
        if sim.control.state == "held" and "operator" not in urls:
            raise ConfigError(
                "access.hold_at_start waits for `fedfort operator start`: serve the operator "
                "API too (access.operator_address or --operator)"
            )
        for name, url in urls.items():
            print(f"fedfort: {name} at {url}", file=sys.stderr)
        done = sim.engine.round
        target = sim.config.rounds
        bar = tqdm(total=target, initial=done, desc="rounds", unit="round", disable=args.quiet)

        def on_round(record: RoundRecord) -> None:
            postfix = {"participants": record.participants}
            if record.accuracy is not None:
                postfix["acc"] = f"{record.accuracy:.3f}"  # type: ignore[assignment]
            bar.set_postfix(postfix)
            bar.update(1)

        exhausted: PrivacyBudgetExhausted | None = None
        try:
            result = sim.run(on_round=on_round)
        except PrivacyBudgetExhausted as exc:
            if not isinstance(exc.result, SimulationResult):
                raise
            exhausted, result = exc, exc.result
        finally:
            bar.close()
        path = write_results(result, args.out)
    if exhausted is not None:
        print(f"fedfort: {exhausted}", file=sys.stderr)
    final = result.final
    acc = final["accuracy"]
    acc_text = "n/a" if acc is None else f"{acc:.4f}"
    eps = final.get("epsilon")
    eps_text = "" if eps is None else f", epsilon {eps:.3f} at delta {final['delta']:g}"
    done_text = f"finished {final['rounds']} rounds"
    if final.get("stopped") == "operator_stop":
        done_text = f"stopped by an operator after {final['rounds']} rounds (--resume continues)"
    print(f"{done_text}: test accuracy {acc_text}{eps_text}; results in {path}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _verdict_line(verdict: dict[str, Any], best: dict[str, Any]) -> str:
    """One line per attack: what it does to FedAvg and what the best defence keeps."""
    backdoor = verdict["attack_kind"] == "backdoor"
    metric, key = (
        ("backdoor success", "backdoor_asr_mean") if backdoor else ("acc", "accuracy_mean")
    )
    undefended = verdict["undefended_asr"] if backdoor else verdict["undefended_accuracy"]
    status = "holds" if verdict["survives"] else "DOES NOT HOLD"
    return (
        f"{verdict['attack']:>22}: FedAvg {metric} {_fmt(undefended)} -> "
        f"{verdict['best_defense']} {_fmt(best.get(key))} ({status})"
    )


def _redteam_privacy(args: argparse.Namespace) -> int:
    from fedfort.redteam.privacy import (
        PRIVACY_FILE,
        load_privacy_redteam_config,
        run_privacy_redteam,
    )

    cfg = load_privacy_redteam_config(args.privacy_config)
    quiet = args.privacy_quiet or args.quiet
    body = run_privacy_redteam(cfg, args.privacy_out, None if quiet else print)
    for name, row in body["membership"]["rows"].items():
        model = max(row["global_model"].values(), key=lambda c: c["auc"]["mean"])["auc"]
        update = row["client_update"]["loss_change"]["auc"]
        eps = row["epsilon"]["mean"] if row["epsilon"] else None
        print(
            f"{name:>24}: membership AUC model {model['mean']:.3f} [{model['low']:.3f}, "
            f"{model['high']:.3f}], update {update['mean']:.3f}"
            + ("" if eps is None else f", epsilon {eps:.3g}")
        )
    out = args.privacy_out
    print(f"report: {out}/report.md, {out}/report.html, {out}/{PRIVACY_FILE}")
    return 0


def _redteam(args: argparse.Namespace) -> int:
    from fedfort.redteam.matrix import REDTEAM_FILE, load_redteam_config, run_redteam

    if getattr(args, "redteam_command", None) == "privacy":
        return _redteam_privacy(args)
    if args.config is None:
        raise FedfortError("fedfort redteam needs --config FILE (or: fedfort redteam privacy)")
    cfg = load_redteam_config(args.config)
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise FedfortError(
                f"--seeds must be comma-separated integers, got {args.seeds!r}"
            ) from None
        cfg = cfg.model_copy(update={"seeds": seeds})
    body = run_redteam(
        cfg,
        args.out,
        overrides={"rounds": args.rounds},
        workers=args.workers,
        progress=not args.quiet,
    )
    summary = body["summary"]
    rows = {(r["attack"], r["defense"]): r for r in summary["rows"]}
    for verdict in summary["verdicts"]:
        print(_verdict_line(verdict, rows.get((verdict["attack"], verdict["best_defense"]), {})))
    print(f"report: {args.out}/report.md, {args.out}/report.html, {args.out}/{REDTEAM_FILE}")
    return 0


def _certs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fedfort.crypto import pki

    def wrote(*paths: Path) -> None:
        for path in paths:
            print(f"wrote {path}")

    if args.certs_command == "init":
        ca = pki.init_ca(Path(args.dir), args.federation, days=args.days)
        wrote(ca.key, ca.cert, ca.crl, ca.directory / pki.FEDERATION_FILE)
        return 0
    if args.certs_command == "issue":
        out = Path(args.out)
        ca_copy_existed = (out / pki.CA_CERT_FILE).exists()
        if args.clients is not None:
            if args.role == "server":
                raise FedfortError("--clients issues client certificates; drop --role server")
            if args.host:
                raise FedfortError("--host applies to server certificates only")
            issued = pki.issue_clients(Path(args.dir), out, args.clients, days=args.days)
        else:
            role: Literal["server", "client"] = "server" if args.role == "server" else "client"
            if args.host and role != "server":
                raise FedfortError("--host applies to server certificates only (--role server)")
            hosts = args.host or ("localhost", "127.0.0.1")
            issued = [
                pki.issue_certificate(
                    Path(args.dir), out, args.name, role=role, hosts=hosts, days=args.days
                )
            ]
        for files in issued:
            wrote(files.key, files.cert)
        if not ca_copy_existed:
            wrote(out / pki.CA_CERT_FILE)
        if args.clients is None and args.role == "server":
            wrote(out / pki.CRL_FILE)
        return 0
    if args.certs_command == "revoke":
        ca_dir = Path(args.dir)
        target = Path(args.cert) if args.cert is not None else args.serial
        before = pki.RevocationList(
            ca_dir / pki.CRL_FILE, pki.load_certificate(ca_dir / pki.CA_CERT_FILE)
        ).serials
        serial = pki.revoke(ca_dir, target)
        if serial in before:
            print(f"serial {serial:#x} was already revoked; {ca_dir / pki.CRL_FILE} unchanged")
        else:
            print(f"revoked serial {serial:#x}")
            wrote(ca_dir / pki.CRL_FILE)
        for directory in args.publish or []:
            wrote(pki.publish_crl(ca_dir, Path(directory)))
        return 0
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedfort`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "redteam":
            return _redteam(args)
        if args.command == "privacy":
            return _privacy_plan(args)
        if args.command == "certs":
            return _certs(args)
        if args.command in ("audit", "model", "dashboard", "report"):
            from fedfort import governance_cli

            return governance_cli.run(args)
        if args.command in ("access", "operator"):
            from fedfort.access import cli as access_cli

            return (access_cli.run_access if args.command == "access" else access_cli.run_operator)(
                args
            )
        if args.command in ("server", "client", "keys"):
            from fedfort.transport import cli as transport_cli

            run = {
                "server": transport_cli.run_server,
                "client": transport_cli.run_client,
                "keys": transport_cli.run_keys,
            }[args.command]
            return run(args)
    except FedfortError as exc:
        print(f"fedfort: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedfort: interrupted; resume with --resume", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
