"""The wire codec: round trips of every message type, strict rejection, and fuzzing.

The fuzz strategies (:func:`random_bytes`, :func:`mutated_encodings`, :func:`value_trees`) are
also run at scale by ``benchmarks/bench_fuzz_codec.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedfort.crypto.primitives import SigningKey
from fedfort.errors import MalformedMessage, PeerError
from fedfort.messages import (
    ClientPrivacy,
    ClientUpdate,
    DpSgdSettings,
    LocalTrainingConfig,
    SecureAggregation,
    TrainTask,
)
from fedfort.secagg.ckks import (
    CkksParams,
    DecryptedSum,
    DecryptRequest,
    EncryptedInput,
    EncryptRequest,
    KeyRequest,
    PublicKeyBundle,
)
from fedfort.secagg.client import MaskingClient
from fedfort.secagg.local import run_locally
from fedfort.secagg.messages import (
    AdvertisedKeys,
    AdvertiseRequest,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskRequest,
    UnmaskShares,
)
from fedfort.secagg.params import MaskingParams
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import Session
from fedfort.transport import codec
from fedfort.transport.codec import RECORD_TYPES, dumps, from_value, loads, to_value
from fedfort.transport.proto import fedfort_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
PROTO = "fedfort/transport/proto/fedfort.proto"

WHITELIST = {
    "TrainTask",
    "ClientUpdate",
    "EvaluateTask",
    "EvaluationReport",
    "LocalTrainingConfig",
    "DpSgdSettings",
    "ClientPrivacy",
    "SecureAggregation",
    "FeatureTransform",
    "StatisticsRequest",
    "StatisticsReply",
    "MaskingParams",
    "AdvertiseRequest",
    "AdvertisedKeys",
    "ShareKeysRequest",
    "EncryptedShares",
    "MaskedInputRequest",
    "MaskedInput",
    "ConsistencyRequest",
    "ConsistencySignature",
    "UnmaskRequest",
    "UnmaskShares",
    "CkksParams",
    "KeyRequest",
    "PublicKeyBundle",
    "EncryptRequest",
    "EncryptedInput",
    "DecryptRequest",
    "DecryptedSum",
}


# ------------------------------------------------------------------------------ messages


def train_task() -> TrainTask:
    rng = np.random.default_rng(0)
    return TrainTask(
        round=7,
        attempt=2,
        client_id="client-007",
        weights=rng.standard_normal(200).astype(np.float32),
        config=LocalTrainingConfig(
            algorithm="scaffold",
            epochs=2,
            batch_size=16,
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            mu=0.01,
            loss="mse",
            dp_sgd=DpSgdSettings(noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-6),
        ),
        seed=2**40 + 17,
        server_control=rng.standard_normal(200).astype(np.float32),
        privacy=ClientPrivacy(
            clip_norm=2.5,
            noise_std=0.3,
            report_clipped=True,
            indicator_noise_std=0.5,
            local="gaussian",
            local_epsilon=4.0,
            local_delta=1e-5,
            secure_noise=False,
        ),
        secure=SecureAggregation(
            mode="secagg+", run_id="run-42", nonce=bytes(range(16)), max_weight=100
        ),
    )


def client_update() -> ClientUpdate:
    rng = np.random.default_rng(1)
    delta = rng.standard_normal(200).astype(np.float32)
    delta[[3, 10, 11]] = [np.nan, np.inf, -np.inf]
    return ClientUpdate(
        round=7,
        client_id="client-007",
        delta=delta,
        num_samples=613,
        metrics={"train_time_s": 1.25, "train_loss": 0.4321, "odd": float("nan")},
        control_delta=rng.standard_normal(200).astype(np.float32),
        clip_indicator=-0.5,
        sealed=False,
    )


def masking_params() -> MaskingParams:
    return MaskingParams(
        roster=("c0", "c1", "c2", "c3", "c4"),
        variant="secagg",
        dim=11,
        bits=32,
        bound=40.0,
        graph_seed=bytes(range(32)),
    )


@functools.cache
def fuzz_corpus() -> tuple[object, ...]:
    """Deterministic, realistic messages of most types (the seeds of the mutation fuzzers)."""
    sid = bytes(range(32))
    blob = bytes(range(60))
    return (
        train_task(),
        TrainTask(1, 0, "c1", np.zeros(8, np.float32), LocalTrainingConfig(), 5),
        client_update(),
        ClientUpdate(3, "c2", np.zeros(0, np.float32), 1, sealed=True),
        masking_params(),
        AdvertiseRequest(sid, masking_params()),
        AdvertisedKeys(sid, "c1", bytes(32), bytes([1] * 32), bytes(64)),
        ShareKeysRequest(sid, (AdvertisedKeys(sid, "c2", bytes(32), bytes(32), bytes(64)),)),
        EncryptedShares(sid, "c1", (("c2", blob), ("c3", blob))),
        MaskedInputRequest(sid, (("c2", blob),)),
        MaskedInput(sid, "c1", np.arange(11, dtype=np.uint32) * 391_000_007),
        ConsistencyRequest(sid, ("c1", "c2", "c3")),
        ConsistencySignature(sid, "c1", bytes(64)),
        UnmaskRequest(sid, (("c2", bytes(64)),)),
        UnmaskShares(sid, "c1", (("c2", blob[:36]),), (("c4", blob[:36]),)),
        CkksParams(),
        KeyRequest(sid),
        EncryptRequest(sid, PublicKeyBundle(sid, "c0", blob * 3, bytes(64))),
        EncryptedInput(sid, "c1", (blob, blob[:20]), 11),
        DecryptRequest(sid, (blob,), 11, ("c1", "c2")),
        DecryptedSum(sid, np.arange(11, dtype="<f8").tobytes()),
    )


@functools.cache
def corpus_encodings() -> tuple[bytes, ...]:
    return tuple(dumps(m) for m in fuzz_corpus())


class Recording:
    """A client machine that logs every message it receives and sends."""

    def __init__(self, inner: MaskingClient, log: list[object]) -> None:
        self.inner = inner
        self.log = log

    def handle(self, message: object) -> object:
        self.log.append(message)
        reply = self.inner.handle(message)
        self.log.append(reply)
        return reply


@functools.cache
def secagg_session_messages() -> tuple[object, ...]:
    """Every message of a real 5-client SecAgg session (dim 10), one client dropping at step 2.

    The dropout makes the survivors reveal ``s_sk`` shares, so ``UnmaskShares.key_shares`` is
    not empty.
    """
    rng = np.random.default_rng(3)
    ids = [f"c{i}" for i in range(5)]
    keys = {c: SigningKey() for c in ids}
    directory = {c: k.public for c, k in keys.items()}
    session = Session("run", 3, 1, nonce=b"n0")
    params = MaskingParams(tuple(ids), "secagg", dim=11, bound=40.0, graph_seed=bytes(32))
    log: list[object] = []
    clients = {
        c: Recording(
            MaskingClient(
                c,
                session,
                keys[c],
                directory,
                rng.uniform(-1, 1, 10).astype(np.float32),
                float(rng.integers(1, 9)),
            ),
            log,
        )
        for c in ids
    }
    server = MaskingServer(session, params, directory)
    run = run_locally(server, clients, lambda step, cid: step == 2 and cid == "c4")  # type: ignore[arg-type]
    assert run.vanished == {"c4": 2}
    return tuple(log)


# ------------------------------------------------------------------------------ helpers


def assert_same(a: object, b: object, where: str = "") -> None:
    """Deep equality, with arrays compared by dtype, shape and bytes (NaN-safe)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
        assert b.flags.writeable and b.flags.c_contiguous, where
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, tuple | list):
        assert isinstance(b, tuple | list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, float):
        assert isinstance(b, float)
        same_sign = math.copysign(1, a) == math.copysign(1, b)
        assert (math.isnan(a) and math.isnan(b)) or (a == b and same_sign), where
    else:
        assert a == b, where


