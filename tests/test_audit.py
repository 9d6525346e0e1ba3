"""The audit log: what a run records, and that any tampering is caught and named.

Every tamper test plays an attacker with write access to ``audit.sqlite`` (who first drops
the append-only triggers) but without the run's audit key, and asserts that
``fedfort audit verify`` fails and names the entry that was touched.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import demo_config
from fedfort.audit import (
    AUDIT_FILE,
    AUDIT_KEY_FILE,
    AuditLog,
    config_sha256,
    export_jsonl,
    read_entries,
    verify_log,
    verify_run,
)
from fedfort.audit.chain import entry_hash, key_id, signed_message
from fedfort.cli import main
from fedfort.config import RunConfig
from fedfort.crypto.keyfiles import load_signing_key
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import AuditError
from fedfort.simulation import Simulation

ROUNDS = 3


def _config() -> RunConfig:
    cfg = demo_config({"rounds": ROUNDS, "clients.count": 6, "clients.epochs": 1})
    return cfg.with_overrides(
        {
            "attack": {"name": "sign_flip", "fraction": 0.34, "scale": 5.0},
            "detection.enabled": True,
            "reputation.enabled": True,
        }
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("audited") / "run"
    with Simulation(_config(), out_dir=out) as sim:
        result = sim.run()
    return out, result.records


def _verify_cli(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["audit", "verify", str(run), *extra])
    return code, capsys.readouterr().out


def _rows(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT seq, ts, kind, round, body, prev, key, hash, signature FROM entries ORDER BY seq"
    ).fetchall()


def _reseal(row: tuple[Any, ...], key: SigningKey, *, claim: str | None = None) -> tuple[Any, ...]:
    """``row`` with a hash recomputed and signed by ``key`` (claiming key id ``claim``)."""
    seq, ts, kind, round_, body, prev, _key, _hash, _sig = row
    kid = claim or key_id(key.public)
    digest = entry_hash(seq, ts, kind, round_, body, prev, kid)
    return (seq, ts, kind, round_, body, prev, kid, digest, key.sign(signed_message(digest)).hex())


def _replace(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    db.execute("DELETE FROM entries")
    db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()


# --- what is recorded -------------------------------------------------------------------


def test_untouched_log_verifies_and_covers_the_run(
    finished_run: tuple[Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    run, records = finished_run
    code, out = _verify_cli(run, capsys)
    assert code == 0, out
    assert "audit log verified" in out
    entries = list(read_entries(run / AUDIT_FILE))
    kinds = [e.kind for e in entries]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    start = entries[0].data
    assert start["config_sha256"] == config_sha256(Simulation.resume(run).config)
    assert start["aggregation_rule"] == "fedavg"
    assert start["audit_public_key"] == (run / "audit-key.pub").read_text().strip()
    for record in records:
        mine = [e for e in entries if e.round == record["round"]]
        by_kind = {e.kind: e.data for e in mine}
        assert {"round_start", "clients_selected", "aggregation", "model_version", "round_end"} <= (
            set(by_kind)
        )
        assert by_kind["model_version"]["sha256"] == record["model_sha256"]
        assert by_kind["model_version"]["accuracy"] == record["accuracy"]
        assert by_kind["clients_selected"]["selected"] == record["selected"]
        assert by_kind["clients_selected"]["participating"] == record["accepted"]
        assert by_kind["clients_flagged"]["flagged"] == record["measurements"]["detect"]["flagged"]
        assert by_kind["clients_flagged"]["scores"] == record["measurements"]["detect"]["scores"]
        assert (
            by_kind["reputation"]["quarantined"]
            == (record["measurements"]["reputation"]["quarantined"])
        )
        rejected = [e.data for e in mine if e.kind == "update_rejected"]
        assert [(r["client_id"], r["reason"]) for r in rejected] == [
            (r["client_id"], r["reason"]) for r in record["rejected"]
        ]
    assert sum(len(e.data.get("flagged", [])) for e in entries if e.kind == "clients_flagged")


def test_entries_hold_metadata_not_updates_or_data(
    finished_run: tuple[Path, list[dict[str, Any]]],
) -> None:
    run, _ = finished_run
    dim = Simulation.resume(run).spec.dim

    def longest_list(node: Any) -> int:
        if isinstance(node, dict):
            return max((longest_list(v) for v in node.values()), default=0)
        if isinstance(node, list):
            return max([len(node), *(longest_list(v) for v in node)])
        return 0

    for entry in read_entries(run / AUDIT_FILE):
        assert longest_list(entry.data) < min(dim, 100), entry.kind
    with pytest.raises(TypeError, match="metadata and hashes only"):
        import numpy as np

        from fedfort.audit.chain import canonical_body

        canonical_body({"delta": np.zeros(3)})


def test_triggers_refuse_updates_and_deletes(run_copy: Path) -> None:
    db = sqlite3.connect(run_copy / AUDIT_FILE)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE entries SET body = '{}' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM entries WHERE seq = 2")
    db.close()
    assert verify_run(run_copy).ok


def test_export_writes_every_entry_as_json_lines(run_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", str(run_copy), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    entries = list(read_entries(run_copy / AUDIT_FILE))
    assert len(lines) == len(entries) == export_jsonl(run_copy, tmp_path / "again.jsonl")
    assert [x["hash"] for x in lines] == [e.hash for e in entries]
    assert lines[0]["body"]["config_sha256"] == entries[0].data["config_sha256"]


# --- tampering ---------------------------------------------------------------------------


def test_an_edited_entry_is_named(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = attacker_db.execute(
        "SELECT seq FROM entries WHERE kind = 'model_version' AND round = 2"
    ).fetchone()[0]
    attacker_db.execute(
        "UPDATE entries SET body = replace(body, '\"accuracy\":0.', '\"accuracy\":0.9') "
        "WHERE seq = ?",
        (seq,),
    )
    attacker_db.commit()
    code, out = _verify_cli(run_copy, capsys)
    assert code == 1
    assert f"FAILED at entry {seq} (model_version)" in out
    assert "does not match its hash" in out


def test_an_edited_and_rehashed_entry_fails_its_signature(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(attacker_db)
    k = 5
    seq, ts, kind, round_, body, prev, kid, _h, sig = rows[k - 1]
    body = body + " "  # any change the attacker likes
    digest = entry_hash(seq, ts, kind, round_, body, prev, kid)
    rows[k - 1] = (seq, ts, kind, round_, body, prev, kid, digest, sig)
    _replace(attacker_db, rows)
    code, out = _verify_cli(run_copy, capsys)
    assert code == 1
    assert f"FAILED at entry {k} ({kind})" in out and "signature does not verify" in out


@pytest.mark.parametrize("position", ["middle", "first"])
def test_a_deleted_entry_is_named(
    position: str,
    run_copy: Path,
    attacker_db: sqlite3.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    k = 1 if position == "first" else 7
    attacker_db.execute("DELETE FROM entries WHERE seq = ?", (k,))
    attacker_db.commit()
    code, out = _verify_cli(run_copy, capsys)
    assert code == 1
    assert f"FAILED at entry {k}" in out and f"entry {k} is missing" in out


def test_deleted_entries_renumbered_to_hide_the_gap_are_named(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(attacker_db)
    k = 6
    kept = rows[: k - 1] + [(r[0] - 1, *r[1:]) for r in rows[k:]]
    _replace(attacker_db, kept)
    code, out = _verify_cli(run_copy, capsys)
    assert code == 1
    assert f"FAILED at entry {k}" in out


def test_truncating_the_end_is_caught_by_the_witness(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    last = attacker_db.execute("SELECT MAX(seq) FROM entries").fetchone()[0]
    attacker_db.execute("DELETE FROM entries WHERE seq > ?", (last - 3,))
    attacker_db.commit()
    # the chain that is left is valid on its own ...
    pub = bytes.fromhex((run_copy / "audit-key.pub").read_text().strip())
    assert verify_log(run_copy / AUDIT_FILE, pub).ok
    # ... but the head the server witnessed after the last round is gone
    code, out = _verify_cli(run_copy, capsys)
    assert code == 1
    assert f"FAILED at entry {last - 2}" in out and "were removed" in out


def test_truncation_of_whole_rounds_is_caught_by_the_checkpoints(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    first_of_last_round = attacker_db.execute(
        "SELECT MIN(seq) FROM entries WHERE round = ?", (ROUNDS,)
    ).fetchone()[0]
    attacker_db.execute("DELETE FROM entries WHERE seq >= ?", (first_of_last_round,))
    attacker_db.commit()
    # the attacker also rewrites the witnessed head in the checkpoint database
    head = attacker_db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC").fetchone()
    ckpt = sqlite3.connect(run_copy / "checkpoints.sqlite")
    ckpt.execute(
        "UPDATE meta SET value = ? WHERE key = 'audit_head'",
        (json.dumps({"seq": head[0], "hash": head[1]}),),
    )
    ckpt.commit()
    ckpt.close()
    code, out = _verify_cli(run_copy, capsys)
    assert code == 1
    assert f"FAILED at entry {first_of_last_round} (model_version)" in out
    assert f"round {ROUNDS} was committed" in out


def test_an_inserted_entry_is_named(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(attacker_db)
    k = 8
    forger = SigningKey()
    legit = rows[0][6]
    prev = rows[k - 2][7]
    fake = (k, rows[k - 2][1], "update_rejected", 2, '{"client_id":"client-001"}', prev, legit)
    forged = _reseal((*fake, "", ""), forger, claim=legit)
    shifted = [(r[0] + 1, *r[1:]) for r in rows[k - 1 :]]
    _replace(attacker_db, [*rows[: k - 1], forged, *shifted])
    code, out = _verify_cli(run_copy, capsys)
    assert code == 1
    assert f"FAILED at entry {k} (update_rejected)" in out
    assert "signature does not verify" in out


def test_reordered_entries_are_named(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(attacker_db)
    k = 9
    a, b = rows[k - 1], rows[k]
    rows[k - 1] = (a[0], *b[1:])
    rows[k] = (b[0], *a[1:])
    _replace(attacker_db, rows)
    code, out = _verify_cli(run_copy, capsys)
    assert code == 1
    assert f"FAILED at entry {k}" in out


def test_one_entry_resigned_with_another_key_is_named(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(attacker_db)
    k = 4
    rows[k - 1] = _reseal(rows[k - 1], SigningKey())
    _replace(attacker_db, rows)
    code, out = _verify_cli(run_copy, capsys)
    assert code == 1
    assert f"FAILED at entry {k}" in out and "signed by key" in out


def test_a_log_rewritten_under_another_key_fails_against_the_pinned_key(
    run_copy: Path,
    attacker_db: sqlite3.Connection,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    auditor_copy = tmp_path / "pinned.pub"
    shutil.copy(run_copy / "audit-key.pub", auditor_copy)
    forger = SigningKey()
    rows, prev, forged = _rows(attacker_db), "0" * 64, []
    for row in rows:
        sealed = _reseal((*row[:5], prev, *row[6:]), forger)
        forged.append(sealed)
        prev = sealed[7]
    _replace(attacker_db, forged)
    # the forger also swaps the published key and the witness beside the log
    (run_copy / "audit-key.pub").write_text(forger.public.hex() + "\n")
    ckpt = sqlite3.connect(run_copy / "checkpoints.sqlite")
    ckpt.execute(
        "UPDATE meta SET value = ? WHERE key = 'audit_head'",
        (json.dumps({"seq": forged[-1][0], "hash": forged[-1][7]}),),
    )
    ckpt.commit()
    ckpt.close()
    code, out = _verify_cli(run_copy, capsys, "--key", str(auditor_copy))
    assert code == 1
    assert "FAILED at entry 1 (run_start)" in out and "signed by key" in out


def test_a_published_head_catches_a_rewritten_witness(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _verify_cli(run_copy, capsys, "--json")
    published = json.loads(out)
    head = f"{published['head_seq']}:{published['head_hash']}"
    attacker_db.execute("DELETE FROM entries WHERE seq = ?", (published["head_seq"],))
    attacker_db.commit()
    ckpt = sqlite3.connect(run_copy / "checkpoints.sqlite")
    ckpt.execute("DELETE FROM meta WHERE key = 'audit_head'")
    ckpt.commit()
    ckpt.close()
    code, out = _verify_cli(run_copy, capsys, "--head", head)
    assert code == 1
    assert f"FAILED at entry {published['head_seq']}" in out


# --- keys and continuation ---------------------------------------------------------------


def test_audit_key_rotation_keeps_the_chain_verifiable(run_copy: Path) -> None:
    key = load_signing_key(run_copy / AUDIT_KEY_FILE)
    new = SigningKey()
    with AuditLog(run_copy / AUDIT_FILE, key) as log:
        log.rotate_key(new)
        log.append("operator_note", {"text": "after rotation"})
        head = log.head
    with pytest.raises(AuditError, match="not by this key"):
        AuditLog(run_copy / AUDIT_FILE, key)
    with AuditLog(run_copy / AUDIT_FILE, new) as log:
        log.append("operator_note", {"text": "reopened with the new key"})
        head = log.head
    result = verify_run(run_copy, head=head)
    assert result.ok, result.describe()
    assert result.keys == [key_id(key.public), key_id(new.public)]
    # an entry after the rotation signed with the old key is refused
    db = sqlite3.connect(run_copy / AUDIT_FILE)
    db.execute("DROP TRIGGER entries_append_only_delete")
    db.execute("DELETE FROM entries WHERE seq = ?", (head[0],))
    db.commit()
    db.close()
    # AuditLog refuses the old key now, so a holder of the old key writes the row by hand
    rows = list(read_entries(run_copy / AUDIT_FILE))
    last = rows[-1]
    db = sqlite3.connect(run_copy / AUDIT_FILE)
    forged = _reseal(
        (last.seq + 1, last.ts, "operator_note", None, "{}", last.hash, "", "", ""), key
    )
    db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", forged)
    db.commit()
    db.close()
    result = verify_run(run_copy, head=(forged[0], forged[7]))
    assert not result.ok and result.bad_seq == forged[0]
    assert "signed by key" in str(result.problem)


def test_a_resumed_run_continues_the_same_chain(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = demo_config({"rounds": 2, "clients.count": 4, "clients.epochs": 1})
    with Simulation(cfg, out_dir=out) as sim:
        sim.run()
    with Simulation.resume(out, rounds=4) as sim:
        sim.run()
    result = verify_run(out)
    assert result.ok, result.describe()
    kinds = [e.kind for e in read_entries(out / AUDIT_FILE)]
    assert kinds.count("run_start") == 1 and kinds.count("run_resumed") == 1
    rounds = [e.round for e in read_entries(out / AUDIT_FILE) if e.kind == "model_version"]
    assert rounds == [1, 2, 3, 4]


def test_without_the_audit_switch_no_log_is_written(tmp_path: Path) -> None:
    cfg = demo_config({"rounds": 1, "clients.count": 4, "governance.audit": False})
    with Simulation(cfg, out_dir=tmp_path / "run") as sim:
        sim.run()
    assert not (tmp_path / "run" / AUDIT_FILE).exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda run: (run / "audit-key.pub").write_text("zz\n"),
        lambda run: (run / AUDIT_FILE).write_bytes(b"not a database at all" * 100),
        lambda run: (run / AUDIT_FILE).unlink(),
    ],
    ids=["bad-key-file", "not-sqlite", "missing-log"],
)
def test_unreadable_inputs_give_a_clear_error(
    damage: Callable[[Path], object], run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage(run_copy)
    assert main(["audit", "verify", str(run_copy)]) == 2
    assert "fedfort: error:" in capsys.readouterr().err
