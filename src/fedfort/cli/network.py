"""``fedfort server`` and ``fedfort client``: a federation over gRPC with mutual TLS.

Both sides read the same federation TOML (the ``[network]`` section says where the server
listens); each names its credentials with ``--pki DIR --name NAME`` (``DIR/NAME.pem``,
``DIR/NAME.key``, ``DIR/ca.pem`` and, for the server, ``DIR/crl.pem``), as written by
``fedfort certs issue``. The server refuses a ``--pki`` directory that holds the CA's private
key ``ca.key`` unless ``--allow-ca-key-on-server`` is given.

With ``[data] source = "files"`` the server holds no client data (the model is sized from the
config's ``[data] features`` / ``classes``), and each client reads its own files (``[data]
train`` with ``{client}`` = its name, or ``--data``), checks them against that schema before
it connects, and declares its run and its data's schema when it enrolls
(:mod:`fedfort.transport.enrollment`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from fedfort.cli._options import monitoring_arguments
from fedfort.errors import ConfigError

if TYPE_CHECKING:
    from fedfort.client.client import FederatedClient
    from fedfort.client.policy import ClientPrivacyPolicy
    from fedfort.config import RunConfig
    from fedfort.secagg.policy import ClientPolicy
    from fedfort.server.engine import RoundRecord
    from fedfort.transport.client import ClientReport

__all__ = ["add_parsers", "client_policy", "run_client", "run_server", "server_address"]


_MODEL_HELP = (
    "the model: a built-in or registered name, or your nn.Module class by import path "
    "(mypkg.nets:TabularNet; overrides [model] name)"
)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``server`` and ``client`` subcommands."""
    srv = sub.add_parser(
        "server",
        help="serve a federation over gRPC with mutual TLS",
        description="Run the server of a networked federation: wait for the clients, run the "
        "rounds, write results.json, checkpoints.sqlite and registry.sqlite to --out.",
    )
    srv.add_argument("--config", required=True, help="federation TOML")
    srv.add_argument("--pki", required=True, help="directory with NAME.pem/.key, ca.pem, crl.pem")
    srv.add_argument("--name", default="server", help="certificate name (default %(default)s)")
    srv.add_argument("--out", default="runs/server", help="state directory (default %(default)s)")
    srv.add_argument("--address", help="host:port to listen on (overrides network.address)")
    srv.add_argument("--rounds", type=int, help="rounds to commit")
    srv.add_argument("--model", help=_MODEL_HELP)
    srv.add_argument("--resume", action="store_true", help="continue the run in --out")
    srv.add_argument(
        "--start-clients",
        type=int,
        metavar="N",
        help="clients to wait for before the first round, or before continuing a resumed run "
        "(overrides network.start_clients)",
    )
    srv.add_argument(
        "--allow-ca-key-on-server",
        action="store_true",
        help="start even though --pki holds the CA's private key ca.key (tests only: a server "
        "holding it can mint client certificates)",
    )
    srv.add_argument("--quiet", action="store_true", help="no per-round lines")
    monitoring_arguments(srv)

    cli = sub.add_parser(
        "client",
        help="take part in a networked federation",
        description="Enroll with the server, then train on --data whenever selected, until "
        "the server says the run is finished. Reconnects with backoff when the link fails.",
    )
    cli.add_argument("--config", required=True, help="federation TOML (same as the server's)")
    cli.add_argument(
        "--data",
        help="[data] source = 'files': this client's training file (CSV, Parquet, .npz, .npy "
        "or an image folder; default: [data] train with {client} = --name). Embedded datasets: "
        "partition:K (client K's share, as in simulation) or a .npz file with arrays x "
        "(float32, n x features) and y (int labels); with [edge], also one array per declared "
        "field, validated, masked and sanitised on this machine",
    )
    cli.add_argument(
        "--test",
        help="[data] source = 'files': this client's own hold-out file (default: [data] test "
        "with {client} = --name), checked against the federation's schema",
    )
    cli.add_argument("--pki", required=True, help="directory with NAME.pem/.key and ca.pem")
    cli.add_argument("--model", help=_MODEL_HELP + "; the same as the server's")
    cli.add_argument("--name", required=True, help="client id = certificate name")
    cli.add_argument("--server", help="host:port of the server (default: network.address)")
    cli.add_argument("--state", help="identity key and privacy ledger (default runs/clients/NAME)")
    cli.add_argument("--timeout", type=float, help="give up after this many seconds")
    pol = cli.add_argument_group(
        "privacy policy",
        "The least protection this client applies whatever the server asks (docs/privacy.md). "
        "Starts from [privacy.client] of --config, then --policy, then these options.",
    )
    pol.add_argument("--policy", help="client policy TOML (the keys of [privacy.client])")
    pol.add_argument(
        "--local-dp",
        choices=["none", "gaussian", "laplace"],
        dest="local",
        help="local DP the client always applies",
    )
    pol.add_argument("--max-clip-norm", type=float, help="largest clip norm accepted")
    pol.add_argument("--min-noise-std", type=float, help="least noise std on a noise share")
    pol.add_argument("--max-round-epsilon", type=float, help="largest per-round local epsilon")
    pol.add_argument("--max-total-epsilon", type=float, help="stop once this would be passed")
    pol.add_argument("--privacy-delta", type=float, dest="delta", help="per-round/ledger delta")
    pol.add_argument(
        "--reproducible",
        action="store_true",
        default=None,
        help="NON-SECURE experiments: seed training and noise from the server's task seed",
    )
    pol.add_argument("--ledger", help="privacy ledger file (default STATE/privacy-ledger.json)")
    cli.add_argument(
        "--secagg-corrupt-fraction",
        type=float,
        help="share of a session's clients this client assumes may collude with the server; "
        "it refuses thresholds unsafe for it (default: secure_aggregation.corrupt_fraction)",
    )
    cli.add_argument(
        "--secagg-min-clients",
        type=int,
        help="refuse masking sessions with fewer clients (default: "
        "secure_aggregation.client_min_clients)",
    )
    cli.add_argument(
        "--secagg-max-clients",
        type=int,
        help="refuse masking sessions with more clients (default: "
        "secure_aggregation.client_max_clients)",
    )


