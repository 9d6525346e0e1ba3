"""The masking protocol (SecAgg and SecAgg+): correctness under dropouts, privacy, cheating."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from fedfort.crypto.primitives import SigningKey, expand_mask
from fedfort.errors import ConfigError, ProtocolError, SecAggAbort
from fedfort.secagg import shamir
from fedfort.secagg.client import MaskingClient, unseal_share
from fedfort.secagg.encoding import FixedPointCodec
from fedfort.secagg.graph import SharingGraph
from fedfort.secagg.local import run_locally
from fedfort.secagg.messages import (
    AdvertisedKeys,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskRequest,
    UnmaskShares,
)
from fedfort.secagg.params import MaskingParams, graph_seed_for
from fedfort.secagg.policy import ClientPolicy
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import Session
from fedfort.secagg.thresholds import plus_parameters

DIM = 301
STEPS = {"advertise": 0, "share": 1, "masked": 2, "consistency": 3, "unmask": 4}


class Federation:
    """n clients with identities, random updates and weights, and a session over them."""

    def __init__(self, n: int, variant: str = "secagg", seed: int = 0, **params: object) -> None:
        rng = np.random.default_rng(seed)
        self.ids = [f"c{i:03d}" for i in range(n)]
        self.keys = {c: SigningKey() for c in self.ids}
        self.directory = {c: k.public for c, k in self.keys.items()}
        self.x = {c: rng.uniform(-1, 1, DIM).astype(np.float32) for c in self.ids}
        self.w = {c: float(rng.integers(1, 40)) for c in self.ids}
        self.session = Session("run", 3, 1)
        defaults: dict[str, object] = {
            "bound": 40.0,
            "graph_seed": graph_seed_for(self.session.sid),
        }
        defaults.update(params)
        self.params = MaskingParams(
            roster=tuple(self.ids),
            variant=variant,  # type: ignore[arg-type]
            dim=DIM + 1,
            **defaults,  # type: ignore[arg-type]
        )
        # the clients assume what the server assumes (their own floor is tested separately)
        self.policy = ClientPolicy(corrupt_fraction=self.params.corrupt_fraction)
        self.clients = {
            c: MaskingClient(
                c,
                self.session,
                self.keys[c],
                self.directory,
                self.x[c],
                self.w[c],
                policy=self.policy,
            )
            for c in self.ids
        }
        self.server = MaskingServer(self.session, self.params, self.directory)

    def plain(self, included: tuple[str, ...]) -> tuple[np.ndarray, float]:
        total = sum(self.w[c] * self.x[c].astype(np.float64) for c in included)
        return np.asarray(total), sum(self.w[c] for c in included)

    def error_bound(self, count: int) -> float:
        # the decoded sum is off by < count / scale per coordinate (stochastic rounding)
        return count / self.params.codec.scale


def vanishing(fed: Federation, step: int, fraction: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    gone = set(rng.choice(fed.ids, size=round(fraction * len(fed.ids)), replace=False))
    return lambda s, cid: s == step and cid in gone


# -- correctness --


@pytest.mark.parametrize("variant", ["secagg", "secagg+"])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("stage", list(STEPS))
def test_unmasked_sum_equals_plain_sum_under_dropouts(variant, fraction, stage):
    n = 20 if variant == "secagg" else 40
    # a sparse graph of 40 clients tolerates 30% dropouts only with fewer corrupt ones
    gamma = 1 / 3 if variant == "secagg" else 0.05
    fed = Federation(n, variant, dropout_fraction=0.3, corrupt_fraction=gamma)
    if variant == "secagg+":
        assert not fed.params.graph().is_complete()  # a real sparse graph
    run = run_locally(fed.server, fed.clients, vanishing(fed, STEPS[stage], fraction))
    result = run.result
    gone = set(run.vanished)
    assert len(gone) == round(fraction * n)
    if STEPS[stage] <= 2:  # vanished before sending a masked input: left out of the sum
        assert set(result.included) == set(fed.ids) - gone
    else:  # sent its masked input: in the sum, its self-mask rebuilt by the others
        assert set(result.included) == set(fed.ids)
    total, weight = fed.plain(result.included)
    np.testing.assert_allclose(result.total, total, atol=fed.error_bound(n), rtol=0)
    assert abs(result.weight - weight) < fed.error_bound(n)
    assert all(fed.server.dropped[c] == stage for c in gone)


def test_weighted_mean_within_documented_quantisation_error():
    fed = Federation(12)
    result = run_locally(fed.server, fed.clients).result
    total, weight = fed.plain(result.included)
    bound = fed.params.codec.mean_error_bound(12, weight)
    error = np.abs(result.mean() - total / weight).max()
    assert error <= bound
    assert error > 0  # fixed-point rounding is real, and the bound is not vacuous
    assert bound < 1e-5


def test_stochastic_rounding_is_unbiased():
    codec = FixedPointCodec(bits=16, bound=1.0, max_inputs=4)
    value = np.full(200_000, 0.3 / codec.scale)  # a third of a grid step
    decoded = codec.decode(codec.encode(value, np.random.default_rng(0)), 1)
    assert abs(decoded.mean() - value[0]) < 0.01 / codec.scale
    assert set(np.round(decoded * codec.scale).astype(int)) == {0, 1}


def test_encoding_refuses_a_range_that_could_wrap():
    with pytest.raises(ConfigError, match="without wrapping"):
        FixedPointCodec(bits=16, bound=1e6, max_inputs=1000)
    codec = FixedPointCodec(bits=32, bound=1.0, max_inputs=100)
    worst = np.full(4, 1.0)
    words = sum(codec.encode(worst).astype(np.uint64) for _ in range(100)) & 0xFFFFFFFF
    assert np.all(codec.decode(words.astype(np.uint32), 100) > 99.9)  # no wrap at the bound
    with pytest.raises(ProtocolError):
        codec.decode(words.astype(np.uint32), 101)


def test_secagg_plus_degree_grows_slowly():
    few = [plus_parameters(n, corrupt_fraction=0.05)[0] for n in (100, 1_000, 10_000)]
    assert few == sorted(few) and few[-1] <= 128
    # a third of the clients corrupt costs a larger degree, still a vanishing share of n
    third = [plus_parameters(n)[0] for n in (100, 1_000, 10_000)]
    assert third == sorted(third) and third[-1] < 0.04 * 10_000
    k, t = plus_parameters(1_000)
    assert k // 2 < t <= k
    graph = SharingGraph.harary(1_000, k, bytes(32))
    assert {len(h) for h in graph.neighbours} == {k}
    assert all(i not in h for i, h in enumerate(graph.neighbours))
    assert all(i in graph.neighbours[j] for i, h in enumerate(graph.neighbours) for j in h)


def test_secagg_plus_messages_grow_with_degree_not_roster():
    fed = Federation(60, "secagg+")
    k, _ = fed.params.resolved()
    outbox = fed.server.start()
    replies = {c: fed.clients[c].handle(m) for c, m in outbox.items()}
    outbox = fed.server.step(replies)
    assert all(isinstance(m, ShareKeysRequest) and len(m.keys) == k for m in outbox.values())
    replies = {c: fed.clients[c].handle(m) for c, m in outbox.items()}
    assert all(isinstance(r, EncryptedShares) and len(r.shares) == k for r in replies.values())


# -- too few survivors --


@pytest.mark.parametrize("stage", list(STEPS))
def test_fewer_than_t_survivors_aborts_and_reveals_nothing(stage):
    fed = Federation(12)
    _, t = fed.params.resolved()
    sent: list[object] = []

    class Recording:
        def __init__(self, client: MaskingClient) -> None:
            self.client = client

        def handle(self, message: object) -> object:
            sent.append(reply := self.client.handle(message))
            return reply

    gone = set(fed.ids[: 12 - t + 1])
    recording = {c: Recording(m) for c, m in fed.clients.items()}
    with pytest.raises(SecAggAbort, match=r"threshold|fewer than t"):
        run_locally(fed.server, recording, lambda s, c: s == STEPS[stage] and c in gone)
    assert fed.server.done is False
    unmasking = [m for m in sent if isinstance(m, UnmaskShares)]
    if stage != "unmask":  # no client revealed a share of anything
        assert unmasking == []
    else:  # the few that answered hold fewer than t shares of any secret
        assert 0 < len(unmasking) < t


def test_client_refuses_a_survivor_list_below_threshold():
    fed = Federation(9)
    _, t = fed.params.resolved()
    outbox = fed.server.start()
    for _ in range(3):
        outbox = fed.server.step({c: fed.clients[c].handle(m) for c, m in outbox.items()})
    target = fed.ids[0]
    short = ConsistencyRequest(sid=fed.session.sid, survivors=tuple(fed.ids[: t - 1]))
    with pytest.raises(SecAggAbort, match="survivors"):
        fed.clients[target].handle(short)


# -- privacy --


def _collect_server_view(fed: Federation) -> list[object]:
    received: list[object] = []
    outbox = fed.server.start()
    while not fed.server.done:
        replies = {c: fed.clients[c].handle(m) for c, m in outbox.items()}
        received.extend(replies.values())
        outbox = fed.server.step(replies)
    return received


def test_server_receives_only_masked_vectors_keys_ciphertexts_and_shares():
    fed = Federation(10)
    received = _collect_server_view(fed)
    kinds = {type(m) for m in received}
    assert kinds == {
        AdvertisedKeys,
        EncryptedShares,
        MaskedInput,
        ConsistencySignature,
        UnmaskShares,
    }
    codec = fed.params.codec
    for m in received:
        if isinstance(m, MaskedInput):
            encoded = codec.encode(np.append(fed.w[m.client_id] * fed.x[m.client_id], 1.0))
            diff = (m.vector.astype(np.int64) - encoded.astype(np.int64)) % (1 << 32)
            # the masks move every coordinate far from its encoding
            assert np.median(np.minimum(diff, (1 << 32) - diff)) > 1 << 28
        if isinstance(m, EncryptedShares):
            for _, blob in m.shares:  # AES-GCM under a key the server never agreed
                assert unseal_share(bytes(32), blob, b"") is None


def test_masked_input_is_statistically_uniform():
    fed = Federation(10)
    _collect_server_view(fed)
    vectors = [v for v in fed.server.inputs.values()]
    values = np.concatenate(vectors).astype(np.float64) / 2**32
    assert stats.kstest(values, "uniform").pvalue > 1e-3
    # the same input under two sessions: indistinguishable from each other too
    a, b = Federation(10, seed=5), Federation(10, seed=5)
    _collect_server_view(a)
    _collect_server_view(b)
    ya = a.server.inputs["c000"].astype(np.float64)
    yb = b.server.inputs["c000"].astype(np.float64)
    assert stats.ks_2samp(ya, yb).pvalue > 1e-3
    assert np.mean(ya == yb) < 0.01


def test_server_with_fewer_than_t_shares_cannot_unmask_an_input():
    """The server and t-1 colluding clients pool b-shares of a target: the mask stays on."""
    fed = Federation(10)
    _, t = fed.params.resolved()
    outbox = fed.server.start()
    for _ in range(3):
        outbox = fed.server.step({c: fed.clients[c].handle(m) for c, m in outbox.items()})
    target, colluders = "c000", fed.ids[1:t]
    # the colluders decrypt the shares the target sent them
    shares: dict[int, bytes] = {}
    for c in colluders:
        client = fed.clients[c]
        held = unseal_share(
            client.channel[target],
            client.inbox[target],
            b"fedfort-secagg-share\x00" + fed.session.sid + b"c000\x00" + c.encode(),
        )
        assert held is not None
        shares[fed.ids.index(c) + 1] = held[1]
    own = fed.clients[target].held[target][1]
    full = {**shares, 1: own}
    # t shares give the seed back: the test can tell success from failure
    assert shamir.combine(full, t, 32) == fed.clients[target].self_seed
    with pytest.raises(ProtocolError, match="cannot rebuild"):
        shamir.combine(shares, t, 32)
    # t-1 shares interpolated as if they were enough give an unrelated seed
    guess = (
        sum(
            c * int.from_bytes(shares[x], "big")
            for c, x in zip(shamir.lagrange_at_zero(sorted(shares)), sorted(shares), strict=True)
        )
        % shamir.PRIME
    )
    assert guess != int.from_bytes(fed.clients[target].self_seed, "big")
    # the pairwise masks with honest peers stay on too: y minus the self-mask is still uniform
    y = fed.server.inputs[target]
    partial = y - expand_mask(fed.clients[target].self_seed, y.shape[0], 32)
    assert stats.kstest(partial.astype(np.float64) / 2**32, "uniform").pvalue > 1e-3


# -- a malicious server --


def test_equivocating_server_is_caught_in_the_consistency_check():
    fed = Federation(12)
    outbox = fed.server.start()
    for _ in range(3):
        outbox = fed.server.step({c: fed.clients[c].handle(m) for c, m in outbox.items()})
    full = fed.server.survivors
    # show half the clients a list without c011, whose input the server then wants exposed
    lists = {
        c: full if i % 2 else tuple(x for x in full if x != "c011") for i, c in enumerate(full)
    }
    signatures = {
        c: fed.clients[c].handle(ConsistencyRequest(sid=fed.session.sid, survivors=lists[c]))
        for c in full
    }
    sigs = tuple((c, s.signature) for c, s in sorted(signatures.items()))  # type: ignore[attr-defined]
    revealed = []
    for c in full:
        with pytest.raises(SecAggAbort, match="different survivor list"):
            revealed.append(
                fed.clients[c].handle(UnmaskRequest(sid=fed.session.sid, signatures=sigs))
            )
    assert revealed == []
    # an aborted client refuses everything afterwards
    with pytest.raises(SecAggAbort):
        fed.clients["c000"].handle(UnmaskRequest(sid=fed.session.sid, signatures=sigs))


def test_server_substituting_a_public_key_is_caught():
    fed = Federation(6)
    outbox = fed.server.start()
    outbox = fed.server.step({c: fed.clients[c].handle(m) for c, m in outbox.items()})
    request = outbox["c000"]
    assert isinstance(request, ShareKeysRequest)
    forged = dataclasses.replace(request.keys[0], s_public=bytes(range(32)))
    with pytest.raises(SecAggAbort, match="not signed"):
        fed.clients["c000"].handle(ShareKeysRequest(request.sid, (forged, *request.keys[1:])))


# -- malformed input --


def test_malformed_messages_leave_the_client_unchanged():
    fed = Federation(6)
    client = fed.clients["c000"]
    for junk in [None, b"x", 3, MaskedInputRequest(fed.session.sid, ())]:
        with pytest.raises(ProtocolError):
            client.handle(junk)
    assert client.stage == "advertise"
    result = run_locally(fed.server, fed.clients).result
    assert set(result.included) == set(fed.ids)


def test_malformed_replies_are_rejected_not_fatal():
    fed = Federation(14)
    outbox = fed.server.start()
    replies: dict[str, object] = {c: fed.clients[c].handle(m) for c, m in outbox.items()}
    replies["c001"] = b"garbage"
    replies["c002"] = dataclasses.replace(replies["c002"], signature=bytes(64))  # type: ignore[type-var]
    replies["intruder"] = replies["c003"]
    outbox = fed.server.step(replies)
    assert fed.server.rejected["c001"].startswith("advertise")
    assert fed.server.rejected["c002"] == "advertise: bad signature"
    assert fed.server.rejected["intruder"] == "advertise: not asked"
    assert "c001" not in outbox and "c002" not in outbox
    replies = {c: fed.clients[c].handle(m) for c, m in outbox.items()}
    outbox = fed.server.step(replies)
    replies = {c: fed.clients[c].handle(m) for c, m in outbox.items()}
    replies["c003"] = MaskedInput(fed.session.sid, "c003", np.zeros(5, np.uint32))
    replies["c004"] = MaskedInput(fed.session.sid, "c004", np.zeros(DIM + 1, np.float32))
    outbox = fed.server.step(replies)
    assert (
        fed.server.rejected["c003"] == fed.server.rejected["c004"] == "masked: wrong dtype or shape"
    )
    while not fed.server.done:
        outbox = fed.server.step({c: fed.clients[c].handle(m) for c, m in outbox.items()})
    result = fed.server.result()
    survivors = tuple(c for c in fed.ids if c not in {"c001", "c002", "c003", "c004"})
    assert result.included == survivors
    total, _ = fed.plain(survivors)
    np.testing.assert_allclose(result.total, total, atol=fed.error_bound(14), rtol=0)
