"""Tests for fedfort.server.checkpoint_codec (state packing) and fedfort.server.checkpoint (the
SQLite checkpoint store)."""

import io
import json
import sqlite3

import numpy as np
import pytest

from fedfort.errors import CheckpointError
from fedfort.params import vector_sha256
from fedfort.server.checkpoint import Checkpoint, CheckpointStore
from fedfort.server.checkpoint_codec import pack_state, unpack_state

# --------------------------------------------------------------------------------------------
# pack_state / unpack_state


def _round_trip(tree):
    text, blob = pack_state(tree)
    assert isinstance(text, str)
    assert isinstance(blob, bytes)
    json.loads(text)  # the non-array part is plain JSON
    return unpack_state(text, blob)


def test_round_trip_nested_with_arrays():
    tree = {
        "round": 3,
        "name": "fedavg",
        "lr": 0.25,
        "done": False,
        "nothing": None,
        "optimizer": {
            "m": np.arange(6, dtype=np.float32).reshape(2, 3),
            "v": np.full(4, 1e-8, dtype=np.float64),
            "steps": [np.array([1, 2, 3], dtype=np.int64), {"deep": np.array(2.5)}],
        },
        "clients": [
            {"id": 0, "control": np.zeros(3, dtype=np.float32)},
            {"id": 1, "control": np.ones(3, dtype=np.float32)},
        ],
        "empty": np.zeros((0, 5), dtype=np.float32),
        "flags": np.array([True, False]),
        "nested_list": [[1, 2], [3, [4.5, "x"]]],
    }
    back = _round_trip(tree)

    assert back["round"] == 3
    assert back["name"] == "fedavg"
    assert back["lr"] == 0.25
    assert back["done"] is False
    assert back["nothing"] is None
    assert back["nested_list"] == [[1, 2], [3, [4.5, "x"]]]

    def check_array(got, want):
        assert isinstance(got, np.ndarray)
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)

    check_array(back["optimizer"]["m"], tree["optimizer"]["m"])
    check_array(back["optimizer"]["v"], tree["optimizer"]["v"])
    check_array(back["optimizer"]["steps"][0], tree["optimizer"]["steps"][0])
    check_array(back["optimizer"]["steps"][1]["deep"], tree["optimizer"]["steps"][1]["deep"])
    check_array(back["empty"], tree["empty"])
    check_array(back["flags"], tree["flags"])
    for got, want in zip(back["clients"], tree["clients"], strict=True):
        assert got["id"] == want["id"]
        check_array(got["control"], want["control"])


def test_tuples_come_back_as_lists():
    assert _round_trip({"t": (1, 2, (3, 4))}) == {"t": [1, 2, [3, 4]]}


def test_numpy_scalars_become_python_values():
    back = _round_trip(
        {
            "f32": np.float32(1.5),
            "f64": np.float64(-2.25),
            "i64": np.int64(-7),
            "u8": np.uint8(200),
            "b": np.bool_(True),
        }
    )
    assert back == {"f32": 1.5, "f64": -2.25, "i64": -7, "u8": 200, "b": True}
    assert type(back["f32"]) is float
    assert type(back["i64"]) is int
    assert type(back["b"]) is bool


def test_big_ints_round_trip():
    big = 2**127 + 12345
    back = _round_trip({"big": big, "neg": -(2**100), "list": [2**64, 2**64 + 1]})
    assert back == {"big": big, "neg": -(2**100), "list": [2**64, 2**64 + 1]}


def test_pcg64_state_round_trips_and_generator_continues():
    rng = np.random.default_rng(2024)
    rng.standard_normal(17)  # advance a bit, leaving a non-trivial state
    rng.integers(0, 10, size=3, dtype=np.uint32)  # exercise has_uint32/uinteger
    state = rng.bit_generator.state
    assert state["state"]["state"] > 2**64  # a genuinely 128-bit integer

    back = _round_trip({"rng": state})
    assert back["rng"] == state

    restored = np.random.Generator(np.random.PCG64())
    restored.bit_generator.state = back["rng"]
    np.testing.assert_array_equal(restored.standard_normal(50), rng.standard_normal(50))
    np.testing.assert_array_equal(
        restored.integers(0, 2**31, size=20), rng.integers(0, 2**31, size=20)
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"s": {1, 2}},
        {"obj": object()},
        {"raw": b"bytes"},
        {"c": 1 + 2j},
        [{"deep": {"f": lambda: None}}],
        {1: "int key"},
        {"inner": {("a", "b"): 1}},
    ],
)
def test_unsupported_objects_raise(bad):
    with pytest.raises(CheckpointError):
        pack_state(bad)