def server_address(config: RunConfig, override: str | None) -> str:
    """The server's ``host:port``: ``override`` (an option) or ``network.address``."""
    return override or config.network.address


def run_server(args: argparse.Namespace) -> int:
    """``fedfort server``."""
    from fedfort.config import load_config
    from fedfort.transport.outcome import participation_problems
    from fedfort.transport.server import Credentials, NetworkServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    credentials = Credentials.from_pki(args.pki, args.name, role="server")
    overrides = {"address": args.address, "start_clients": args.start_clients}
    network = {f"network.{k}": v for k, v in overrides.items() if v is not None}
    config = load_config(args.config).with_overrides(
        {"rounds": args.rounds, "model.name": args.model, **network}
    )
    # with --resume the run's signed checkpoint is verified and --config must match the
    # configuration stored in it (fedfort.run.resume), differing keys named
    server = NetworkServer(
        config,
        args.out,
        credentials=credentials,
        allow_ca_key=args.allow_ca_key_on_server,
        _resuming=args.resume,
    )
    try:
        port = server.start()
        print(f"fedfort server: federation {credentials.federation_id} on port {port}", flush=True)
        from fedfort.access.setup import start_monitoring, tls_context

        tls = None
        if server.config.access.tokens is not None:
            creds = credentials
            tls = tls_context(server.config.access, creds.cert, creds.key, creds.ca)
        urls = start_monitoring(server, args.metrics, args.dashboard, args.operator, tls=tls)
        if server.control.state == "held" and "operator" not in urls:
            raise ConfigError(
                "access.hold_at_start waits for `fedfort operator start`: serve the operator "
                "API too (access.operator_address or --operator)"
            )
        for what, url in urls.items():
            print(f"fedfort server: {what} at {url}", flush=True)

        def progress(record: RoundRecord) -> None:
            if not args.quiet:
                r = record.to_dict()
                acc = r.get("accuracy")
                federated = (r.get("evaluation") or {}).get("overall", {}).get("accuracy")
                print(
                    f"round {r.get('round')}: {r.get('participants')} clients, "
                    f"accuracy {acc if acc is None else f'{acc:.4f}'}, "
                    + ("" if federated is None else f"federated accuracy {federated:.4f}, ")
                    + f"dropped {len(r.get('dropped', []))}, "
                    f"rejected {len(r.get('rejected', []))}",
                    flush=True,
                )

        result = server.serve(on_round=progress)  # writes results.json to --out
        print(f"fedfort server: {result.final}; refusals {server.rejections}", flush=True)
        for line in result.summary_lines()[1:]:
            print(f"fedfort server: {line}", flush=True)
        for line in participation_problems(result.records):
            print(f"fedfort server: {line}", flush=True)
    finally:
        server.close()
    return 0


