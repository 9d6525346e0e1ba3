"""The dashboard page in a real headless Chromium, against real runs, live and finished.

Three scenarios:

- an attacked run with detection, reputation, injected invalid updates (one from a client id
  that is an HTML payload), an operator rollback and an automatic drift rollback, watched
  while it runs (paused after round 3) and after it finishes; a screenshot is saved to
  ``$FEDFORT_ARTIFACTS/dashboard.png`` (default ``<repo>/test-artifacts``);
- a run with central differential privacy: the epsilon summary, points and budget line;
- the same run after its audit log was edited: the page names the first bad entry.

Chromium must be installed (``apt-get install chromium``); the test fails, not skips, without it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from conftest import tiny_config
from fedfort.config import RunConfig, parse_config
from fedfort.messages import ClientUpdate, TrainTask
from fedfort.monitoring.dashboard import DashboardServer
from fedfort.monitoring.run_state import read_run
from fedfort.server.engine import ClientExecutor, CollectOutcome, RoundRecord
from fedfort.simulation import Simulation

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000
ROUNDS = 8
PAUSE_AT = 3
#: a client id that is an HTML payload: the page must show it as text and never run it
XSS_ID = '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "the dashboard browser tests need Chromium: install it with "
            "`apt-get install chromium` (Debian/Ubuntu), then rerun",
            pytrace=False,
        )
    return path


def artifacts_dir() -> Path:
    path = Path(os.environ.get("FEDFORT_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" else None,
    )
    try:
        yield page
    finally:
        context.close()
    assert errors == [], errors  # no script error, no CSP violation, no failed load


class Saboteur:
    """Wraps the simulation's executor to add what no built-in attack sends.

    Rounds 2 and 5: client-005's update is all NaN (rejected ``non_finite``). Round 4: an
    update from ``XSS_ID``, a client nobody selected (rejected ``unknown_client``). Round 6:
    every update is reversed and blown up, so the drift rollback restores the best version.
    """

    def __init__(self, inner: ClientExecutor) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        outcome = self.inner.execute(tasks, deadline_s)
        round_ = tasks[0].round if tasks else 0
        received: list[ClientUpdate] = list(outcome.received)
        if round_ in (2, 5):
            received = [
                dataclasses.replace(u, delta=np.full_like(u.delta, np.nan))
                if u.client_id == "client-005"
                else u
                for u in received
            ]
        if round_ == 4 and received:
            received.append(dataclasses.replace(received[0], client_id=XSS_ID))
        if round_ == 6:
            received = [
                dataclasses.replace(u, delta=(u.delta * np.float32(-8.0)).astype(np.float32))
                for u in received
            ]
        return CollectOutcome(received, list(outcome.missing))

    def acknowledge(self, round_: int, accepted: Sequence[ClientUpdate]) -> None:
        self.inner.acknowledge(round_, accepted)


def attack_config() -> RunConfig:
    return parse_config(
        {
            "seed": 0,
            "rounds": ROUNDS,
            "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.5},
            "model": {"name": "mlp", "options": {"hidden": [32]}},
            "clients": {"count": 10, "epochs": 1, "batch_size": 16, "lr": 0.1},
            "attack": {"name": "sign_flip", "fraction": 0.2, "scale": 10.0},
            "detection": {"enabled": True},
            "reputation": {"enabled": True},
            "governance": {"rollback_drop": 0.1},
        }
    )


def dp_config() -> RunConfig:
    privacy = {"mode": "central", "target_epsilon": 3.0, "secure_noise": False}
    return tiny_config(seed=0, rounds=4, clients={"count": 20}, privacy=privacy)


class BackgroundRun:
    """A simulation in its own thread (SQLite connections stay in the thread that made them).

    After round ``pause_at`` the run waits until :meth:`resume`; before waiting it files an
    operator rollback to version ``pause_at - 1``, so the page has a pending rollback to show.
    """

    def __init__(self, cfg: RunConfig, out: Path, pause_at: int | None = None) -> None:
        self.cfg, self.out, self.pause_at = cfg, out, pause_at
        self.records: list[dict[str, Any]] = []
        self.paused = threading.Event()
        self.done = threading.Event()
        self._resume = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="simulation", daemon=True)

    def _main(self) -> None:
        try:
            with Simulation(self.cfg, out_dir=self.out) as sim:
                sim.engine.executor = Saboteur(sim.engine.executor)

                def on_round(record: RoundRecord) -> None:
                    self.records.append(record.to_dict())
                    if record.round == self.pause_at:
                        sim.rollback(self.pause_at - 1, "operator check from the dashboard test")
                        self.paused.set()
                        self._resume.wait(timeout=120)

                sim.run(on_round=on_round)
        except BaseException as exc:
            self.error = exc
        finally:
            self.paused.set()
            self.done.set()

    def start(self) -> BackgroundRun:
        self.thread.start()
        return self

    def resume(self) -> None:
        self._resume.set()

    def wait(self, timeout: float = 60) -> None:
        assert self.done.wait(timeout), "the simulation did not finish"
        self.thread.join(timeout=5)
        if self.error is not None:
            raise self.error


def run_in_foreground(cfg: RunConfig, out: Path) -> list[dict[str, Any]]:
    with Simulation(cfg, out_dir=out) as sim:
        return sim.run().records


# ------------------------------------------------------------------ page helpers


def points(page: Page, chart: str) -> list[tuple[int, float]]:
    found = page.eval_on_selector_all(
        f"#{chart} circle.point",
        "nodes => nodes.map(n => [n.dataset.round, n.dataset.value])",
    )
    return [(int(r), float(v)) for r, v in found]


def wait_points(page: Page, chart: str, count: int) -> None:
    page.wait_for_function(
        "([chart, n]) => document.querySelectorAll(`#${chart} circle.point`).length === n",
        arg=[chart, count],
        timeout=TIMEOUT_MS,
    )


def wait_text(page: Page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.textContent ?? '').includes(text)",
        arg=[selector, text],
        timeout=TIMEOUT_MS,
    )


def table(page: Page, selector: str, key: str) -> dict[str, list[str]]:
    """``{row's data-<key>: [cell texts]}`` of a table's body rows."""
    rows = page.eval_on_selector_all(
        f"{selector} tbody tr[data-{key}]",
        f"rows => rows.map(r => [r.dataset['{key}'], [...r.cells].map(c => c.textContent)])",
    )
    return {k: cells for k, cells in rows}


# ------------------------------------------------------------------ scenarios


def test_attacked_run_live_and_finished(page: Page, tmp_path: Path) -> None:
    out = tmp_path / "attacked"
    run = BackgroundRun(attack_config(), out, pause_at=PAUSE_AT).start()
    server: DashboardServer | None = None
    try:
        assert run.paused.wait(60), "the simulation did not reach the pause"
        assert run.error is None, run.error
        server = DashboardServer(out).start()
        page.goto(server.url)

        # live, paused after round 3
        wait_points(page, "accuracy-chart", PAUSE_AT)
        assert page.text_content("#status") == "running"
        assert page.text_content("#rounds") == f"{PAUSE_AT} / {ROUNDS}"
        live = run.records[:PAUSE_AT]
        assert points(page, "accuracy-chart") == [(r["round"], r["accuracy"]) for r in live]
        assert points(page, "loss-chart") == [(r["round"], r["loss"]) for r in live]
        wait_text(page, "#pending-rollback", f"rollback to v{PAUSE_AT - 1} pending")
        assert page.is_visible("#pending-rollback")
        wait_text(page, "#events-list", "rollback")
        assert page.text_content("#epsilon-summary") == "no differential privacy"
        assert page.is_hidden("#epsilon-chart")
        page.screenshot(path=str(artifacts_dir() / "dashboard-live.png"), full_page=True)

        run.resume()
        run.wait()
        records = run.records
        assert [r["round"] for r in records] == list(range(1, ROUNDS + 1))

        # finished: the page caught up by polling
        wait_text(page, "#status", "finished")
        wait_points(page, "accuracy-chart", ROUNDS)
        state = read_run(out)
        head = state["audit"]["head_hash"]
        wait_text(page, "#audit-status", f"verified: {state['audit']['entries']} entries")
        assert page.text_content("#rounds") == f"{ROUNDS} / {ROUNDS}"

        got = points(page, "accuracy-chart")
        assert [r for r, _ in got] == [r["round"] for r in records]
        assert [v for _, v in got] == pytest.approx([r["accuracy"] for r in records])
        got = points(page, "loss-chart")
        assert [v for _, v in got] == pytest.approx([r["loss"] for r in records])

        # the automatic rollback of round 6 is marked on both charts
        rolled = [r["round"] for r in state["rounds"] if r["rollback"]]
        assert rolled == [6]
        for chart in ("accuracy-chart", "loss-chart"):
            markers = page.eval_on_selector_all(
                f"#{chart} .rollback-marker", "ns => ns.map(n => Number(n.dataset.round))"
            )
            assert markers == rolled

        # clients: one row each, reputation and flags as read_run has them
        rows = table(page, "#clients-table", "client")
        assert list(rows) == [c["id"] for c in state["clients"]]
        flagged_rows = set(
            page.eval_on_selector_all(
                "#clients-table tr.flagged", "rs => rs.map(r => r.dataset.client)"
            )
        )
        quarantined_rows = set(
            page.eval_on_selector_all(
                "#clients-table tr.quarantined", "rs => rs.map(r => r.dataset.client)"
            )
        )
        reputations = dict(
            page.eval_on_selector_all(
                "#clients-table tbody tr[data-client]",
                "rs => rs.map(r => [r.dataset.client, Number(r.dataset.reputation)])",
            )
        )
        for client in state["clients"]:
            cells = rows[client["id"]]
            assert cells[0] == client["id"]
            assert reputations[client["id"]] == pytest.approx(client["reputation"])
            assert float(cells[1]) == pytest.approx(client["reputation"], abs=5e-4 + 1e-12)
            assert cells[2] == ("yes" if client["quarantined"] else "no")
            assert [int(c) for c in cells[3:7]] == [
                client["selected"],
                client["accepted"],
                client["rejected"],
                client["flagged"],
            ]
            assert (client["id"] in flagged_rows) == (client["flagged"] > 0)
            assert (client["id"] in quarantined_rows) == client["quarantined"]
        assert sum(c["flagged"] for c in state["clients"]) > 0  # the detector caught someone
        assert len({round(c["reputation"], 3) for c in state["clients"]}) > 1

        # rejections, including the payload shown as text and never run
        counts = page.eval_on_selector_all(
            "#rejection-counts li[data-reason]", "ls => ls.map(l => l.textContent)"
        )
        assert counts == [f"{k}: {n}" for k, n in state["rejection_counts"].items()]
        assert state["rejection_counts"] == {"non_finite": 2, "unknown_client": 1}
        rejected = page.eval_on_selector_all(
            "#rejections-table tbody tr[data-client]",
            "rs => rs.map(r => [...r.cells].map(c => c.textContent))",
        )
        assert sorted(rejected) == sorted(
            [str(r["round"]), r["client_id"], r["reason"], r["detail"]] for r in state["rejections"]
        )
        assert [r[1] for r in rejected if r[2] == "unknown_client"] == [XSS_ID]
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        assert page.evaluate("window.__xss") is None

        # the audit log, the model versions, the events
        audit = page.text_content("#audit-status") or ""
        assert audit == f"verified: {state['audit']['entries']} entries, head {head[:16]}…"
        assert page.get_attribute("#audit-status", "class") == "ok"
        models = table(page, "#models-table", "version")
        assert sorted(int(v) for v in models) == list(range(ROUNDS + 1))
        assert models["6"][5] == f"rolled back to v{state['models'][6]['rollback']['to_version']}"
        for model in state["models"]:
            assert models[str(model["version"])][1] == model["sha256"][:16] + "…"
        assert page.is_hidden("#pending-rollback")  # applied by round 4's commit
        kinds = page.eval_on_selector_all(
            "#events-list li[data-kind]", "ls => ls.map(l => l.dataset.kind)"
        )
        assert kinds == [e["kind"] for e in reversed(state["events"])]
        assert kinds[0] == "run_end" and "rollback" in kinds

        shot = artifacts_dir() / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 50_000
    finally:
        run.resume()
        if server is not None:
            server.close()
        run.done.wait(60)


def test_private_run_shows_epsilon_against_budget_and_a_tampered_log_fails(
    page: Page, tmp_path: Path
) -> None:
    out = tmp_path / "private"
    records = run_in_foreground(dp_config(), out)
    state = read_run(out)
    privacy = state["privacy"]
    assert privacy is not None and privacy["target_epsilon"] == 3.0
    with DashboardServer(out) as server:
        page.goto(server.url)
        wait_text(page, "#status", "finished")
        wait_points(page, "epsilon-chart", len(records))

        summary = page.text_content("#epsilon-summary") or ""
        match = re.match(r"ε = ([0-9.]+) of ([0-9.]+) \(δ = 1e-05\)", summary)
        assert match, summary
        assert float(match[1]) == pytest.approx(privacy["epsilon_spent"], abs=5e-3)
        assert float(match[2]) == privacy["target_epsilon"]
        got = points(page, "epsilon-chart")
        assert [r for r, _ in got] == [r["round"] for r in records]
        assert [v for _, v in got] == pytest.approx([r["epsilon"] for r in records])
        assert page.get_attribute("#epsilon-chart .budget-line", "data-value") == "3"
        assert page.is_visible("#epsilon-chart")
        wait_text(page, "#audit-status", "verified:")

        # edit the log behind the run's back: the page names the first bad entry
        db = sqlite3.connect(out / "audit.sqlite")
        try:
            db.execute("DROP TRIGGER entries_append_only_update")
            changed = db.execute(
                "UPDATE entries SET body = replace(body, 'client-000', 'client-666') WHERE seq = 3"
            ).rowcount
            db.commit()
        finally:
            db.close()
        assert changed == 1
        wait_text(page, "#audit-status", "FAILED at entry 3")
        assert page.get_attribute("#audit-status", "class") == "failed"
        text = page.text_content("#audit-status") or ""
        bad = read_run(out)["audit"]
        assert text == f"FAILED at entry 3 ({bad['bad_kind']}): {bad['problem']}"
