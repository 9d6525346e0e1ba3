"""Sample-level DP-SGD at the client (Opacus) and the client's own epsilon ledger."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator

import dp_accounting
import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from fedfort.client import ClientData, LocalTrainer, dp_sgd
from fedfort.client.dp_sgd import DpSgdLedger, DpSgdStats, train_dp_sgd
from fedfort.errors import CheckpointError, ConfigError
from fedfort.messages import DpSgdSettings, LocalTrainingConfig, TrainTask
from fedfort.models import MLP, SmallCNN
from fedfort.params import ParamSpec

N, FEATURES, CLASSES = 64, 64, 10


def separable_data(seed: int = 0) -> ClientData:
    """Ten well-separated Gaussian blobs: an easy problem with a clear loss decrease."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (CLASSES, FEATURES)).astype(np.float32)
    y = np.arange(N) % CLASSES
    x = centers[y] + 0.1 * rng.normal(size=(N, FEATURES)).astype(np.float32)
    return ClientData.from_numpy(x.astype(np.float32), y.astype(np.int64))


def make_model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(FEATURES, CLASSES, hidden=[16])


def config(
    noise: float = 0.5,
    clip: float = 1.0,
    *,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 0.1,
    momentum: float = 0.0,
) -> LocalTrainingConfig:
    return LocalTrainingConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        dp_sgd=DpSgdSettings(noise_multiplier=noise, max_grad_norm=clip),
    )


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def mean_loss(model: nn.Module, data: ClientData) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(data.x), data.y))


def assert_plain_module(model: nn.Module, *, grads_cleared: bool = True) -> None:
    for name, module in model.named_modules():
        for hooks in (
            module._forward_hooks,
            module._forward_pre_hooks,
            module._backward_hooks,
            module._backward_pre_hooks,
            module._forward_hooks_with_kwargs,
            module._forward_pre_hooks_with_kwargs,
        ):
            assert len(hooks) == 0, f"{name or '<root>'} still has hooks {hooks}"
        assert module._is_full_backward_hook is None, name
        for attr in ("activations", "max_batch_len", "autograd_grad_sample_hooks"):
            assert attr not in module.__dict__, f"{name}.{attr} left behind"
    for name, p in model.named_parameters():
        for attr in ("grad_sample", "_forward_counter", "_current_grad_sample", "summed_grad"):
            assert not hasattr(p, attr), f"{name}.{attr} left behind"
        if grads_cleared:
            assert p.grad is None


def test_training_changes_weights_and_reduces_loss() -> None:
    data = separable_data()
    model = make_model()
    before = flat(model)
    initial_loss = mean_loss(model, data)
    stats = train_dp_sgd(model, data, config(noise=0.5, epochs=5, lr=0.5), seed=3)
    assert stats.sample_rate == pytest.approx(16 / N)
    assert stats.steps == 5 * round(N / 16)
    assert stats.noise_multiplier == 0.5
    assert math.isfinite(stats.train_loss)
    assert not torch.equal(before, flat(model))
    final_loss = mean_loss(model, data)
    assert final_loss < 0.7 * initial_loss, (initial_loss, final_loss)


def test_full_batch_and_steps_per_epoch() -> None:
    data = separable_data()
    full = train_dp_sgd(make_model(), data, config(batch_size=0, epochs=3), seed=0)
    assert (full.sample_rate, full.steps) == (1.0, 3)
    larger = train_dp_sgd(make_model(), data, config(batch_size=500), seed=0)
    assert (larger.sample_rate, larger.steps) == (1.0, 1)
    # q = 40/64: 1/q = 1.6 rounds to 2 steps per epoch
    uneven = train_dp_sgd(make_model(), data, config(batch_size=40, epochs=2), seed=0)
    assert uneven.sample_rate == pytest.approx(40 / 64) and uneven.steps == 4


