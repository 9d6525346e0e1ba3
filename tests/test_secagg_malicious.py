"""A malicious server with corrupt clients against the masking protocol (SecAgg, SecAgg+).

The attack (Bonawitz et al., CCS 2017, section 6): after the masked inputs arrive, the server
shows some holders of a victim's shares a survivor list with the victim and the others one
without it. Honest holders on the first side reveal shares of the victim's self-mask seed
``b``, on the second side shares of its mask key ``s_sk``; corrupt clients sign both lists
and hand the server both of their shares. With ``t`` shares of each the server strips every
mask off the victim's input. fedfort's thresholds make this impossible while at most
``c_max`` holders are corrupt (``2 t > k + 1 + c_max``); the tests run the real client and
server machines, show the attack working with the old thresholds (``t = k/2 + 1``) and with
one corrupt client past the bound, and failing up to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from fedfort.config import parse_config
from fedfort.crypto.primitives import AgreementKey, SigningKey, agree, expand_mask
from fedfort.errors import ConfigError, SecAggAbort
from fedfort.secagg import shamir
from fedfort.secagg.client import MaskingClient, consistency_payload, mask_info, unseal_share
from fedfort.secagg.messages import (
    AdvertiseRequest,
    ConsistencyRequest,
    ConsistencySignature,
    UnmaskRequest,
    UnmaskShares,
)
from fedfort.secagg.params import MaskingParams, graph_seed_for
from fedfort.secagg.policy import ClientPolicy
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import Session
from fedfort.secagg.thresholds import corrupt_bound, derive

DIM = 17
OLD = {10: (8, 5), 50: (12, 7), 100: (22, 12)}  # (k, t = k/2 + 1) the red team broke


class Attacked:
    """``n`` clients (with their own ``policy``) and a server proposing ``params``."""

    def __init__(self, n: int, policy: ClientPolicy, seed: int = 0, **params: object) -> None:
        rng = np.random.default_rng(seed)
        self.ids = [f"c{i:03d}" for i in range(n)]
        self.keys = {c: SigningKey() for c in self.ids}
        self.directory = {c: k.public for c, k in self.keys.items()}
        self.session = Session("attack", 1, 1, nonce=bytes([seed]) * 16)
        self.sid = self.session.sid
        fields: dict[str, object] = {"variant": "secagg+", "dim": DIM + 1, "bound": 4.0}
        fields.update(params)
        self.params = MaskingParams(
            roster=tuple(self.ids),
            graph_seed=graph_seed_for(self.sid),
            **fields,  # type: ignore[arg-type]
        )
        self.x = {c: rng.uniform(-1, 1, DIM).astype(np.float32) for c in self.ids}
        self.clients = {
            c: MaskingClient(
                c, self.session, self.keys[c], self.directory, self.x[c], 1.0, policy=policy
            )
            for c in self.ids
        }
        self.server = MaskingServer(self.session, self.params, self.directory)


@dataclass
class Outcome:
    """What the attack got: shares of the victim's two secrets, and its input if both."""

    t: int
    b_shares: int
    s_shares: int
    aborted: int
    error: float | None  # max |recovered - true input|, None if nothing was recovered