_POLICY_OPTIONS = (
    "local",
    "max_clip_norm",
    "min_noise_std",
    "max_round_epsilon",
    "max_total_epsilon",
    "delta",
    "reproducible",
)


def client_policy(args: argparse.Namespace, config: RunConfig) -> ClientPrivacyPolicy:
    """The client's own privacy policy: ``[privacy.client]`` of its --config, then the keys of
    its --policy TOML, then the command-line options (each overriding the one before); its
    DP-SGD budget is ``[privacy.dp_sgd] target_epsilon`` of its own --config."""
    import tomllib

    from fedfort.client.policy import ClientPrivacyPolicy
    from fedfort.config import ClientPolicyConfig

    values = config.privacy.client.model_dump()
    if getattr(args, "policy", None):
        try:
            values.update(tomllib.loads(Path(args.policy).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--policy {args.policy}: cannot read the TOML ({exc})") from None
    for name in _POLICY_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    try:
        return ClientPrivacyPolicy.from_config(
            ClientPolicyConfig(**values), dp_sgd=config.privacy.dp_sgd
        )
    except ValueError as exc:
        raise ConfigError(f"the client's privacy policy is invalid: {exc}") from None


def run_client(args: argparse.Namespace) -> int:
    """``fedfort client``."""
    from fedfort.cli.client_data import joining_data
    from fedfort.client.training import LocalTrainer
    from fedfort.config import load_config
    from fedfort.models import build_model
    from fedfort.run.federation import local_training_data, model_spec
    from fedfort.run.threads import run_threads
    from fedfort.transport.client import NetworkClient
    from fedfort.transport.enrollment import declaration
    from fedfort.transport.server import Credentials

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = load_config(args.config).with_overrides({"model.name": args.model})
    credentials = Credentials.from_pki(args.pki, args.name)  # before any data is read
    # this client's rows, checked against the federation's schema before it connects
    records, schema, declared, holdout = joining_data(args, config)
    spec = model_spec(config, schema)
    state_dir = args.state or Path("runs/clients") / args.name
    policy = client_policy(args, config)
    if policy.reproducible:
        print(
            f"fedfort client {args.name}: REPRODUCIBLE mode -- training and noise follow the "
            "server's seed; no privacy against the server",
            flush=True,
        )
    # validate, mask and sanitise on this machine ([edge]); only counts reach the server
    data, data_metrics = local_training_data(
        config, records, args.name, schema.num_classes, state_dir
    )
    client = NetworkClient(
        args.name,
        data,
        LocalTrainer(build_model(spec, seed=config.seed)),
        target=server_address(config, args.server),
        credentials=credentials,
        state_dir=state_dir,
        network=config.network,
        data_metrics=data_metrics,
        policy=policy,
        ledger_path=args.ledger,
        on_release=lambda round_, spent: print(
            f"fedfort client {args.name}: round {round_} released, epsilon spent "
            f"{spent:.4f} (delta {policy.delta:g})",
            flush=True,
        ),
        secure_policy=_secure_policy(args, config),
        on_rejected=functools.partial(_print_rejection, args.name),
        warn_after_rejections=WARN_AFTER_REJECTIONS,
        declaration=declaration(config, declared),
        holdout=holdout,
        rounds=config.rounds,  # no evaluation past the run's last round
    )
    with run_threads(config.simulation.torch_threads, blas=False):  # restored after the run
        report = client.run(timeout_s=args.timeout)
    ledger = client.client.ledger
    budget = policy.max_total_epsilon
    print(
        f"fedfort client {args.name}: trained rounds {report.rounds_trained}, committed "
        f"{report.acknowledged}, evaluated {report.rounds_evaluated}, reconnects "
        f"{report.reconnects}, refused {report.refused}, rejected {len(report.rejected)}, "
        f"finished {report.finished and not report.end_reason}",
        flush=True,
    )
    print(
        f"fedfort client {args.name}: epsilon spent {ledger.spent():.4f} at delta "
        f"{ledger.delta:g} over {len(ledger.releases)} noisy releases"
        + (f" (budget {budget:g})" if budget is not None else " (no budget set)")
        + f"; ledger {ledger.path}",
        flush=True,
    )
    if config.privacy.dp_sgd.enabled:
        print(_dp_sgd_line(args.name, client.client, policy), flush=True)
    if report.budget_exhausted:
        print(f"fedfort client {args.name}: privacy budget spent; left the federation", flush=True)
    return _client_outcome(args.name, report)


#: updates rejected in a row after which ``fedfort client`` prints a warning with the fix
WARN_AFTER_REJECTIONS = 3


def _print_rejection(name: str, round_: int, reason: str, in_a_row: int) -> None:
    from fedfort.transport.outcome import rejection_hint

    print(f"fedfort client {name}: round {round_}: the server rejected the update ({reason})")
    if in_a_row % WARN_AFTER_REJECTIONS == 0:
        print(
            f"fedfort client {name}: WARNING: {in_a_row} updates in a row rejected ({reason}); "
            f"{rejection_hint(reason)}",
            flush=True,
        )


def _client_outcome(name: str, report: ClientReport) -> int:
    """Say how the run ended for this client; its exit status (0: finished and counted)."""
    from fedfort.transport.outcome import rejection_hint

    if report.end_reason is not None:
        print(f"fedfort client {name}: {report.end_reason}", flush=True)
        return 1
    if not report.finished:
        print(f"fedfort client {name}: the server never said the run finished (--timeout?)")
        return 1
    if report.rejected and not report.acknowledged:
        reasons = Counter(reason for _, reason in report.rejected)
        top = reasons.most_common(1)[0][0]
        codes = ", ".join(f"{k} x{v}" for k, v in reasons.most_common())
        print(
            f"fedfort client {name}: none of its updates counted, all rejected ({codes}); "
            f"{rejection_hint(top)}",
            flush=True,
        )
        return 1
    return 0


def _dp_sgd_line(name: str, client: FederatedClient, policy: ClientPrivacyPolicy) -> str:
    """The client's own record-level DP-SGD epsilon: committed rounds and every release."""
    ledger, delta = client.dp_sgd_ledger(), policy.dp_sgd_delta
    budget = policy.dp_sgd_budget
    return (
        f"fedfort client {name}: DP-SGD epsilon (one of its records) {ledger.epsilon(delta):.4f} "
        f"over committed rounds, {ledger.released_epsilon(delta):.4f} over every release, at "
        f"delta {delta:g}" + (f" (budget {budget:g})" if budget is not None else " (no budget set)")
    )


def _secure_policy(args: argparse.Namespace, config: RunConfig) -> ClientPolicy:
    """The client's own floor for masking sessions: its config file, then its options."""
    from fedfort.client.secure import client_policy

    policy = client_policy(config.secure_aggregation)
    overrides = {
        "corrupt_fraction": args.secagg_corrupt_fraction,
        "min_clients": args.secagg_min_clients,
        "max_clients": args.secagg_max_clients,
    }
    return dataclasses.replace(policy, **{k: v for k, v in overrides.items() if v is not None})
