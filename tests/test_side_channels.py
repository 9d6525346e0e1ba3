"""Side channels: message lengths and submission timing must not depend on a client's data.

Every defence is checked with and without it: padded messages of a round have one size, the
same messages unpadded differ in size (the attack: read a client's sample count, its DP-SGD
report or its dropped neighbours off the length); a reply held to a fixed point of the round
is sent at one moment whatever the training time, and without the hold it is not.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedfort.client import ClientData, LocalTrainer
from fedfort.client.client import FederatedClient
from fedfort.config import NetworkConfig
from fedfort.crypto.pki import init_ca, issue_clients, load_certificate, load_private_key
from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ConfigError, Refused
from fedfort.messages import (
    ClientPrivacy,
    ClientUpdate,
    DpSgdSettings,
    LocalTrainingConfig,
    TrainTask,
)
from fedfort.secagg.client import MaskingClient
from fedfort.secagg.params import MaskingParams, graph_seed_for
from fedfort.secagg.policy import ClientPolicy
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import Session
from fedfort.transport import codec
from fedfort.transport.client import NetworkClient
from fedfort.transport.gate import Gate
from fedfort.transport.identity import SERVER, Route, make_binding, seal_envelope
from fedfort.transport.padding import (
    PAD_UNIT,
    PaddingPolicy,
    SizeRule,
    bucket,
    filler,
    open_payload,
    pad_payload,
)
from fedfort.transport.proto import fedfort_pb2 as pb
from fedfort.transport.registry import Registry
from fedfort.transport.server import Credentials

FEATURES, CLASSES = 6, 3


def _encode(message: object, rule: SizeRule | None) -> bytes:
    return pad_payload(pb.Payload(body=codec.to_value(message)), rule)


# -- the filler ----------------------------------------------------------------------------


def test_every_gap_but_one_byte_has_one_canonical_filler() -> None:
    base = pb.Payload(body=codec.to_value(1)).ByteSize()
    for gap in [0, *range(2, 400), *range(16_370, 16_400), 2_097_150, 2_097_160]:
        n, adjust = filler(gap)
        payload = pb.Payload(body=codec.to_value(1), padding=bytes(n), pad_adjust=adjust)
        assert payload.ByteSize() == base + gap, gap
        open_payload(payload.SerializeToString(deterministic=True), None)  # canonical
    with pytest.raises(ValueError):
        filler(1)
    assert [bucket(s) for s in (1, 256, 257, 4097, 70_000)] == [256, 256, 512, 4352, 73_728]


# -- updates -------------------------------------------------------------------------------


def _client(samples: int, seed: int) -> tuple[FederatedClient, LocalTrainer]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, samples)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FEATURES, CLASSES))
    return FederatedClient(f"client-{seed:03d}", ClientData.from_numpy(x, y)), LocalTrainer(model)


def _task(client: FederatedClient, trainer: LocalTrainer, dp: bool, clip: bool) -> TrainTask:
    config = LocalTrainingConfig(
        batch_size=500, dp_sgd=DpSgdSettings(1.0, 1.0) if dp else None, epochs=1
    )
    privacy = ClientPrivacy(clip_norm=0.5, report_clipped=True) if clip else None
    weights = trainer.bound.flatten()
    return TrainTask(7, 1, client.client_id, weights, config, seed=3, privacy=privacy)


def test_updates_of_a_round_have_one_padded_size() -> None:
    """Sample counts 1 and 10,000, DP-SGD on and off, metrics and a clip bit or not: the
    padded ClientUpdates of one round are byte-for-byte the same length; unpadded they are
    not, and the length alone tells the 1-sample client from the 10,000-sample one."""
    policy = PaddingPolicy()
    cases = [(1, False, False), (10_000, False, False), (40, True, True), (300, False, True)]
    padded, plain = [], []
    for seed, (samples, dp, clip) in enumerate(cases):
        client, trainer = _client(samples, seed)
        task = _task(client, trainer, dp, clip)
        update = client.handle(task, trainer)
        if not (dp or clip):  # privacy directives report 1 sample; plain training the count
            assert update.num_samples == samples and "train_loss" in update.metrics
        assert ("dp_sgd_epsilon" in update.metrics) == dp
        rule = policy.reply_rule(task)
        assert rule is not None and rule.exact is not None and rule.exact % PAD_UNIT == 0
        padded.append(len(_encode(update, rule)))
        plain.append(len(_encode(update, None)))
    assert len(set(padded)) == 1  # with padding: one size
    assert len(set(plain)) == len(plain)  # without: every client's length is its own
    assert plain[0] != plain[1]  # the sample count shows in the varint
    overhead = padded[0] - max(plain)
    assert 0 < overhead <= 1024 + 64 + PAD_UNIT + 64  # the allowance, slack and rounding


def test_sealed_and_scaffold_updates_are_padded_too() -> None:
    policy = PaddingPolicy()
    weights = np.zeros(20, np.float32)
    scaffold = TrainTask(1, 1, "c", weights, LocalTrainingConfig(algorithm="scaffold"), seed=0)
    rule = policy.reply_rule(scaffold)
    assert rule is not None
    sizes = {
        len(_encode(ClientUpdate(1, cid, weights, n, metrics, control, None), rule))
        for cid, n, metrics, control in [
            ("a", 1, {}, weights),
            ("client-000000000000000009", 2**40, {"train_loss": 0.1}, weights),
        ]
    }
    assert sizes == {rule.exact}
    assert PaddingPolicy(enabled=False).reply_rule(scaffold) is None
    # metrics beyond the allowance cannot be padded: the sender refuses to stand out
    greedy = ClientUpdate(1, "a", weights, 1, {f"m{i:04d}": 1.0 for i in range(200)}, weights)
    with pytest.raises(ConfigError, match="padded size"):
        _encode(greedy, rule)


# -- secure aggregation --------------------------------------------------------------------

IDS = ("a", "bb-client", "c", "delta-long-client-name-0042", "e", "f7", "g", "h")
DIM = 40


def _session_sizes(
    variant: str, gone: dict[str, int], seed: int
) -> tuple[dict[int, set[int]], dict[int, set[int]], dict[int, set[int]]]:
    """Run one masking session; padded sizes of replies and requests per step, and the
    unpadded sizes of replies. ``gone`` maps a client to the step it goes silent at."""
    rng = np.random.default_rng(seed)
    keys = {c: SigningKey() for c in IDS}
    directory = {c: k.public for c, k in keys.items()}
    session = Session("run", 2, 1)
    params = MaskingParams(
        IDS,
        variant,  # type: ignore[arg-type]
        dim=DIM + 1,
        bound=10.0,
        graph_seed=graph_seed_for(session.sid),
        corrupt_fraction=0.1,  # 8 clients, 2 dropping: safe and live only for a few corrupt
        dropout_fraction=0.25,
    )
    if variant == "secagg+":
        assert not params.graph().is_complete()
    clients = {
        c: MaskingClient(
            c,
            session,
            keys[c],
            directory,
            rng.uniform(-1, 1, DIM).astype(np.float32),
            float(rng.integers(1, 5000)),
            policy=ClientPolicy(corrupt_fraction=0.1),
        )
        for c in IDS
    }
    server = MaskingServer(session, params, directory)
    server_policy = PaddingPolicy()
    client_policy = {c: PaddingPolicy() for c in IDS}
    replies_padded: dict[int, set[int]] = {}
    replies_plain: dict[int, set[int]] = {}
    requests: dict[int, set[int]] = {}
    outbox = server.start()
    step = 0
    while not server.done:
        replies: dict[str, object] = {}
        for cid, request in outbox.items():
            server_policy.observe(request)
            data = _encode(request, server_policy.request_rule(request))
            if step > 0:
                requests.setdefault(step, set()).add(len(data))
            if gone.get(cid, 99) <= step:
                continue
            client_policy[cid].observe(request)
            open_payload(data, client_policy[cid].request_rule(request))  # the client's check
            reply = clients[cid].handle(request)
            rule = client_policy[cid].reply_rule(request)
            assert rule == server_policy.reply_rule(request)  # both ends agree
            replies_padded.setdefault(step, set()).add(len(_encode(reply, rule)))
            replies_plain.setdefault(step, set()).add(len(_encode(reply, None)))
            replies[cid] = reply
        outbox = server.step(replies)
        step += 1
    assert server.result() is not None
    return replies_padded, requests, replies_plain


@pytest.mark.parametrize("variant", ["secagg", "secagg+"])
def test_secagg_messages_have_one_size_per_step(variant: str) -> None:
    """Different neighbour sets, id lengths and dropouts (before the shares, before the
    unmasking): every step's replies, and the server's requests,
    have a single padded size across both sessions; unpadded, they do not."""
    full = _session_sizes(variant, {}, seed=0)
    dropped = _session_sizes(variant, {"c": 1, "bb-client": 4}, seed=1)
    for (padded_a, requests_a, _), (padded_b, requests_b, _) in [(full, dropped)]:
        assert padded_a.keys() == padded_b.keys() == {0, 1, 2, 3, 4}
        for step in padded_a:
            assert len(padded_a[step] | padded_b[step]) == 1, step
        for step in requests_a:
            assert len(requests_a[step] | requests_b[step]) == 1, step
    plain = {s: full[2][s] | dropped[2][s] for s in full[2]}
    # without padding, id lengths and missing neighbours show in the replies' lengths
    assert all(len(plain[s]) > 1 for s in (0, 2, 3, 4))
    # and the unmasking replies vary beyond the id lengths: they count the dropped neighbours
    assert len(plain[4]) > len(plain[0])


# -- the gate refuses a wrong padded size --------------------------------------------------


@pytest.fixture
def gate(tmp_path: Path) -> tuple[Gate, SigningKey, bytes]:
    pki = tmp_path / "pki"
    init_ca(pki, "sidefed")
    issue_clients(pki, pki, 1)
    gate = Gate(
        "sidefed", load_certificate(pki / "ca.pem"), Registry(tmp_path / "r.sqlite"), ["client-000"]
    )
    cert = (pki / "client-000.pem").read_bytes()
    key = SigningKey()
    binding = make_binding(
        "sidefed", "client-000", key, 1, cert, load_private_key(pki / "client-000.key")
    )
    gate.enroll(cert, binding)
    gate.begin_round(1)
    return gate, key, cert


def _submit(gate: Gate, key: SigningKey, cert: bytes, rule: SizeRule | None, data: bytes) -> object:
    nonce = gate.issue("client-000", "update", 1, 1, 0, rule)
    route = Route("sidefed", "client-000", SERVER, "update", 1, 1, 0, nonce)
    return gate.admit(cert, seal_envelope(route, data, key, 1), data).body


def test_gate_refuses_a_wrong_padded_size(gate: tuple[Gate, SigningKey, bytes]) -> None:
    g, key, cert = gate
    task = TrainTask(1, 1, "client-000", np.zeros(30, np.float32), LocalTrainingConfig(), seed=0)
    rule = PaddingPolicy().reply_rule(task)
    update = ClientUpdate(1, "client-000", np.zeros(30, np.float32), 12)
    assert isinstance(_submit(g, key, cert, rule, _encode(update, rule)), ClientUpdate)
    # an unpadded update, and one padded for another round's size, are refused
    bigger = TrainTask(1, 1, "client-000", np.zeros(300, np.float32), LocalTrainingConfig(), 0)
    for wrong in (None, SizeRule(None), PaddingPolicy().reply_rule(bigger)):
        with pytest.raises(Refused) as info:
            _submit(g, key, cert, rule, _encode(update, wrong))
        assert info.value.reason == "wrong_padding"
    # padding of the right size that smuggles data instead of zeros
    message = pb.Payload()
    message.ParseFromString(_encode(update, rule))
    message.padding = b"\x01" + message.padding[1:]
    with pytest.raises(Refused, match="other than zero"):
        _submit(g, key, cert, rule, message.SerializeToString(deterministic=True))
    assert g.counts["wrong_padding"] == 4
    # with padding off (no rule), the unpadded update gets through: the check is the defence
    assert isinstance(_submit(g, key, cert, None, _encode(update, None)), ClientUpdate)


# -- timing --------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.now += seconds
        return False


class _Stub:
    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, int]] = []
        self.metrics: list[dict[str, float]] = []

    def submit(self, frames: object, timeout: float) -> pb.Verdict:
        assert hasattr(frames, "__iter__")
        data = b"".join(f.chunk for f in frames)
        update = codec.from_value(pb.Payload.FromString(data).body, ClientUpdate)
        assert isinstance(update, ClientUpdate)
        self.sent.append((self.clock.now, len(data)))
        self.metrics.append(update.metrics)
        return pb.Verdict(accepted=True)


def _submission_delays(tmp_path: Path, fraction: float | None) -> list[float]:
    """When (after the task arrived) a client submits, for training times 0.2 s and 30 s."""
    pki = tmp_path / f"pki-{fraction}"
    init_ca(pki, "sidefed")
    issue_clients(pki, pki, 1)
    network = NetworkConfig(round_deadline_s=60.0, submit_at_fraction_of_deadline=fraction)
    x = np.zeros((4, FEATURES), np.float32)
    client = NetworkClient(
        "client-000",
        ClientData.from_numpy(x, np.zeros(4, np.int64)),
        LocalTrainer(nn.Sequential(nn.Linear(FEATURES, CLASSES))),
        target="localhost:1",
        credentials=Credentials.from_pki(pki, "client-000"),
        state_dir=tmp_path / f"state-{fraction}",
        network=network,
    )
    clock = _Clock()
    client._clock, client._sleep = clock, clock.sleep
    stub = _Stub(clock)
    delays = []
    task = TrainTask(1, 1, "client-000", np.zeros(9, np.float32), LocalTrainingConfig(), 0)
    update = ClientUpdate(1, "client-000", np.zeros(9, np.float32), 4, {"train_time_s": 1.0})
    for train_s in (0.2, 30.0):

        def work(e: pb.Envelope, payload: bytes, t: float = train_s) -> tuple[object, object]:
            clock.now += t  # local training takes this long
            return task, update

        client._work = work  # type: ignore[method-assign]
        envelope = pb.Envelope(kind="task", round=1, attempt=1, nonce=os.urandom(16))
        start = clock.now
        client._answer(stub, envelope, b"")  # type: ignore[arg-type]
        delays.append(stub.sent[-1][0] - start)
    assert len({size for _, size in stub.sent}) == 1  # and the same padded size
    # the training time does not travel in the metrics when the hold hides it
    assert all(("train_time_s" in m) == (fraction is None) for m in stub.metrics)
    return delays


def test_submit_at_a_fixed_point_hides_training_time(tmp_path: Path) -> None:
    held = _submission_delays(tmp_path, 0.75)
    assert held == pytest.approx([45.0, 45.0])  # 0.75 of the 60 s deadline, however long
    # training took
    immediate = _submission_delays(tmp_path, None)
    assert immediate == pytest.approx([0.2, 30.0])  # without the hold: the training time
    with pytest.raises(ValueError):
        NetworkConfig(submit_at_fraction_of_deadline=1.5)