def choose_sides(
    s: Attacked, victim: str, corrupt: set[str], t: int, seed: int = 0
) -> dict[str, bool]:
    """Which honest clients the server shows the list *with* the victim (``True``).

    The server knows the graph. Honest holders of the victim's shares reveal ``b`` on the
    "with" side and ``s_sk`` on the other, if their own holders' signatures on their list reach
    ``t`` (corrupt clients sign both lists). A hill climb over the sides maximises
    ``min(b shares, s_sk shares)``, so the attack gets the best split it can find.
    """
    ids, index = s.ids, {c: i for i, c in enumerate(s.ids)}
    closed = np.eye(len(ids), dtype=np.int64)
    for c, hood in s.server.neighbours.items():
        closed[index[c], [index[v] for v in hood]] = 1
    honest = np.array([c not in corrupt for c in ids])
    bad = ~honest
    holder = closed[index[victim]].astype(bool) & honest
    corrupt_holders = int(np.sum(closed[index[victim]] & bad))

    def side_start(rng: np.random.Generator) -> np.ndarray:
        side = rng.random(len(ids)) < 0.5
        side[index[victim]] = True  # the victim sees itself
        return side

    def score(side: np.ndarray) -> tuple[int, int]:
        signed = np.where(side, closed @ ((side & honest) | bad), closed @ ((~side & honest) | bad))
        accepts = signed >= t
        got_b = int(np.sum(holder & side & accepts)) + corrupt_holders
        got_s = int(np.sum(holder & ~side & accepts)) + corrupt_holders
        # progress: how close each honest holder is to accepting its list
        return min(got_b, got_s), int(np.sum(np.minimum(signed, t)[holder]))

    rng = np.random.default_rng(seed)
    movable = [i for i in range(len(ids)) if honest[i] and ids[i] != victim]
    best_side, best = side_start(rng), (-1, -1)
    for _ in range(8):  # restarts: the climb can stall on a plateau
        side = side_start(rng)
        current = score(side)
        for _ in range(60 * len(ids)):
            i = movable[int(rng.integers(len(movable)))]
            side[i] = not side[i]
            tried = score(side)
            if tried >= current:
                current = tried
            else:
                side[i] = not side[i]
        if current > best:
            best_side, best = side.copy(), current
        if best[0] >= t:
            break
    side = best_side
    return {c: bool(side[index[c]]) for c in ids if c not in corrupt}


def split_view_attack(s: Attacked, victim: str, corrupt: set[str]) -> Outcome:
    """Run the protocol honestly to the masked inputs, then split the victim's holders.

    The server shows each honest client the survivor list with or without the victim as
    :func:`choose_sides` says, sends each every signature on its list (from anyone; corrupt
    clients sign both) and pools the revealed shares with the corrupt holders' own.
    """
    outbox = s.server.start()
    for _ in range(3):
        outbox = s.server.step({c: s.clients[c].handle(m) for c, m in outbox.items()})
    t = s.params.threshold_value
    full = s.server.survivors
    without = tuple(c for c in full if c != victim)
    neighbours = s.server.neighbours
    holders = {victim} | neighbours[victim]
    sides = choose_sides(s, victim, corrupt, t)
    lists = {c: full if sees else without for c, sees in sides.items()}
    signatures: dict[tuple[str, ...], dict[str, bytes]] = {full: {}, without: {}}
    aborted = 0
    for c, seen in lists.items():
        try:
            reply = s.clients[c].handle(ConsistencyRequest(sid=s.sid, survivors=seen))
        except SecAggAbort:
            aborted += 1
            continue
        assert isinstance(reply, ConsistencySignature)
        signatures[seen][c] = reply.signature
    digest = s.params.digest()
    for c in corrupt:
        for seen in (full, without):
            signatures[seen][c] = s.keys[c].sign(consistency_payload(s.sid, digest, seen))
    b_shares: dict[int, bytes] = {}
    s_shares: dict[int, bytes] = {}
    for c, seen in lists.items():
        if c not in signatures[seen]:
            continue
        request = UnmaskRequest(sid=s.sid, signatures=tuple(sorted(signatures[seen].items())))
        try:
            reply = s.clients[c].handle(request)
        except SecAggAbort:
            aborted += 1
            continue
        assert isinstance(reply, UnmaskShares)
        x = s.ids.index(c) + 1
        for owner, share in reply.seed_shares:
            if owner == victim:
                b_shares[x] = share
        for owner, share in reply.key_shares:
            if owner == victim:
                s_shares[x] = share
    for c in holders & corrupt:  # a corrupt holder decrypts and hands over both shares
        client = s.clients[c]
        aad = b"fedfort-secagg-share\x00" + s.sid + victim.encode() + b"\x00" + c.encode()
        held = unseal_share(client.channel[victim], client.inbox[victim], aad)
        assert held is not None
        x = s.ids.index(c) + 1
        s_shares[x], b_shares[x] = held
    outcome = Outcome(t, len(b_shares), len(s_shares), aborted, None)
    if len(b_shares) < t or len(s_shares) < t:
        return outcome
    b = shamir.combine(b_shares, t, 32)
    s_key = AgreementKey.from_private_bytes(shamir.combine(s_shares, t, 32))
    y = s.server.inputs[victim] - expand_mask(b, DIM + 1, 32)
    for v in sorted(neighbours[victim]):
        seed = agree(s_key, s.server.keys[v].s_public, mask_info(s.sid, victim, v))
        mask = expand_mask(seed, DIM + 1, 32)
        y = y - mask if victim < v else y + mask
    recovered = s.params.codec.decode(y, 1)
    truth = np.append(s.x[victim].astype(np.float64), 1.0)
    outcome.error = float(np.abs(recovered - truth).max())
    return outcome


