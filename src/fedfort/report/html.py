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
* plots: accuracy, loss, epsilon spent against the budget (private runs), the reputation
  distribution (when reputation is on) and detections per round;
* the clients that were flagged, rejected or quarantined, the rejections themselves and the
  audit log's lifecycle events;
* the model versions, a per-round table and the full configuration as JSON.

The file carries everything inline: CSS in a ``<style>`` element and the plots as
``data:image/png;base64`` URIs. It has no script and no reference to another host, so it reads
the same offline and in ten years. Every piece of run data is escaped with :func:`html.escape`
(client ids and rejection details come from clients and may be hostile).

Number formats: accuracy and loss with 4 decimals (``0.5722``), epsilon spent with 6
significant digits (``2.99999``), target epsilon and delta in ``g`` format (``3``, ``1e-05``),
times as UTC ISO 8601.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedfort import __version__
from fedfort.audit import verify_run
from fedfort.errors import AuditError
from fedfort.monitoring.run_state import read_run, run_records

__all__ = ["REPORT_FILE", "build_report", "write_report"]

REPORT_FILE: Final = "report.html"

#: audit entry kinds that belong to the key lifecycle
KEY_EVENT_KINDS: Final = (
    "audit_key_rotated",
    "server_key_rotated",
    "client_enrolled",
    "client_key_rotated",
    "client_revoked",
)
#: PNG resolution: readable on screen and in print, small enough to keep the file light
_DPI: Final = 90
_FIGSIZE: Final = (6.4, 3.0)
#: most recent rows listed individually (the counts always cover the whole run)
_MAX_REJECTIONS: Final = 200
_MAX_EVENTS: Final = 500
#: longest free-text value shown in a cell (details and event bodies are diagnostics)
_MAX_TEXT: Final = 240
_DASH: Final = "\u2014"

_CSS: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 78rem; padding: 0 1rem; color: #1d1d1d;
       line-height: 1.45; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .3rem; margin-bottom: .4rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #e2e2e2; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .28rem .55rem; text-align: left;
         vertical-align: top; }
th { background: #f0f0f0; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
            font-size: .85rem; }
code { overflow-wrap: anywhere; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: .8rem; overflow-x: auto; }
ul.kv { margin: 0; padding-left: 1.1rem; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: .7rem;
         font-weight: 600; font-size: .85rem; white-space: nowrap; }
