"""Cutting the end of the audit log is caught: the signed head, its copies and exported heads.

Each test plays an attacker with write access to the run directory but without the run's
audit key: they drop the append-only triggers, delete entries from the end of the log with
plain ``sqlite3``, and rewrite or delete every witness of the old end they can find (the
checkpoint database's ``audit_head`` row, the ``head`` row of ``audit.sqlite`` and
``audit-head.json``). ``fedfort audit verify`` must fail and say what was cut.

The attacks only use what a run directory holds, so the same tests run against a fedfort
without signed heads (``PYTHONPATH=<older src>``), where every one of them verifies clean.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import demo_config
from fedfort.access.guard import AccessAudit, Decision
from fedfort.audit import AUDIT_FILE, AUDIT_KEY_FILE, AuditLog
from fedfort.audit.chain import entry_hash, key_id, signed_message
from fedfort.cli import main
from fedfort.config import RunConfig
from fedfort.crypto.keyfiles import load_signing_key
from fedfort.crypto.primitives import SigningKey
from fedfort.simulation import Simulation

ROUNDS = 3
HEAD_FILE = "audit-head.json"


def _config() -> RunConfig:
    return demo_config({"rounds": ROUNDS, "clients.count": 4, "clients.epochs": 1})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path | None]:
    """A short audited run, and the auditor's copy of its head file after round 2."""
    base = tmp_path_factory.mktemp("truncation")
    out = base / "run"
    saved = base / "head-after-round-2.json"

    def keep_head(record: Any) -> None:
        if record.round == 2 and (out / HEAD_FILE).exists():
            shutil.copy(out / HEAD_FILE, saved)

    with Simulation(_config(), out_dir=out) as sim:
        sim.run(on_round=keep_head)
    return out, saved if saved.exists() else None


def _verify(run: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["audit", "verify", str(run), *extra])
    return code, capsys.readouterr().out


def _last(db: sqlite3.Connection) -> tuple[int, str]:
    seq, digest = db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
    return int(seq), str(digest)


def _has_head_table(db: sqlite3.Connection) -> bool:
    return (
        db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'head'").fetchone()
        is not None
    )


def _delete_witnesses(run: Path, db: sqlite3.Connection) -> None:
    """Remove every record of the old end of the log the attacker can find."""
    ckpt = sqlite3.connect(run / "checkpoints.sqlite")
    ckpt.execute("DELETE FROM meta WHERE key = 'audit_head'")
    ckpt.commit()
    ckpt.close()
    if _has_head_table(db):
        db.execute("DELETE FROM head")
        db.commit()
    (run / HEAD_FILE).unlink(missing_ok=True)


def _rewrite_witnesses(run: Path, db: sqlite3.Connection) -> None:
    """Point every witness at the log's new end, signed with a key the attacker made."""
    seq, digest = _last(db)
    legit = db.execute("SELECT key FROM entries WHERE seq = ?", (seq,)).fetchone()[0]
    forger = SigningKey()
    message = b"fedfort-audit-head-v1\n" + json.dumps([seq, digest, legit]).replace(" ", "").encode(
        "ascii"
    )
    head = {"seq": seq, "hash": digest, "key": legit, "signature": forger.sign(message).hex()}
    ckpt = sqlite3.connect(run / "checkpoints.sqlite")
    ckpt.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_head', ?)", (json.dumps(head),)
    )
    ckpt.commit()
    ckpt.close()
    if _has_head_table(db):
        db.execute(
            "INSERT OR REPLACE INTO head (id, seq, hash, key, signature) VALUES (1, ?, ?, ?, ?)",
            (seq, digest, legit, head["signature"]),
        )
        db.commit()
    (run / HEAD_FILE).write_text(json.dumps(head))


