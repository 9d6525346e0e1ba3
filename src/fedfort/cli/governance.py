"""``fedfort audit``, ``fedfort model``, ``fedfort dashboard`` and ``fedfort report``.

- ``fedfort audit verify RUN`` checks the audit log's chain, signatures, signed head and
  witnesses (``--public-key`` pins the auditor's key, ``--head`` checks a head exported
  earlier) and names the first bad entry (exit status 1 when the check fails);
  ``fedfort audit export RUN`` writes it as JSONL.
- ``fedfort model list|show|export|rollback RUN`` works on the run's model versions;
  ``export`` writes one as a PyTorch, safetensors or ONNX file (:mod:`fedfort.run.export`).
- ``fedfort dashboard RUN`` serves the live dashboard of a run directory.
- ``fedfort report RUN`` writes the self-contained HTML compliance report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedfort import jsonio
from fedfort.cli._format import number
from fedfort.errors import ConfigError

if TYPE_CHECKING:
    from fedfort.audit.head import SignedHead

__all__ = ["add_parsers", "run"]

COMMANDS = ("audit", "model", "dashboard", "report")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the governance commands to the ``fedfort`` sub-parsers."""
    audit = sub.add_parser("audit", help="verify or export a run's audit log").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify",
        help="check the chain, the signatures and the witness; name the first bad entry",
        description="Verify RUN/audit.sqlite against the pinned audit public key "
        "(RUN/audit-key.pub unless --key), its signed head (in audit.sqlite and "
        "RUN/audit-head.json), the checkpoints in RUN/checkpoints.sqlite and, with --head, a "
        "head exported earlier. Exit status 1 when it fails.",
    )
    verify.add_argument("run", help="run directory")
    verify.add_argument(
        "--key", "--public-key", dest="key", help="audit public key file (hex) held by the auditor"
    )
    verify.add_argument(
        "--head",
        help="a head exported earlier: a copy of RUN/audit-head.json (or a webhook's head) or "
        "SEQ:HASH as printed by an earlier verify",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    export = audit.add_parser("export", help="write the audit log as JSON lines")
    export.add_argument("run", help="run directory")
    export.add_argument("--out", help="output file (default RUN/audit.jsonl; - for stdout)")

    model = sub.add_parser("model", help="the run's model versions").add_subparsers(
        dest="model_command", required=True
    )
    mlist = model.add_parser("list", help="every committed version with its hash and metrics")
    mlist.add_argument("run", help="run directory")
    mlist.add_argument("--json", action="store_true", help="print JSON")
    show = model.add_parser("show", help="one version in detail (its hash is checked)")
    show.add_argument("run", help="run directory")
    show.add_argument("--version", type=int, required=True, help="version (= round)")
    mexport = model.add_parser(
        "export",
        help="write a version as a PyTorch, safetensors or ONNX file (signature verified)",
        description="Write a committed version of the run's model, after verifying its "
        "checkpoint with the run's audit key: pt (a state_dict for model.load_state_dict("
        "torch.load(PATH))), safetensors, onnx (dynamic batch) or npy (the flat parameter "
        "vector). Nothing is written to the run's audit log or checkpoints.",
    )
    mexport.add_argument("run", help="run directory")
    mexport.add_argument(
        "--format",
        choices=["pt", "safetensors", "onnx", "npy"],
        help="file format (default: the suffix of --out, else pt)",
    )
    mexport.add_argument(
        "--version", default="latest", help="version (= round) or latest (default %(default)s)"
    )
    mexport.add_argument(
        "--out", help="output file (default RUN/export/model-vN.FORMAT; a suffix given is kept)"
    )
    rollback = model.add_parser(
        "rollback",
        help="roll the run back to a version (audited now, applied on --resume)",
    )
    rollback.add_argument("run", help="run directory")
    rollback.add_argument("--to", type=int, required=True, help="version to continue from")
    rollback.add_argument("--reason", required=True, help="why (recorded in the audit log)")

    dash = sub.add_parser("dashboard", help="serve the live dashboard of a run directory")
    dash.add_argument("run", help="run directory")
    dash.add_argument("--address", default="127.0.0.1:8321", help="host:port (%(default)s)")
    dash.add_argument("--config", help="TOML whose [access] puts the dashboard behind tokens")

    report = sub.add_parser("report", help="write the HTML compliance report of a run")
    report.add_argument("run", help="run directory")
    report.add_argument("--out", help="output file (default RUN/report.html)")


def _head(text: str | None) -> tuple[int, str] | SignedHead | None:
    """``--head``: a head file (``audit-head.json`` as exported) or ``SEQ:HASH``."""
    if text is None:
        return None
    seq, sep, digest = text.partition(":")
    if sep and seq.isdigit() and len(digest) == 64:
        return int(seq), digest.lower()
    path = Path(text)
    if path.is_file():
        from fedfort.audit.head import read_head_file

        head = read_head_file(path)
        assert head is not None
        return head
    raise ConfigError(
        f"--head must be a head file (a copy of audit-head.json) or SEQ:HASH (64 hex "
        f"characters), got {text!r}"
    )


def _audit(args: argparse.Namespace) -> int:
    from fedfort.audit import export_jsonl, load_public_key, verify_run

    if args.audit_command == "verify":
        key = None if args.key is None else load_public_key(Path(args.key))
        result = verify_run(args.run, public_key=key, head=_head(args.head))
        print(
            jsonio.dumps(result.to_dict(), indent=2, non_finite="null")
            if args.json
            else result.describe()
        )
        return 0 if result.ok else 1
    out = args.out or str(Path(args.run) / "audit.jsonl")
    if out == "-":
        out = "/dev/stdout"
    count = export_jsonl(args.run, out)
    if args.out != "-":
        print(f"wrote {count} entries to {out}")
    return 0


def _model(args: argparse.Namespace) -> int:
    from fedfort.server.versions import ModelRegistry

    if args.model_command == "export":
        from fedfort.run.export import export_model, format_of

        fmt = format_of(args.format, args.out)
        done = export_model(args.run, fmt, version=args.version, out=args.out)
        print(
            f"wrote version {done.version} (sha256 {done.sha256[:16]}, signature verified) as "
            f"{fmt} to {done.path}"
        )
        if done.preprocessing is not None:
            print(
                f"the model takes rows through the run's feature transform: apply "
                f"{done.preprocessing} to new rows first"
            )
        return 0
    with ModelRegistry(args.run) as registry:
        if args.model_command == "list":
            versions = registry.versions()
            if args.json:
                print(jsonio.dumps([v.to_dict() for v in versions], indent=2, non_finite="null"))
                return 0
            print(f"{'version':>7}  {'sha256':<16}  {'accuracy':>8}  {'loss':>8}  note")
            for v in versions:
                note = ""
                if v.rollback:
                    note = f"rolled back to v{v.rollback.get('to_version')}"
                print(
                    f"{v.version:>7}  {v.sha256[:16]}  {number(v.accuracy, 4, '-'):>8}  "
                    f"{number(v.loss, 4, '-'):>8}  {note}"
                )
            pending = registry.pending()
            if pending is not None:
                print(
                    f"pending: rollback to v{pending['to_version']} on resume ({pending['reason']})"
                )
            return 0
        if args.model_command == "show":
            print(jsonio.dumps(registry.show(args.version), indent=2, non_finite="null"))
            return 0
        from fedfort.audit.rollback_request import request_rollback

        request = request_rollback(registry, args.to, args.reason)
        print(
            f"rollback to version {request['to_version']} filed and audited; it is applied "
            f"when the run resumes (fedfort simulate --resume --out {args.run})"
        )
        return 0


def run(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`."""
    if args.command == "audit":
        return _audit(args)
    if args.command == "model":
        return _model(args)
    if args.command == "dashboard":
        from fedfort.access.setup import serve_dashboard

        access = None
        if args.config:
            from fedfort.config import load_config

            access = load_config(args.config).access
        serve_dashboard(args.run, args.address, access=access)
        return 0
    from fedfort.report import write_report

    path = write_report(args.run, args.out)
    print(f"wrote {path}", file=sys.stdout)
    return 0
