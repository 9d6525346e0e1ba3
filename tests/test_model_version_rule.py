"""One masked input per global model version: the two-session differencing attack.

A malicious server discards a round attempt and retries it over the same global model: one
secure-aggregation session with the victim on the roster, one without. Both sums are honest,
and their difference is the victim's update. The attack runs here with the real masking
protocol (:mod:`fedfort.secagg`), once with the clients' protocol sessions driven directly (what
a client did before it checked model versions) and once through :class:`FederatedClient`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedfort.client.client import FederatedClient
from fedfort.client.policy import ClientPrivacyPolicy
from fedfort.client.training import ClientData
from fedfort.errors import SecAggAbort
from fedfort.messages import (
    ClientPrivacy,
    ClientUpdate,
    LocalTrainingConfig,
    SecureAggregation,
    TrainTask,
    session_task_digest,
)
from fedfort.privacy.mechanisms import clip_l2
from fedfort.secagg.local import run_locally
from fedfort.secagg.params import MaskingParams
from fedfort.secagg.server import MaskingServer
from fedfort.secagg.session import SecureSum, Session

DIM = 4000
IDS = ["client-a", "client-b", "client-c", "victim"]
OTHERS = IDS[:3]
NONCE = b"n" * 16
ROUND = 7
MODEL = np.linspace(-1, 1, DIM, dtype=np.float32)  # the same global model in both sessions


def _updates() -> dict[str, ClientUpdate]:
    """What each client trains from MODEL with the server's seed (the same in both attempts
    while the seed and the data are the same)."""
    rng = np.random.default_rng(5)
    return {
        cid: ClientUpdate(ROUND, cid, (rng.normal(size=DIM) * 0.01).astype(np.float32), 1)
        for cid in IDS
    }


def _task(cid: str, attempt: int, privacy: ClientPrivacy | None) -> TrainTask:
    secure = SecureAggregation("secagg", "run", NONCE, max_weight=1)
    config = LocalTrainingConfig()
    return TrainTask(ROUND, attempt, cid, MODEL, config, 99, privacy=privacy, secure=secure)


class _Via:
    """A client's side of one session, answered through ``answer(round, attempt, message)``."""

    def __init__(self, answer, attempt: int) -> None:  # type: ignore[no-untyped-def]
        self.answer, self.attempt = answer, attempt

    def handle(self, message: object) -> object:
        return self.answer(ROUND, self.attempt, message)


def _session(clients, roster, attempt, privacy, *, secure_only: bool) -> SecureSum:  # type: ignore[no-untyped-def]
    """One honest secure sum over ``roster``; ``secure_only`` drives the clients' protocol
    sessions directly, as a client did before it owned its privacy."""
    updates = _updates()
    directory = {cid: c.identity.public for cid, c in clients.items()}
    machines = {}
    for cid in roster:
        client, task = clients[cid], _task(cid, attempt, privacy)
        if secure_only:
            client.secure.seal(task, updates[cid], directory)
            machines[cid] = _Via(client.secure.handle, attempt)
        else:
            client.seal(task, client.finalize(task, updates[cid]), directory)
            machines[cid] = _Via(client.secure_handle, attempt)
    # 3 or 4 clients against up to a third corrupt: every share holder is needed (no dropouts)
    params = MaskingParams(
        tuple(sorted(roster)),
        "secagg",
        dim=DIM + 1,
        bits=48,
        bound=8.0,
        dropout_fraction=0.0,
        task_digest=session_task_digest(_task(roster[0], attempt, privacy)),  # one task for all
    )
    server = MaskingServer(Session("run", ROUND, attempt, NONCE), params, directory)
    return run_locally(server, machines).result


def _clients(policy: ClientPrivacyPolicy | None = None) -> dict[str, FederatedClient]:
    data = ClientData(torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64))
    return {cid: FederatedClient(cid, data, policy=policy) for cid in IDS}


