"""Alerting: the rules fire once per episode, reach the log and a retrying webhook, and stay
quiet on a clean run."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import tiny_config
from fedfort import Simulation
from fedfort.alerts import Alert, AlertManager, RoundRules, RoundThresholds, WebhookSender
from fedfort.alerts.rules import SignatureFloodRule
from fedfort.config import AlertsConfig, RunConfig, parse_config
from fedfort.errors import ConfigError, PrivacyBudgetExhausted
from fedfort.server.engine import RoundRecord

SCHEMA = {"rule", "severity", "run_id", "round", "value", "threshold", "message", "time"}


# --- a local webhook receiver -----------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1 that answers ``fail_first`` POSTs with ``fail_status``."""

    fail_first: int = 0
    fail_status: int = 503
    hold: threading.Event | None = None
    attempts: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.hold is not None:
                    receiver.hold.wait(10)
                with receiver.lock:
                    receiver.attempts += 1
                    failing = receiver.attempts <= receiver.fail_first
                    if not failing:
                        assert self.headers["Content-Type"] == "application/json"
                        receiver.alerts.append(json.loads(body))
                self.send_response(receiver.fail_status if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/fedfort?token=s3cret"

    def rules(self) -> list[str]:
        return [a["rule"] for a in self.alerts]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _alert(rule: str = "dropout_spike") -> Alert:
    return Alert(rule, "warning", "run-1", 3, 0.6, 0.5, "round 3: 6 of 10 dropped", 1.0)


# --- rules and episodes -------------------------------------------------------------------


def _record(round_: int, **kw: Any) -> RoundRecord:
    body: dict[str, Any] = {
        "round": round_,
        "attempt": 1,
        "accuracy": None,
        "loss": None,
        "participants": 10,
        "selected": [f"c{i}" for i in range(10)],
        "dropped": [],
        "rejected": [],
        "duration_s": 0.1,
        "train_loss": None,
        "train_time_s": 0.0,
        "model_sha256": "0" * 64,
        "measurements": {},
        "discarded_attempts": [],
    }
    body.update(kw)
    return RoundRecord(**body)


def _flagged(n: int) -> dict[str, Any]:
    scores = {f"c{i}": 1.0 for i in range(10)}
    return {"detect": {"flagged": [f"c{i}" for i in range(n)], "scores": scores}}


def test_each_rule_fires_once_per_episode_and_rearms() -> None:
    rules = RoundRules(RoundThresholds(epsilon_budget=3.0), "run-1")
    fired = [
        [a.rule for a in rules.evaluate(r)]
        for r in (
            _record(1, accuracy=0.80, measurements=_flagged(1)),
            _record(2, accuracy=0.90, measurements=_flagged(4)),  # 40% flagged > 30%
            _record(3, accuracy=0.82, measurements=_flagged(5)),  # still: no repeat; -0.08
            _record(4, accuracy=0.83, measurements=_flagged(0)),  # clears
            _record(5, accuracy=0.60, measurements=_flagged(6)),  # new episodes
            _record(6, epsilon=2.4, delta=1e-5, dropped=[f"c{i}" for i in range(6)]),
            _record(7, epsilon=2.6, dropped=[f"c{i}" for i in range(7)]),
        )
    ]
    assert fired == [
        [],
        ["client_flag_rate"],
        ["accuracy_drop"],  # 0.08 below the previous evaluation (> 0.05)
        [],
        ["client_flag_rate", "accuracy_drop"],
        ["dropout_spike"],  # epsilon 2.4 < 3.0 - 0.5
        ["privacy_budget"],
    ]
    # the accuracy-from-best threshold alone (round-over-round off)
    rules = RoundRules(RoundThresholds(accuracy_drop=0.1, accuracy_drop_round=None), "r")
    drops = [rules.evaluate(_record(i, accuracy=a)) for i, a in enumerate((0.9, 0.85, 0.79), 1)]
    assert [len(d) for d in drops] == [0, 0, 1]
    assert drops[2][0].value == pytest.approx(0.11) and drops[2][0].threshold == 0.1


def test_signature_refusals_of_one_client_within_the_window() -> None:
    now = [0.0]
    rule = SignatureFloodRule(3, 60.0, ["bad_signature"], "run-1", clock=lambda: now[0])
    out = []
    for t, client, reason in [
        (0, "mallory", "bad_signature"),
        (1, "mallory", "replayed"),  # another reason: not counted
        (2, "alice", "bad_signature"),
        (3, "mallory", "bad_signature"),
        (4, "mallory", "bad_signature"),  # third within 60 s: fires
        (5, "mallory", "bad_signature"),  # same episode
        (200, "mallory", "bad_signature"),  # window passed: one in window, re-armed
        (201, "mallory", "bad_signature"),
        (202, "mallory", "bad_signature"),  # fires again
    ]:
        now[0] = float(t)
        alert = rule.refused(client, reason, 7)
        out.append(None if alert is None else (alert.rule, alert.value, alert.round))
    assert out == [None] * 4 + [("bad_signatures", 3.0, 7)] + [None] * 3 + [
        ("bad_signatures", 3.0, 7)
    ]


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ({"enabled": True, "webhook_url": "ftp://x"}, "http:// or https://"),
        (
            {"enabled": True, "webhook_url": "http://x", "webhook_url_env": "HOOK"},
            "not both",
        ),
        ({"webhook_url": "http://x"}, "enabled = true"),
        ({"enabled": True, "webhook_backoff_s": 5, "webhook_backoff_max_s": 1}, "backoff_max"),
        ({"enabled": True, "flag_rate": 1.5}, "alerts.flag_rate"),
        ({"enabled": True, "rules": ["accuracy"]}, "alerts.rules"),
        ({"enabled": True, "webhook_atempts": 3}, "did you mean 'webhook_attempts'"),
    ],
)
def test_bad_alert_config_is_refused(alerts: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"alerts": alerts})


