"""/metrics and the dashboard behind access control, the loopback rule without it, the token
store, and the ``fedfort access`` / ``fedfort operator`` commands."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from access_helpers import access_entries, call, small_config
from fedfort.access import AccessAudit, AccessGuard, TokenStore
from fedfort.access.roles import matrix_markdown
from fedfort.access.setup import start_monitoring
from fedfort.audit import AUDIT_FILE, AuditLog, run_audit_key, verify_run
from fedfort.cli import main
from fedfort.errors import AccessDenied, ConfigError
from fedfort.monitoring import DashboardServer, MetricsServer
from fedfort.simulation import Simulation


@dataclass
class Guarded:
    run: Path
    guard: AccessGuard
    store: TokenStore
    viewer: str
    auditor: str


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    root = tmp_path_factory.mktemp("guarded")
    run = root / "run"
    with Simulation(small_config(rounds=1), out_dir=run) as sim:
        sim.run()
    store = TokenStore(root / "tokens.sqlite")
    log = AuditLog(run / AUDIT_FILE, run_audit_key(run))
    guard = AccessGuard(store, AccessAudit(log, window_s=3600))
    yield Guarded(run, guard, store, store.issue("v", "viewer")[0], store.issue("a", "auditor")[0])
    log.close()
    store.close()


def test_without_access_control_only_loopback_may_be_bound(tmp_path: Path) -> None:
    for address in ("0.0.0.0:0", "10.1.2.3:0", "[::]:0", "example.org:0"):
        with pytest.raises(ConfigError, match="without access control"):
            MetricsServer(CollectorRegistry(), address)
        with pytest.raises(ConfigError, match="without access control"):
            DashboardServer(tmp_path, address)
    MetricsServer(CollectorRegistry(), "localhost:0")  # loopback: allowed, as before


def test_guarded_servers_off_loopback_need_tls(guarded: Guarded) -> None:
    with pytest.raises(ConfigError, match="must use TLS"):
        MetricsServer(CollectorRegistry(), "0.0.0.0:0", guard=guarded.guard)
    with pytest.raises(ConfigError, match="must use TLS"):
        DashboardServer(guarded.run, "0.0.0.0:0", guard=guarded.guard)


def test_metrics_need_a_viewer_token(guarded: Guarded) -> None:
    registry = CollectorRegistry()
    Counter("fedfort_probe_total", "probe", registry=registry).inc()
    with MetricsServer(registry, "127.0.0.1:0", guard=guarded.guard) as server:
        status, body, headers = call(server.port, "GET", "/metrics")
        assert status == 401 and "fedfort_probe" not in body.decode()
        assert headers["www-authenticate"].startswith("Bearer")
        assert call(server.port, "GET", "/metrics", token=guarded.auditor)[0] == 403
        status, body, _ = call(server.port, "GET", "/metrics", token=guarded.viewer)
        assert status == 200 and b"fedfort_probe_total 1.0" in body
    # without a guard, /metrics stays open on loopback (local simulation)
    with MetricsServer(registry, "127.0.0.1:0") as server:
        assert call(server.port, "GET", "/metrics")[0] == 200


def test_the_dashboard_needs_a_viewer_token_or_its_session_cookie(guarded: Guarded) -> None:
    with DashboardServer(guarded.run, "127.0.0.1:0", guard=guarded.guard) as server:
        port = server.port
        status, _, headers = call(port, "GET", "/")
        assert status == 303 and headers["location"] == "/login"
        assert call(port, "GET", "/api/run")[0] == 401
        assert call(port, "GET", "/api/run", token=guarded.auditor)[0] == 403
        status, body, _ = call(port, "GET", "/api/run", token=guarded.viewer)
        assert status == 200 and json.loads(body)["run"]
        assert call(port, "GET", "/healthz")[0] == 200
        status, body, headers = call(port, "GET", "/login")
        assert status == 200 and b'name="token"' in body
        assert "form-action 'self'" in headers["content-security-policy"]

        def login(token: str) -> tuple[int, dict[str, str]]:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(
                "POST",
                "/login",
                body=f"token={token}",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            response = conn.getresponse()
            response.read()
            conn.close()
            return response.status, {k.lower(): v for k, v in response.getheaders()}

        assert login("fft_000000000000_" + "A" * 43)[0] == 401
        assert login(guarded.auditor)[0] == 403
        status, headers = login(guarded.viewer)
        assert status == 303
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        session = cookie.split(";", 1)[0]
        status, body, _ = call(port, "GET", "/api/run", headers={"Cookie": session})
        assert status == 200
        assert call(port, "GET", "/", headers={"Cookie": "fedfort_session=forged"})[0] == 303
    guarded.guard.audit.flush()
    denied = [e for e in access_entries(guarded.run) if e["decision"] == "deny"]
    assert {"missing_credential", "role_not_permitted", "malformed_token"} <= {
        e["reason"] for e in denied
    }
    allowed = [e for e in access_entries(guarded.run) if e["decision"] == "allow"]
    assert any(e["action"] == "dashboard.view" and e["count"] >= 2 for e in allowed)
    assert verify_run(guarded.run).ok


def test_polled_reads_are_coalesced_and_denials_bounded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Simulation(small_config(rounds=1), out_dir=run) as sim:
        sim.run()
    with (
        TokenStore(tmp_path / "t.sqlite") as store,
        AuditLog(run / AUDIT_FILE, run_audit_key(run)) as log,
    ):
        viewer = store.issue("v", "viewer")[0]
        guard = AccessGuard(store, AccessAudit(log, window_s=3600, max_entries_per_window=5))
        before = len(log.entries())
        for _ in range(50):
            assert guard.check("metrics.read", authorization=f"Bearer {viewer}").allowed
        for _ in range(50):
            assert not guard.check("run.stop").allowed
        guard.audit.flush()
        written = log.entries()[before:]
    # 5 denials one by one, the other 45 in one entry, 50 scrapes in one entry
    assert len(written) == 7
    counts = sorted(e.data["count"] for e in written)
    assert counts == [1, 1, 1, 1, 1, 45, 50]
    assert verify_run(run).ok


def test_the_token_store_keeps_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.sqlite"
    with TokenStore(path) as store:
        token, info = store.issue("ops", "operator", ttl_s=3600)
        assert token.startswith("fft_") and len(token.split("_", 2)[2]) == 43  # 256 bits
        assert store.authenticate(token).role == "operator"
        many = [store.issue(f"t{i}", "viewer")[0] for i in range(40)]
        assert any("_" in t[17:] or "-" in t[17:] for t in many)  # url-safe secrets parse too
        assert all(store.authenticate(t).name == f"t{i}" for i, t in enumerate(many))
        with pytest.raises(ConfigError, match="unknown role"):
            store.issue("x", "root")
        with pytest.raises(ConfigError, match="only narrows"):
            store.issue("x", "viewer", scopes=["run.stop"])
        with pytest.raises(AccessDenied) as exc:
            store.authenticate(token, now=info.expires + 1)
        assert exc.value.reason == "expired_token" and exc.value.status == 401
    raw = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("tokens.sqlite-*"))
    assert token.encode() not in raw and token.split("_", 2)[2].encode() not in raw
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] == 41  # refusals wrote nothing
    db.close()


def test_access_and_operator_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "tokens.sqlite")
    assert (
        main(
            [
                "access",
                "token",
                "issue",
                "--store",
                store,
                "--name",
                "ci",
                "--role",
                "viewer",
                "--scope",
                "metrics.read",
                "--ttl",
                "1h",
            ]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    assert main(["access", "token", "list", "--store", store, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["scopes"] == ["metrics.read"] and token not in json.dumps(listed)
    assert main(["access", "matrix"]) == 0
    assert capsys.readouterr().out == matrix_markdown()

    run = tmp_path / "run"
    config = small_config(rounds=1, tokens=store)
    with Simulation(config, out_dir=run) as sim:
        sim.run()
        url = start_monitoring(sim, operator_address="127.0.0.1:0")["operator"]
        token_file = tmp_path / "token"
        token_file.write_text(token)
        assert main(["operator", "metrics", "--url", url, "--token-file", str(token_file)]) == 0
        assert "fedfort_round" in capsys.readouterr().out
        assert main(["operator", "status", "--url", url, "--token-file", str(token_file)]) == 2
        assert "outside_scopes" in capsys.readouterr().err
        assert main(["access", "token", "revoke", "--store", store, token.split("_")[1]]) == 0
        assert main(["operator", "metrics", "--url", url, "--token-file", str(token_file)]) == 2
        assert "revoked_token" in capsys.readouterr().err


def test_the_docs_show_the_matrix_as_declared() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "access-control.md"
    assert matrix_markdown() in doc.read_text(encoding="utf-8")


def test_a_held_run_without_an_operator_api_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        'rounds = 1\n[clients]\ncount = 4\n[model]\nname = "logreg"\n'
        f'[access]\ntokens = "{tmp_path / "t.sqlite"}"\nhold_at_start = true\n'
    )
    code = main(["simulate", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2 and "hold_at_start" in capsys.readouterr().err
