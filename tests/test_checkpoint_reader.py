"""The read-only checkpoint reader: it reads what the store wrote, verifies exactly as the store
does, never writes to the file, and is the only code that knows the checkpoint tables."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedfort.crypto.primitives import SigningKey
from fedfort.errors import CheckpointError
from fedfort.params import vector_sha256
from fedfort.server.checkpoint import CheckpointReader, CheckpointStore
from fedfort.server.checkpoint_codec import encode_array, pack_state

SRC = Path(__file__).resolve().parents[1] / "src" / "fedfort"


def _vector(seed: int, dim: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def _write(path: Path, key: SigningKey | None = None, rounds: int = 3) -> None:
    with CheckpointStore(path, key) as store:
        for r in range(rounds):
            state = {"round": r, "stages": {"reputation": {"scores": {"c0": 0.5 + r / 10}}}}
            state["moments"] = np.full(4, r, dtype=np.float64)
            store.save(r, _vector(r), state, {"round": r, "accuracy": 0.5 + r / 10})
        store.set_meta("config", '{"rounds": 3}')


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_reader_reads_what_the_store_wrote(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.sqlite"
    _write(path)
    with CheckpointStore(path) as store, CheckpointReader(path) as reader:
        assert not reader.signed
        assert reader.rounds() == store.rounds() == [0, 1, 2]
        assert reader.latest_round() == 2
        assert reader.versions() == store.versions()
        assert reader.records() == store.records()
        assert reader.get_meta("config") == '{"rounds": 3}' and reader.get_meta("x") is None
        loaded = reader.load()
        assert loaded.round == 2 and loaded.model_sha256 == vector_sha256(_vector(2))
        np.testing.assert_array_equal(loaded.model, store.load(2).model)
        np.testing.assert_array_equal(loaded.state["moments"], np.full(4, 2.0))
        assert reader.verify_all() == 3


def test_a_snapshot_lists_without_unpacking_and_follows_a_live_writer(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.sqlite"
    _write(path, rounds=2)
    with CheckpointStore(path) as writer, CheckpointReader(path) as reader:
        first = reader.snapshot()
        assert first.meta == {"config": '{"rounds": 3}'}
        assert [(r, record) for r, _c, _h, record in first.versions] == [
            (0, {"round": 0, "accuracy": 0.5}),
            (1, {"round": 1, "accuracy": 0.6}),
        ]
        assert first.versions[1][2] == vector_sha256(_vector(1))
        # the latest state's JSON, its arrays left as references into the .npz blob
        assert first.latest_state["stages"] == {"reputation": {"scores": {"c0": 0.6}}}
        assert set(first.latest_state["moments"]) == {"__array__"}
        writer.save(2, _vector(2), {"round": 2}, {"round": 2})
        second = reader.snapshot()
        assert [v[0] for v in second.versions] == [0, 1, 2]
        assert second.latest_state == {"round": 2}
        assert not reader._db.in_transaction  # the read transaction is closed


def test_an_empty_store_snapshots_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.sqlite"
    CheckpointStore(path).close()
    with CheckpointReader(path) as reader:
        snapshot = reader.snapshot()
        assert (snapshot.meta, snapshot.versions, snapshot.latest_state) == ({}, [], {})
        with pytest.raises(CheckpointError, match="no committed round"):
            reader.load()


def test_reading_never_writes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.sqlite"
    _write(path)
    before = _digest(path)
    with CheckpointReader(path) as reader:
        reader.snapshot()
        reader.verify_all()
        assert not hasattr(reader, "save") and not hasattr(reader, "set_meta")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._db.execute("DELETE FROM meta")
    assert _digest(path) == before


def test_a_store_written_before_signatures_reads_unsigned_and_is_not_migrated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "checkpoints.sqlite"
    db = sqlite3.connect(path)
    with db:
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE checkpoints (round INTEGER PRIMARY KEY, created REAL NOT NULL, "
            "model BLOB NOT NULL, model_sha256 TEXT NOT NULL, state_json TEXT NOT NULL, "
            "state_arrays BLOB NOT NULL, record_json TEXT NOT NULL);"
        )
        text, blob = pack_state({"round": 1})
        model = _vector(1)
        db.execute(
            "INSERT INTO checkpoints VALUES (1, 0.0, ?, ?, ?, ?, '{\"round\": 1}')",
            (encode_array(model), vector_sha256(model), text, blob),
        )
        db.execute("INSERT INTO meta VALUES ('config', '{}')")
    db.close()
    before = _digest(path)
    with CheckpointReader(path) as reader:
        np.testing.assert_array_equal(reader.load(1).model, model)
        assert reader.snapshot().versions[0][3] == {"round": 1}
    assert _digest(path) == before
    # the audit key cannot vouch for rows written without it
    with pytest.raises(CheckpointError, match="no signed 'run_nonce'"):
        CheckpointReader(path, SigningKey())


def test_a_missing_or_foreign_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointError, match=r"is not a fedfort run: checkpoints\.sqlite is missing"
    ):
        CheckpointReader(tmp_path / "checkpoints.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is definitely not an SQLite database\n" * 20)
    with pytest.raises(CheckpointError, match="not a fedfort checkpoint database"):
        CheckpointReader(junk)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    with db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.close()
    with pytest.raises(CheckpointError, match="has no checkpoints table"):
        CheckpointReader(other)


@pytest.mark.parametrize("opener", [CheckpointStore, CheckpointReader])
@pytest.mark.parametrize("tamper", ["model_and_hash", "model", "record", "unsigned_row", "meta"])
def test_the_reader_refuses_what_the_store_refuses(
    tmp_path: Path, opener: type, tamper: str
) -> None:
    key = SigningKey()
    path = tmp_path / "checkpoints.sqlite"
    _write(path, key)
    db = sqlite3.connect(path)
    with db:
        if tamper == "model_and_hash":
            poisoned = -_vector(1)
            db.execute(
                "UPDATE checkpoints SET model = ?, model_sha256 = ? WHERE round = 1",
                (encode_array(poisoned), vector_sha256(poisoned)),
            )
        elif tamper == "model":
            db.execute(
                "UPDATE checkpoints SET model = ? WHERE round = 1", (encode_array(-_vector(1)),)
            )
        elif tamper == "record":
            db.execute("UPDATE checkpoints SET record_json = '{\"round\": 9}' WHERE round = 1")
        elif tamper == "unsigned_row":
            db.execute("UPDATE checkpoints SET signature = NULL WHERE round = 1")
        else:
            db.execute("UPDATE meta SET value = '{\"rounds\": 9}' WHERE key = 'config'")
    db.close()
    with opener(path, key) as checkpoints:
        assert checkpoints.signed
        assert checkpoints.load(0).round == 0  # untouched rows still verify
        if tamper == "meta":
            with pytest.raises(CheckpointError, match=r"'config' .*fails its signature check"):
                checkpoints.verified_meta("config")
            return
        expected = {
            "model_and_hash": "round 1 .*fails its signature check",
            "model": "round 1 fails its SHA-256 check",
            "record": "round 1 .*fails its signature check",
            "unsigned_row": "round 1 .*is not signed",
        }[tamper]
        with pytest.raises(CheckpointError, match=expected):
            checkpoints.load(1)
        with pytest.raises(CheckpointError, match=expected):
            checkpoints.verify_all()
    # without the key, only the model hash is checked, as by the store
    with opener(path) as unkeyed:
        if tamper == "model":
            with pytest.raises(CheckpointError, match="SHA-256"):
                unkeyed.load(1)
        else:
            assert unkeyed.load(1).round == 1


# The audit package sits below the server, so it reads the checkpoints' audit witness and
# stored configuration itself (fedfort.audit.verify) rather than through the reader.
_OUTSIDE_THE_READER = {"server/checkpoint.py", "audit/verify.py"}


def test_only_the_checkpoint_module_knows_the_checkpoint_tables() -> None:
    sql = re.compile(r"\b(?:FROM|INTO|UPDATE|TABLE(?: IF NOT EXISTS)?)\s+checkpoints\b")
    owners = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if sql.search(path.read_text(encoding="utf-8"))
    )
    assert set(owners) <= _OUTSIDE_THE_READER, owners
    assert "server/checkpoint.py" in owners