def round_trip(message: object) -> object:
    data = dumps(message)
    back = loads(data, type(message))
    assert_same(message, back, type(message).__name__)
    assert dumps(back) == data
    return back


def field_of(value: pb.Value, name: str) -> pb.Value:
    for field in value.record.fields:
        if field.name == name:
            return field.value
    raise KeyError(name)


def encoded(value: pb.Value) -> bytes:
    return value.SerializeToString(deterministic=True)


def rejects(data: bytes, expected: type | None = None, **kwargs: int) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as info:
        loads(data, expected, **kwargs)
    return info.value


# ------------------------------------------------------------------------------ whitelist


def test_whitelist_is_exactly_the_message_types() -> None:
    assert set(RECORD_TYPES) == WHITELIST
    for name, cls in RECORD_TYPES.items():
        assert cls.__name__ == name and dataclasses.is_dataclass(cls)
        codec._schema(cls)  # every annotation is expressible


def test_importing_the_codec_does_not_load_tenseal() -> None:
    code = (
        "import sys, fedfort.transport.codec as c\n"
        "assert 'tenseal' not in sys.modules, 'tenseal imported'\n"
        "assert 'fedfort.secagg.ckks' not in sys.modules\n"
        "c.loads(c.dumps(c._EAGER_TYPES['DpSgdSettings'](1.0, 1.0)))\n"
        "assert 'tenseal' not in sys.modules, 'tenseal imported by a decode'\n"
        "assert 'CkksParams' in c.RECORD_TYPES\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_generated_protobuf_module_is_up_to_date(tmp_path: Path) -> None:
    from grpc_tools import protoc

    src = ROOT / "src"
    status = protoc.main(
        [
            "protoc",
            "-I",
            str(src),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(src / PROTO),
        ]
    )
    assert status == 0
    hint = (
        "the generated protobuf code is out of date; regenerate it with\n"
        "  python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src "
        f"src/{PROTO}"
    )
    for suffix in ("_pb2.py", "_pb2.pyi"):
        generated = tmp_path / PROTO.replace(".proto", suffix)
        checked_in = src / PROTO.replace(".proto", suffix)
        assert generated.read_bytes() == checked_in.read_bytes(), f"{checked_in.name}: {hint}"


# ------------------------------------------------------------------------------ round trips


def test_train_task_round_trip() -> None:
    task = round_trip(train_task())
    assert isinstance(task, TrainTask)
    assert task.weights.dtype == np.float32
    task.weights[0] = 1.0  # a writable copy
    plain = TrainTask(0, 0, "c", np.ones(3, np.float32), LocalTrainingConfig(), 0)
    back = round_trip(plain)
    assert isinstance(back, TrainTask)
    assert back.server_control is None and back.privacy is None and back.secure is None


@pytest.mark.parametrize(
    "message",
    [
        LocalTrainingConfig(),
        LocalTrainingConfig("fedprox", 3, 64, 0.01, 0.5, 1e-3, 0.1, "mse", DpSgdSettings(0.8, 2.0)),
        DpSgdSettings(1.0, 0.5),
        ClientPrivacy(),
        ClientPrivacy(clip_norm=1.0, local="laplace", local_epsilon=1.0),
        SecureAggregation("ckks", "r", b"", max_weight=1, ckks_poly_modulus_degree=16384),
        SecureAggregation("secagg", "r", bytes(32)),
    ],
    ids=lambda m: type(m).__name__,
)
def test_settings_round_trip(message: object) -> None:
    round_trip(message)


def test_int_in_a_float_field_is_written_as_a_float() -> None:
    message = DpSgdSettings(1, 2, 0)  # type: ignore[arg-type]
    assert dumps(message) == dumps(DpSgdSettings(1.0, 2.0, 0.0))
    back = loads(dumps(message))
    assert isinstance(back, DpSgdSettings) and type(back.max_grad_norm) is float


def test_int_given_for_a_float_field_decodes_as_float() -> None:
    settings_ = round_trip(DpSgdSettings(1.5, 1.0, 1e-5))
    value = to_value(settings_)
    field_of(value, "max_grad_norm").integer = 3
    back = loads(encoded(value), DpSgdSettings)
    assert isinstance(back, DpSgdSettings)
    assert back.max_grad_norm == 3.0 and type(back.max_grad_norm) is float


def test_client_update_round_trip_keeps_nan_and_inf() -> None:
    update = client_update()
    back = round_trip(update)
    assert isinstance(back, ClientUpdate)
    assert np.isnan(back.delta[3]) and back.delta[10] == np.inf and back.delta[11] == -np.inf
    assert back.delta.dtype == np.float32
    assert math.isnan(back.metrics["odd"])
    assert back.metrics["train_loss"] == 0.4321
    assert back.control_delta is not None and back.control_delta.dtype == np.float32
    sealed = round_trip(ClientUpdate(3, "c2", np.zeros(0, np.float32), 1, sealed=True))
    assert isinstance(sealed, ClientUpdate) and sealed.metrics == {}


def test_real_secagg_session_messages_round_trip() -> None:
    messages = secagg_session_messages()
    kinds = {type(m).__name__ for m in messages}
    assert kinds == {
        "AdvertiseRequest",
        "AdvertisedKeys",
        "ShareKeysRequest",
        "EncryptedShares",
        "MaskedInputRequest",
        "MaskedInput",
        "ConsistencyRequest",
        "ConsistencySignature",
        "UnmaskRequest",
        "UnmaskShares",
    }
    for message in messages:
        round_trip(message)
    masked = next(m for m in messages if isinstance(m, MaskedInput))
    back = loads(dumps(masked), MaskedInput)
    assert isinstance(back, MaskedInput)
    assert back.vector.dtype == masked.vector.dtype == np.uint32
    assert np.array_equal(back.vector, masked.vector)
    unmask = [m for m in messages if isinstance(m, UnmaskShares)]
    assert any(m.key_shares for m in unmask)  # the dropped client's key was rebuilt


def test_secagg_session_messages_drive_a_session_after_a_wire_trip() -> None:
    """Clients and server still agree when every message crosses the codec."""
    rng = np.random.default_rng(5)
    ids = [f"c{i}" for i in range(4)]
    keys = {c: SigningKey() for c in ids}
    directory = {c: k.public for c, k in keys.items()}
    session = Session("wire", 1, 1)
    params = MaskingParams(tuple(ids), "secagg", dim=6, bound=10.0, dropout_fraction=0.0)
    inputs = {c: rng.uniform(-1, 1, 5).astype(np.float32) for c in ids}
    clients = {c: MaskingClient(c, session, keys[c], directory, inputs[c], 1.0) for c in ids}
    server = MaskingServer(session, params, directory)
    outbox = server.start()
    while not server.done:
        replies = {
            cid: loads(dumps(clients[cid].handle(loads(dumps(message)))))
            for cid, message in outbox.items()
        }
        outbox = server.step(replies)
    total = sum(inputs[c].astype(np.float64) for c in ids)
    np.testing.assert_allclose(server.result().total, total, atol=1e-4)


def test_masking_params_and_ckks_messages_round_trip() -> None:
    for message in fuzz_corpus()[4:]:
        round_trip(message)
    params = round_trip(CkksParams(16384, (60, 40, 40, 60), 40))
    assert isinstance(params, CkksParams) and params.coeff_mod_bit_sizes == (60, 40, 40, 60)


def test_generic_values_round_trip_through_from_value() -> None:
    obj = (None, True, -3, 2.5, "é", b"\x00", {"b": (1, 2), "a": {}}, (), np.eye(2))
    back = from_value(to_value(obj))
    assert isinstance(back, tuple)
    assert back[:8] == obj[:8]
    assert np.array_equal(back[8], obj[8])
    assert from_value(to_value([1, [2]])) == (1, (2,))  # lists come back as tuples


def test_numpy_scalars_and_odd_arrays_encode() -> None:
    assert to_value(np.int64(3)).integer == 3
    assert to_value(np.uint8(200)).integer == 200
    assert to_value(np.float32(0.5)).real == 0.5
    assert to_value(np.bool_(True)).boolean is True
    big_endian = np.arange(6, dtype=">f4").reshape(2, 3)
    value = to_value(big_endian)
    assert value.array.dtype == "<f4" and list(value.array.shape) == [2, 3]
    back = from_value(value)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    assert back.dtype.isnative and np.array_equal(back, big_endian)
    strided = np.arange(20, dtype=np.int64)[::3]
    back = from_value(to_value(strided))
    assert isinstance(back, np.ndarray) and np.array_equal(back, strided)
    flags = np.array([True, False, True])
    back = from_value(to_value(flags))
    assert isinstance(back, np.ndarray) and back.dtype == np.bool_ and np.array_equal(back, flags)
    scalar = from_value(to_value(np.array(2.5)))
    assert isinstance(scalar, np.ndarray) and scalar.shape == () and scalar == 2.5


def test_dumps_is_deterministic() -> None:
    for message in fuzz_corpus():
        assert dumps(message) == dumps(message)
    assert dumps(train_task()) == dumps(train_task())
    a = ClientUpdate(1, "c", np.ones(3, np.float32), 2, metrics={"x": 1.0, "y": 2.0})
    b = ClientUpdate(1, "c", np.ones(3, np.float32), 2, metrics={"y": 2.0, "x": 1.0})
    assert dumps(a) == dumps(b)  # map entries are sorted by key
    c = ClientUpdate(1, "c", np.ones(3, np.float32).astype(">f4"), 2, metrics={"x": 1.0, "y": 2.0})
    assert dumps(a) == dumps(c)  # arrays are written little-endian whatever their byte order


def test_encoding_unsupported_objects_is_a_type_error() -> None:
    @dataclasses.dataclass(frozen=True)
    class TrainTaskImpostor:
        round: int

    for bad in (object(), TrainTaskImpostor(1), 5, {"a": 1}, None):
        with pytest.raises(TypeError):
            dumps(bad)
    for bad_value in (
        object(),
        TrainTaskImpostor(1),
        2**63,
        -(2**63) - 1,
        {1: 2},
        np.zeros(2, np.complex64),
        np.zeros(2, np.float16),
        np.array(["a"]),
        np.array([object()]),
        "\ud800",
        bytearray(b"x"),
    ):
        with pytest.raises(TypeError):
            to_value(bad_value)
    deep: object = 1
    for _ in range(codec.MAX_DEPTH):
        deep = (deep,)
    with pytest.raises(TypeError, match="deeper"):
        to_value(deep)
    assert to_value(2**63 - 1).integer == 2**63 - 1


# ------------------------------------------------------------------------------ rejection


def test_malformed_message_is_a_peer_error() -> None:
    assert issubclass(MalformedMessage, PeerError)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\xff" * 16, b"\x0a\x05hello", b"\x52\x80\x80\x80\x80\x10", "text", None],
)
def test_garbage_is_rejected(data: bytes) -> None:
    rejects(data)


