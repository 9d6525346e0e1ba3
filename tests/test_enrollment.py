"""What a client declares when it joins (its run, its data's schema) and the server's check."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedfort.config import RunConfig, parse_config
from fedfort.crypto.pki import init_ca, issue_clients, load_certificate, load_private_key
from fedfort.crypto.primitives import SigningKey
from fedfort.data.schema import DataSchema
from fedfort.errors import Refused
from fedfort.transport.enrollment import (
    EnrollmentTerms,
    declaration,
    federation_identity,
    schema_from_proto,
    schema_to_proto,
)
from fedfort.transport.gate import Gate
from fedfort.transport.identity import make_binding
from fedfort.transport.proto import fedfort_pb2 as pb
from fedfort.transport.registry import Registry

FED = "enrolfed"
SCHEMA = DataSchema(("age", "mean_radius", "mean_perimeter"), ("benign", "malignant"))


def _config(**data: object) -> RunConfig:
    body = {
        "seed": 0,
        "rounds": 5,
        "data": {
            "source": "files",
            "train": "/data/{client}/train.csv",
            "label": "diagnosis",
            "features": list(SCHEMA.features),
            "classes": list(SCHEMA.classes),
            **data,
        },
        "clients": {"names": ["hospital-a", "hospital-b"]},
    }
    return parse_config(body)


def test_the_identity_leaves_out_what_each_party_sets_for_itself() -> None:
    base = _config()
    same = [
        _config(train="/mnt/export/train.parquet", test="/mnt/export/test.parquet"),
        _config(validation="/srv/validation.csv"),
        _config(label="Diagnosis", drop=["mrn", "zip"], categories={"sex": ["F", "M"]}),
        base.with_overrides({"rounds": 50, "network.address": "10.0.0.1:443"}),
        base.with_overrides({"privacy.client.max_total_epsilon": 3.0}),
    ]
    assert all(federation_identity(c) == federation_identity(base) for c in same)
    differ = [
        base.with_overrides({"clients.lr": 0.5}),
        _config(features=["age", "mean_radius"]),
        _config(classes=["benign", "malignant", "unknown"]),
        base.with_overrides({"clients.names": ["hospital-a", "hospital-c"]}),
        base.with_overrides({"defense.aggregator": "median"}),
    ]
    assert len({federation_identity(c) for c in differ} | {federation_identity(base)}) == 6


def test_the_noise_the_server_calibrates_is_not_part_of_the_identity() -> None:
    private = {"privacy.mode": "central", "privacy.target_epsilon": 4.0}
    client = _config().with_overrides(private)
    server = client.with_overrides({"privacy.noise_multiplier": 1.234})  # calibrated
    assert federation_identity(client) == federation_identity(server)
    other = client.with_overrides({"privacy.target_epsilon": 8.0})
    assert federation_identity(other) != federation_identity(client)


def test_the_schema_survives_the_wire() -> None:
    images = DataSchema(("pixel_0_0", "pixel_0_1"), ("0", "1"), image_shape=(1, 2))
    regression = DataSchema(("x",), (), "regression")
    for schema in (SCHEMA, images, regression):
        wire = pb.DataSchema.FromString(schema_to_proto(schema).SerializeToString())
        assert schema_from_proto(wire) == schema


@pytest.mark.parametrize(
    "bad",
    [
        pb.DataSchema(features=[], classes=["a", "b"], task="classification"),
        pb.DataSchema(features=["x", "x"], classes=["a", "b"], task="classification"),
        pb.DataSchema(features=["x"], classes=["a", "b"], task="ranking"),
        pb.DataSchema(features=["x"], classes=["a", "b"], task="classification", image_shape=[3]),
    ],
)
def test_a_declared_schema_that_cannot_be_one_is_malformed(bad: pb.DataSchema) -> None:
    with pytest.raises(Refused) as info:
        schema_from_proto(bad)
    assert info.value.reason == "malformed"


def test_terms_name_what_differs() -> None:
    config = _config()
    terms = EnrollmentTerms.of(config, SCHEMA)
    terms.check(declaration(config, SCHEMA))
    lacking = DataSchema(("age", "mean_radius"), ("benign", "malignant"))
    with pytest.raises(Refused) as info:
        terms.check(declaration(config, lacking))
    assert info.value.reason == "schema_mismatch"
    assert "missing column 'mean_perimeter'" in info.value.detail
    relabelled = DataSchema(SCHEMA.features, ("B", "M"))
    with pytest.raises(Refused, match=r"labels 'B', 'M' not among the federation's classes"):
        terms.check(declaration(config, relabelled))
    # the schema is named before the config: it says what to fix in the files
    other_run = config.with_overrides({"clients.epochs": 7})
    with pytest.raises(Refused) as info:
        terms.check(declaration(other_run, lacking))
    assert info.value.reason == "schema_mismatch"
    with pytest.raises(Refused) as info:
        terms.check(declaration(other_run, SCHEMA))
    assert info.value.reason == "config_mismatch"
    for undeclared in (None, pb.Declaration(), declaration(config, None)):
        with pytest.raises(Refused) as info:
            terms.check(undeclared)
        assert info.value.reason == "undeclared"


@pytest.fixture
def gate(tmp_path: Path) -> tuple[Gate, Path]:
    pki = tmp_path / "pki"
    init_ca(pki, FED)
    issue_clients(pki, pki, ["hospital-a", "hospital-b"])
    terms = EnrollmentTerms.of(_config(), SCHEMA)
    registry = Registry(tmp_path / "registry.sqlite")
    return Gate(
        FED, load_certificate(pki / "ca.pem"), registry, ["hospital-a", "hospital-b"], terms=terms
    ), pki


def _binding(
    pki: Path, name: str, key: SigningKey, version: int = 1
) -> tuple[bytes, pb.IdentityBinding]:
    cert = (pki / f"{name}.pem").read_bytes()
    return cert, make_binding(FED, name, key, version, cert, load_private_key(pki / f"{name}.key"))


def test_the_gate_refuses_a_client_whose_data_differs(gate: tuple[Gate, Path]) -> None:
    g, pki = gate
    refused: list[tuple[str, str, str]] = []
    g.on_refused = lambda client, reason, detail: refused.append((client, reason, detail))
    config = _config()
    cert_b, binding_b = _binding(pki, "hospital-b", SigningKey())
    lacking = DataSchema(("age", "mean_radius"), ("benign", "malignant"))
    with pytest.raises(Refused) as info:
        g.enroll(cert_b, binding_b, declaration=declaration(config, lacking))
    assert info.value.reason == "schema_mismatch"
    assert refused == [("hospital-b", "schema_mismatch", info.value.detail)]
    assert "missing column 'mean_perimeter'" in refused[0][2]
    assert g.counts["schema_mismatch"] == 1 and g.enrolled() == []
    with pytest.raises(Refused) as info:
        g.enroll(cert_b, binding_b)  # and without a declaration at all
    assert info.value.reason == "undeclared" and g.enrolled() == []
    # the other client is not disturbed: it enrolls with the federation's schema
    key_a = SigningKey()
    cert_a, binding_a = _binding(pki, "hospital-a", key_a)
    g.enroll(cert_a, binding_a, declaration=declaration(config, SCHEMA))
    assert g.enrolled() == ["hospital-a"]
    # an enrolled client rotates its key without declaring again; a declaration sent is checked
    _, rotated = _binding(pki, "hospital-a", SigningKey(), version=2)
    g.enroll(cert_a, rotated)
    _, again = _binding(pki, "hospital-a", SigningKey(), version=3)
    with pytest.raises(Refused) as info:
        g.enroll(cert_a, again, declaration=declaration(config, lacking))
    assert info.value.reason == "schema_mismatch"
    assert g.key_of("hospital-a") == (rotated.public_key, 2)


def test_without_terms_a_client_with_other_columns_would_join(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_ca(pki, FED)
    issue_clients(pki, pki, ["hospital-a", "hospital-b"])
    roster = ["hospital-a", "hospital-b"]
    g = Gate(FED, load_certificate(pki / "ca.pem"), Registry(tmp_path / "r.sqlite"), roster)
    cert, binding = _binding(pki, "hospital-a", SigningKey())
    g.enroll(cert, binding)  # nothing declared, nothing asked
    lacking = DataSchema(("age", "mean_radius"), ("benign", "malignant"))
    cert_b, binding_b = _binding(pki, "hospital-b", SigningKey())
    g.enroll(cert_b, binding_b, declaration=declaration(_config(), lacking))
    assert g.enrolled() == roster and not g.counts