def test_webhook_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = AlertsConfig(enabled=True, webhook_url_env="FEDFORT_TEST_HOOK")
    monkeypatch.delenv("FEDFORT_TEST_HOOK", raising=False)
    with pytest.raises(ConfigError, match="FEDFORT_TEST_HOOK, which is not set"):
        AlertManager(cfg, run_id="r")
    monkeypatch.setenv("FEDFORT_TEST_HOOK", "http://127.0.0.1:9/secret-path")
    manager = AlertManager(cfg, run_id="r")
    assert manager.webhook is not None and manager.webhook.target == "http://127.0.0.1:9"
    manager.close()
    # alerting is not part of a run's identity: a resumed run may change it
    assert (
        RunConfig().identity_hash() == parse_config({"alerts": {"enabled": True}}).identity_hash()
    )


# --- webhook delivery ---------------------------------------------------------------------


def test_webhook_retries_with_backoff_until_the_receiver_accepts(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_first = 2  # 503, 503, then 200
    waits: list[float] = []
    sender = WebhookSender(receiver.url, attempts=4, backoff_s=0.01, sleep=waits.append)
    caplog.set_level(logging.INFO, "fedfort.alerts")
    assert sender.submit(_alert())
    assert sender.flush(10)
    assert receiver.attempts == 3 and receiver.rules() == ["dropout_spike"]
    assert set(receiver.alerts[0]) == SCHEMA
    assert waits == [0.01, 0.02]  # exponential backoff between the attempts
    [delivery] = sender.deliveries
    assert delivery.delivered and delivery.attempts == 3 and delivery.status == 200
    assert "s3cret" not in caplog.text  # the URL's secret parts never reach the log
    sender.close()


def test_webhook_gives_up_after_bounded_attempts_and_on_client_errors(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_first = 100
    sender = WebhookSender(receiver.url, attempts=3, backoff_s=0.01, sleep=lambda s: None)
    sender.submit(_alert())
    assert sender.flush(10)
    assert receiver.attempts == 3 and not sender.deliveries[0].delivered
    assert "NOT delivered" in caplog.text
    receiver.fail_status, receiver.attempts = 404, 0  # a wrong URL is not retried
    sender.submit(_alert())
    assert sender.flush(10)
    assert receiver.attempts == 1 and sender.deliveries[1].status == 404
    sender.close()


def test_webhook_retries_while_the_receiver_is_down() -> None:
    probe = Receiver().start()
    port = probe.server.server_address[1]  # type: ignore[union-attr]
    probe.stop()  # nothing listens on the port now: connections are refused
    late = Receiver()

    def sleep(seconds: float) -> None:
        if late.server is None:
            late.start(port)  # the receiver comes up during the first backoff

    sender = WebhookSender(f"http://127.0.0.1:{port}/", attempts=3, backoff_s=0.01, sleep=sleep)
    sender.submit(_alert())
    assert sender.flush(10)
    try:
        [delivery] = sender.deliveries
        assert delivery.delivered and delivery.attempts == 2
        assert late.attempts == 1 and late.rules() == ["dropout_spike"]
    finally:
        sender.close()
        late.stop()


def test_a_slow_receiver_never_blocks_the_caller(receiver: Receiver) -> None:
    receiver.hold = threading.Event()  # the receiver hangs until released
    manager = AlertManager(
        AlertsConfig(enabled=True, webhook_url=receiver.url, webhook_timeout_s=30), run_id="r"
    )
    for _ in range(3):
        manager.fire(_alert())  # returns at once although the first POST is stuck
    assert len(manager.fired) == 3 and receiver.alerts == []
    receiver.hold.set()
    assert manager.flush(10)
    assert receiver.rules() == ["dropout_spike"] * 3
    manager.close()


def test_gate_refusals_reach_the_alert_manager() -> None:
    from fedfort.transport.server import _RuntimeEvents

    manager = AlertManager(AlertsConfig(enabled=True, bad_signatures=2), run_id="net")
    reasons: list[str] = []
    server = SimpleNamespace(metrics=SimpleNamespace(refused=reasons.append), alerts=manager)
    events = _RuntimeEvents(server)  # type: ignore[arg-type]
    events.refused("client-007", "bad_signature", "envelope from 'client-007' ...")
    assert manager.fired == []
    events.refused("client-007", "bad_signature", "envelope from 'client-007' ...")
    assert [a.rule for a in manager.fired] == ["bad_signatures"]
    assert "client-007" in manager.fired[0].message and reasons == ["bad_signature"] * 2


# --- staged incidents in real runs ----------------------------------------------------------


def _run_config(receiver: Receiver, **sections: Any) -> RunConfig:
    """A tiny run of 10 clients over 6 rounds whose alerts go to ``receiver``."""
    alerts = {
        "enabled": True,
        "run_id": "incident",
        "webhook_url": receiver.url,
        "webhook_attempts": 4,
        "webhook_backoff_s": 0.01,
    }
    return tiny_config({"rounds": 6, "clients.count": 10, "alerts": alerts}, **sections)


def _simulate(cfg: RunConfig, out: Path | None = None) -> AlertManager:
    with Simulation(cfg, out) as sim:
        assert sim.alerts is not None
        try:
            sim.run()
        finally:
            assert sim.alerts.flush(10)
        return sim.alerts


def test_poisoned_round_alerts_the_webhook_and_a_clean_run_does_not(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    detection = {"enabled": True, "action": "record"}
    clean = _simulate(_run_config(receiver, detection=detection))
    assert clean.fired == [] and receiver.attempts == 0

    receiver.fail_first = 2  # the receiver is unavailable at first
    attack = {"name": "sign_flip", "fraction": 0.4, "start_round": 3, "scale": 4.0}
    manager = _simulate(_run_config(receiver, detection=detection, attack=attack))
    rules = [a.rule for a in manager.fired]
    assert sorted(rules) == ["accuracy_drop", "client_flag_rate"]  # once each, not per round
    assert all(a.round is not None and a.round >= 3 for a in manager.fired)
    assert sorted(receiver.rules()) == sorted(rules)
    assert receiver.attempts == 2 + len(rules)
    body = receiver.alerts[0]
    assert set(body) == SCHEMA and body["run_id"] == "incident"
    assert body["value"] > body["threshold"]
    flag = next(a for a in receiver.alerts if a["rule"] == "client_flag_rate")
    assert flag["severity"] == "warning" and flag["value"] >= 0.4
    assert "ALERT client_flag_rate" in caplog.text and "ALERT accuracy_drop" in caplog.text


def test_budget_near_exhaustion_alerts_before_the_run_stops(receiver: Receiver) -> None:
    # z = 3 spends (RDP, delta 1e-5) 1.39, 2.03, 2.54, 2.99, 3.38 ...: a budget of 3 allows
    # four rounds, and round 3 is the first within 0.5 of it
    privacy = {"mode": "central", "noise_multiplier": 3.0, "target_epsilon": 3.0}
    cfg = _run_config(receiver, privacy={**privacy, "secure_noise": False}, rounds=20)
    # this much noise on ten clients also makes accuracy jump about: watch the budget only
    cfg = cfg.with_overrides({"alerts.rules": ["privacy_budget"]})
    receiver.fail_first = 1
    with pytest.raises(PrivacyBudgetExhausted) as info:
        _simulate(cfg)
    records = info.value.result.records  # type: ignore[attr-defined]
    near = [r["round"] for r in records if r["epsilon"] >= 3.0 - 0.5]
    assert near == [3, 4] and records[-1]["round"] == 4
    [alert] = receiver.alerts  # once, not in both rounds; delivered on the second attempt
    assert receiver.attempts == 2
    assert alert["rule"] == "privacy_budget" and alert["round"] == 3
    assert alert["threshold"] == pytest.approx(2.5) and 2.5 <= alert["value"] <= 3.0


def test_tampered_audit_log_alerts(receiver: Receiver, tmp_path: Path) -> None:
    cfg = _run_config(receiver, rounds=4).with_overrides({"alerts.audit_verify_every": 1})
    with Simulation(cfg, tmp_path / "clean") as sim:
        sim.run()
        assert sim.alerts is not None and sim.alerts.fired == []

    def tamper(record: RoundRecord) -> None:
        if record.round == 2:  # a forged entry appended behind the writer's back
            with sqlite3.connect(tmp_path / "run" / "audit.sqlite") as db:
                db.execute(
                    "INSERT INTO entries VALUES (999, 0, 'note', 2, '{}', 'x', 'k', 'h', 's')"
                )

    with Simulation(cfg, tmp_path / "run") as sim:
        assert sim.alerts is not None
        sim.run(on_round=tamper)
        assert sim.alerts.flush(10)
        [alert] = sim.alerts.fired
    assert alert.rule == "audit_chain" and alert.severity == "critical" and alert.round == 3
    assert "FAILED verification" in alert.message
    assert receiver.rules() == ["audit_chain"]


def test_published_audit_heads_reach_the_webhook_and_prove_a_later_cut(
    receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedfort.cli import main

    cfg = _run_config(receiver, rounds=3).with_overrides({"governance.publish_head": True})
    out = tmp_path / "run"
    with Simulation(cfg, out) as sim:
        assert sim.alerts is not None
        sim.run()
        assert sim.alerts.flush(10)
        assert sim.alerts.fired == []  # heads are notices, not alerts
    printed = [line for line in capsys.readouterr().out.splitlines() if "audit head" in line]
    assert len(printed) == 3
    notices = [a for a in receiver.alerts if a["rule"] == "audit_head"]
    assert [a["round"] for a in notices] == [1, 2, 3]
    assert all(a["severity"] == "info" for a in notices)
    last = tmp_path / "webhook-head.json"
    last.write_text(notices[-1]["message"])
    assert main(["audit", "verify", str(out), "--head", str(last)]) == 0
    # the log is cut back to round 2 and every witness in the run dir replaced by round 2's
    # genuine head: only the head the webhook received shows the cut
    head2 = json.loads(notices[1]["message"])
    with sqlite3.connect(out / "audit.sqlite") as db:
        db.execute("DROP TRIGGER entries_append_only_delete")
        db.execute("DELETE FROM entries WHERE seq > ?", (head2["seq"],))
        db.execute(
            "UPDATE head SET seq = ?, hash = ?, key = ?, signature = ?",
            (head2["seq"], head2["hash"], head2["key"], head2["signature"]),
        )
    db.close()
    (out / "audit-head.json").write_text(notices[1]["message"])
    with sqlite3.connect(out / "checkpoints.sqlite") as db:
        db.execute("DELETE FROM checkpoints WHERE round = 3")
        db.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (notices[1]["message"],))
    db.close()
    capsys.readouterr()
    assert main(["audit", "verify", str(out)]) == 0
    assert main(["audit", "verify", str(out), "--head", str(last)]) == 1
    assert "were removed" in capsys.readouterr().out
