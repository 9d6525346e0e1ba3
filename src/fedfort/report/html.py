"""Render a run directory as a self-contained HTML compliance report.

The report is what an auditor files about one run: which guarantees it claimed, whether they
held, and the evidence. It is built from :func:`fedfort.monitoring.run_state.read_run` (the
checkpoints and the verified audit log) and the raw round records, and shows:

* the run: name, generation time (UTC), fedfort version, status, rounds, the SHA-256 of the
  full configuration (as recorded in the audit log's ``run_start`` entry) and the identity hash;
* a **compliance summary**: differential privacy (placement, accountant, noise, clipping,
  budget and epsilon spent, whether the budget held), secure aggregation, the aggregation rule
  with detection and reputation, key lifecycle events, the audit-chain verification (a failed
  check is shown in red at the top of the page as well), rollbacks and rejected updates;
* plots (:mod:`~fedfort.report.plots`, only those with data): accuracy and any federated
  evaluation metrics with every rollback marked, loss, epsilon spent against the budget
  (private runs), the reputation distribution (when reputation is on) and the updates flagged
  or rejected per round (when some were);
* the clients that were flagged, rejected or quarantined, the rejections themselves and the
  audit log's lifecycle events;
* the model versions, a per-round table and the full configuration as JSON.

The file carries everything inline: CSS in a ``<style>`` element and the plots as
``data:image/png;base64`` URIs. It has no script and no reference to another host, so it reads
the same offline and in ten years. Every piece of run data is escaped with :func:`html.escape`
(client ids and rejection details come from clients and may be hostile).

Number formats: accuracy and loss with 4 decimals (``0.5722``), epsilon spent with 6
significant digits (``2.99999``), target epsilon and delta in ``g`` format (``3``, ``1e-05``),
times as UTC ISO 8601 (``2026-12-07T21:04:05Z``). Hashes in tables show their first 12 hex
characters and open (a ``<details>`` element, no script) to the full value; long values wrap,
so the tables fit the page.

The page is assembled here, on the report kit every fedfort report shares:

* :mod:`~fedfort.report.markup`: escaping, number formats, lists and tables;
* :mod:`~fedfort.report.page`: the stylesheet, the page shell and its sections;
* :mod:`~fedfort.report.figures`: figures as embedded PNGs;

and from the compliance report's own modules:

* :mod:`~fedfort.report.compliance`: the compliance summary;
* :mod:`~fedfort.report.plots`: the plots.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Final

from fedfort import jsonio
from fedfort._version import __version__
from fedfort.audit import verify_run
from fedfort.errors import AuditError
from fedfort.monitoring.run_state import read_run, run_records
from fedfort.report.compliance import audit_line, audit_summary, compliance_section
from fedfort.report.data import data_section
from fedfort.report.evaluation import federated_section
from fedfort.report.markup import (
    MAX_TEXT,
    Cell,
    Raw,
    badge,
    digest,
    eps,
    esc,
    f4,
    join,
    number,
    summary,
    table,
    truncate,
    utc,
    when,
)
from fedfort.report.page import html_page, section
from fedfort.report.plots import plots_section

__all__ = ["REPORT_FILE", "build_report", "write_report"]

REPORT_FILE: Final = "report.html"

#: most recent rows listed individually (the counts always cover the whole run)
_MAX_REJECTIONS: Final = 200
_MAX_EVENTS: Final = 500


# --- reading ----------------------------------------------------------------------------------


def _read_state(run_dir: Path) -> dict[str, Any]:
    """:func:`read_run`, and its verification alone when a tampered entry is not even JSON."""
    try:
        return read_run(run_dir)
    except ValueError:
        # an audit entry body that does not decode (edited); the chain check names it
        state = read_run(run_dir, verify=False)
        try:
            result = verify_run(run_dir).to_dict()
            result["present"] = True
        except AuditError as exc:
            result = {"present": True, "ok": False, "problem": str(exc)}
        state["audit"] = result
        return state


def _run_start(events: list[dict[str, Any]]) -> dict[str, Any]:
    body = next((e["body"] for e in events if e.get("kind") == "run_start"), None)
    return body if isinstance(body, dict) else {}


def _config_hashes(config: dict[str, Any], start: dict[str, Any]) -> tuple[str | None, str]:
    """The config SHA-256 recorded in ``run_start``, and the one of the stored config.

    The stored config is ``RunConfig.to_dict()`` as the run saved it, so hashing it as
    :func:`fedfort.audit.config_sha256` does reproduces the recorded hash exactly, without
    re-validating it (a later fedfort that adds a config key would change the hash).
    """
    recorded = start.get("config_sha256")
    text = jsonio.dumps(config, sort_keys=True, separators=(",", ":"))
    computed = hashlib.sha256(text.encode()).hexdigest()
    return (str(recorded) if recorded is not None else None), computed


# --- tables -----------------------------------------------------------------------------------


def _clients_table(state: dict[str, Any]) -> str:
    suspects = [
        c
        for c in state.get("clients", [])
        if c.get("flagged") or c.get("rejected") or c.get("quarantined")
    ]
    if not suspects:
        return "<p>No client was flagged, rejected or quarantined.</p>"
    rows = [
        (
            c.get("id"),
            f4(c.get("reputation")),
            "yes" if c.get("quarantined") else "no",
            c.get("selected"),
            c.get("accepted"),
            c.get("flagged"),
            c.get("rejected"),
            c.get("last_round"),
        )
        for c in suspects
    ]
    headers = [
        "client",
        "reputation",
        "quarantined",
        "selected",
        "accepted",
        "flagged",
        "rejected",
        "last selected",
    ]
    return table(headers, rows, numeric=(1, 3, 4, 5, 6, 7))


def _rejections_table(state: dict[str, Any]) -> str:
    rejections: list[dict[str, Any]] = state.get("rejections", [])
    if not rejections:
        return "<p>No update was rejected.</p>"
    shown = rejections[-_MAX_REJECTIONS:]
    rows = [
        (
            x.get("round"),
            x.get("client_id"),
            x.get("reason"),
            truncate(str(x.get("detail", ""))),
        )
        for x in shown
    ]
    note = (
        ""
        if len(shown) == len(rejections)
        else f"<p class='muted'>The last {len(shown)} of {len(rejections)} listed.</p>"
    )
    return note + table(["round", "client", "reason", "detail"], rows, numeric=(0,))


def _events_table(state: dict[str, Any]) -> str:
    events: list[dict[str, Any]] = state.get("events", [])
    if not events:
        return "<p>No lifecycle event could be read from the audit log.</p>"
    shown = events[-_MAX_EVENTS:]
    rows = [
        (e.get("seq"), when(e.get("ts")), e.get("kind"), e.get("round"), summary(e.get("body")))
        for e in shown
    ]
    return table(["entry", "time (UTC)", "event", "round", "details"], rows, numeric=(0, 3))


def _models_table(state: dict[str, Any]) -> str:
    models: list[dict[str, Any]] = state.get("models", [])
    if not models:
        return "<p>No model version.</p>"
    operator: dict[int, list[str]] = {}
    for e in state.get("events", []):
        body = e.get("body") if isinstance(e.get("body"), dict) else {}
        if e.get("kind") == "rollback" and not body.get("automatic"):
            at = body.get("at_round", e.get("round"))
            if isinstance(at, int):
                operator.setdefault(at + 1, []).append(
                    f"trained from version {body.get('to_version')} (operator rollback: "
                    f"{body.get('reason')})"
                )
    rows = []
    for m in models:
        notes = list(operator.get(int(m.get("version") or 0), []))
        rb = m.get("rollback")
        if isinstance(rb, dict):
            notes.insert(
                0,
                f"automatic rollback: the model of version {rb.get('to_version')}, "
                f"not the candidate ({rb.get('reason')})",
            )
        if m.get("version") == 0:
            notes.insert(0, "initial model")
        rows.append(
            (
                m.get("version"),
                when(m.get("created")),
                digest(m.get("sha256")),
                f4(m.get("accuracy")),
                f4(m.get("loss")),
                m.get("participants"),
                truncate("; ".join(notes), 2 * MAX_TEXT) if notes else "",
            )
        )
    headers = ["version", "created (UTC)", "sha256", "accuracy", "loss", "participants", "note"]
    return table(headers, rows, numeric=(0, 3, 4, 5))


def _rounds_table(state: dict[str, Any]) -> str:
    rounds: list[dict[str, Any]] = state.get("rounds", [])
    if not rounds:
        return "<p>No committed round yet.</p>"
    rows = [
        (
            r.get("round"),
            f4(r.get("accuracy")),
            f4(r.get("loss")),
            r.get("participants"),
            r.get("selected"),
            r.get("dropped"),
            r.get("rejected"),
            r.get("flagged"),
            eps(r.get("epsilon")),
            None if number(r.get("duration_s")) is None else f"{float(r['duration_s']):.3f}",
        )
        for r in rounds
    ]
    headers = [
        "round",
        "accuracy",
        "loss",
        "participants",
        "selected",
        "dropped",
        "rejected",
        "flagged",
        "epsilon",
        "duration (s)",
    ]
    return table(headers, rows, numeric=tuple(range(10)))


# --- the page ---------------------------------------------------------------------------------


def _header(state: dict[str, Any], generated: str) -> str:
    run: dict[str, Any] = state.get("run", {})
    config: dict[str, Any] = state.get("config", {})
    start = _run_start(state.get("events", []))
    recorded, computed = _config_hashes(config, start)
    config_hash: Cell
    if recorded is None:
        config_hash = join(digest(computed), " (of the stored configuration; no run_start entry)")
    elif recorded == computed:
        config_hash = join(
            digest(recorded), " ", badge("matches", "ok"), " the configuration shown below"
        )
    else:
        config_hash = join(
            digest(recorded),
            " (audited) ",
            badge("differs", "bad"),
            " from the stored configuration's ",
            digest(computed),
        )
    version = run.get("fedfort_version")
    if version != __version__:
        version = f"{version} (report generated by fedfort {__version__})"
    status = str(run.get("status") or "unknown")
    audit: dict[str, Any] = state.get("audit", {})
    audit_cell: Cell = audit_summary(audit)
    if audit.get("present") and not audit.get("ok"):
        audit_cell = Raw(f'<span class="fail">{esc(audit_line(audit))}</span>')
    items: list[tuple[str, Cell]] = [
        ("run directory", run.get("dir")),
        ("generated (UTC)", generated),
        ("fedfort version", version),
        ("status", badge(status, "ok" if status == "finished" else "warn")),
        (
            "rounds committed / target",
            f"{run.get('rounds_committed')} / {run.get('rounds_target')}",
        ),
        ("configuration SHA-256", config_hash),
        ("identity hash", digest(run.get("identity") or start.get("identity_sha256"))),
        ("audit log", audit_cell),
    ]
    return table([], [(Raw(f"<b>{esc(k)}</b>"), v) for k, v in items])


def _render(state: dict[str, Any], records: list[dict[str, Any]], generated: str) -> str:
    run: dict[str, Any] = state.get("run", {})
    config: dict[str, Any] = state.get("config", {})
    audit: dict[str, Any] = state.get("audit", {})
    title = f"fedfort compliance report: {run.get('name')}"
    alert = ""
    if audit.get("present") and not audit.get("ok"):
        alert = (
            f'<div class="alert">Audit log {esc(audit_line(audit))}. The run\'s records '
            "below are not backed by a verified audit trail.</div>"
        )
    sections = [
        ("Run", _header(state, generated)),
        ("Compliance summary", compliance_section(state, records, config)),
        ("Data", data_section(config)),
        ("Plots", plots_section(state, records)),
        ("Federated evaluation", federated_section(records)),
        ("Clients flagged, rejected or quarantined", _clients_table(state)),
        ("Rejected updates", _rejections_table(state)),
        ("Audit lifecycle events", _events_table(state)),
        ("Model versions", _models_table(state)),
        ("Per-round measurements", _rounds_table(state)),
        (
            "Configuration",
            f"<pre>{esc(jsonio.dumps(config, indent=2, sort_keys=True))}</pre>",
        ),
    ]
    body = [
        f'<p class="muted">Generated {esc(generated)} by fedfort {esc(__version__)}.</p>',
        alert,
    ]
    for heading, content in sections:
        if content is not None:  # a section the run has no data for is left out
            body += section(heading, content)
    return html_page(title, body)


def build_report(run_dir: str | Path) -> str:
    """The HTML compliance report of the run in ``run_dir`` (see the module docstring).

    Raises :class:`~fedfort.errors.CheckpointError` when ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    state = _read_state(run_dir)
    _, records = run_records(run_dir)
    generated = utc(time.time()) or ""
    return _render(state, records, generated)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN/report.html``); return it."""
    path = Path(run_dir) / REPORT_FILE if out is None else Path(out)
    text = build_report(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
