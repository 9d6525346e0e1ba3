"""The dashboard server without a browser: routes, headers, errors, caching, lifecycle.

The page itself is exercised in a real browser by ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import _thread
import http.client
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import fedfort.monitoring.dashboard as dashboard_module
from fedfort.access.setup import start_monitoring
from fedfort.config import parse_config
from fedfort.errors import ConfigError
from fedfort.monitoring.dashboard import (
    DashboardServer,
    RunStateReader,
    json_ready,
    serve_dashboard,
)
from fedfort.monitoring.metrics import FederationMetrics
from fedfort.monitoring.run_state import read_run
from fedfort.simulation import Simulation

STATIC = Path(__file__).resolve().parents[1] / "src" / "fedfort" / "monitoring" / "static"
#: the element ids the browser test and users rely on
PAGE_IDS = (
    "run-name",
    "status",
    "rounds",
    "accuracy-chart",
    "loss-chart",
    "epsilon-chart",
    "epsilon-summary",
    "clients-table",
    "rejections-table",
    "rejection-counts",
    "audit-status",
    "models-table",
    "pending-rollback",
    "events-list",
)


def small_config(rounds: int = 3) -> Any:
    return parse_config(
        {
            "rounds": rounds,
            "clients": {"count": 6, "epochs": 1},
            "model": {"name": "mlp", "options": {"hidden": [16]}},
            "detection": {"enabled": True},
            "reputation": {"enabled": True},
        }
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dashboard") / "run"
    with Simulation(small_config(), out_dir=out) as sim:
        sim.run()
    return out


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run, for tests that touch its files."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def get(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
    """``(status, headers, body)``; error statuses are returned, not raised."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def test_api_run_is_read_run_of_the_run_directory(finished_run: Path) -> None:
    with DashboardServer(finished_run) as server:
        status, headers, body = get(server.url + "api/run")
        again = json.loads(get(server.url + "api/run")[2])
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    expected = read_run(finished_run)
    assert json.loads(body) == expected
    assert again == expected
    assert expected["run"]["status"] == "finished"
    assert expected["audit"]["ok"] is True