def _corrupt_neighbours(s: Attacked, victim: str, count: int) -> set[str]:
    return set(sorted(s.server.neighbours[victim])[:count])


# -- the attack, before and after --


@pytest.mark.parametrize("n", sorted(OLD))
def test_old_thresholds_let_one_corrupt_client_unmask_an_input(n: int) -> None:
    """``t = k/2 + 1``: what a server claiming no corrupt clients proposes. A client that
    takes the server's word (assumes no corruption) joins, and falls to one accomplice."""
    k, t = OLD[n]
    naive = ClientPolicy(corrupt_fraction=0.0)
    s = Attacked(n, naive, degree=k, corrupt_fraction=0.0)
    assert s.params.resolved() == (k, t)
    victim = s.ids[-1]
    outcome = split_view_attack(s, victim, _corrupt_neighbours(s, victim, 1))
    assert outcome.error is not None and outcome.error < 2 / s.params.codec.scale, outcome
    # the same proposal to a client with fedfort's default policy is refused outright
    with pytest.raises(SecAggAbort, match=r"degree|threshold"):
        MaskingClient(victim, s.session, s.keys[victim], s.directory, s.x[victim], 1.0).handle(
            AdvertiseRequest(sid=s.sid, params=s.params)
        )


@pytest.mark.parametrize("n", [10, 50, pytest.param(100, marks=pytest.mark.slow)])
def test_default_thresholds_hold_up_to_the_corrupt_bound(n: int) -> None:
    policy = ClientPolicy()
    found = derive(n, "secagg+", corrupt_fraction=1 / 3, dropout_fraction=0.1)
    for count in sorted({1, found.corrupt_bound // 2, found.corrupt_bound}):
        s = Attacked(n, policy, seed=count)
        k, t = s.params.resolved()
        assert (k, t) == (found.degree, found.threshold)
        assert 2 * t > k + 1 + found.corrupt_bound
        victim = s.ids[-1]
        outcome = split_view_attack(s, victim, _corrupt_neighbours(s, victim, count))
        assert outcome.error is None, outcome
        assert min(outcome.b_shares, outcome.s_shares) < t, outcome


def test_secagg_plus_bound_is_exact_at_ten_clients() -> None:
    """n = 10, k = 8, t = 7, c_max = 4: every count up to the bound fails, and the first count
    with 2 t <= k + 1 + c (c = 5, past the configured 4) unmasks the victim."""
    policy = ClientPolicy()
    for count in range(1, 6):
        s = Attacked(10, policy, seed=count)
        assert s.params.resolved() == (8, 7)
        victim = s.ids[-1]
        outcome = split_view_attack(s, victim, _corrupt_neighbours(s, victim, count))
        if count <= 4:
            assert outcome.error is None, (count, outcome)
        else:
            assert outcome.error is not None and outcome.error < 2 / s.params.codec.scale


def test_full_secagg_bound_is_exact() -> None:
    """n = 12, t = 9: with c corrupt clients the attack works exactly when 2 t <= n + c."""
    policy = ClientPolicy()
    results: dict[int, Outcome] = {}
    for count in range(1, 7):
        s = Attacked(12, policy, seed=count, variant="secagg")
        assert s.params.resolved() == (11, 9)
        victim = s.ids[-1]
        results[count] = split_view_attack(s, victim, set(s.ids[:count]))
    assert all(results[c].error is None for c in range(1, 6)), results
    assert results[6].error is not None and results[6].error < 2 / s.params.codec.scale
    # the documented bound: the configured 4 (= ceil(12 / 3)) and any c with 2 t > n + c
    assert corrupt_bound(12, 11, 1 / 3) == 4 and 2 * 9 > 12 + 5 and 2 * 9 <= 12 + 6


def test_signatures_of_non_neighbours_are_not_counted() -> None:
    """A client counts only the holders of its shares: the server cannot make up ``t``
    consistency signatures from clients outside its neighbourhood."""
    s = Attacked(50, ClientPolicy(corrupt_fraction=0.1), corrupt_fraction=0.1)
    k, t = s.params.resolved()
    assert k < 49  # a sparse graph: there are non-neighbours
    outbox = s.server.start()
    for _ in range(3):
        outbox = s.server.step({c: s.clients[c].handle(m) for c, m in outbox.items()})
    full = s.server.survivors
    target = s.ids[0]
    others = [c for c in full if c not in s.server.neighbours[target] and c != target]
    assert len(others) >= t
    sigs = {
        c: s.clients[c].handle(ConsistencyRequest(sid=s.sid, survivors=full))
        for c in [target, *others]
    }
    outsiders = tuple(
        (c, sigs[c].signature)  # type: ignore[attr-defined]
        for c in sorted([target, *others])
    )
    with pytest.raises(SecAggAbort, match=r"only 1 holders"):
        s.clients[target].handle(UnmaskRequest(sid=s.sid, signatures=outsiders))


# -- what a client checks in the parameters --


def _advertise(params: MaskingParams, policy: ClientPolicy | None = None) -> object:
    key = SigningKey()
    session = Session("attack", 1, 1, nonce=bytes(16))
    client = MaskingClient(
        params.roster[0], session, key, {}, np.zeros(params.dim - 1, np.float32), 1.0, policy=policy
    )
    return client.handle(AdvertiseRequest(sid=session.sid, params=params))


def _proposal(n: int, **fields: object) -> MaskingParams:
    sid = Session("attack", 1, 1, nonce=bytes(16)).sid
    values: dict[str, object] = {"variant": "secagg+", "dim": 3, "graph_seed": graph_seed_for(sid)}
    values.update(fields)
    return MaskingParams(
        roster=tuple(f"c{i:03d}" for i in range(n)),
        **values,  # type: ignore[arg-type]
    )


def test_client_accepts_the_default_proposal() -> None:
    for n in (5, 10, 50, 100):
        _advertise(_proposal(n))


def test_client_refuses_a_graph_seed_the_server_chose() -> None:
    honest = _proposal(50)
    assert not honest.graph().is_complete()
    chosen = dataclasses.replace(honest, graph_seed=bytes(range(32)))
    with pytest.raises(SecAggAbort, match="graph seed"):
        _advertise(chosen)


def test_client_refuses_a_smaller_degree() -> None:
    # a server that claims no dropouts would derive a smaller degree; the client derives its own
    k, t = _proposal(100).resolved()
    smaller = _proposal(100, degree=k - 8, threshold=t)  # safe, on a thinner graph
    assert 2 * t > k - 8 + 1 + corrupt_bound(100, k - 8, 1 / 3)
    with pytest.raises(SecAggAbort, match="degree"):
        _advertise(smaller)


def test_client_refuses_a_lower_threshold() -> None:
    # what the server proposes when it claims fewer corrupt clients than the client assumes
    weak = _proposal(50, corrupt_fraction=0.05)
    k, t = weak.resolved()
    with pytest.raises(SecAggAbort, match=r"degree|threshold"):
        _advertise(weak)
    floor_k, floor_t = _proposal(50).resolved()
    lower = _proposal(50, degree=floor_k, threshold=floor_t - 1, corrupt_fraction=0.2)
    with pytest.raises(SecAggAbort, match="threshold"):
        _advertise(lower)
    # a client that itself assumes 5% corrupt takes the first proposal
    _advertise(weak, ClientPolicy(corrupt_fraction=0.05))
    assert 2 * t > k + 1 + corrupt_bound(50, k, 0.05)


def test_client_refuses_a_roster_outside_its_bounds() -> None:
    with pytest.raises(SecAggAbort, match="below this client's minimum of 10"):
        _advertise(_proposal(8, variant="secagg"), ClientPolicy(min_clients=10))
    with pytest.raises(SecAggAbort, match="above this client's maximum of 40"):
        _advertise(_proposal(50), ClientPolicy(max_clients=40))


def test_server_cannot_build_an_unsafe_threshold() -> None:
    with pytest.raises(ConfigError, match=r"2 t > k \+ 1"):
        _proposal(12, variant="secagg", threshold=7)


# -- the parameters themselves --


@pytest.mark.parametrize("gamma", [0.0, 0.05, 1 / 3, 0.4])
def test_derived_parameters_are_safe_and_live(gamma: float) -> None:
    for n in [*range(5, 80), 100, 250, 1000]:
        try:
            found = derive(n, "secagg+", corrupt_fraction=gamma, dropout_fraction=0.1)
        except ConfigError:
            assert gamma >= 1 / 3 and n <= 10, n  # only tiny rosters have no safe threshold
            continue
        k, t, c = found.degree, found.threshold, found.corrupt_bound
        assert 2 * t > k + 1 + c and t >= c + 2 and t <= k + 1 - found.dropout_bound
        assert k % 2 == 0 or k == n - 1


def test_config_refuses_combinations_without_a_safe_threshold() -> None:
    body = {"clients": {"count": 4}, "secure_aggregation": {"mode": "secagg"}}
    with pytest.raises(ConfigError, match=r"no safe threshold for 4 clients"):
        parse_config(body)
    body = {"clients": {"count": 20}, "secure_aggregation": {"mode": "secagg", "threshold": 12}}
    with pytest.raises(ConfigError, match="threshold = 12 is unsafe"):
        parse_config(body)
    body = {"clients": {"count": 20}, "secure_aggregation": {"mode": "secagg+"}}
    assert parse_config(body).secure_aggregation.corrupt_fraction == pytest.approx(1 / 3)


def test_client_settings_come_from_its_own_config_and_options() -> None:
    import argparse

    from fedfort.cli.network import _secure_policy, add_parsers
    from fedfort.client.secure import client_policy

    config = parse_config(
        {
            "clients": {"count": 20},
            "secure_aggregation": {"mode": "secagg", "client_max_clients": 50},
        }
    )
    assert client_policy(config.secure_aggregation) == ClientPolicy(
        max_clients=50, required_mode="secagg"
    )
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    base = ["client", "--config", "f.toml", "--data", "partition:0", "--pki", "p", "--name", "c"]
    args = parser.parse_args(
        [*base, "--secagg-min-clients", "7", "--secagg-corrupt-fraction", "0.4"]
    )
    policy = _secure_policy(args, config)
    assert policy == ClientPolicy(
        corrupt_fraction=0.4, min_clients=7, max_clients=50, required_mode="secagg"
    )
    with pytest.raises(SecAggAbort, match="below this client's minimum of 7"):
        _advertise(_proposal(6, variant="secagg"), policy)
