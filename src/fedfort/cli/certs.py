"""``fedfort certs init|issue|revoke``: the federation's certificate authority for mutual TLS."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from fedfort.errors import FedfortError

__all__ = ["add_parsers", "run"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``certs`` and its subcommands to the ``fedfort`` sub-parsers."""
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
        description="Issue one certificate (--name), the client certificates of a federation's "
        "[clients] names (--config RUN.toml, or --names a,b,c), or N client certificates "
        "client-000, ... (--clients N), signed by the CA in --dir, into --out together with "
        "ca.pem (and, for a server, crl.pem): what that party needs, never the CA's key. Use an "
        "--out other than --dir: a server refuses to start beside ca.key.",
    )
    cissue.add_argument("--dir", required=True, help="CA directory")
    cissue.add_argument("--out", required=True, help="output directory")
    who = cissue.add_mutually_exclusive_group(required=True)
    who.add_argument("--name", help="certificate name (its common name)")
    who.add_argument("--clients", type=int, metavar="N", help="issue N client certificates")
    who.add_argument(
        "--names", metavar="A,B,C", help="issue client certificates for these client names"
    )
    who.add_argument(
        "--config",
        metavar="RUN.toml",
        help="issue client certificates for the run's [clients] names (client-000... by count)",
    )
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


def run(args: argparse.Namespace) -> int:
    """``fedfort certs init|issue|revoke``."""
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
        clients = _clients(args)
        if clients is not None:
            if args.role == "server":
                raise FedfortError("client certificates are issued by name; drop --role server")
            if args.host:
                raise FedfortError("--host applies to server certificates only")
            issued = pki.issue_clients(Path(args.dir), out, clients, days=args.days)
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
        if clients is None and args.role == "server":
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


def _clients(args: argparse.Namespace) -> int | list[str] | None:
    """The client certificates ``certs issue`` is asked for: a count, names, or ``None``
    (one certificate, ``--name``)."""
    if args.clients is not None:
        return int(args.clients)
    if args.names is not None:
        names = [n.strip() for n in str(args.names).split(",") if n.strip()]
        if not names:
            raise FedfortError("--names lists no client names: give e.g. --names site-a,site-b")
        return names
    if args.config is not None:
        from fedfort.config import load_config

        return load_config(args.config).clients.ids()
    return None