def test_same_seed_same_weights_other_seed_differs() -> None:
    data = separable_data()
    cfg = config(noise=1.0, epochs=2)
    runs = []
    for i, seed in enumerate((7, 7, 8)):
        model = make_model()
        torch.manual_seed(100 + i)  # the global RNG must play no part
        stats = train_dp_sgd(model, data, cfg, seed=seed)
        runs.append((flat(model), stats))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])


def test_model_is_hook_free_afterwards_and_trains_without_dp() -> None:
    data = separable_data()
    model = make_model()
    train_dp_sgd(model, data, config(epochs=2), seed=1)
    assert_plain_module(model)
    assert model.training

    # a plain forward/backward gives ordinary gradients and no per-sample ones
    loss = nn.functional.cross_entropy(model(data.x), data.y)
    torch.autograd.backward(loss)
    assert all(p.grad is not None and not hasattr(p, "grad_sample") for p in model.parameters())
    model.zero_grad(set_to_none=True)
    # either kind of backward hook can be registered again, as on a fresh module
    copy.deepcopy(model).net[0].register_backward_hook(lambda *_: None).remove()

    # the same object serves non-private training next, and DP-SGD again after that
    trainer = LocalTrainer(model)
    weights = trainer.bound.flatten()
    task = TrainTask(1, 1, "c0", weights, LocalTrainingConfig(epochs=2, batch_size=8), seed=2)
    update = trainer.fit(task, data)
    assert np.all(np.isfinite(update.delta)) and np.linalg.norm(update.delta) > 0
    assert_plain_module(model, grads_cleared=False)
    train_dp_sgd(model, data, config(), seed=3)
    assert_plain_module(model)


class PartlyUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(FEATURES, CLASSES)
        self.unused = nn.Linear(FEATURES, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.used(x)
        return out


def test_failure_mid_training_still_leaves_a_plain_module() -> None:
    model = PartlyUnused()
    with pytest.raises(ConfigError, match="take part in the loss"):
        train_dp_sgd(model, separable_data(), config(), seed=0)
    assert_plain_module(model)


def test_eval_mode_is_restored() -> None:
    model = make_model()
    model.eval()
    train_dp_sgd(model, separable_data(), config(), seed=0)
    assert not model.training


def test_empty_poisson_batches_are_handled(monkeypatch: pytest.MonkeyPatch) -> None:
    # q = 1/64 and 64 steps: about 23 empty batches expected; P(none empty) < 1e-12
    sizes: list[int] = []

    class RecordingSampler(UniformWithReplacementSampler):
        def __iter__(self) -> Iterator[list[int]]:
            for indices in super().__iter__():
                sizes.append(len(indices))
                yield indices

    monkeypatch.setattr(dp_sgd, "UniformWithReplacementSampler", RecordingSampler)
    data = separable_data()
    model = make_model()
    before = flat(model)
    stats = train_dp_sgd(model, data, config(noise=1.0, batch_size=1), seed=5)
    assert stats.steps == N == len(sizes) and stats.sample_rate == pytest.approx(1 / N)
    assert sizes.count(0) > 5 and max(sizes) > 0
    after = flat(model)
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    assert math.isfinite(stats.train_loss)
    assert_plain_module(model)


def test_an_empty_step_is_pure_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    # every batch empty: with noise 0 nothing moves, with noise the weights move anyway
    class EmptySampler(UniformWithReplacementSampler):
        def __iter__(self) -> Iterator[list[int]]:
            for _ in super().__iter__():
                yield []

    monkeypatch.setattr(dp_sgd, "UniformWithReplacementSampler", EmptySampler)
    data = separable_data()
    for noise in (0.0, 1.0):
        model = make_model()
        before = flat(model)
        stats = train_dp_sgd(model, data, config(noise=noise), seed=0)
        assert stats.steps == 4 and math.isnan(stats.train_loss)
        assert torch.equal(before, flat(model)) == (noise == 0.0)
        assert_plain_module(model)


def test_per_sample_clipping_bounds_the_step() -> None:
    # full batch, noise 0, no momentum or weight decay: each step is lr * mean of clipped
    # per-sample gradients, so it moves the weights by at most lr * max_grad_norm
    data = separable_data()
    model = make_model()
    before = flat(model)
    lr, clip, epochs = 0.5, 1e-3, 4
    stats = train_dp_sgd(
        model, data, config(noise=0.0, clip=clip, batch_size=0, epochs=epochs, lr=lr), seed=0
    )
    assert stats.steps == epochs
    moved = float(torch.linalg.vector_norm(flat(model) - before))
    assert 0 < moved <= lr * clip * stats.steps * (1 + 1e-4)
    # without clipping the same run moves much further
    free = make_model()
    train_dp_sgd(free, data, config(noise=0.0, clip=1e6, batch_size=0, epochs=epochs, lr=lr), 0)
    assert float(torch.linalg.vector_norm(flat(free) - before)) > 20 * moved


def test_noise_has_effect() -> None:
    data = separable_data()
    moves = {}
    for noise in (0.0, 50.0):
        model = make_model()
        before = flat(model)
        train_dp_sgd(model, data, config(noise=noise, epochs=1), seed=4)
        moves[noise] = float(torch.linalg.vector_norm(flat(model) - before))
    assert moves[50.0] > 10 * moves[0.0] > 0


def test_batchnorm_model_is_rejected() -> None:
    data = separable_data()
    bn = nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    before = flat(bn)
    with pytest.raises(ConfigError, match=r"1 \(BatchNorm1d\).*GroupNorm"):
        train_dp_sgd(bn, data, config(), seed=0)
    assert torch.equal(before, flat(bn))
    assert_plain_module(bn)

    with pytest.raises(ConfigError, match=r"features\.1 \(BatchNorm2d\), features\.4"):
        train_dp_sgd(SmallCNN(FEATURES, CLASSES), data, config(), seed=0)

    no_affine = nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16, affine=False))
    with pytest.raises(ConfigError, match="BatchNorm"):
        train_dp_sgd(no_affine, data, config(), seed=0)

    group = nn.Sequential(nn.Linear(FEATURES, 16), nn.GroupNorm(4, 16), nn.Linear(16, 10))
    train_dp_sgd(group, data, config(), seed=0)
    assert_plain_module(group)