def test_object_arrays_are_refused():
    # Object arrays can only be stored by pickling, which checkpoints promise never to do;
    # pack_state must refuse them instead of writing a pickle that load later cannot read.
    with pytest.raises(CheckpointError):
        pack_state({"x": np.array([{"a": 1}, None], dtype=object)})


# --------------------------------------------------------------------------------------------
# CheckpointStore


def _vector(seed, dim=50):
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    with CheckpointStore(tmp_path / "run" / "ckpt.sqlite") as s:
        yield s


def test_empty_store(store):
    assert store.latest_round() is None
    assert store.rounds() == []
    assert store.records() == []
    assert store.get_meta("anything") is None
    with pytest.raises(CheckpointError, match="no committed round"):
        store.load()


def test_save_and_load(store):
    model = _vector(0)
    state = {"round": 1, "rng": np.random.default_rng(1).bit_generator.state, "m": model * 2}
    record = {"round": 1, "accuracy": 0.5, "participants": [0, 3]}
    digest = store.save(1, model, state, record)
    assert digest == vector_sha256(model)

    ckpt = store.load()
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.round == 1
    assert ckpt.model.dtype == np.float32
    np.testing.assert_array_equal(ckpt.model, model)
    assert ckpt.model_sha256 == digest
    assert ckpt.state["round"] == 1
    assert ckpt.state["rng"] == state["rng"]
    np.testing.assert_array_equal(ckpt.state["m"], model * 2)
    assert ckpt.record == record


def test_rounds_latest_records_and_load_by_round(store):
    models = {r: _vector(r) for r in (3, 1, 2)}
    for r, m in models.items():
        store.save(r, m, {"round": r}, {"round": r, "loss": 1.0 / r})

    assert store.rounds() == [1, 2, 3]
    assert store.latest_round() == 3
    assert [rec["round"] for rec in store.records()] == [1, 2, 3]
    assert store.records()[1]["loss"] == 0.5

    latest = store.load()
    assert latest.round == 3
    np.testing.assert_array_equal(latest.model, models[3])
    second = store.load(2)
    assert second.round == 2
    assert second.state == {"round": 2}
    np.testing.assert_array_equal(second.model, models[2])

    with pytest.raises(CheckpointError, match="round 7"):
        store.load(7)


def test_save_same_round_replaces(store):
    store.save(1, _vector(0), {}, {"v": "old"})
    store.save(1, _vector(1), {}, {"v": "new"})
    assert store.rounds() == [1]
    assert store.records() == [{"v": "new"}]
    np.testing.assert_array_equal(store.load(1).model, _vector(1))


def test_save_converts_model_to_float32(store):
    model64 = _vector(4).astype(np.float64)
    digest = store.save(0, model64, {}, {})
    ckpt = store.load(0)
    assert ckpt.round == 0
    assert ckpt.model.dtype == np.float32
    np.testing.assert_array_equal(ckpt.model, model64.astype(np.float32))
    assert digest == ckpt.model_sha256


def test_meta(store):
    store.set_meta("config_hash", "abc")
    assert store.get_meta("config_hash") == "abc"
    store.set_meta("config_hash", "def")
    assert store.get_meta("config_hash") == "def"
    assert store.get_meta("other") is None


def test_store_persists_across_reopen(tmp_path):
    path = tmp_path / "ckpt.sqlite"
    with CheckpointStore(path) as s:
        s.save(5, _vector(5), {"k": [1, 2]}, {"round": 5})
        s.set_meta("run", "x")
    with CheckpointStore(path) as s:
        assert s.latest_round() == 5
        assert s.get_meta("run") == "x"
        ckpt = s.load()
        assert ckpt.state == {"k": [1, 2]}
        np.testing.assert_array_equal(ckpt.model, _vector(5))


def _npy(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_tampered_model_fails_sha256_check(tmp_path):
    path = tmp_path / "ckpt.sqlite"
    model = _vector(0)
    with CheckpointStore(path) as s:
        s.save(1, model, {"round": 1}, {"round": 1})
        s.save(2, _vector(2), {"round": 2}, {"round": 2})

    changed = model.copy()
    changed[10] += 1.0
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE checkpoints SET model = ? WHERE round = 1", (_npy(changed),))
    db.close()

    with CheckpointStore(path) as s:
        with pytest.raises(CheckpointError, match="SHA-256"):
            s.load(1)
        # other rounds are unaffected
        np.testing.assert_array_equal(s.load(2).model, _vector(2))


def test_tampered_hash_column_fails(tmp_path):
    path = tmp_path / "ckpt.sqlite"
    with CheckpointStore(path) as s:
        s.save(1, _vector(0), {}, {})
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE checkpoints SET model_sha256 = ?", ("0" * 64,))
    db.close()
    with CheckpointStore(path) as s, pytest.raises(CheckpointError, match="SHA-256"):
        s.load()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("model", b"not an npy file"),
        ("state_arrays", b"garbage"),
        ("state_json", "{not json"),
        ("record_json", "[1, 2"),
    ],
)
def test_corrupt_columns_raise_checkpoint_error(tmp_path, column, value):
    path = tmp_path / "ckpt.sqlite"
    with CheckpointStore(path) as s:
        s.save(1, _vector(0), {"a": np.ones(2)}, {"r": 1})
    db = sqlite3.connect(path)
    with db:
        db.execute(f"UPDATE checkpoints SET {column} = ?", (value,))
    db.close()
    with CheckpointStore(path) as s, pytest.raises(CheckpointError, match="corrupt"):
        s.load(1)