.ok { background: #dff3e3; color: #14532d; }
.warn { background: #fff3cd; color: #6b4e00; }
.bad { background: #fde2e1; color: #b00020; }
.info { background: #e8eef8; color: #1e3a6e; }
.alert { border: 3px solid #b00020; background: #fde2e1; color: #b00020; padding: .8rem 1rem;
         font-weight: 600; margin: 1rem 0; }
.muted { color: #666; }
.fail { color: #b00020; font-weight: 700; }
figure { margin: .8rem 0; display: inline-block; vertical-align: top; }
figcaption { font-size: .85rem; color: #555; }
img { max-width: 100%; height: auto; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; }
               figure, tr { break-inside: avoid; } }
"""


# --- cells and formatting -------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    """Markup built by this module from escaped parts; any other value is escaped."""

    html: str


Cell = _Raw | str | int | float | None


def _esc(value: Cell) -> str:
    if isinstance(value, _Raw):
        return value.html
    if value is None:
        return _DASH
    return html.escape(str(value), quote=True)


def _join(*parts: Cell) -> _Raw:
    return _Raw("".join(_esc(p) for p in parts))


def _code(value: Cell) -> _Raw:
    return _Raw(f"<code>{_esc(value)}</code>")


def _badge(text: str, level: str) -> _Raw:
    return _Raw(f'<span class="badge {level}">{_esc(text)}</span>')


def _truncate(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _f4(value: Any) -> str | None:
    """Accuracy and loss: 4 decimals."""
    x = _number(value)
    return None if x is None else f"{x:.4f}"


def _eps(value: Any) -> str | None:
    """Epsilon spent: 6 significant digits (shows a spend just below the budget as such)."""
    x = _number(value)
    return None if x is None else f"{x:.6g}"


def _g(value: Any) -> str | None:
    x = _number(value)
    return None if x is None else f"{x:g}"


def _utc(ts: Any) -> str | None:
    x = _number(ts)
    if x is None or not math.isfinite(x):
        return None
    return datetime.fromtimestamp(x, UTC).isoformat(timespec="seconds")


def _summary(body: Any) -> str:
    """A compact one-line rendering of an audit entry body."""
    if not isinstance(body, dict):
        return _truncate(str(body))
    parts = []
    for key, value in sorted(body.items()):
        shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        parts.append(f"{key}={shown}")
    return _truncate(", ".join(parts))


def _kv(items: Iterable[tuple[str, Cell]]) -> _Raw:
    """A bullet list of ``label: value`` lines."""
    lines = [f"<li><b>{_esc(label)}</b>: {_esc(value)}</li>" for label, value in items]
    return _Raw('<ul class="kv">' + "".join(lines) + "</ul>")


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[Cell]], numeric: Sequence[int] = ()
) -> str:
    """An HTML table; ``numeric`` columns are right-aligned."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    body = []
    for row in rows:
        cells = [
            f'<td class="num">{_esc(c)}</td>' if i in numeric else f"<td>{_esc(c)}</td>"
            for i, c in enumerate(row)
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


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


def _measure(record: dict[str, Any], stage: str) -> dict[str, Any]:
    value = record.get("measurements", {}).get(stage)
    return value if isinstance(value, dict) else {}


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
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    computed = hashlib.sha256(text.encode()).hexdigest()
    return (str(recorded) if recorded is not None else None), computed


# --- compliance summary -----------------------------------------------------------------------

_PLACEMENT: Final = {
    "central": (
        "Central DP: the server clips every update and adds the noise, so the noise does not "
        "hide an individual update from the server itself; the guarantee covers everyone who "
        "sees the models (other clients, users of the model), not the server."
    ),
    "distributed": (
        "Distributed DP: every client adds its share of the noise and the sum carries all of "
        "it. Against the server the guarantee holds only when it sees the sum alone (secure "
        "aggregation); otherwise each update it sees carries only a share of the noise."
    ),
    "local": (
        "Local DP: every client makes its own update private before sending it, so the "
        "guarantee (per client and round) holds against the server as well."
    ),
}


def _privacy_row(
    state: dict[str, Any], records: list[dict[str, Any]], config: dict[str, Any]
) -> tuple[str, _Raw, _Raw]:
    p = state.get("privacy")
    if p is None:
        return (
            "Differential privacy",
            _badge("off", "info"),
            _Raw(
                "<p>No differential privacy: the updates and the released models carry no "
                "(epsilon, delta) guarantee.</p>"
            ),
        )
    pcfg: dict[str, Any] = config.get("privacy", {})
    measures = [_measure(r, "privacy") for r in records]
    last: dict[str, Any] = next(
        (m for m in reversed(measures) if m.get("noise_multiplier") is not None), {}
    )
    mode = str(p.get("mode") or "none")
    target = _number(p.get("target_epsilon"))
    spent = _number(p.get("epsilon_spent"))
    placement = mode if mode != "none" else "no user-level DP"
    items: list[tuple[str, Cell]] = [
        ("placement", placement + (" + DP-SGD at the clients" if p.get("dp_sgd") else ""))
    ]
    badge = _badge("on", "info")
    if mode != "none":
        noise = last.get("noise_multiplier", pcfg.get("noise_multiplier"))
        clip: Cell = _g(pcfg.get("clip_norm"))
        if pcfg.get("adaptive_clipping"):
            clip = (
                f"{clip} (initial; adaptive, tracking quantile {_g(pcfg.get('target_quantile'))})"
            )
        releases = last.get("releases")
        items += [
            ("accountant", last.get("accountant", pcfg.get("accountant"))),
            ("noise multiplier", _g(noise)),
            ("clipping norm (L2)", clip),
            ("client sampling", pcfg.get("sampling")),
            ("target epsilon", _g(target) if target is not None else "none (no budget set)"),
            ("delta", _g(p.get("delta"))),
            (
                "epsilon spent",
                None
                if spent is None
                else f"{spent:.6g}" + ("" if releases is None else f" after {releases} releases"),
            ),
        ]
        if mode == "local":
            items += [
                ("local mechanism", pcfg.get("local_mechanism")),
                ("local epsilon per round", _g(pcfg.get("local_epsilon"))),
            ]
        if target is not None and spent is not None:
            held = spent <= target * (1 + 1e-9)
            items.append(
                ("budget respected", _badge("yes" if held else "no", "ok" if held else "bad"))
            )
            badge = _badge("within budget" if held else "budget exceeded", "ok" if held else "bad")
        else:
            items.append(("budget respected", "no budget set" if target is None else _DASH))
    if p.get("dp_sgd"):
        dp_sgd: dict[str, Any] = pcfg.get("dp_sgd", {})
        client_eps = [
            x for m in measures if (x := _number(m.get("dp_sgd_epsilon_max"))) is not None
        ]
        items += [
            ("DP-SGD noise multiplier", _g(dp_sgd.get("noise_multiplier"))),
            ("DP-SGD max gradient norm", _g(dp_sgd.get("max_grad_norm"))),
            ("DP-SGD delta", _g(dp_sgd.get("delta"))),
            ("DP-SGD largest client epsilon", _eps(max(client_eps)) if client_eps else None),
        ]
    notes = [_PLACEMENT[mode]] if mode in _PLACEMENT else []
    if mode == "distributed":
        on = state.get("secure_aggregation", "none") != "none"
        notes.append(
            "Secure aggregation is on in this run."
            if on
            else "Secure aggregation is off in this run."
        )
    if p.get("dp_sgd"):
        notes.append(
            "DP-SGD (sample-level) protects the training samples of each client; each client "
            "reports its own epsilon."
        )
    text = "".join(f"<p>{_esc(n)}</p>" for n in notes)
    return "Differential privacy", badge, _Raw(_kv(items).html + text)


def _secagg_row(state: dict[str, Any], records: list[dict[str, Any]]) -> tuple[str, _Raw, _Raw]:
    mode = str(state.get("secure_aggregation") or "none")
    if mode == "none":
        return (
            "Secure aggregation",
            _badge("off", "info"),
            _Raw("<p>Off: the server sees every individual update.</p>"),
        )
    rounds = state.get("rounds", [])
    # a secure round's aggregate names a secure rule, or (under DP) records the protocol
    secured = [
        r
        for r in records
        if str((agg := _measure(r, "aggregate")).get("rule", "")).startswith("secure_")
        or "protocol_dropped" in agg
    ]
    dropouts = sum(int(r.get("secagg_dropouts") or 0) for r in rounds)
    aborted = sum(len(r.get("discarded_attempts", [])) for r in records)
    last = next(
        (m for r in reversed(records) if "threshold" in (m := _measure(r, "aggregate"))), {}
    )
    items: list[tuple[str, Cell]] = [
        ("mode", mode),
        ("rounds aggregated securely", f"{len(secured)} of {len(rounds)}"),
        ("protocol dropouts (total)", dropouts),
        ("discarded round attempts", aborted),
    ]
    if "threshold" in last:
        items.append(("threshold t", last.get("threshold")))
    if "degree" in last:
        items.append(("graph degree k", last.get("degree")))
    note = "<p>The server learns the sum of each round's updates and nothing about any one.</p>"
    level = "ok" if len(secured) == len(rounds) else "warn"
    return "Secure aggregation", _badge(mode, level), _Raw(_kv(items).html + note)


def _defense_row(state: dict[str, Any], config: dict[str, Any]) -> tuple[str, _Raw, _Raw]:
    defense: dict[str, Any] = config.get("defense", {})
    detection: dict[str, Any] = config.get("detection", {})
    reputation: dict[str, Any] = config.get("reputation", {})
    rounds = state.get("rounds", [])
    applied = sorted({str(r["aggregation"]) for r in rounds if r.get("aggregation")})
    rule = str(state.get("aggregation") or defense.get("aggregator") or "fedavg")
    items: list[tuple[str, Cell]] = [
        ("aggregation rule", rule),
        ("rule applied per round", ", ".join(applied) if applied else None),
        ("tolerated malicious clients (f)", defense.get("num_byzantine")),
    ]
    if defense.get("norm_bound") is not None:
        items.append(("norm bound", _g(defense.get("norm_bound"))))
    if defense.get("robust_lr_threshold") is not None:
        items.append(("robust learning rate threshold", defense.get("robust_lr_threshold")))
    if detection.get("enabled"):
        components = ", ".join(str(c) for c in detection.get("components", []))
        items.append(
            (
                "anomaly detection",
                f"on: action {detection.get('action')}, threshold "
                f"{_g(detection.get('threshold'))}, components {components}",
            )
        )
    else:
        items.append(("anomaly detection", "off"))
    if reputation.get("enabled"):
        items.append(
            (
                "reputation",
                f"on: penalty {_g(reputation.get('penalty'))}, reward "
                f"{_g(reputation.get('reward'))}, quarantine below "
                f"{_g(reputation.get('quarantine_threshold'))} for "
                f"{reputation.get('quarantine_rounds')} rounds",
            )
        )
    else:
        items.append(("reputation", "off"))
    flagged = sum(int(r.get("flagged") or 0) for r in rounds)
    quarantined = sum(1 for c in state.get("clients", []) if c.get("quarantined"))
    items += [
        ("flagged updates (total)", flagged),
        ("clients quarantined now", quarantined),
    ]
    return "Aggregation and defences", _badge(rule, "info"), _kv(items)


def _key_row(state: dict[str, Any]) -> tuple[str, _Raw, _Raw]:
    events = [e for e in state.get("events", []) if e.get("kind") in KEY_EVENT_KINDS]
    keys = state.get("audit", {}).get("keys") or []
    signing = _Raw(
        "<p>Audit signing key(s): "
        + (", ".join(_code(k).html for k in keys) if keys else _DASH)
        + "</p>"
    )
    if not events:
        return (
            "Key lifecycle",
            _badge("none recorded", "info"),
            _Raw("<p>No key lifecycle events recorded.</p>" + signing.html),
        )
    rows = [
        (e.get("seq"), _utc(e.get("ts")), e.get("kind"), e.get("round"), _summary(e.get("body")))
        for e in events
    ]
    body = _table(["entry", "time (UTC)", "event", "round", "details"], rows, numeric=(0, 3))
    return "Key lifecycle", _badge(f"{len(events)} events", "info"), _Raw(body + signing.html)


def _audit_line(audit: dict[str, Any]) -> str:
    """One sentence on the audit check (plain text)."""
    if not audit.get("present"):
        return f"no audit log: {audit.get('problem') or 'the run keeps none'}"
    if audit.get("ok"):
        return (
            f"verified: {audit.get('entries')} entries, head entry {audit.get('head_seq')} "
            f"with hash {audit.get('head_hash')}"
        )
    bad = audit.get("bad_seq")
    where = "" if bad is None else f" at entry {bad}"
    kind = f" ({audit['bad_kind']})" if audit.get("bad_kind") else ""
    return f"FAILED{where}{kind}: {audit.get('problem')}"


def _audit_row(audit: dict[str, Any]) -> tuple[str, _Raw, _Raw]:
    if not audit.get("present"):
        return "Audit chain", _badge("absent", "warn"), _Raw(f"<p>{_esc(_audit_line(audit))}</p>")
    if audit.get("ok"):
        items: list[tuple[str, Cell]] = [
            ("result", "verified (hash chain, signatures and the checkpoint witness)"),
            ("entries", audit.get("entries")),
            ("head entry", audit.get("head_seq")),
            ("head hash", _code(audit.get("head_hash"))),
            ("signing key id(s)", ", ".join(str(k) for k in audit.get("keys") or [])),
            ("pinned public key", audit.get("public_key_file")),
        ]
        head = f"{audit.get('head_seq')}:{audit.get('head_hash')}"
        note = (
            "<p>Publish the head and check it later with "
            f"<code>fedfort audit verify RUN --head {_esc(head)}</code>.</p>"
        )
        return "Audit chain", _badge("verified", "ok"), _Raw(_kv(items).html + note)
    text = f'<p class="alert">Audit log {_esc(_audit_line(audit))}</p>'
    if audit.get("entries") is not None:
        text += _kv([("entries that verified before it", audit.get("entries"))]).html
    return "Audit chain", _badge("FAILED", "bad"), _Raw(text)


def _rollbacks(state: dict[str, Any]) -> list[tuple[int | None, str, str]]:
    """(round, kind, description) of every rollback, request and pending rollback."""
    found: list[tuple[int | None, str, str]] = []
    for r in state.get("rounds", []):
        rb = r.get("rollback")
        if isinstance(rb, dict):
            found.append(
                (
                    r.get("round"),
                    "automatic",
                    f"committed version {rb.get('to_version')} instead of the candidate "
                    f"(accuracy {_f4(rb.get('rejected_accuracy'))}): {rb.get('reason')}",
                )
            )
    for e in state.get("events", []):
        body = e.get("body") if isinstance(e.get("body"), dict) else {}
        if e.get("kind") == "rollback" and not body.get("automatic"):
            found.append(
                (
                    e.get("round"),
                    "operator",
                    f"rolled back to version {body.get('to_version')} at {_utc(e.get('ts'))}: "
                    f"{body.get('reason')}",
                )
            )
        elif e.get("kind") == "rollback_requested":
            found.append(
                (
                    e.get("round"),
                    "operator request",
                    f"rollback to version {body.get('to_version')} requested at "
                    f"{_utc(e.get('ts'))}: {body.get('reason')}",
                )
            )
    pending = state.get("pending_rollback")
    if isinstance(pending, dict):
        found.append(
            (
                pending.get("at_round"),
                "pending",
                f"rollback to version {pending.get('to_version')} is applied when the run "
                f"resumes: {pending.get('reason')}",
            )
        )
    return found


def _rollback_row(state: dict[str, Any]) -> tuple[str, _Raw, _Raw]:
    found = _rollbacks(state)
    if not found:
        return "Rollbacks", _badge("none", "ok"), _Raw("<p>No rollback.</p>")
    rows = [(r, kind, _truncate(text, 2 * _MAX_TEXT)) for r, kind, text in found]
    body = _table(["round", "kind", "what and why"], rows, numeric=(0,))
    return "Rollbacks", _badge(str(len(found)), "warn"), _Raw(body)


def _rejection_row(state: dict[str, Any]) -> tuple[str, _Raw, _Raw]:
    counts: dict[str, int] = state.get("rejection_counts", {})
    refused = sum(1 for e in state.get("events", []) if e.get("kind") == "update_refused")
    total = sum(counts.values())
    items: list[tuple[str, Cell]] = [(reason, n) for reason, n in sorted(counts.items())]
    if refused:
        items.append(("refused at the transport gate", refused))
    if not items:
        return "Rejected updates", _badge("none", "ok"), _Raw("<p>No update was rejected.</p>")
    return "Rejected updates", _badge(str(total + refused), "warn"), _kv(items)


def _compliance(
    state: dict[str, Any], records: list[dict[str, Any]], config: dict[str, Any]
) -> str:
    rows = [
        _privacy_row(state, records, config),
        _secagg_row(state, records),
        _defense_row(state, config),
        _key_row(state),
        _audit_row(state.get("audit", {})),
        _rollback_row(state),
        _rejection_row(state),
    ]
    return _table(["control", "status", "details"], rows)


# --- plots ------------------------------------------------------------------------------------


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(title: str, caption: str, fig: Figure) -> str:
    data = _png(fig)
    return (
        f'<figure><img alt="{_esc(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _line_plot(
    rows: list[dict[str, Any]], key: str, label: str, color: str, unit_interval: bool
) -> Figure | None:
    points = [(r["round"], x) for r in rows if (x := _number(r.get(key))) is not None]
    if not points:
        return None
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, color=color)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    if unit_interval:
        ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"{label} per round")
    return fig


def _epsilon_plot(
    rows: list[dict[str, Any]], records: list[dict[str, Any]], target: float | None
) -> Figure | None:
    points = [(r["round"], x) for r in rows if (x := _number(r.get("epsilon"))) is not None]
    client = [
        (r["round"], x)
        for r in records
        if (x := _number(_measure(r, "privacy").get("dp_sgd_epsilon_max"))) is not None
    ]
    if not points and not client:
        return None
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    if points:
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            markersize=3,
            color="C2",
            label="epsilon spent (user level)",
        )
    if client:
        ax.plot(
            [p[0] for p in client],
            [p[1] for p in client],
            marker="s",
            markersize=3,
            color="C4",
            label="DP-SGD: largest client epsilon",
        )
    if target is not None:
        ax.axhline(target, color="#b00020", linestyle="--", label=f"budget {target:g}")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("epsilon")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("privacy spent per round")
    return fig


def _reputation_plot(rows: list[dict[str, Any]]) -> Figure | None:
    keys = ("min", "p10", "median", "p90", "max")
    rep = [
        (r["round"], r["reputation"])
        for r in rows
        if isinstance(r.get("reputation"), dict)
        and all(_number(r["reputation"].get(k)) is not None for k in keys)
    ]
    if not rep:
        return None
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    x = [p[0] for p in rep]
    series = {k: [float(p[1][k]) for p in rep] for k in keys}
    ax.fill_between(x, series["p10"], series["p90"], color="C0", alpha=0.2, label="p10-p90")
    ax.plot(x, series["median"], color="C0", marker="o", markersize=3, label="median")
    ax.plot(x, series["min"], color="C3", linestyle=":", label="min")
    ax.plot(x, series["max"], color="C2", linestyle=":", label="max")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("reputation")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    ax.set_title("client reputation per round")
    return fig


def _detection_plot(rows: list[dict[str, Any]]) -> Figure | None:
    if not rows:
        return None
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    x = [float(r["round"]) for r in rows]
    width = 0.4
    ax.bar(
        [v - width / 2 for v in x],
        [int(r.get("flagged") or 0) for r in rows],
        width=width,
        color="C1",
        label="flagged",
    )
    ax.bar(
        [v + width / 2 for v in x],
        [int(r.get("rejected") or 0) for r in rows],
        width=width,
        color="C3",
        label="rejected",
    )
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("updates")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    ax.set_title("detections per round")
    return fig


def _plots(state: dict[str, Any], records: list[dict[str, Any]]) -> str:
    rows: list[dict[str, Any]] = state.get("rounds", [])
    if not rows:
        return "<p>No committed round yet.</p>"
    privacy = state.get("privacy")
    target = None if privacy is None else _number(privacy.get("target_epsilon"))
    figures = [
        (
            "accuracy per round",
            "Test accuracy of the global model on the server's held-out set.",
            _line_plot(rows, "accuracy", "test accuracy", "C0", unit_interval=True),
        ),
        (
            "loss per round",
            "Test loss of the global model.",
            _line_plot(rows, "loss", "test loss", "C1", unit_interval=False),
        ),
    ]
    if privacy is not None:
        figures.append(
            (
                "epsilon spent per round",
                "Epsilon spent so far after each round; the dashed line is the budget.",
                _epsilon_plot(rows, records, target),
            )
        )
    figures += [
        (
            "reputation per round",
            "Distribution of client reputation after each round.",
            _reputation_plot(rows),
        ),
        (
            "detections per round",
            "Updates flagged by anomaly detection and updates rejected by verification.",
            _detection_plot(rows),
        ),
    ]
    parts = [_figure(title, caption, fig) for title, caption, fig in figures if fig is not None]
    return "".join(parts) if parts else "<p>Nothing to plot.</p>"


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
            _f4(c.get("reputation")),
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
    return _table(headers, rows, numeric=(1, 3, 4, 5, 6, 7))


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
            _truncate(str(x.get("detail", ""))),
        )
        for x in shown
    ]
    note = (
        ""
        if len(shown) == len(rejections)
        else f"<p class='muted'>The last {len(shown)} of {len(rejections)} listed.</p>"
    )
    return note + _table(["round", "client", "reason", "detail"], rows, numeric=(0,))


def _events_table(state: dict[str, Any]) -> str:
    events: list[dict[str, Any]] = state.get("events", [])
    if not events:
        return "<p>No lifecycle event could be read from the audit log.</p>"
    shown = events[-_MAX_EVENTS:]
    rows = [
        (e.get("seq"), _utc(e.get("ts")), e.get("kind"), e.get("round"), _summary(e.get("body")))
        for e in shown
    ]
    return _table(["entry", "time (UTC)", "event", "round", "details"], rows, numeric=(0, 3))


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
                _utc(m.get("created")),
                _code(m.get("sha256")),
                _f4(m.get("accuracy")),
                _f4(m.get("loss")),
                m.get("participants"),
                _truncate("; ".join(notes), 2 * _MAX_TEXT) if notes else "",
            )
        )
    headers = ["version", "created (UTC)", "sha256", "accuracy", "loss", "participants", "note"]
    return _table(headers, rows, numeric=(0, 3, 4, 5))