def test_missing_or_invalid_settings_are_config_errors() -> None:
    data = separable_data()
    with pytest.raises(ConfigError, match="dp_sgd"):
        train_dp_sgd(make_model(), data, LocalTrainingConfig(), seed=0)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        train_dp_sgd(make_model(), data, config(clip=0.0), seed=0)
    with pytest.raises(ConfigError, match="noise_multiplier"):
        train_dp_sgd(make_model(), data, config(noise=-1.0), seed=0)
    empty = ClientData(torch.zeros(0, FEATURES), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ConfigError, match="sample"):
        train_dp_sgd(make_model(), empty, config(), seed=0)


def test_mse_loss_and_spec_unchanged() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = (x[:, :2] * 0.5).astype(np.float32)
    model = nn.Sequential(nn.Linear(FEATURES, 2))
    spec = ParamSpec.from_module(model)
    cfg = LocalTrainingConfig(batch_size=16, lr=0.05, loss="mse", dp_sgd=DpSgdSettings(0.5, 1.0))
    stats = train_dp_sgd(model, ClientData.from_numpy(x, y), cfg, seed=0)
    assert stats.steps == 4 and math.isfinite(stats.train_loss)
    assert ParamSpec.from_module(model) == spec


# --- the ledger -----------------------------------------------------------------------------

ROUNDS = [
    DpSgdStats(steps=20, sample_rate=0.25, noise_multiplier=1.1, train_loss=1.0),
    DpSgdStats(steps=8, sample_rate=0.1, noise_multiplier=0.9, train_loss=1.0),
    DpSgdStats(steps=20, sample_rate=0.25, noise_multiplier=1.1, train_loss=1.0),
]