def test_the_untouched_run_verifies(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _verify(run_copy, capsys)
    assert code == 0, out
    assert (run_copy / HEAD_FILE).exists()


def test_deleted_access_decisions_after_the_last_round_are_caught(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the access auditor appends decisions after the last committed round
    key = load_signing_key(run_copy / AUDIT_KEY_FILE)
    with AuditLog(run_copy / AUDIT_FILE, key) as log:
        audit = AccessAudit(log)
        for action in ("run.stop", "model.rollback"):
            audit.record(Decision("token:mallory", "admin", action, True, "ok", 200))
    assert _verify(run_copy, capsys)[0] == 0
    db = sqlite3.connect(run_copy / AUDIT_FILE)
    db.execute("DROP TRIGGER entries_append_only_delete")
    first = db.execute("SELECT MIN(seq) FROM entries WHERE kind = 'access'").fetchone()[0]
    last = _last(db)[0]
    db.execute("DELETE FROM entries WHERE kind = 'access'")
    db.commit()
    db.close()
    code, out = _verify(run_copy, capsys)
    assert code == 1, out
    assert f"FAILED at entry {first}" in out
    assert f"entries {first}..{last} were removed" in out


def test_a_cut_tail_with_every_witness_deleted_is_caught(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    last = _last(attacker_db)[0]
    attacker_db.execute("DELETE FROM entries WHERE seq > ?", (last - 2,))
    attacker_db.commit()
    _delete_witnesses(run_copy, attacker_db)
    code, out = _verify(run_copy, capsys)
    assert code == 1, out
    assert f"FAILED at entry {last - 1}" in out
    assert "signed head in audit.sqlite is missing" in out


def test_a_cut_tail_with_rewritten_witnesses_is_caught(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    last = _last(attacker_db)[0]
    attacker_db.execute("DELETE FROM entries WHERE seq > ?", (last - 2,))
    attacker_db.commit()
    _rewrite_witnesses(run_copy, attacker_db)
    code, out = _verify(run_copy, capsys)
    assert code == 1, out
    assert f"FAILED at entry {last - 2}" in out
    assert "not signed by the audit key" in out


def test_the_last_round_erased_with_its_checkpoint_is_caught(
    run_copy: Path, attacker_db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    first = attacker_db.execute(
        "SELECT MIN(seq) FROM entries WHERE round = ?", (ROUNDS,)
    ).fetchone()[0]
    attacker_db.execute("DELETE FROM entries WHERE seq >= ?", (first,))
    attacker_db.commit()
    ckpt = sqlite3.connect(run_copy / "checkpoints.sqlite")
    ckpt.execute("DELETE FROM checkpoints WHERE round = ?", (ROUNDS,))
    ckpt.commit()
    ckpt.close()
    _rewrite_witnesses(run_copy, attacker_db)
    code, out = _verify(run_copy, capsys)
    assert code == 1, out
    assert "not signed by the audit key" in out
    # with every witness deleted instead, the missing head is named
    _delete_witnesses(run_copy, attacker_db)
    code, out = _verify(run_copy, capsys)
    assert code == 1, out
    assert f"FAILED at entry {first}" in out and "is missing" in out


def test_an_older_signed_head_put_back_needs_an_exported_head(
    finished_run: tuple[Path, Path | None],
    run_copy: Path,
    attacker_db: sqlite3.Connection,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The attacker kept a genuine head from round 2 and cuts the log back to it: the run
    directory alone now looks consistent; the auditor's head exported at the end does not."""
    old_head_file = finished_run[1]
    assert old_head_file is not None, "this fedfort writes no audit-head.json"
    exported = tmp_path / "auditor-head.json"
    shutil.copy(run_copy / HEAD_FILE, exported)
    old = json.loads(old_head_file.read_text())
    attacker_db.execute("DELETE FROM entries WHERE seq > ?", (old["seq"],))
    attacker_db.execute(
        "INSERT OR REPLACE INTO head (id, seq, hash, key, signature) VALUES (1, ?, ?, ?, ?)",
        (old["seq"], old["hash"], old["key"], old["signature"]),
    )
    attacker_db.commit()
    shutil.copy(old_head_file, run_copy / HEAD_FILE)
    ckpt = sqlite3.connect(run_copy / "checkpoints.sqlite")
    ckpt.execute("DELETE FROM checkpoints WHERE round > 2")
    ckpt.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_head', ?)", (json.dumps(old),)
    )
    ckpt.commit()
    ckpt.close()
    # the documented limit: a replayed genuine head is consistent with the run directory
    assert _verify(run_copy, capsys)[0] == 0
    code, out = _verify(run_copy, capsys, "--head", str(exported))
    assert code == 1, out
    assert f"entry {json.loads(exported.read_text())['seq']} was witnessed" in out


def test_a_rekeyed_log_needs_the_pinned_key_or_an_exported_head(
    run_copy: Path,
    attacker_db: sqlite3.Connection,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    pinned = tmp_path / "pinned.pub"
    shutil.copy(run_copy / "audit-key.pub", pinned)
    exported = tmp_path / "auditor-head.json"
    shutil.copy(run_copy / HEAD_FILE, exported)
    # cut the last round, then re-sign everything under a key of the attacker's own
    first = attacker_db.execute(
        "SELECT MIN(seq) FROM entries WHERE round = ?", (ROUNDS,)
    ).fetchone()[0]
    rows = attacker_db.execute(
        "SELECT seq, ts, kind, round, body FROM entries WHERE seq < ? ORDER BY seq", (first,)
    ).fetchall()
    forger = SigningKey()
    kid, prev, forged = key_id(forger.public), "0" * 64, []
    for seq, ts, kind, round_, body in rows:
        digest = entry_hash(seq, ts, kind, round_, body, prev, kid)
        forged.append(
            (
                seq,
                ts,
                kind,
                round_,
                body,
                prev,
                kid,
                digest,
                forger.sign(signed_message(digest)).hex(),
            )
        )
        prev = digest
    attacker_db.execute("DELETE FROM entries")
    attacker_db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", forged)
    attacker_db.commit()
    seq = forged[-1][0]
    message = b"fedfort-audit-head-v1\n" + json.dumps([seq, prev, kid]).replace(" ", "").encode()
    head = {"seq": seq, "hash": prev, "key": kid, "signature": forger.sign(message).hex()}
    attacker_db.execute(
        "INSERT OR REPLACE INTO head (id, seq, hash, key, signature) VALUES (1, ?, ?, ?, ?)",
        (seq, prev, kid, head["signature"]),
    )
    attacker_db.commit()
    (run_copy / HEAD_FILE).write_text(json.dumps(head))
    (run_copy / "audit-key.pub").write_text(forger.public.hex() + "\n")
    ckpt = sqlite3.connect(run_copy / "checkpoints.sqlite")
    ckpt.execute("DELETE FROM checkpoints WHERE round = ?", (ROUNDS,))
    ckpt.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_head', ?)", (json.dumps(head),)
    )
    ckpt.commit()
    ckpt.close()
    # the documented limit: a log re-keyed whole is consistent with the run directory alone
    assert _verify(run_copy, capsys)[0] == 0
    code, out = _verify(run_copy, capsys, "--public-key", str(pinned))
    assert code == 1 and "FAILED at entry 1 (run_start)" in out and "signed by key" in out
    code, out = _verify(run_copy, capsys, "--head", str(exported))
    assert code == 1 and "was witnessed" in out


def test_verifying_while_a_writer_appends_never_reports_a_cut(run_copy: Path) -> None:
    """A live run's verification (the audit_chain alert) races the access auditor's appends:
    the head copies are read so that an append in between cannot look like a cut."""
    import threading

    from fedfort.audit import verify_run

    key = load_signing_key(run_copy / AUDIT_KEY_FILE)
    done = threading.Event()

    def append() -> None:
        with AuditLog(run_copy / AUDIT_FILE, key) as log:
            audit = AccessAudit(log)
            for _ in range(150):
                audit.record(Decision("token:alice", "viewer", "run.read", True, "ok", 200))
        done.set()

    writer = threading.Thread(target=append)
    writer.start()
    checks = 0
    while not done.is_set() or checks < 3:
        result = verify_run(run_copy)
        assert result.ok, result.describe()
        checks += 1
    writer.join(timeout=120)
    assert verify_run(run_copy).entries >= 150