def test_page_and_its_assets_are_served_with_strict_headers(finished_run: Path) -> None:
    with DashboardServer(finished_run, refresh_s=2.5) as server:
        status, headers, body = get(server.url)
        html = body.decode()
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert 'src="dashboard.js"' in html and 'href="dashboard.css"' in html
        assert 'data-refresh-ms="2500"' in html
        for element_id in PAGE_IDS:
            assert f'id="{element_id}"' in html, element_id
        # no inline script or style, nothing from elsewhere
        assert "<script>" not in html and "style=" not in html and "<style" not in html
        assert "http://" not in html and "https://" not in html
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp

        status, headers, script = get(server.url + "dashboard.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        assert script == (STATIC / "dashboard.js").read_bytes()
        status, headers, css = get(server.url + "dashboard.css")
        assert status == 200 and headers["Content-Type"].startswith("text/css")
        assert css == (STATIC / "dashboard.css").read_bytes()
        assert get(server.url + "?x=1")[0] == 200  # a query string does not change the route


def test_the_script_never_parses_data_as_html_and_loads_nothing_from_elsewhere() -> None:
    script = (STATIC / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "new Function" not in script
    assert not re.search(r"fetch\(\s*[\"']https?:", script)
    css = (STATIC / "dashboard.css").read_text()
    assert "@import" not in css and "url(" not in css


def test_metrics_are_served_only_with_a_registry(finished_run: Path) -> None:
    with DashboardServer(finished_run) as server:
        status, headers, body = get(server.url + "metrics")
        assert status == 404 and b"no metrics" in body
    metrics = FederationMetrics(epsilon_budget=3.0)
    with DashboardServer(finished_run, metrics=metrics.registry) as server:
        status, headers, body = get(server.url + "metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert re.search(r"^fedfort_round 0\.0$", text, re.M)
    assert re.search(r"^fedfort_privacy_epsilon_budget 3\.0$", text, re.M)


def test_health_unknown_paths_and_methods(finished_run: Path) -> None:
    with DashboardServer(finished_run) as server:
        assert get(server.url + "healthz")[:1] == (200,)
        assert get(server.url + "healthz")[2] == b"ok\n"
        for path in ("nope", "api/run/", "api", "static/dashboard.js", "../etc/passwd"):
            status, headers, _ = get(server.url + path)
            assert status == 404, path
            assert headers["X-Content-Type-Options"] == "nosniff"
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
            status, headers, _ = get(server.url + "api/run", method=method)
            assert status == 405, method
            assert headers["Allow"] == "GET, HEAD"
        status, headers, body = get(server.url + "api/run", method="HEAD")
        assert status == 200 and body == b""
        assert int(headers["Content-Length"]) > 100


def test_a_web_page_cannot_reach_a_loopback_dashboard_through_dns_rebinding(
    finished_run: Path,
) -> None:
    with DashboardServer(finished_run) as server:
        port = server.port
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
            assert get(server.url + "healthz", headers={"Host": host})[0] == 200, host
        for host in (f"attacker.example:{port}", "attacker.example", f"10.0.0.1:{port}"):
            status, _, body = get(server.url + "api/run", headers={"Host": host})
            assert status == 403, host
            assert b"Host" in body


def test_an_unreadable_run_is_a_json_500_and_the_server_keeps_serving(tmp_path: Path) -> None:
    with DashboardServer(tmp_path) as server:
        status, headers, body = get(server.url + "api/run")
        assert status == 500
        assert headers["Content-Type"] == "application/json"
        error = json.loads(body)
        assert set(error) == {"error"}
        assert "not a fedfort run" in error["error"] and "Traceback" not in error["error"]
        assert get(server.url + "healthz")[0] == 200
        assert get(server.url)[0] == 200


@pytest.mark.parametrize(
    "address",
    ["nonsense", "127.0.0.1", ":8321", "127.0.0.1:99999", "127.0.0.1:http", "[zz]:1", "::1:80"],
)
def test_a_bad_address_is_a_config_error(finished_run: Path, address: str) -> None:
    with pytest.raises(ConfigError, match="dashboard address"):
        DashboardServer(finished_run, address)


def test_a_bad_refresh_or_an_address_in_use_is_a_config_error(finished_run: Path) -> None:
    with pytest.raises(ConfigError, match="refresh_s"):
        DashboardServer(finished_run, refresh_s=0)
    with pytest.raises(ConfigError, match="refresh_s"):
        DashboardServer(finished_run, refresh_s=math.nan)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot serve the dashboard"):
            DashboardServer(finished_run, f"127.0.0.1:{port}").start()


def test_close_frees_the_port_and_is_idempotent(finished_run: Path) -> None:
    server = DashboardServer(finished_run).start()
    assert server.start() is server  # starting twice is a no-op
    port = server.port
    assert server.url == f"http://127.0.0.1:{port}/"
    assert get(server.url + "healthz")[0] == 200
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 2.0
    server.close()
    with pytest.raises(RuntimeError, match="start"):
        _ = server.port
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    with DashboardServer(finished_run, f"127.0.0.1:{port}") as again:
        assert again.port == port
        assert get(again.url + "healthz")[0] == 200


def test_ipv6_loopback(finished_run: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this interpreter")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with DashboardServer(finished_run, "[::1]:0") as server:
        assert server.url.startswith("http://[::1]:")
        assert get(server.url + "healthz")[0] == 200


def _age(run_dir: Path, seconds: float) -> None:
    """Make every file of the run look modified ``seconds`` ago (no racy mtimes)."""
    past = time.time() - seconds
    for path in run_dir.iterdir():
        os.utime(path, (past, past))


def _tamper(run_dir: Path, seq: int) -> None:
    db = sqlite3.connect(run_dir / "audit.sqlite")
    try:
        db.execute("DROP TRIGGER entries_append_only_update")
        changed = db.execute(
            "UPDATE entries SET body = replace(body, 'client-000', 'client-666') WHERE seq = ?",
            (seq,),
        ).rowcount
        db.commit()
    finally:
        db.close()
    assert changed == 1


def test_audit_verification_is_cached_until_the_run_files_change(run_copy: Path) -> None:
    _age(run_copy, 60)
    reader = RunStateReader(run_copy, verify_interval_s=0.0, verify_share=None)
    first = reader.read()
    assert reader.read() == first == read_run(run_copy)
    assert reader.verifications == 1  # nothing changed: no second verification
    # seq 3 lists the clients selected for round 1
    _tamper(run_copy, 3)
    state = reader.read()
    assert reader.verifications == 2
    assert state["audit"]["ok"] is False and state["audit"]["bad_seq"] == 3
    assert state == read_run(run_copy)


def test_audit_verification_is_redone_at_most_once_per_interval(run_copy: Path) -> None:
    _age(run_copy, 60)
    reader = RunStateReader(run_copy, verify_interval_s=0.3, verify_share=None)
    assert reader.read()["audit"]["ok"] is True
    _tamper(run_copy, 3)
    assert reader.read()["audit"]["ok"] is True  # within the interval: the cached result
    assert reader.verifications == 1
    time.sleep(0.35)
    assert reader.read()["audit"]["ok"] is False
    assert reader.verifications == 2


def test_a_slow_verification_is_redone_less_often(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedfort.monitoring.dashboard as dashboard

    def slow_read_run(run_dir: Path, *, verify: bool = True) -> dict[str, Any]:
        if verify:
            time.sleep(0.2)  # a long log
        return read_run(run_dir, verify=verify)

    monkeypatch.setattr(dashboard, "read_run", slow_read_run)
    _age(run_copy, 60)
    # a verification of >= 0.2 s with a share of 0.25: >= 0.8 s until the next one
    reader = RunStateReader(run_copy, verify_interval_s=0.0, verify_share=0.25)
    reader.read()
    _tamper(run_copy, 3)
    assert reader.read()["audit"]["ok"] is True
    time.sleep(0.3)
    assert reader.read()["audit"]["ok"] is True
    assert reader.verifications == 1
    deadline = time.monotonic() + 5
    while reader.verifications == 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        state = reader.read()
    assert reader.verifications == 2
    assert state["audit"]["ok"] is False


def test_recently_modified_files_are_verified_again_even_if_they_look_unchanged(
    run_copy: Path,
) -> None:
    # mtimes can be coarser than the writes: a file touched just now may change unseen
    _age(run_copy, 0)
    reader = RunStateReader(run_copy, verify_interval_s=0.0, verify_share=None)
    reader.read()
    reader.read()
    assert reader.verifications == 2
    _age(run_copy, 60)
    reader.read()
    reader.read()
    assert reader.verifications == 3


def test_non_finite_numbers_become_strings_json_can_carry() -> None:
    value = {"a": [1.0, math.nan, {"b": math.inf}], "c": -math.inf, "d": (2, "x", None)}
    assert json_ready(value) == {
        "a": [1.0, "NaN", {"b": "Infinity"}],
        "c": "-Infinity",
        "d": [2, "x", None],
    }
    json.dumps(json_ready(value), allow_nan=False)


def test_federation_serves_its_dashboard_with_its_metrics(tmp_path: Path) -> None:
    with Simulation(small_config(rounds=1), out_dir=tmp_path / "run") as sim:
        urls = start_monitoring(sim, dashboard_address="127.0.0.1:0")
        sim.run()
        url = urls["dashboard"]
        state = json.loads(get(url + "api/run")[2])
        assert state["run"]["rounds_committed"] == 1
        status, _, body = get(url + "metrics")
        assert status == 200
        assert re.search(r"^fedfort_round 1\.0$", body.decode(), re.M)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "healthz", timeout=2)


def test_serve_dashboard_prints_the_url_and_returns_on_ctrl_c(
    finished_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    seen: list[int] = []
    printed = threading.Event()
    returned = threading.Event()

    def print_and_signal(*args: Any, **kwargs: Any) -> None:
        print(*args, **kwargs)
        printed.set()

    # The server answers as soon as it started, before serve_dashboard printed its URL: Ctrl-C
    # is sent only once the URL is out, else the interrupt could land between the two lines.
    monkeypatch.setattr(dashboard_module, "print", print_and_signal, raising=False)

    def interrupt_when_up() -> None:
        # no capsys here: it is not safe to read from another thread; the URL is checked after
        deadline = time.monotonic() + 20
        try:
            printed.wait(timeout=20)
            while time.monotonic() < deadline and not seen:
                try:
                    seen.append(get(url + "healthz")[0])
                except (urllib.error.URLError, http.client.HTTPException, OSError):
                    time.sleep(0.05)
        finally:
            if not returned.is_set():  # never interrupt whatever pytest runs next
                _thread.interrupt_main()

    helper = threading.Thread(target=interrupt_when_up, daemon=True)
    helper.start()
    try:
        serve_dashboard(finished_run, f"127.0.0.1:{port}")
    except KeyboardInterrupt:  # pragma: no cover - only if the interrupt came too early
        pytest.fail("serve_dashboard let KeyboardInterrupt escape")
    finally:
        returned.set()
    helper.join(timeout=5)
    assert printed.is_set()
    assert seen == [200]
    assert url in capsys.readouterr().out
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "healthz", timeout=2)


def test_serve_dashboard_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        serve_dashboard(tmp_path / "missing", "127.0.0.1:0")