def test_non_sqlite_file_raises(tmp_path):
    path = tmp_path / "not-a-db.sqlite"
    path.write_bytes(b"this is definitely not an SQLite database\n" * 20)
    with pytest.raises(CheckpointError, match="not a fedfort checkpoint"):
        CheckpointStore(path)


# --------------------------------------------------------------------------------------------
# signed stores (the run's audit key)


def test_a_signed_store_round_trips_and_verifies(tmp_path):
    from fedfort.crypto.primitives import SigningKey

    key = SigningKey()
    path = tmp_path / "ckpt.sqlite"
    with CheckpointStore(path, key) as s:
        s.save(1, _vector(0), {"a": np.ones(2)}, {"round": 1})
        s.set_meta("config", "{}")
    with CheckpointStore(path, key) as s:
        assert s.signed and s.verify_all() == 1
        assert s.verified_meta("config") == "{}"
        assert s.verified_meta("absent", required=False) == ""
    # a store without the key reads (hashes only) but cannot verify
    with CheckpointStore(path) as s:
        np.testing.assert_array_equal(s.load(1).model, _vector(0))
        with pytest.raises(CheckpointError, match="needs the run's audit key"):
            s.verified_meta("config")


@pytest.mark.parametrize(
    "tamper",
    ["model_and_hash", "state", "record", "round", "unsigned_row", "other_key"],
)
def test_a_signed_row_altered_without_the_key_is_refused(tmp_path, tamper):
    from fedfort.crypto.primitives import SigningKey

    key = SigningKey()
    path = tmp_path / "ckpt.sqlite"
    with CheckpointStore(path, key) as s:
        s.save(1, _vector(0), {"a": np.ones(2)}, {"round": 1})
        s.save(2, _vector(2), {"a": np.ones(2)}, {"round": 2})
    db = sqlite3.connect(path)
    with db:
        if tamper == "model_and_hash":
            poisoned = -_vector(0)
            db.execute(
                "UPDATE checkpoints SET model = ?, model_sha256 = ? WHERE round = 1",
                (_npy(poisoned), vector_sha256(poisoned)),
            )
        elif tamper == "state":
            db.execute("UPDATE checkpoints SET state_json = '{\"a\": 1}' WHERE round = 1")
        elif tamper == "record":
            db.execute("UPDATE checkpoints SET record_json = '{\"round\": 9}' WHERE round = 1")
        elif tamper == "round":  # round 2's signed row moved to round 1
            db.execute("DELETE FROM checkpoints WHERE round = 1")
            db.execute("UPDATE checkpoints SET round = 1 WHERE round = 2")
        elif tamper == "unsigned_row":
            db.execute("UPDATE checkpoints SET signature = NULL WHERE round = 1")
        else:  # a row signed by another run under the same key (another run nonce)
            other = tmp_path / "other.sqlite"
            with CheckpointStore(other, key) as s:
                s.save(1, -_vector(0), {"a": np.ones(2)}, {"round": 1})
            row = sqlite3.connect(other).execute("SELECT * FROM checkpoints").fetchone()
            db.execute("DELETE FROM checkpoints WHERE round = 1")
            db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
    db.close()
    with CheckpointStore(path, key) as s, pytest.raises(CheckpointError, match=r"round 1 .*sign"):
        s.load(1)


def test_signed_meta_altered_without_the_key_is_refused(tmp_path):
    from fedfort.crypto.primitives import SigningKey

    key = SigningKey()
    path = tmp_path / "ckpt.sqlite"
    with CheckpointStore(path, key) as s:
        s.save(0, _vector(0), {}, {"round": 0})
        s.set_meta("config", '{"defense": "median"}')
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = '{\"defense\": \"fedavg\"}' WHERE key = 'config'")
    db.close()
    with CheckpointStore(path, key) as s, pytest.raises(CheckpointError, match="signature"):
        s.verified_meta("config")
    # without its run nonce a signed store with rounds cannot be opened at all
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM meta WHERE key = 'run_nonce'")
    db.close()
    with pytest.raises(CheckpointError, match="no signed 'run_nonce'"):
        CheckpointStore(path, key)