def test_two_honest_sums_reveal_the_victim_without_the_rule() -> None:
    clients = _clients()
    with_victim = _session(clients, IDS, 1, None, secure_only=True)
    without = _session(clients, OTHERS, 2, None, secure_only=True)
    recovered = with_victim.total - without.total
    assert np.abs(recovered - _updates()["victim"].delta).max() < 1e-6
    assert with_victim.weight - without.weight == pytest.approx(1.0)


@pytest.mark.parametrize("order", ["victim-first", "victim-second"])
def test_clients_refuse_a_second_masked_input_for_the_same_model(order: str) -> None:
    clients = _clients()
    first, second = (IDS, OTHERS) if order == "victim-first" else (OTHERS, IDS)
    done = _session(clients, first, 1, None, secure_only=False)
    assert set(done.included) == set(first)
    with pytest.raises(SecAggAbort, match="masked input"):
        _session(clients, second, 2, None, secure_only=False)
    # a new global model is a new version: the same clients take part again
    global MODEL
    old, MODEL = MODEL, MODEL + np.float32(0.5)
    try:
        assert set(_session(clients, second, 3, None, secure_only=False).included) == set(second)
    finally:
        MODEL = old


def test_with_client_noise_the_difference_carries_the_clients_own_noise() -> None:
    sigma, clip = 0.2, 1.0
    policy = ClientPrivacyPolicy(max_clip_norm=clip, min_noise_std=sigma)
    # the server even asks for seeded noise, hoping to replay it: the clients use the OS
    asked = ClientPrivacy(clip_norm=clip, noise_std=0.0, secure_noise=False)
    clients = _clients(policy)
    with_victim = _session(clients, IDS, 1, asked, secure_only=False)
    without = _session(clients, OTHERS, 2, asked, secure_only=False)  # fresh noise: accepted
    victim, _ = clip_l2(_updates()["victim"].delta, clip)
    residual = with_victim.total - without.total - victim
    # the victim's noise plus the others' two independent draws: sigma * sqrt(1 + 2 * 3)
    assert np.std(residual) == pytest.approx(sigma * np.sqrt(7), rel=0.05)
    assert np.std(residual) > 10 * np.std(_updates()["victim"].delta)
    for client in clients.values():
        assert len(client.ledger.releases) == (2 if client.client_id in OTHERS else 1)


def test_only_noise_the_clients_policy_requires_counts_as_fresh() -> None:
    share = ClientPrivacy(clip_norm=1.0, noise_std=0.1)
    own = ClientPrivacyPolicy(max_clip_norm=1.0, min_noise_std=0.1)
    assert own.fresh(own.effective(share)) and own.fresh(own.effective(None))
    assert not ClientPrivacyPolicy().fresh(share)  # noise the server sized
    assert not ClientPrivacyPolicy().fresh(ClientPrivacy(clip_norm=1.0))  # clipping alone
    assert not ClientPrivacyPolicy().fresh(None)
    # the reproducible mode keeps the same control flow with its (server-known) seeded noise
    seeded = ClientPrivacy(clip_norm=1.0, noise_std=0.1, secure_noise=False)
    repro = ClientPrivacyPolicy(max_clip_norm=1.0, min_noise_std=0.1, reproducible=True)
    assert repro.fresh(repro.effective(seeded))
    assert not ClientPrivacyPolicy(reproducible=True).fresh(seeded)


def test_noise_the_server_sizes_does_not_make_a_second_input_fresh() -> None:
    # the server asks the other clients for a negligible noise share in the second session,
    # hoping it passes for fresh noise: the difference would still be the victim's update
    clients = _clients()
    _session(clients, IDS, 1, None, secure_only=False)
    negligible = ClientPrivacy(clip_norm=10.0, noise_std=1e-9)
    with pytest.raises(SecAggAbort, match="masked input"):
        _session(clients, OTHERS, 2, negligible, secure_only=False)