def opacus_epsilon(rounds: list[DpSgdStats], delta: float) -> float:
    accountant = RDPAccountant()
    for stats in rounds:
        for _ in range(stats.steps):
            accountant.step(noise_multiplier=stats.noise_multiplier, sample_rate=stats.sample_rate)
    return float(accountant.get_epsilon(delta=delta))


def test_ledger_matches_opacus_step_by_step_accounting() -> None:
    ledger = DpSgdLedger()
    assert ledger.epsilon(1e-5) == 0.0
    previous = 0.0
    for i, stats in enumerate(ROUNDS, start=1):
        ledger.record(stats)
        eps = ledger.epsilon(1e-5)
        assert eps == pytest.approx(opacus_epsilon(ROUNDS[:i], 1e-5), rel=1e-9)
        assert eps > previous
        previous = eps
    assert ledger.epsilon(1e-3) < ledger.epsilon(1e-5)


def test_ledger_many_rounds_compose_like_one_long_run() -> None:
    ledger = DpSgdLedger()
    for _ in range(300):
        ledger.record(ROUNDS[0])
    assert len(ledger) == 300 and len(ledger.state_dict()["history"]) == 300
    accountant = RDPAccountant()
    accountant.history = [(1.1, 0.25, 300 * 20)]
    assert ledger.epsilon(1e-5) == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-9)


def test_ledger_agrees_with_dp_accounting() -> None:
    ledger = DpSgdLedger()
    accountant = dp_accounting.rdp.RdpAccountant()
    for stats in ROUNDS:
        ledger.record(stats)
        event = dp_accounting.PoissonSampledDpEvent(
            stats.sample_rate, dp_accounting.GaussianDpEvent(stats.noise_multiplier)
        )
        accountant.compose(event, stats.steps)
    reference = accountant.get_epsilon(1e-5)
    assert ledger.epsilon(1e-5) == pytest.approx(reference, rel=0.05)


def test_ledger_extra_does_not_record_and_state_round_trips() -> None:
    ledger = DpSgdLedger()
    ledger.record(ROUNDS[0])
    alone = ledger.epsilon(1e-5)
    with_extra = ledger.epsilon(1e-5, extra=ROUNDS[1])
    assert with_extra > alone
    assert ledger.epsilon(1e-5) == alone and len(ledger) == 1
    ledger.record(ROUNDS[1])
    assert ledger.epsilon(1e-5) == pytest.approx(with_extra, rel=1e-12)

    state = json.loads(json.dumps(ledger.state_dict()))
    assert state == {"history": [[1.1, 0.25, 20], [0.9, 0.1, 8]]}
    restored = DpSgdLedger()
    restored.load_state_dict(state)
    assert restored.epsilon(1e-5) == ledger.epsilon(1e-5)
    assert restored.state_dict() == ledger.state_dict()

    with pytest.raises(CheckpointError):
        restored.load_state_dict({"history": [[1.0, 2.0, 3]]})
    with pytest.raises(CheckpointError):
        restored.load_state_dict({})
    with pytest.raises(CheckpointError):
        restored.load_state_dict({"history": [["x", 0.5, 3]]})
    with pytest.raises(CheckpointError):
        restored.load_state_dict({"history": [[1.0, 0.5, -1]]})
    assert restored.state_dict() == ledger.state_dict()  # a bad state leaves it unchanged


def test_ledger_records_real_training_and_zero_noise_is_infinite() -> None:
    data = separable_data()
    ledger = DpSgdLedger()
    stats = train_dp_sgd(make_model(), data, config(noise=1.0, epochs=2), seed=0)
    ledger.record(stats)
    assert ledger.epsilon(1e-5) == pytest.approx(opacus_epsilon([stats], 1e-5), rel=1e-9)
    zero = DpSgdStats(steps=1, sample_rate=0.5, noise_multiplier=0.0, train_loss=0.0)
    assert ledger.epsilon(1e-5, extra=zero) == math.inf
    with pytest.raises(ConfigError):
        ledger.epsilon(0.0)
