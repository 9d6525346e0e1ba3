"""The client owns its privacy: a malicious server's directive can only strengthen it.

Attacks run here: the noise-replay attack on local DP (the server sets ``secure_noise = False``
and a seed, regenerates the client's noise and subtracts it), weakened directives (less noise,
a larger clip, no privacy at all, an unknown mechanism), and a budget the server would overrun.
Each runs once without the defence (the directive-driven :func:`privatize` the client used to
apply) and once through :class:`FederatedClient`, and the difference is asserted.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from dp_accounting import GaussianDpEvent, LaplaceDpEvent, rdp

from fedfort.client.client import FederatedClient
from fedfort.client.ledger import ClientLedger
from fedfort.client.policy import ClientPrivacyPolicy
from fedfort.client.privacy import noise_for, privatize
from fedfort.client.training import ClientData
from fedfort.errors import ConfigError, PolicyRefused, PrivacyBudgetExhausted
from fedfort.messages import ClientPrivacy, ClientUpdate, LocalTrainingConfig, TrainTask
from fedfort.privacy.mechanisms import LocalGaussian, clip_l2

DIM = 20_000
SEED = 1234  # chosen by the server
EPS = 1.0
LOCAL = ClientPrivacy(
    clip_norm=1.0, local="gaussian", local_epsilon=EPS, local_delta=1e-5, secure_noise=False
)
STD = LocalGaussian(EPS, 1e-5, 1.0).std  # about 7.46


def _update(scale: float = 0.05) -> ClientUpdate:
    rng = np.random.default_rng(0)
    return ClientUpdate(1, "victim", (rng.normal(size=DIM) * scale).astype(np.float32), 50)


def _task(directive: ClientPrivacy | None, round_: int = 1) -> TrainTask:
    weights = np.zeros(DIM, dtype=np.float32)
    return TrainTask(round_, 1, "victim", weights, LocalTrainingConfig(), SEED, privacy=directive)


def _client(policy: ClientPrivacyPolicy | None = None, **kw: object) -> FederatedClient:
    data = ClientData(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64))
    return FederatedClient("victim", data, policy=policy, **kw)  # type: ignore[arg-type]


def _replay(released: np.ndarray, directive: ClientPrivacy, true: np.ndarray) -> np.ndarray:
    """The malicious server's attack: regenerate the seeded noise, subtract it and the truth
    (only to measure what is left; the server would keep ``released - noise``)."""
    noise = noise_for(directive, SEED).gaussian(DIM, STD)
    return released.astype(np.float64) - noise - true


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_noise_replay_attack_on_local_dp_gains_nothing_against_the_client() -> None:
    update = _update()
    true, _ = clip_l2(update.delta, 1.0)
    # without the defence: the client follows the directive's seeded noise
    undefended = privatize(update, LOCAL, SEED).delta
    residual = _replay(undefended, LOCAL, true)
    assert np.std(residual) < 0.05 * STD  # ~0.02 left of std 7.46: the noise is gone
    assert _cosine(undefended - noise_for(LOCAL, SEED).gaussian(DIM, STD), true) > 0.3
    # with it: the same directive, answered by a client (default policy, no reproducible mode)
    released = _client().finalize(_task(LOCAL), update).delta
    residual = _replay(released, LOCAL, true)
    assert np.std(residual) == pytest.approx(STD * np.sqrt(2), rel=0.03)  # replay adds noise
    assert np.std(released.astype(np.float64) - true) == pytest.approx(STD, rel=0.03)
    assert abs(_cosine(released - noise_for(LOCAL, SEED).gaussian(DIM, STD), true)) < 0.05


def test_only_the_clients_own_reproducible_mode_seeds_the_noise() -> None:
    update = _update()
    seeded = _client(ClientPrivacyPolicy(reproducible=True)).finalize(_task(LOCAL), update)
    np.testing.assert_array_equal(seeded.delta, privatize(update, LOCAL, SEED).delta)


GAUSSIAN_POLICY = ClientPrivacyPolicy(local="gaussian", max_clip_norm=1.0, max_round_epsilon=EPS)


@pytest.mark.parametrize(
    "directive",
    [
        None,  # no privacy at all
        ClientPrivacy(),  # central DP without secure aggregation: nothing at the client
        ClientPrivacy(clip_norm=1.0, local="gaussian", local_epsilon=8.0, local_delta=1e-5),
        ClientPrivacy(clip_norm=10.0, local="gaussian", local_epsilon=EPS, local_delta=1e-5),
        ClientPrivacy(clip_norm=1.0, local="gaussian", local_epsilon=EPS, local_delta=0.1),
        ClientPrivacy(clip_norm=1.0, noise_std=0.01),  # a distributed share, far too small
        LOCAL,  # seeded noise
    ],
    ids=["none", "central", "epsilon8", "clip10", "delta0.1", "small-share", "seeded"],
)
def test_a_weaker_directive_is_overridden_to_the_clients_local_policy(directive) -> None:
    client = _client(GAUSSIAN_POLICY)
    effective = client.effective_privacy(_task(directive))
    assert effective is not None
    assert (effective.local, effective.clip_norm, effective.local_epsilon) == ("gaussian", 1, EPS)
    assert effective.local_delta == 1e-5 and effective.secure_noise
    update = _update(scale=1.0)  # norm ~141: clipped to 1
    true, _ = clip_l2(update.delta, 1.0)
    released = client.finalize(_task(directive), update).delta.astype(np.float64)
    assert np.std(released - true) == pytest.approx(STD, rel=0.03)
    # without the defence the same directive releases the update with less or no noise
    if directive is not None and directive.local is None:
        weak = privatize(update, directive, SEED).delta.astype(np.float64)
        clip = directive.clip_norm
        sent = update.delta if clip is None else clip_l2(update.delta, clip)[0]
        assert np.std(weak - sent) < 0.01 * STD


def test_a_stronger_directive_is_kept() -> None:
    stronger = ClientPrivacy(clip_norm=0.5, local="gaussian", local_epsilon=0.5, local_delta=1e-6)
    assert _client(GAUSSIAN_POLICY).effective_privacy(_task(stronger)) == stronger


def test_distributed_shares_get_at_least_the_clients_noise_and_clip() -> None:
    policy = ClientPrivacyPolicy(max_clip_norm=0.5, min_noise_std=0.3)
    asked = ClientPrivacy(clip_norm=2.0, noise_std=0.01, secure_noise=False)
    client = _client(policy)
    effective = client.effective_privacy(_task(asked))
    assert effective == ClientPrivacy(clip_norm=0.5, noise_std=0.3, secure_noise=True)
    update = _update(scale=1.0)
    true, _ = clip_l2(update.delta, 0.5)
    released = client.finalize(_task(asked), update).delta.astype(np.float64)
    assert np.std(released - true) == pytest.approx(0.3, rel=0.03)
    undefended = privatize(update, asked, SEED).delta.astype(np.float64)
    assert np.std(undefended - clip_l2(update.delta, 2.0)[0]) == pytest.approx(0.01, rel=0.05)
    # a directive asking for more noise and a smaller clip is kept as it is
    more = ClientPrivacy(clip_norm=0.1, noise_std=1.0)
    assert client.effective_privacy(_task(more)) == more


@pytest.mark.parametrize(
    ("policy", "directive", "needle"),
    [
        (ClientPrivacyPolicy(), ClientPrivacy(local="randomized_response"), "unknown local"),  # type: ignore[arg-type]
        (
            GAUSSIAN_POLICY,
            ClientPrivacy(clip_norm=1.0, local="laplace", local_epsilon=1.0),
            "laplace",
        ),
        (GAUSSIAN_POLICY, ClientPrivacy(clip_norm=1.0, report_clipped=True), "adaptive-clipping"),
        (ClientPrivacyPolicy(), ClientPrivacy(local="gaussian", local_epsilon=1.0), "clip norm"),
    ],
    ids=["unknown", "other-mechanism", "clip-report", "no-clip"],
)
def test_directives_the_policy_cannot_serve_are_refused_before_training(
    policy, directive, needle
) -> None:
    client = _client(policy)
    with pytest.raises(PolicyRefused, match=needle):
        client.training_task(_task(directive))


def test_training_randomness_is_the_clients_whenever_privacy_is_asked_for() -> None:
    client = _client()
    plain = _task(None)
    assert client.training_task(plain) is plain  # no privacy: the server's seed, reproducible
    seeds = {client.training_task(_task(LOCAL)).seed for _ in range(4)}
    assert SEED not in seeds and len(seeds) == 4
    assert _client(ClientPrivacyPolicy(reproducible=True)).training_task(_task(LOCAL)).seed == SEED


def _rdp_epsilon(z: float, count: int, delta: float = 1e-5) -> float:
    acc = rdp.RdpAccountant()
    acc.compose(GaussianDpEvent(z), count)
    return float(acc.get_epsilon(delta))


def test_the_ledger_survives_a_restart_and_refuses_once_the_budget_is_spent(tmp_path) -> None:
    path = tmp_path / "state" / "privacy-ledger.json"
    policy = ClientPrivacyPolicy(
        local="gaussian", max_clip_norm=1.0, max_round_epsilon=EPS, max_total_epsilon=3.0
    )

    def client() -> FederatedClient:
        ledger = ClientLedger(path, delta=policy.delta, max_total_epsilon=3.0)
        return _client(policy, ledger=ledger)

    z = LocalGaussian(EPS, 1e-5, 1.0).noise_multiplier
    releases = 0
    with pytest.raises(PrivacyBudgetExhausted, match="spent epsilon"):
        for round_ in range(1, 50):
            c = client()  # a restart before every round: only the file remembers
            task = _task(None, round_)
            c.finalize(task, _update())  # the server may even drop it: the release counts
            releases += 1
            assert c.ledger.spent() == pytest.approx(_rdp_epsilon(z, releases), rel=1e-9)
            c.training_task(_task(None, round_ + 1))
    assert releases >= 2 and _rdp_epsilon(z, releases) <= 3.0 < _rdp_epsilon(z, releases + 1)
    restarted = client()
    assert len(restarted.ledger.releases) == releases
    with pytest.raises(PrivacyBudgetExhausted) as err:
        restarted.training_task(_task(LOCAL, 99))
    assert err.value.spent == pytest.approx(_rdp_epsilon(z, releases)) and err.value.target == 3.0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    body = json.loads(path.read_text())
    assert body["format"] == "fedfort-client-ledger/1" and len(body["releases"]) == releases


def test_a_release_without_noise_is_refused_under_a_budget() -> None:
    client = _client(ClientPrivacyPolicy(max_total_epsilon=10.0))
    with pytest.raises(PrivacyBudgetExhausted, match="no noise"):
        client.training_task(_task(ClientPrivacy(clip_norm=1.0)))


def test_a_damaged_ledger_is_never_silently_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text('{"format": "fedfort-client-ledger/1", "delta": NaN}')
    with pytest.raises(ConfigError, match="cannot be read"):
        ClientLedger(path)
    ok = ClientLedger(tmp_path / "ok.json", delta=1e-6)
    ok.add_model("ab" * 32)
    with pytest.raises(ConfigError, match="delta"):
        ClientLedger(tmp_path / "ok.json", delta=1e-5)


def test_the_simulation_gives_every_client_the_runs_policy() -> None:
    from fedfort import Simulation
    from fedfort.config import parse_config

    cfg = parse_config(
        {
            "rounds": 1,
            "clients": {"count": 4},
            "model": {"name": "logreg"},
            "privacy": {
                "client": {"local": "laplace", "max_clip_norm": 2.0, "max_round_epsilon": 4}
            },
        }
    )
    with Simulation(cfg) as sim:
        sim.run()
        spent = [sim.clients.get(cid).ledger.spent() for cid in sim.clients.ids]
    direct = rdp.RdpAccountant()
    direct.compose(LaplaceDpEvent(1 / 4))  # one Laplace release at epsilon 4, scale 2C/4
    assert spent == pytest.approx([direct.get_epsilon(1e-5)] * 4, rel=1e-9)


def test_policy_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_round_epsilon"):
        ClientPrivacyPolicy(local="gaussian", max_clip_norm=1.0)
    with pytest.raises(ConfigError, match="max_clip_norm"):
        ClientPrivacyPolicy(min_noise_std=0.1)
    with pytest.raises(ConfigError, match="delta"):
        ClientPrivacyPolicy(delta=1.0)


def test_dropout_follows_the_clients_seed_not_the_servers() -> None:
    from torch import nn

    from fedfort.client.training import LocalTrainer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 2))
    trainer = LocalTrainer(model)
    rng = np.random.default_rng(1)
    data = ClientData.from_numpy(
        rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 2, 32).astype(np.int64)
    )
    weights = trainer.bound.flatten_torch().numpy().copy()
    cfg = LocalTrainingConfig(batch_size=0)  # one full batch: only dropout is random
    task = TrainTask(1, 1, "victim", weights, cfg, SEED, privacy=ClientPrivacy())
    # the server's seed fixes the dropout masks, whatever the process's global generator did
    first = trainer.fit(task, data).delta
    torch.rand(100)
    np.testing.assert_array_equal(trainer.fit(task, data).delta, first)
    # a client asked for privacy trains on its own seed: the server cannot replay its masks
    client = FederatedClient("victim", data)
    ours = [trainer.fit(client.training_task(task), data).delta for _ in range(2)]
    assert not np.array_equal(ours[0], first) and not np.array_equal(ours[0], ours[1])