def _rounds_table(state: dict[str, Any]) -> str:
    rounds: list[dict[str, Any]] = state.get("rounds", [])
    if not rounds:
        return "<p>No committed round yet.</p>"
    rows = [
        (
            r.get("round"),
            _f4(r.get("accuracy")),
            _f4(r.get("loss")),
            r.get("participants"),
            r.get("selected"),
            r.get("dropped"),
            r.get("rejected"),
            r.get("flagged"),
            _eps(r.get("epsilon")),
            None if _number(r.get("duration_s")) is None else f"{float(r['duration_s']):.3f}",
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
    return _table(headers, rows, numeric=tuple(range(10)))


# --- the page ---------------------------------------------------------------------------------


def _header(state: dict[str, Any], generated: str) -> str:
    run: dict[str, Any] = state.get("run", {})
    config: dict[str, Any] = state.get("config", {})
    start = _run_start(state.get("events", []))
    recorded, computed = _config_hashes(config, start)
    config_hash: Cell
    if recorded is None:
        config_hash = _join(_code(computed), " (of the stored configuration; no run_start entry)")
    elif recorded == computed:
        config_hash = _join(
            _code(recorded), " ", _badge("matches", "ok"), " the configuration shown below"
        )
    else:
        config_hash = _join(
            _code(recorded),
            " (audited) ",
            _badge("differs", "bad"),
            " from the stored configuration's ",
            _code(computed),
        )
    version = run.get("fedfort_version")
    if version != __version__:
        version = f"{version} (report generated by fedfort {__version__})"
    status = str(run.get("status") or "unknown")
    audit: dict[str, Any] = state.get("audit", {})
    audit_cell: Cell = _audit_line(audit)
    if audit.get("present") and not audit.get("ok"):
        audit_cell = _Raw(f'<span class="fail">{_esc(audit_cell)}</span>')
    items: list[tuple[str, Cell]] = [
        ("run directory", run.get("dir")),
        ("generated (UTC)", generated),
        ("fedfort version", version),
        ("status", _badge(status, "ok" if status == "finished" else "warn")),
        (
            "rounds committed / target",
            f"{run.get('rounds_committed')} / {run.get('rounds_target')}",
        ),
        ("configuration SHA-256", config_hash),
        ("identity hash", _code(run.get("identity") or start.get("identity_sha256"))),
        ("audit log", audit_cell),
    ]
    return _table([], [(_Raw(f"<b>{_esc(k)}</b>"), v) for k, v in items])


def _render(state: dict[str, Any], records: list[dict[str, Any]], generated: str) -> str:
    run: dict[str, Any] = state.get("run", {})
    config: dict[str, Any] = state.get("config", {})
    audit: dict[str, Any] = state.get("audit", {})
    title = f"fedfort compliance report: {run.get('name')}"
    alert = ""
    if audit.get("present") and not audit.get("ok"):
        alert = (
            f'<div class="alert">Audit log {_esc(_audit_line(audit))}. The run\'s records '
            "below are not backed by a verified audit trail.</div>"
        )
    sections = [
        ("Run", _header(state, generated)),
        ("Compliance summary", _compliance(state, records, config)),
        ("Plots", _plots(state, records)),
        ("Clients flagged, rejected or quarantined", _clients_table(state)),
        ("Rejected updates", _rejections_table(state)),
        ("Audit lifecycle events", _events_table(state)),
        ("Model versions", _models_table(state)),
        ("Per-round measurements", _rounds_table(state)),
        (
            "Configuration",
            f"<pre>{_esc(json.dumps(config, indent=2, sort_keys=True))}</pre>",
        ),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">Generated {_esc(generated)} by fedfort {_esc(__version__)}.</p>',
        alert,
    ]
    for heading, body in sections:
        parts += ["<section>", f"<h2>{_esc(heading)}</h2>", body, "</section>"]
    parts += ["</body>", "</html>"]
    return "\n".join(p for p in parts if p) + "\n"


def build_report(run_dir: str | Path) -> str:
    """The HTML compliance report of the run in ``run_dir`` (see the module docstring).

    Raises :class:`~fedfort.errors.CheckpointError` when ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    state = _read_state(run_dir)
    _, records = run_records(run_dir)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return _render(state, records, generated)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN/report.html``); return it."""
    path = Path(run_dir) / REPORT_FILE if out is None else Path(out)
    text = build_report(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
