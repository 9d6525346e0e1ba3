"""The compliance summary of the report: one row per control, with its status and evidence.

:func:`compliance_section` renders the table: differential privacy, secure aggregation, the
aggregation rule with detection and reputation, the key lifecycle, the audit-chain check,
rollbacks and rejected updates. :func:`audit_line` is the one-sentence audit verdict that the
page header and its alert repeat.
"""

from __future__ import annotations

from typing import Any, Final

from fedfort.measurements import AggregateMeasurement, MeasurementSet, PrivacyMeasurement
from fedfort.report.markup import (
    DASH,
    MAX_TEXT,
    Cell,
    Raw,
    badge,
    code,
    digest,
    eps,
    esc,
    f4,
    g,
    join,
    kv,
    number,
    summary,
    table,
    truncate,
    utc,
    when,
)

__all__ = ["KEY_EVENT_KINDS", "audit_line", "audit_summary", "compliance_section"]

#: audit entry kinds that belong to the key lifecycle
KEY_EVENT_KINDS: Final = (
    "audit_key_rotated",
    "server_key_rotated",
    "client_enrolled",
    "client_key_rotated",
    "client_revoked",
)


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
) -> tuple[str, Raw, Raw]:
    p = state.get("privacy")
    if p is None:
        return (
            "Differential privacy",
            badge("off", "info"),
            Raw(
                "<p>No differential privacy: the updates and the released models carry no "
                "(epsilon, delta) guarantee.</p>"
            ),
        )
    pcfg: dict[str, Any] = config.get("privacy", {})
    measures = [MeasurementSet.of_record(r).get(PrivacyMeasurement) for r in records]
    last = next(
        (m for m in reversed(measures) if m is not None and m.noise_multiplier is not None),
        None,
    )
    mode = str(p.get("mode") or "none")
    target = number(p.get("target_epsilon"))
    spent = number(p.get("epsilon_spent"))
    placement = mode if mode != "none" else "no user-level DP"
    items: list[tuple[str, Cell]] = [
        ("placement", placement + (" + DP-SGD at the clients" if p.get("dp_sgd") else ""))
    ]
    status = badge("on", "info")
    if mode != "none":
        noise = pcfg.get("noise_multiplier") if last is None else last.noise_multiplier
        clip: Cell = g(pcfg.get("clip_norm"))
        if pcfg.get("adaptive_clipping"):
            clip = f"{clip} (initial; adaptive, tracking quantile {g(pcfg.get('target_quantile'))})"
        releases = None if last is None else last.releases
        items += [
            ("accountant", pcfg.get("accountant") if last is None else last.accountant),
            ("noise multiplier", g(noise)),
            ("clipping norm (L2)", clip),
            ("client sampling", pcfg.get("sampling")),
            ("target epsilon", g(target) if target is not None else "none (no budget set)"),
            ("delta", g(p.get("delta"))),
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
                ("local epsilon per round", g(pcfg.get("local_epsilon"))),
            ]
        if target is not None and spent is not None:
            held = spent <= target * (1 + 1e-9)
            items.append(
                ("budget respected", badge("yes" if held else "no", "ok" if held else "bad"))
            )
            status = badge("within budget" if held else "budget exceeded", "ok" if held else "bad")
        else:
            items.append(("budget respected", "no budget set" if target is None else DASH))
    if p.get("dp_sgd"):
        dp_sgd: dict[str, Any] = pcfg.get("dp_sgd", {})
        client_eps = [
            x for m in measures if m is not None and (x := number(m.dp_sgd_epsilon_max)) is not None
        ]
        sgd_target = dp_sgd.get("target_epsilon")
        sgd_clients: list[dict[str, Any]] = p.get("dp_sgd_clients", [])
        stopped = [
            f"{c['id']} (round {c['stopped_round']})" for c in sgd_clients if c["stopped_round"]
        ]
        items += [
            ("DP-SGD noise multiplier", g(dp_sgd.get("noise_multiplier"))),
            ("DP-SGD max gradient norm", g(dp_sgd.get("max_grad_norm"))),
            ("DP-SGD delta", g(dp_sgd.get("delta"))),
            ("DP-SGD largest client epsilon", eps(max(client_eps)) if client_eps else None),
            (
                "DP-SGD budget per client",
                "none (no budget set)" if sgd_target is None else g(sgd_target),
            ),
            ("DP-SGD clients stopped by their budget", ", ".join(stopped) or "none"),
        ]
        if sgd_clients:
            per_client = ", ".join(
                f"{c['id']} {g(c['epsilon'])}" for c in sgd_clients if c["epsilon"] is not None
            )
            items.append(("DP-SGD epsilon per client", per_client or None))
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
    text = "".join(f"<p>{esc(n)}</p>" for n in notes)
    return "Differential privacy", status, Raw(kv(items).html + text)


