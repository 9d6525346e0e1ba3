"""Masking of sensitive fields: drop, generalise and keyed pseudonyms."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fedfort.edge import (
    EdgeConfig,
    FieldSpec,
    PseudonymKey,
    Records,
    apply_masking,
    generalise,
    protect,
)
from fedfort.edge.records import client_key
from fedfort.errors import ConfigError

IDS = np.array(["MRN-1", "MRN-2", "MRN-1", "MRN-3"])
SCHEMA = EdgeConfig(
    enabled=True,
    fields={
        "patient_id": FieldSpec(type="identifier", mask="pseudonymise"),
        "name": FieldSpec(type="string", mask="drop"),
        "age": FieldSpec(type="int", min=0, max=120, mask="generalise", bins=(0, 40, 65, 120)),
        "zip": FieldSpec(
            type="category",
            categories=("02115", "02139", "10016"),
            mask="generalise",
            groups={"boston": ("02115", "02139"), "new_york": ("10016",)},
        ),
    },
    deduplicate_on="patient_id",
)


def _records() -> Records:
    x = np.array([[0.1, 0.2], [0.3, 0.1], [0.1, 0.2], [0.5, 0.5]], dtype=np.float32)
    return Records(
        x,
        np.array([0, 1, 0, 1]),
        {
            "patient_id": IDS,
            "name": np.array(["Ada Okafor", "Ben Silva", "Ada Okafor", "Chloe Tanaka"]),
            "age": np.array([39, 40, 39, 120]),
            "zip": np.array(["02115", "10016", "02115", "02139"]),
        },
    )


def test_pseudonyms_are_stable_per_key_and_differ_across_keys() -> None:
    key_a, key_b = PseudonymKey.generate(), PseudonymKey.generate()
    a1 = apply_masking(SCHEMA, _records(), key_a).columns["patient_id"]
    a2 = apply_masking(SCHEMA, _records(), key_a).columns["patient_id"]
    b = apply_masking(SCHEMA, _records(), key_b).columns["patient_id"]
    assert a1.tolist() == a2.tolist()
    assert a1[0] == a1[2] and a1[0] != a1[1]  # equal ids stay linkable on the client
    assert not set(a1.tolist()) & set(b.tolist())
    for raw, pseudo in zip(IDS.tolist(), a1.tolist(), strict=True):
        assert pseudo != raw
        # never a plain hash of the value, with or without the field name
        assert pseudo != hashlib.sha256(raw.encode()).hexdigest()
        assert pseudo != hashlib.sha256(b"patient_id\x00" + raw.encode()).hexdigest()
    # the field name separates domains: the same value in another field links to nothing
    assert key_a.pseudonym("other", "MRN-1") != a1[0]
    assert repr(key_a) == "PseudonymKey(<secret>)"


def test_drop_and_generalise() -> None:
    masked = apply_masking(SCHEMA, _records(), PseudonymKey.generate())
    assert "name" not in masked.columns
    assert masked.columns["age"].tolist() == ["[0, 40)", "[40, 65)", "[0, 40)", "[65, 120]"]
    assert masked.columns["zip"].tolist() == ["boston", "new_york", "boston", "boston"]
    spec = FieldSpec(type="float", mask="generalise", bins=(0.0, 1.0))
    assert generalise(spec, np.array([0.0, 1.0, 2.0])).tolist() == ["[0, 1]", "[0, 1]", "outside"]


def test_pipeline_deduplicates_by_pseudonym_and_reports_counts_only() -> None:
    protected = protect(SCHEMA, _records(), num_classes=2, key=PseudonymKey.generate())
    assert protected.x.shape == (3, 2)  # the repeated patient counted once
    counts = protected.counts
    assert counts["duplicates_removed"] == 1 and counts["rows_out"] == 3
    assert counts["fields_dropped"] == 1 and counts["fields_generalised"] == 2
    assert counts["fields_pseudonymised"] == 1
    metrics = protected.metrics()
    assert all(k.startswith("edge_") and isinstance(v, float) for k, v in metrics.items())
    text = repr(metrics)
    for name in ("name", "patient_id", "zip", "Ada", "MRN"):
        assert name not in text


def test_key_file_is_owner_only_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    key = PseudonymKey.load_or_create(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert PseudonymKey.load_or_create(path).pseudonym("f", "v") == key.pseudonym("f", "v")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        PseudonymKey.load_or_create(path)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 8)
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="32 bytes"):
        PseudonymKey.load_or_create(short)
    with pytest.raises(ConfigError, match="at least"):
        PseudonymKey(b"short")


def test_client_keys_live_in_the_key_dir_per_client(tmp_path: Path) -> None:
    cfg = SCHEMA.model_copy(update={"key_dir": str(tmp_path / "keys")})
    a = client_key(cfg, "client-000", None)
    b = client_key(cfg, "client-001", None)
    again = client_key(cfg, "client-000", None)
    assert a is not None and b is not None and again is not None
    assert a.pseudonym("f", "v") == again.pseudonym("f", "v") != b.pseudonym("f", "v")
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "client-000.pseudonym.key",
        "client-001.pseudonym.key",
    ]
    assert client_key(EdgeConfig(enabled=True), "client-000", tmp_path) is None  # no need