def test_every_truncation_is_rejected() -> None:
    data = dumps(LocalTrainingConfig(dp_sgd=DpSgdSettings(1.0, 1.0)))
    for end in range(len(data)):
        rejects(data[:end])
    big = dumps(train_task())
    for end in (1, len(big) // 3, len(big) // 2, len(big) - 1):
        rejects(big[:end])


def test_unknown_protobuf_fields_and_non_canonical_encodings_are_rejected() -> None:
    data = dumps(DpSgdSettings(1.0, 1.0))
    rejects(data + b"\xf8\x01\x05")  # unknown field 31
    rejects(b"\x08\x01" + data)  # two members of the oneof: the last wins, but not canonical
    value = pb.Value()
    value.ParseFromString(data + b"\xf8\x01\x05")
    with pytest.raises(MalformedMessage, match="unknown fields"):
        from_value(value)


def test_top_level_must_be_a_record_of_the_expected_type() -> None:
    rejects(encoded(to_value(5)))
    rejects(encoded(to_value((1, 2))))
    data = dumps(train_task())
    error = rejects(data, ClientUpdate)
    assert "expected ClientUpdate" in str(error)
    assert isinstance(loads(data, (ClientUpdate, TrainTask)), TrainTask)
    with pytest.raises(MalformedMessage):
        from_value(to_value(5), TrainTask)
    with pytest.raises(TypeError):
        loads(data, "TrainTask")  # type: ignore[arg-type]  # a bug of the caller, not the peer


def test_unknown_record_type_is_rejected() -> None:
    for name in ("Popen", "", "trainTask", "os.system", "_Schema"):
        value = to_value(train_task())
        value.record.type = name
        assert "unknown record type" in str(rejects(encoded(value)))
    value = to_value(train_task())
    field_of(value, "config").record.type = "DpSgdSettings"
    rejects(encoded(value))


def test_missing_extra_and_duplicate_fields_are_rejected() -> None:
    value = to_value(train_task())
    del value.record.fields[5]
    assert "missing" in str(rejects(encoded(value)))

    value = to_value(LocalTrainingConfig())
    del value.record.fields[-1]  # dp_sgd has a default, but every field must be sent
    rejects(encoded(value))

    value = to_value(DpSgdSettings(1.0, 1.0))
    extra = value.record.fields.add()
    extra.name = "__class__"
    extra.value.none = True
    rejects(encoded(value))

    value = to_value(DpSgdSettings(1.0, 1.0))
    value.record.fields[2].name = "epsilon"
    rejects(encoded(value))

    value = to_value(DpSgdSettings(1.0, 1.0))
    value.record.fields.add().CopyFrom(value.record.fields[0])
    rejects(encoded(value))

    value = to_value(DpSgdSettings(1.0, 1.0))
    del value.record.fields[2]
    value.record.fields.add().CopyFrom(value.record.fields[0])  # right count, one duplicated
    assert "duplicate" in str(rejects(encoded(value)))

    value = to_value(DpSgdSettings(1.0, 1.0))
    value.record.fields[0].ClearField("value")
    rejects(encoded(value))

    value = to_value(DpSgdSettings(1.0, 1.0))
    value.record.fields[0].value.Clear()
    value.record.fields[0].value.SetInParent()  # present, but of no kind
    rejects(encoded(value))


def test_fields_in_another_order_are_accepted() -> None:
    value = to_value(DpSgdSettings(1.0, 2.0, 1e-3))
    fields = list(value.record.fields)
    copies = [pb.Field(name=f.name, value=f.value) for f in reversed(fields)]
    del value.record.fields[:]
    value.record.fields.extend(copies)
    assert loads(encoded(value)) == DpSgdSettings(1.0, 2.0, 1e-3)


Mutation = Callable[[pb.Value], None]


def _set(name: str, **kind: object) -> Mutation:
    def mutate(value: pb.Value) -> None:
        target = field_of(value, name)
        target.Clear()
        for key, item in kind.items():
            setattr(target, key, item)

    return mutate


@pytest.mark.parametrize(
    ("name", "kind", "payload"),
    [
        ("round", "text", "7"),
        ("round", "boolean", True),
        ("round", "real", 7.0),
        ("round", "none", True),
        ("client_id", "integer", 7),
        ("client_id", "blob", b"client-007"),
        ("seed", "blob", b"\x00"),
        ("weights", "none", True),
        ("weights", "blob", b"\x00" * 800),
        ("config", "none", True),
        ("config", "text", "LocalTrainingConfig"),
    ],
)
def test_wrong_field_types_are_rejected(name: str, kind: str, payload: object) -> None:
    value = to_value(train_task())
    _set(name, **{kind: payload})(value)
    rejects(encoded(value))


def test_wrong_nested_types_are_rejected() -> None:
    cases: list[tuple[object, str, Mutation]] = [
        (DpSgdSettings(1.0, 1.0), "noise_multiplier", _set("noise_multiplier", boolean=True)),
        (DpSgdSettings(1.0, 1.0), "delta", _set("delta", text="1e-5")),
        (LocalTrainingConfig(), "algorithm", _set("algorithm", text="sgd")),
        (LocalTrainingConfig(), "algorithm", _set("algorithm", text="FEDAVG")),
        (LocalTrainingConfig(), "algorithm", _set("algorithm", integer=0)),
        (LocalTrainingConfig(), "loss", _set("loss", none=True)),
        (ClientPrivacy(), "local", _set("local", text="uniform")),
        (ClientPrivacy(), "report_clipped", _set("report_clipped", integer=1)),
        (SecureAggregation("secagg", "r", b""), "mode", _set("mode", text="plaintext")),
        (SecureAggregation("secagg", "r", b""), "nonce", _set("nonce", text="")),
        (masking_params(), "variant", _set("variant", text="ckks")),
        (masking_params(), "roster", _set("roster", text="c0")),
        (ClientUpdate(1, "c", np.ones(2, np.float32), 1), "metrics", _set("metrics", none=True)),
    ]
    for message, _, mutate in cases:
        value = to_value(message)
        mutate(value)
        rejects(encoded(value), type(message))
    # nested: a str inside a tuple[tuple[str, bytes], ...]
    value = to_value(EncryptedShares(b"s", "c1", (("c2", b"x"),)))
    field_of(value, "shares").items.items[0].items.items[1].text = "x"
    rejects(encoded(value))
    # a fixed-size tuple with the wrong number of items
    value = to_value(EncryptedShares(b"s", "c1", (("c2", b"x"),)))
    field_of(value, "shares").items.items[0].items.items.add().blob = b"y"
    rejects(encoded(value))
    # a non-float map value, a duplicate map key
    value = to_value(ClientUpdate(1, "c", np.ones(2, np.float32), 1, metrics={"a": 1.0}))
    field_of(value, "metrics").mapping.entries[0].value.text = "1.0"
    rejects(encoded(value))
    value = to_value(ClientUpdate(1, "c", np.ones(2, np.float32), 1, metrics={"a": 1.0}))
    entries = field_of(value, "metrics").mapping.entries
    entries.add().CopyFrom(entries[0])
    assert "duplicate map key" in str(rejects(encoded(value)))


def test_constructor_checks_run() -> None:
    value = to_value(masking_params())
    field_of(value, "roster").items.items[0].text = "c9"  # no longer sorted
    assert "refused" in str(rejects(encoded(value)))
    value = to_value(CkksParams())
    field_of(value, "poly_modulus_degree").integer = 2048
    rejects(encoded(value))
    value = to_value(masking_params())
    field_of(value, "graph_seed").blob = b"short"
    rejects(encoded(value))


def test_bad_arrays_are_rejected() -> None:
    def with_array(dtype: str, shape: list[int], data: bytes) -> bytes:
        value = to_value(train_task())
        target = field_of(value, "weights").array
        target.dtype = dtype
        del target.shape[:]
        target.shape.extend(shape)
        target.data = data
        return encoded(value)

    good = np.ones(200, np.float32).tobytes()
    assert isinstance(loads(with_array("<f4", [200], good)), TrainTask)
    assert isinstance(loads(with_array("<f4", [10, 20], good)), TrainTask)
    rejects(with_array("<f4", [200], good[:-4]))  # one element short
    rejects(with_array("<f4", [200], good + b"\x00"))
    rejects(with_array("<f4", [201], good))
    rejects(with_array("<f4", [0, 2**63], b""))
    rejects(with_array("<f4", [2**32, 2**32], good))
    rejects(with_array("<f4", [1] * 33, b"\x00" * 4))
    for dtype in ("|O", ">f4", "<f2", "<c8", "<U1", "|V4", "|S4", "f4", "float32", "<M8", ""):
        assert "not allowed" in str(rejects(with_array(dtype, [200], good))), dtype
    # a boolean array must hold 0/1 bytes
    flags = from_value(pb.Value(array=pb.NdArray(dtype="|b1", shape=[2], data=b"\x00\x01")))
    assert isinstance(flags, np.ndarray) and flags.tolist() == [False, True]
    with pytest.raises(MalformedMessage):
        from_value(pb.Value(array=pb.NdArray(dtype="|b1", shape=[2], data=b"\x00\x02")))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def deeply_nested_bytes(depth: int) -> bytes:
    """A Value of ``depth`` nested one-item lists, written by hand (protobuf refuses to)."""
    data = b"\x18\x02"  # integer = 1
    for _ in range(depth - 1):
        inner = b"\x0a" + _varint(len(data)) + data  # ValueList.items
        data = b"\x42" + _varint(len(inner)) + inner  # Value.items
    return data


def test_array_annotations_with_a_dtype_are_enforced() -> None:
    strict = codec._compile(npt.NDArray[np.float32])
    loose = codec._compile(npt.NDArray[np.unsignedinteger[Any]])
    ctx = codec._Context(100)
    f4, f8, u4 = (to_value(np.ones(2, t)) for t in (np.float32, np.float64, np.uint32))
    assert strict.decode(f4, "array", ctx, 1).dtype == np.float32  # type: ignore[attr-defined]
    assert loose.decode(u4, "array", ctx, 1).dtype == np.uint32  # type: ignore[attr-defined]
    for spec, value in ((strict, f8), (strict, u4), (loose, f4)):
        with pytest.raises(MalformedMessage, match="expected an array of"):
            spec.decode(value, "array", ctx, 1)
    # the messages annotate plain np.ndarray: any allowed dtype passes, the receiver checks it
    value = to_value(train_task())
    field_of(value, "weights").CopyFrom(to_value(np.ones(3, np.float64)))
    task = loads(encoded(value), TrainTask)
    assert isinstance(task, TrainTask) and task.weights.dtype == np.float64


def test_too_deep_nesting_is_rejected() -> None:
    def nested(depth: int) -> pb.Value:
        value = pb.Value(integer=1)
        for _ in range(depth - 1):
            value = pb.Value(items=pb.ValueList(items=[value]))
        return value

    assert from_value(nested(codec.MAX_DEPTH)) is not None
    with pytest.raises(MalformedMessage, match="deeper"):
        from_value(nested(codec.MAX_DEPTH + 1))
    rejects(encoded(nested(40)))
    rejects(deeply_nested_bytes(10_000))  # past protobuf's own recursion limit
    # a record's fields count: a record at depth 32 has its field values at depth 33
    for wraps, ok in ((codec.MAX_DEPTH - 2, True), (codec.MAX_DEPTH - 1, False)):
        inner = to_value(DpSgdSettings(1.0, 1.0))
        for _ in range(wraps):
            inner = pb.Value(mapping=pb.ValueMap(entries=[pb.Field(name="k", value=inner)]))
        if ok:
            assert from_value(inner) is not None
        else:
            with pytest.raises(MalformedMessage, match="deeper"):
                from_value(inner)


def test_size_caps() -> None:
    data = dumps(train_task())
    assert "exceeds" in str(rejects(data, max_bytes=len(data) - 1))
    assert isinstance(loads(data, max_bytes=len(data)), TrainTask)
    with pytest.raises(MalformedMessage, match="too many array elements"):
        from_value(to_value(train_task()), max_elements=399)
    assert from_value(to_value(train_task()), max_elements=400) is not None
    # strings: 1 MiB of UTF-8 at most
    limit = codec.MAX_TEXT_BYTES
    ok = ConsistencySignature(b"", "x" * limit, b"")
    assert round_trip(ok) is not None
    rejects(dumps(ConsistencySignature(b"", "x" * (limit + 1), b"")))
    rejects(dumps(ConsistencySignature(b"", "é" * (limit // 2 + 1), b"")))
    long_key = ClientUpdate(1, "c", np.ones(1, np.float32), 1, metrics={"k" * (limit + 1): 1.0})
    rejects(encoded(to_value(long_key)))


def test_entry_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_ENTRIES", 3)
    assert loads(dumps(ConsistencyRequest(b"", ("a", "b", "c")))) is not None
    rejects(dumps(ConsistencyRequest(b"", ("a", "b", "c", "d"))))
    update = ClientUpdate(1, "c", np.ones(1, np.float32), 1, metrics=dict.fromkeys("abcd", 1.0))
    rejects(dumps(update))
    with pytest.raises(MalformedMessage):
        from_value(to_value((1, 2, 3, 4)))


# ------------------------------------------------------------------------------ fuzzing

FUZZ_DTYPES = [*sorted(codec.ARRAY_DTYPES), "|O", "<c8", ">f4", "<f2", "<U2", "|V4", "", "f4"]
RECORD_NAMES = sorted(WHITELIST)
FIELD_NAMES = sorted(
    {f.name for cls in RECORD_TYPES.values() for f in dataclasses.fields(cls)} | {"", "x"}
)
TEXTS = ["c0", "c1", "c2", "fedavg", "scaffold", "mse", "gaussian", "secagg", "secagg+", "ckks"]


def _array_values() -> st.SearchStrategy[pb.Value]:
    @st.composite
    def build(draw: st.DrawFn) -> pb.Value:
        dtype = draw(st.sampled_from(FUZZ_DTYPES))
        shape = draw(
            st.lists(st.integers(0, 5) | st.sampled_from([2**31, 2**63, 2**64 - 1]), max_size=3)
        )
        count = math.prod(shape)
        itemsize = np.dtype(dtype).itemsize if dtype in codec.ARRAY_DTYPES else 1
        if count * itemsize <= 256 and draw(st.booleans()):
            data = draw(st.binary(min_size=count * itemsize, max_size=count * itemsize))
        else:
            data = draw(st.binary(max_size=64))
        return pb.Value(array=pb.NdArray(dtype=dtype, shape=shape, data=data))

    return build()


def _leaf_values() -> st.SearchStrategy[pb.Value]:
    return st.one_of(
        st.booleans().map(lambda b: pb.Value(none=b)),
        st.booleans().map(lambda b: pb.Value(boolean=b)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: pb.Value(integer=i)),
        st.floats().map(lambda x: pb.Value(real=x)),
        (st.sampled_from(TEXTS) | st.text(max_size=12)).map(lambda s: pb.Value(text=s)),
        st.binary(max_size=40).map(lambda b: pb.Value(blob=b)),
        _array_values(),
        st.just(pb.Value()),  # no kind
    )


def _fields(children: st.SearchStrategy[pb.Value]) -> st.SearchStrategy[list[pb.Field]]:
    return st.lists(
        st.builds(lambda n, v: pb.Field(name=n, value=v), st.sampled_from(FIELD_NAMES), children)
        | st.builds(lambda n: pb.Field(name=n), st.sampled_from(FIELD_NAMES)),
        max_size=6,
    )


def _record(name: str, children: st.SearchStrategy[pb.Value]) -> st.SearchStrategy[pb.Value]:
    """A record of type ``name``: the right field names in order (random values), or any."""
    cls = RECORD_TYPES.get(name)
    right: st.SearchStrategy[list[pb.Field]] = st.nothing()
    if cls is not None:
        names = [f.name for f in dataclasses.fields(cls)]
        right = st.tuples(*(children for _ in names)).map(
            lambda values: [pb.Field(name=n, value=v) for n, v in zip(names, values, strict=True)]
        )
    return (right | _fields(children)).map(
        lambda fields: pb.Value(record=pb.Record(type=name, fields=fields))
    )


def _containers(children: st.SearchStrategy[pb.Value]) -> st.SearchStrategy[pb.Value]:
    return st.one_of(
        st.lists(children, max_size=5).map(lambda vs: pb.Value(items=pb.ValueList(items=vs))),
        _fields(children).map(lambda fs: pb.Value(mapping=pb.ValueMap(entries=fs))),
        st.sampled_from([*RECORD_NAMES, "Bogus"]).flatmap(lambda n: _record(n, children)),
    )


def _nodes(value: pb.Value) -> list[pb.Value]:
    """Every value in a tree, parents first (references into the tree, for in-place edits)."""
    out = [value]
    kind = value.WhichOneof("kind")
    if kind == "items":
        for item in value.items.items:
            out.extend(_nodes(item))
    elif kind in ("mapping", "record"):
        entries = value.mapping.entries if kind == "mapping" else value.record.fields
        for entry in entries:
            out.extend(_nodes(entry.value))
    return out


def random_bytes() -> st.SearchStrategy[bytes]:
    """Strategy 1: arbitrary bytes."""
    return st.binary(max_size=4096)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    """Strategy 2: a valid encoding with a few bytes flipped, set, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(corpus_encodings())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        pos = draw(st.integers(0, len(data)))
        if op == "insert":
            data.insert(pos, draw(st.integers(0, 255)))
        elif data:
            pos = min(pos, len(data) - 1)
            if op == "flip":
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == "set":
                data[pos] = draw(st.integers(0, 255))
            else:
                del data[pos]
    return bytes(data)


@st.composite
def _edited_message(draw: st.DrawFn, trees: st.SearchStrategy[pb.Value]) -> pb.Value:
    """A realistic message's tree with one node replaced by a random tree."""
    value = to_value(draw(st.sampled_from(fuzz_corpus())))
    nodes = _nodes(value)
    target = nodes[draw(st.integers(0, len(nodes) - 1))]
    target.CopyFrom(draw(trees))
    return value


_SAME_KIND: dict[str, st.SearchStrategy[pb.Value]] = {
    "none": st.booleans().map(lambda b: pb.Value(none=b)),
    "boolean": st.booleans().map(lambda b: pb.Value(boolean=b)),
    "integer": (st.integers(-3, 70_000) | st.sampled_from([2**31, 2**63 - 1, -(2**63)])).map(
        lambda i: pb.Value(integer=i)
    ),
    "real": st.floats().map(lambda x: pb.Value(real=x)),
    "text": (st.sampled_from(TEXTS) | st.text(max_size=12)).map(lambda s: pb.Value(text=s)),
    "blob": st.binary(max_size=70).map(lambda b: pb.Value(blob=b)),
}


@st.composite
def _tweaked_message(draw: st.DrawFn) -> pb.Value:
    """A realistic message's tree with one small edit that keeps the node's kind."""
    value = to_value(draw(st.sampled_from(fuzz_corpus())))
    nodes = _nodes(value)
    target = nodes[draw(st.integers(0, len(nodes) - 1))]
    kind = target.WhichOneof("kind")
    if kind in _SAME_KIND:
        target.CopyFrom(draw(_SAME_KIND[kind]))
    elif kind == "array":
        array = target.array
        op = draw(st.sampled_from(["shape", "truncate", "dtype", "data"]))
        if op == "shape":
            del array.shape[:]
            array.shape.extend(draw(st.lists(st.integers(0, 300), max_size=3)))
        elif op == "truncate":
            array.data = array.data[: draw(st.integers(0, len(array.data)))]
        elif op == "dtype":
            array.dtype = draw(st.sampled_from(FUZZ_DTYPES))
        else:
            array.data = draw(st.binary(min_size=len(array.data), max_size=len(array.data)))
    elif kind in ("items", "mapping", "record"):
        entries: Any = {
            "items": lambda: target.items.items,
            "mapping": lambda: target.mapping.entries,
            "record": lambda: target.record.fields,
        }[kind]()
        op = draw(st.sampled_from(["drop", "duplicate", "swap", "rename"]))
        if len(entries) == 0 or (op == "rename" and kind == "items"):
            op = "clear"
        else:
            i = draw(st.integers(0, len(entries) - 1))
            j = draw(st.integers(0, len(entries) - 1))
        if op == "clear":
            del entries[:]
        elif op == "drop":
            del entries[i]
        elif op == "duplicate":
            entries.add().CopyFrom(entries[i])
        elif op == "swap":
            saved = type(entries[i])()
            saved.CopyFrom(entries[i])
            entries[i].CopyFrom(entries[j])
            entries[j].CopyFrom(saved)
        else:
            entries[i].name = draw(st.sampled_from(FIELD_NAMES))
    return value


def value_trees() -> st.SearchStrategy[pb.Value]:
    """Strategy 3: random ``Value`` trees, and realistic trees with a random or small edit."""
    trees = st.recursive(_leaf_values(), _containers, max_leaves=24)
    return trees | _edited_message(trees) | _tweaked_message()


def check_loads(data: bytes) -> object | None:
    """The property: a whitelisted object, or MalformedMessage (``None``); nothing else.

    A decoded object re-encodes, and its encoding decodes to the same encoding.
    """
    try:
        obj = loads(data)
    except MalformedMessage:
        return None
    assert type(obj) in RECORD_TYPES.values()
    again = dumps(obj)
    assert dumps(loads(again)) == again
    return obj


def check_value(value: pb.Value) -> object | None:
    """The property for a ``Value`` tree, through ``loads`` and ``from_value``."""
    obj = check_loads(value.SerializeToString(deterministic=True))
    with contextlib.suppress(MalformedMessage):
        from_value(value)
    return obj


FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings(FUZZ, max_examples=500)
@given(random_bytes())
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    check_loads(data)


@settings(FUZZ, max_examples=500)
@given(mutated_encodings())
def test_fuzz_mutated_encodings(data: bytes) -> None:
    check_loads(data)


@settings(FUZZ, max_examples=500)
@given(value_trees())
def test_fuzz_value_trees(value: pb.Value) -> None:
    check_value(value)