def _secagg_row(state: dict[str, Any], records: list[dict[str, Any]]) -> tuple[str, Raw, Raw]:
    mode = str(state.get("secure_aggregation") or "none")
    if mode == "none":
        return (
            "Secure aggregation",
            badge("off", "info"),
            Raw("<p>Off: the server sees every individual update.</p>"),
        )
    rounds = state.get("rounds", [])
    aggregates = [MeasurementSet.of_record(r).get(AggregateMeasurement) for r in records]
    secured = [agg for agg in aggregates if agg is not None and agg.secure_session]
    dropouts = sum(int(r.get("secagg_dropouts") or 0) for r in rounds)
    aborted = sum(len(r.get("discarded_attempts", [])) for r in records)
    # the masking graph's threshold and degree, from the last round that recorded them
    last = next(
        (agg.extra for agg in reversed(aggregates) if agg is not None and "threshold" in agg.extra),
        {},
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
    return "Secure aggregation", badge(mode, level), Raw(kv(items).html + note)


def _defense_row(state: dict[str, Any], config: dict[str, Any]) -> tuple[str, Raw, Raw]:
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
        items.append(("norm bound", g(defense.get("norm_bound"))))
    if defense.get("robust_lr_threshold") is not None:
        items.append(("robust learning rate threshold", defense.get("robust_lr_threshold")))
    if detection.get("enabled"):
        components = ", ".join(str(c) for c in detection.get("components", []))
        items.append(
            (
                "anomaly detection",
                f"on: action {detection.get('action')}, threshold "
                f"{g(detection.get('threshold'))}, components {components}",
            )
        )
    else:
        items.append(("anomaly detection", "off"))
    if reputation.get("enabled"):
        items.append(
            (
                "reputation",
                f"on: penalty {g(reputation.get('penalty'))}, reward "
                f"{g(reputation.get('reward'))}, quarantine below "
                f"{g(reputation.get('quarantine_threshold'))} for "
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
    return "Aggregation and defences", badge(rule, "info"), kv(items)


def _key_row(state: dict[str, Any]) -> tuple[str, Raw, Raw]:
    events = [e for e in state.get("events", []) if e.get("kind") in KEY_EVENT_KINDS]
    keys = state.get("audit", {}).get("keys") or []
    signing = Raw(
        "<p>Audit signing key(s): "
        + (", ".join(code(k).html for k in keys) if keys else DASH)
        + "</p>"
    )
    if not events:
        return (
            "Key lifecycle",
            badge("none recorded", "info"),
            Raw("<p>No key lifecycle events recorded.</p>" + signing.html),
        )
    rows = [
        (e.get("seq"), when(e.get("ts")), e.get("kind"), e.get("round"), summary(e.get("body")))
        for e in events
    ]
    body = table(["entry", "time (UTC)", "event", "round", "details"], rows, numeric=(0, 3))
    return "Key lifecycle", badge(f"{len(events)} events", "info"), Raw(body + signing.html)


def audit_line(audit: dict[str, Any]) -> str:
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


def audit_summary(audit: dict[str, Any]) -> Raw:
    """:func:`audit_line` as markup, the head hash shortened (:func:`digest`)."""
    if audit.get("present") and audit.get("ok"):
        return join(
            f"verified: {audit.get('entries')} entries, head entry {audit.get('head_seq')} "
            "with hash ",
            digest(audit.get("head_hash")),
        )
    return Raw(esc(audit_line(audit)))


def _audit_row(audit: dict[str, Any]) -> tuple[str, Raw, Raw]:
    if not audit.get("present"):
        return "Audit chain", badge("absent", "warn"), Raw(f"<p>{esc(audit_line(audit))}</p>")
    if audit.get("ok"):
        items: list[tuple[str, Cell]] = [
            ("result", "verified (hash chain, signatures and the checkpoint witness)"),
            ("entries", audit.get("entries")),
            ("head entry", audit.get("head_seq")),
            ("head hash", digest(audit.get("head_hash"))),
            ("signing key id(s)", ", ".join(str(k) for k in audit.get("keys") or [])),
            ("pinned public key", audit.get("public_key_file")),
        ]
        head = f"{audit.get('head_seq')}:{audit.get('head_hash')}"
        note = (
            "<p>Publish the head and check it later with "
            f"<code>fedfort audit verify RUN --head {esc(head)}</code>.</p>"
        )
        return "Audit chain", badge("verified", "ok"), Raw(kv(items).html + note)
    text = f'<p class="alert">Audit log {esc(audit_line(audit))}</p>'
    if audit.get("entries") is not None:
        text += kv([("entries that verified before it", audit.get("entries"))]).html
    return "Audit chain", badge("FAILED", "bad"), Raw(text)


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
                    f"(accuracy {f4(rb.get('rejected_accuracy'))}): {rb.get('reason')}",
                )
            )
    for e in state.get("events", []):
        body = e.get("body") if isinstance(e.get("body"), dict) else {}
        if e.get("kind") == "rollback" and not body.get("automatic"):
            found.append(
                (
                    e.get("round"),
                    "operator",
                    f"rolled back to version {body.get('to_version')} at {utc(e.get('ts'))}: "
                    f"{body.get('reason')}",
                )
            )
        elif e.get("kind") == "rollback_requested":
            found.append(
                (
                    e.get("round"),
                    "operator request",
                    f"rollback to version {body.get('to_version')} requested at "
                    f"{utc(e.get('ts'))}: {body.get('reason')}",
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


def _rollback_row(state: dict[str, Any]) -> tuple[str, Raw, Raw]:
    found = _rollbacks(state)
    if not found:
        return "Rollbacks", badge("none", "ok"), Raw("<p>No rollback.</p>")
    rows = [(r, kind, truncate(text, 2 * MAX_TEXT)) for r, kind, text in found]
    body = table(["round", "kind", "what and why"], rows, numeric=(0,))
    return "Rollbacks", badge(str(len(found)), "warn"), Raw(body)


def _rejection_row(state: dict[str, Any]) -> tuple[str, Raw, Raw]:
    counts: dict[str, int] = state.get("rejection_counts", {})
    refused = sum(1 for e in state.get("events", []) if e.get("kind") == "update_refused")
    total = sum(counts.values())
    items: list[tuple[str, Cell]] = [(reason, n) for reason, n in sorted(counts.items())]
    if refused:
        items.append(("refused at the transport gate", refused))
    if not items:
        return "Rejected updates", badge("none", "ok"), Raw("<p>No update was rejected.</p>")
    return "Rejected updates", badge(str(total + refused), "warn"), kv(items)


def compliance_section(
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
    return table(["control", "status", "details"], rows)
