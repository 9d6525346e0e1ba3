"""``fedfort access`` (tokens, the matrix) and ``fedfort operator ACTION`` (the API client).

- ``fedfort access token issue --store S --name N --role R [--ttl 90d] [--scope A ...]``
  prints a new token once (keep it in a secret store; only its hash is kept);
- ``fedfort access token revoke --store S ID`` and ``fedfort access token list --store S``;
- ``fedfort access matrix`` prints the permission matrix;
- ``fedfort operator ACTION --url URL [--ca ca.pem]`` calls the operator API with the token of
  ``$FEDFORT_TOKEN`` or ``--token-file`` (never on the command line, where ``ps`` shows it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from fedfort import jsonio
from fedfort.errors import ConfigError

__all__ = ["add_parsers", "run_access", "run_operator"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``access`` and ``operator`` to the ``fedfort`` sub-parsers."""
    from fedfort.access.client import ACTION_ROUTES
    from fedfort.access.roles import ACTIONS, ROLES

    access = sub.add_parser("access", help="access control: tokens and the permission matrix")
    acc = access.add_subparsers(dest="access_command", required=True)
    token = acc.add_parser("token", help="issue, revoke or list bearer tokens").add_subparsers(
        dest="token_command", required=True
    )
    issue = token.add_parser("issue", help="create a token (printed once)")
    issue.add_argument("--store", required=True, help="token store (access.tokens)")
    issue.add_argument("--name", required=True, help="who or what holds it (e.g. prometheus)")
    issue.add_argument("--role", required=True, choices=ROLES)
    issue.add_argument("--ttl", default="90d", help="lifetime, e.g. 90d, 12h (default %(default)s)")
    issue.add_argument(
        "--scope", action="append", choices=ACTIONS, help="narrow to these actions (repeat)"
    )
    revoke = token.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("--store", required=True)
    revoke.add_argument("id", help="the token's id (fft_<id>_...)")
    tlist = token.add_parser("list", help="every token: id, name, role, expiry, revocation")
    tlist.add_argument("--store", required=True)
    tlist.add_argument("--json", action="store_true")
    acc.add_parser("matrix", help="print the permission matrix (Markdown)")

    op = sub.add_parser(
        "operator",
        help="call the operator API of a running federation",
        description="Authenticate with $FEDFORT_TOKEN or --token-file and take ACTION.",
    )
    op.add_argument("action", choices=sorted(ACTION_ROUTES))
    op.add_argument("--url", required=True, help="operator API, e.g. https://fl.example.org:8443")
    op.add_argument("--ca", help="the federation's ca.pem (to verify the server)")
    op.add_argument("--token-file", help="file holding the token (default: $FEDFORT_TOKEN)")
    op.add_argument("--version", type=int, help="rollback: version to continue from")
    op.add_argument("--reason", help="rollback: why (recorded in the audit log)")
    op.add_argument("--client", help="revoke: client id")
    op.add_argument("--serial", type=lambda v: int(v, 0), help="revoke: certificate serial")
    op.add_argument("--out", help="write the answer here instead of stdout")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def run_access(args: argparse.Namespace) -> int:
    """``fedfort access``."""
    from fedfort.access.roles import matrix_markdown
    from fedfort.access.tokens import TokenStore, parse_duration

    if args.access_command == "matrix":
        print(matrix_markdown(), end="")
        return 0
    with TokenStore(args.store) as store:
        if args.token_command == "issue":
            token, info = store.issue(
                args.name, args.role, ttl_s=parse_duration(args.ttl), scopes=args.scope
            )
            print(token)
            print(
                f"token {info.id} for {info.name}: role {info.role}, expires "
                f"{_when(info.expires)} UTC (shown once; only its hash is stored)",
                file=sys.stderr,
            )
            return 0
        if args.token_command == "revoke":
            info = store.revoke(args.id)
            print(f"token {info.id} ({info.name}) revoked at {_when(info.revoked)} UTC")
            return 0
        tokens = store.list()
        if args.json:
            print(jsonio.dumps([t.to_dict() for t in tokens], indent=2))
            return 0
        for t in tokens:
            scopes = ",".join(sorted(t.scopes)) if t.scopes is not None else "(role)"
            print(
                f"{t.id}  {t.name:<20} {t.role:<9} expires {_when(t.expires)}  "
                f"revoked {_when(t.revoked)}  scopes {scopes}"
            )
    return 0


def run_operator(args: argparse.Namespace) -> int:
    """``fedfort operator ACTION``."""
    from fedfort.access.client import OperatorClient

    if args.token_file:
        try:
            token: str | None = Path(args.token_file).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the token file {args.token_file}: {exc}") from exc
    else:
        token = os.environ.get("FEDFORT_TOKEN")
    body: dict[str, Any] = {}
    if args.action == "rollback":
        if args.version is None or not args.reason:
            raise ConfigError("rollback needs --version and --reason")
        body = {"version": args.version, "reason": args.reason}
    elif args.action == "revoke":
        body = {"client": args.client} if args.client else {"serial": args.serial}
    status, payload = OperatorClient(args.url, token, ca=args.ca).call(args.action, body)
    if args.out:
        Path(args.out).write_bytes(payload)
        print(f"wrote {len(payload)} bytes to {args.out}")
    else:
        sys.stdout.write(payload.decode("utf-8", "replace").rstrip("\n") + "\n")
    return 0 if status in (200, 202) else 1
