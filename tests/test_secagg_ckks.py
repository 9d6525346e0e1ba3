"""The CKKS (homomorphic encryption) mode of secure aggregation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import tenseal as ts

from fedfort.crypto.primitives import SigningKey
from fedfort.errors import ConfigError, ProtocolError, SecAggAbort
from fedfort.secagg import ckks
from fedfort.secagg.ckks import (
    CkksClient,
    CkksParams,
    CkksServer,
    DecryptedSum,
    DecryptRequest,
    EncryptedInput,
    EncryptRequest,
    KeyRequest,
    PublicKeyBundle,
)
from fedfort.secagg.session import SecureSum, Session

PARAMS = CkksParams()
DIM = 5000  # [w x, w] has 5001 values: two chunks of 4096 slots


def never(cid: str, stage: str) -> bool:
    return False


def run(
    server: CkksServer,
    clients: dict[str, CkksClient],
    drop: Callable[[str, str], bool] = never,
    tamper: Callable[[str, str, object], object] | None = None,
) -> SecureSum:
    """Deliver every message; ``drop`` silences a client at a stage, ``tamper`` edits replies."""
    out = server.start()
    while not server.done:
        stage = server.stage
        replies: dict[str, object] = {}
        for cid, msg in out.items():
            if drop(cid, stage):
                continue
            reply = clients[cid].handle(msg)
            replies[cid] = reply if tamper is None else tamper(cid, stage, reply)
        out = server.step(replies)
    return server.result()


class Federation:
    """Ten clients with their identities, directory, updates and weights."""

    def __init__(self, n: int = 10, dim: int = DIM, seed: int = 0, round_: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.session = Session(run_id="ckks-test", round=round_, attempt=0)
        self.ids = [f"c{i}" for i in range(n)]
        self.keys = {cid: SigningKey() for cid in self.ids}
        self.directory = {cid: k.public for cid, k in self.keys.items()}
        self.updates = {cid: rng.normal(size=dim) for cid in self.ids}
        self.weights = {cid: float(rng.integers(1, 200)) for cid in self.ids}
        self.clients = {
            cid: CkksClient(
                cid,
                self.session,
                self.keys[cid],
                self.directory,
                PARAMS,
                self.updates[cid],
                self.weights[cid],
            )
            for cid in self.ids
        }

    def server(self, min_inputs: int = 5, key_owner: str = "c0") -> CkksServer:
        return CkksServer(self.session, self.ids, key_owner, min_inputs, PARAMS)

    def plain_mean(self, ids: list[str]) -> np.ndarray:
        total = sum(self.weights[c] * self.updates[c] for c in ids)
        return np.asarray(total) / sum(self.weights[c] for c in ids)

    def key_bundle(self, owner: str = "c0") -> PublicKeyBundle:
        bundle = self.clients[owner].handle(KeyRequest(self.session.sid))
        assert isinstance(bundle, PublicKeyBundle)
        return bundle


@pytest.fixture
def fed() -> Federation:
    return Federation()


def signed_bundle(fed: Federation, ctx, owner: str, key: SigningKey) -> PublicKeyBundle:
    blob = ctx.serialize(save_secret_key=False, save_relin_keys=False)
    sig = key.sign(ckks._bundle_message(fed.session.sid, blob))
    return PublicKeyBundle(fed.session.sid, owner, blob, sig)


def private_context():
    """A CKKS context with its secret key, made outside any key owner."""
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 60]
    )
    ctx.global_scale = 2**40
    return ctx


# ------------------------------------------------------------------------------ parameters


def test_params_defaults_and_validation() -> None:
    assert PARAMS.slots == 4096
    assert PARAMS.chunks(5001) == 2
    assert PARAMS.chunk_sizes(5001) == [4096, 905]
    assert PARAMS.max_input == 2.0**38
    for bad in (
        {"poly_modulus_degree": 2048},
        {"poly_modulus_degree": 6000},
        {"poly_modulus_degree": 65536},
        {"coeff_mod_bit_sizes": (60,)},
        {"coeff_mod_bit_sizes": (60, 70, 60)},
        {"coeff_mod_bit_sizes": (60, 60, 60, 60)},  # 240 bits > 218 at degree 8192
        {"scale_bits": 10},
        {"scale_bits": 60, "coeff_mod_bit_sizes": (60, 60)},  # no headroom above the scale
    ):
        with pytest.raises(ConfigError):
            CkksParams(**bad)
    assert CkksParams(16384, (60, 40, 40, 60), 40).slots == 8192


def test_client_refuses_bad_inputs(fed: Federation) -> None:
    key = fed.keys["c1"]
    with pytest.raises(ConfigError):
        CkksClient("c1", fed.session, key, fed.directory, PARAMS, np.array([np.nan]), 1.0)
    with pytest.raises(ConfigError):
        CkksClient("c1", fed.session, key, fed.directory, PARAMS, np.ones(3), -1.0)
    with pytest.raises(ConfigError):
        CkksClient("c1", fed.session, key, fed.directory, PARAMS, np.full(3, 1e12), 1.0)
    with pytest.raises(ConfigError):  # the identity key is not the registered one
        CkksClient("c1", fed.session, SigningKey(), fed.directory, PARAMS, np.ones(3), 1.0)


# ------------------------------------------------------------------------------ correctness


def test_weighted_mean_is_exact_within_ckks_precision(fed: Federation) -> None:
    server = fed.server(min_inputs=10)
    result = run(server, fed.clients)
    assert result.included == tuple(sorted(fed.ids))
    assert result.dropped == {}
    assert server.rejected == {}
    assert result.total.shape == (DIM,)
    np.testing.assert_allclose(result.mean(), fed.plain_mean(fed.ids), rtol=0, atol=1e-6)
    assert abs(result.weight - sum(fed.weights.values())) < 1e-6
    # every participant's ciphertexts came in; the context went out to all ten
    assert result.traffic["client_to_server"] > 10 * 2 * 100_000
    assert result.traffic["server_to_client"] > 10 * 100_000


def test_key_owner_need_not_be_a_participant(fed: Federation) -> None:
    participants = fed.ids[1:]
    server = CkksServer(fed.session, participants, "c0", 5, PARAMS)
    result = run(server, fed.clients)
    assert result.included == tuple(sorted(participants))
    np.testing.assert_allclose(result.mean(), fed.plain_mean(participants), rtol=0, atol=1e-6)


def test_dropouts_at_encrypt_stage_leave_the_survivors_mean(fed: Federation) -> None:
    gone = {"c2", "c5", "c7"}  # 30 %
    server = fed.server(min_inputs=5)
    result = run(server, fed.clients, drop=lambda cid, stage: stage == "encrypt" and cid in gone)
    survivors = [c for c in fed.ids if c not in gone]
    assert result.included == tuple(sorted(survivors))
    assert result.dropped == dict.fromkeys(gone, "encrypt")
    np.testing.assert_allclose(result.mean(), fed.plain_mean(survivors), rtol=0, atol=1e-6)
    assert abs(result.weight - sum(fed.weights[c] for c in survivors)) < 1e-6


# ------------------------------------------------------------------------------ aborts


def test_too_few_survivors_abort(fed: Federation) -> None:
    gone = {"c1", "c2", "c3"}
    server = fed.server(min_inputs=8)
    with pytest.raises(SecAggAbort, match="min_inputs=8"):
        run(server, fed.clients, drop=lambda cid, stage: stage == "encrypt" and cid in gone)
    assert not server.done
    assert server.stage == "aborted"
    with pytest.raises(RuntimeError):
        server.result()
    with pytest.raises(SecAggAbort):
        server.step({})


@pytest.mark.parametrize("stage", ["key", "decrypt"])
def test_key_owner_dropping_aborts(fed: Federation, stage: str) -> None:
    server = fed.server()
    with pytest.raises(SecAggAbort, match="key owner dropped"):
        run(server, fed.clients, drop=lambda cid, s: cid == "c0" and s == stage)
    assert server.dropped["c0"] == stage
    with pytest.raises(RuntimeError):
        server.result()


def test_bad_decrypted_sum_aborts(fed: Federation) -> None:
    def shorten(cid: str, stage: str, reply: object) -> object:
        if isinstance(reply, DecryptedSum):
            return DecryptedSum(reply.sid, reply.values[:-8])
        return reply

    with pytest.raises(SecAggAbort, match="float64 values"):
        run(fed.server(), fed.clients, tamper=shorten)


def test_lifecycle_errors(fed: Federation) -> None:
    server = fed.server()
    with pytest.raises(RuntimeError):
        server.result()
    with pytest.raises(RuntimeError):
        server.step({})
    assert server.start() == {"c0": KeyRequest(fed.session.sid)}
    with pytest.raises(RuntimeError):
        server.start()
    with pytest.raises(ConfigError):
        CkksServer(fed.session, fed.ids, "c0", 11, PARAMS)
    with pytest.raises(ConfigError):
        CkksServer(fed.session, ["a", "a"], "c0", 1, PARAMS)


# ------------------------------------------------------------------------------ key handling


def _contexts_held(server: CkksServer) -> list:
    held = []
    for value in vars(server).values():
        if isinstance(value, ts.Context):
            held.append(value)
        if isinstance(value, ts.CKKSVector):
            held.append(value.context())
    return held


def test_server_never_holds_a_secret_key(fed: Federation) -> None:
    server = fed.server()
    out = server.start()
    bundle = fed.clients["c0"].handle(out["c0"])
    out = server.step({"c0": bundle})
    held = _contexts_held(server)
    assert held, "the server keeps the public context during the encrypt stage"
    assert all(not ctx.is_private() for ctx in held)
    assert not server.holds_secret_key()
    # what the server forwards to the participants is public as well
    request = out["c1"]
    assert isinstance(request, EncryptRequest)
    assert not ts.context_from(request.bundle.context).is_private()
    replies = {cid: fed.clients[cid].handle(msg) for cid, msg in out.items()}
    out = server.step(replies)
    assert all(not ctx.is_private() for ctx in _contexts_held(server))
    server.step({"c0": fed.clients["c0"].handle(out["c0"])})
    assert server.done
    assert not server.holds_secret_key()


def test_bundle_with_secret_key_is_refused(fed: Federation) -> None:
    owner_key = fed.keys["c0"]
    ctx = private_context()
    blob = ctx.serialize(save_secret_key=True)
    leaky = PublicKeyBundle(
        fed.session.sid, "c0", blob, owner_key.sign(ckks._bundle_message(fed.session.sid, blob))
    )
    server = fed.server()
    server.start()
    with pytest.raises(SecAggAbort, match="secret key"):
        server.step({"c0": leaky})
    assert _contexts_held(server) == []
    assert not server.holds_secret_key()
    # a client, too, refuses to encrypt under a context that was published with its secret key
    with pytest.raises(ProtocolError, match="secret key"):
        fed.clients["c1"].handle(EncryptRequest(fed.session.sid, leaky))


def test_forged_bundles_make_clients_refuse(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    encryptions = 0
    real = ts.ckks_vector

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal encryptions
        encryptions += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(ts, "ckks_vector", counting)
    genuine = fed.key_bundle("c0")
    server_ctx = private_context()  # the server keeps this one's secret key
    mallory = SigningKey()
    forgeries = [
        # the server's own key, signed by a key that is not in the directory
        signed_bundle(fed, server_ctx, "c0", mallory),
        # ... or in the name of an identity that is not registered at all
        signed_bundle(fed, server_ctx, "mallory", mallory),
        # the server's public context behind the key owner's genuine signature
        dataclasses.replace(genuine, context=signed_bundle(fed, server_ctx, "c0", mallory).context),
        # the genuine bundle with a corrupted signature
        dataclasses.replace(genuine, signature=bytes(64)),
    ]
    for forged in forgeries:
        for cid in ("c1", "c0"):
            with pytest.raises(ProtocolError):
                fed.clients[cid].handle(EncryptRequest(fed.session.sid, forged))
    assert encryptions == 0
    # the refusals left the clients unchanged: the genuine request still works
    reply = fed.clients["c1"].handle(EncryptRequest(fed.session.sid, genuine))
    assert isinstance(reply, EncryptedInput)
    assert encryptions == 2
    # and it is bound to that key: another (forged) key in the same session is still refused
    with pytest.raises(ProtocolError):
        fed.clients["c1"].handle(EncryptRequest(fed.session.sid, forgeries[0]))


def test_bundle_from_another_session_is_refused(fed: Federation) -> None:
    other = Federation(round_=2)
    other.keys, other.directory = fed.keys, fed.directory
    stale = CkksClient("c0", other.session, fed.keys["c0"], fed.directory, PARAMS, np.ones(3), 1.0)
    bundle = stale.handle(KeyRequest(other.session.sid))
    assert isinstance(bundle, PublicKeyBundle)
    with pytest.raises(ProtocolError):  # replayed with this session's id on the outside
        fed.clients["c1"].handle(EncryptRequest(fed.session.sid, bundle))
    relabelled = dataclasses.replace(bundle, sid=fed.session.sid)
    with pytest.raises(ProtocolError, match="not signed"):
        fed.clients["c1"].handle(EncryptRequest(fed.session.sid, relabelled))


def test_key_request_is_idempotent(fed: Federation) -> None:
    first = fed.key_bundle("c0")
    assert fed.key_bundle("c0") == first
    assert fed.clients["c0"].is_key_owner
    assert not fed.clients["c1"].is_key_owner


# ------------------------------------------------------------------------------ ciphertexts


def test_server_sees_only_probabilistic_ciphertexts(fed: Federation) -> None:
    bundle = fed.key_bundle("c0")
    twin = CkksClient(
        "c2", fed.session, fed.keys["c2"], fed.directory, PARAMS, fed.updates["c1"], 3.0
    )
    one = CkksClient(
        "c1", fed.session, fed.keys["c1"], fed.directory, PARAMS, fed.updates["c1"], 3.0
    )
    a = one.handle(EncryptRequest(fed.session.sid, bundle))
    b = twin.handle(EncryptRequest(fed.session.sid, bundle))
    assert isinstance(a, EncryptedInput)
    assert isinstance(b, EncryptedInput)
    assert a.length == b.length == DIM + 1
    assert len(a.chunks) == 2
    assert all(x != y for x, y in zip(a.chunks, b.chunks, strict=True))
    public = ts.context_from(bundle.context)
    vector = ts.ckks_vector_from(public, a.chunks[0])
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()
    # the plaintext's float64 encoding does not appear in the ciphertext
    assert np.float64(3.0 * fed.updates["c1"][0]).tobytes() not in a.chunks[0]


def test_malformed_replies_are_dropped_with_a_reason(fed: Federation) -> None:
    sid = fed.session.sid
    bundle = fed.key_bundle("c0")
    ctx = ts.context_from(bundle.context)
    rescaled = ts.context_from(bundle.context)
    rescaled.global_scale = 2**30
    wrong_scale = ts.ckks_vector(rescaled, [0.0] * 4096).serialize()

    def tamper(cid: str, stage: str, reply: object) -> object:
        if stage != "encrypt":
            return reply
        assert isinstance(reply, EncryptedInput)
        match cid:
            case "c1":
                return b"garbage"
            case "c2":
                return dataclasses.replace(reply, sid=bytes(32))
            case "c3":
                return KeyRequest(sid)
            case "c4":
                return dataclasses.replace(reply, chunks=(b"\x00" * 999, reply.chunks[1]))
            case "c5":
                return dataclasses.replace(reply, client_id="c6")
            case "c6":
                return dataclasses.replace(reply, chunks=reply.chunks[:1])
            case "c7":
                return dataclasses.replace(reply, chunks=(wrong_scale, reply.chunks[1]))
            case "c8":  # a well-formed ciphertext with too few slots
                short = ts.ckks_vector(ctx, [1.0] * 10).serialize()
                return dataclasses.replace(reply, chunks=(reply.chunks[0], short))
            case "c9":
                return dataclasses.replace(reply, chunks=(b"",) * 2)
        return reply

    server = fed.server(min_inputs=1)
    result = run(server, fed.clients, tamper=tamper)
    bad = {f"c{i}" for i in range(1, 10)}
    assert set(server.rejected) == bad
    assert all(server.rejected[c] for c in bad)
    assert "EncryptedInput" in server.rejected["c1"]
    assert "session" in server.rejected["c2"]
    assert "KeyRequest" in server.rejected["c3"]
    assert "claims" in server.rejected["c5"]
    assert "chunks" in server.rejected["c6"]
    assert "scale" in server.rejected["c7"]
    assert "values" in server.rejected["c8"]
    assert result.included == ("c0",)
    assert result.dropped == dict.fromkeys(bad, "encrypt")
    np.testing.assert_allclose(result.mean(), fed.updates["c0"], rtol=0, atol=1e-6)


def test_a_deviant_length_does_not_exclude_the_honest_majority(fed: Federation) -> None:
    odd = CkksClient("c3", fed.session, fed.keys["c3"], fed.directory, PARAMS, np.ones(7), 2.0)
    clients = {**fed.clients, "c3": odd}
    server = fed.server()
    result = run(server, clients)
    assert "c3" in server.rejected
    honest = [c for c in fed.ids if c != "c3"]
    assert result.included == tuple(sorted(honest))
    np.testing.assert_allclose(result.mean(), fed.plain_mean(honest), rtol=0, atol=1e-6)


def test_decrypt_only_once_and_only_by_the_key_owner(fed: Federation) -> None:
    requests: list[DecryptRequest] = []
    server = fed.server()
    out = server.start()
    while not server.done:
        replies = {cid: fed.clients[cid].handle(msg) for cid, msg in out.items()}
        requests += [m for m in out.values() if isinstance(m, DecryptRequest)]
        out = server.step(replies)
    (request,) = requests
    with pytest.raises(ProtocolError, match="already decrypted"):
        fed.clients["c0"].handle(request)
    with pytest.raises(ProtocolError, match="no key"):
        fed.clients["c1"].handle(request)
    with pytest.raises(ProtocolError, match="already"):  # no fresh key after the decryption
        fed.clients["c0"].handle(KeyRequest(fed.session.sid))


def test_key_owner_refuses_malformed_decrypt_requests(fed: Federation) -> None:
    sid = fed.session.sid
    bundle = fed.key_bundle("c0")
    reply = fed.clients["c1"].handle(EncryptRequest(sid, bundle))
    assert isinstance(reply, EncryptedInput)
    owner = fed.clients["c0"]
    good = DecryptRequest(sid, reply.chunks, reply.length, ("c1",))
    for bad in (
        dataclasses.replace(good, sid=bytes(32)),
        dataclasses.replace(good, length=reply.length + 5000),
        dataclasses.replace(good, chunks=(b"junk", reply.chunks[1])),
        dataclasses.replace(good, contributors=()),
        dataclasses.replace(good, contributors=("mallory",)),
    ):
        with pytest.raises(ProtocolError):
            owner.handle(bad)
    decrypted = owner.handle(good)  # the refusals did not use up the key
    assert isinstance(decrypted, DecryptedSum)
    values = np.frombuffer(decrypted.values, dtype="<f8")
    expected = fed.weights["c1"] * fed.updates["c1"]
    np.testing.assert_allclose(values[:-1], expected, rtol=0, atol=1e-5)
    assert abs(values[-1] - fed.weights["c1"]) < 1e-6


def test_clients_refuse_unknown_or_foreign_messages(fed: Federation) -> None:
    client = fed.clients["c1"]
    for message in ("hello", None, KeyRequest(bytes(32)), DecryptedSum(fed.session.sid, b"")):
        with pytest.raises(ProtocolError):
            client.handle(message)
    assert not client.is_key_owner
