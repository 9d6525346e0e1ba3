"""Tests for fedfort.params: ParamSpec, BoundParams and vector_sha256."""

import numpy as np
import pytest
import torch
from torch import nn

from fedfort.errors import ConfigError
from fedfort.models import MLP, LogisticRegression, SmallCNN
from fedfort.params import BoundParams, ParamSpec, vector_sha256


def _make(cls, seed=0):
    torch.manual_seed(seed)
    if cls is MLP:
        return MLP(64, 10, hidden=(32, 16))
    return cls(64, 10)


def _random_vector(dim, seed=123):
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


@pytest.mark.parametrize("cls", [MLP, LogisticRegression, SmallCNN])
def test_flatten_load_round_trip_is_exact(cls):
    source = _make(cls, seed=1)
    spec = ParamSpec.from_module(source)
    vec = spec.flatten(source)

    assert vec.dtype == np.float32
    assert vec.shape == (spec.dim,)
    assert spec.dim == sum(s.numel for s in spec.slots)

    target = _make(cls, seed=2)
    assert not np.array_equal(spec.flatten(target), vec)
    spec.load(target, vec)
    np.testing.assert_array_equal(spec.flatten(target), vec)

    # The underlying tensors carry the exact values, not only the flattened copy.
    for name, tensor in source.state_dict().items():
        if torch.is_floating_point(tensor):
            torch.testing.assert_close(target.state_dict()[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("cls", [MLP, LogisticRegression, SmallCNN])
def test_load_arbitrary_vector_then_flatten_returns_it(cls):
    model = _make(cls)
    spec = ParamSpec.from_module(model)
    vec = _random_vector(spec.dim)
    spec.load(model, vec)
    np.testing.assert_array_equal(spec.flatten(model), vec)


def test_flatten_returns_a_copy():
    model = _make(LogisticRegression)
    spec = ParamSpec.from_module(model)
    vec = spec.flatten(model)
    vec[:] = 42.0
    assert not np.any(spec.flatten(model) == 42.0)


def test_smallcnn_layout_params_then_float_buffers():
    model = _make(SmallCNN)
    spec = ParamSpec.from_module(model)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert spec.num_params == trainable

    names = [s.name for s in spec.slots]
    assert not any("num_batches_tracked" in n for n in names)
    buffer_slots = [s for s in spec.slots if s.is_buffer]
    param_slots = [s for s in spec.slots if not s.is_buffer]
    assert {s.name for s in buffer_slots} == {
        "features.1.running_mean",
        "features.1.running_var",
        "features.4.running_mean",
        "features.4.running_var",
    }
    # Parameters first, buffers after: the trainable part is exactly vector[:num_params].
    assert max(s.offset + s.numel for s in param_slots) == spec.num_params
    assert min(s.offset for s in buffer_slots) == spec.num_params
    assert spec.dim == spec.num_params + sum(s.numel for s in buffer_slots)
    float_buffers = sum(b.numel() for b in model.buffers() if torch.is_floating_point(b))
    assert spec.dim == trainable + float_buffers

    # The running statistics are present in the vector at their slots.
    with torch.no_grad():
        model.features[1].running_mean.copy_(torch.arange(16, dtype=torch.float32))
        model.features[4].running_var.fill_(3.5)
    parts = spec.split(spec.flatten(model))
    np.testing.assert_array_equal(parts["features.1.running_mean"], np.arange(16))
    np.testing.assert_array_equal(parts["features.4.running_var"], np.full(32, 3.5))


def test_smallcnn_load_sets_running_stats_and_keeps_num_batches_tracked():
    model = _make(SmallCNN)
    spec = ParamSpec.from_module(model)
    counter_before = model.features[1].num_batches_tracked.clone()
    vec = _random_vector(spec.dim)
    spec.load(model, vec)
    slot = next(s for s in spec.slots if s.name == "features.4.running_mean")
    np.testing.assert_array_equal(
        model.features[4].running_mean.numpy(), vec[slot.offset : slot.offset + slot.numel]
    )
    assert torch.equal(model.features[1].num_batches_tracked, counter_before)


def test_trainable_part_matches_parameters_order():
    model = _make(MLP)
    spec = ParamSpec.from_module(model)
    vec = spec.flatten(model)
    expected = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_array_equal(vec[: spec.num_params], expected)


@pytest.mark.parametrize("length_delta", [-1, 1])
def test_load_wrong_length_raises_config_error(length_delta):
    model = _make(MLP)
    spec = ParamSpec.from_module(model)
    before = spec.flatten(model)
    with pytest.raises(ConfigError, match=str(spec.dim)):
        spec.load(model, np.zeros(spec.dim + length_delta, dtype=np.float32))
    np.testing.assert_array_equal(spec.flatten(model), before)


def test_load_2d_vector_raises_config_error():
    model = _make(LogisticRegression)
    spec = ParamSpec.from_module(model)
    with pytest.raises(ConfigError):
        spec.load(model, np.zeros((1, spec.dim), dtype=np.float32))


def test_split_gives_views_with_original_shapes():
    model = _make(SmallCNN)
    spec = ParamSpec.from_module(model)
    vec = spec.flatten(model)
    parts = spec.split(vec)

    state = model.state_dict()
    assert list(parts) == [s.name for s in spec.slots]
    for name, arr in parts.items():
        assert arr.shape == tuple(state[name].shape)
        np.testing.assert_array_equal(arr, state[name].numpy())
        assert np.shares_memory(arr, vec)

    # Writing through a view changes the vector (no copy).
    parts["head.bias"][...] = 7.0
    slot = next(s for s in spec.slots if s.name == "head.bias")
    assert np.all(vec[slot.offset : slot.offset + slot.numel] == 7.0)


def test_split_and_check_reject_wrong_vectors():
    spec = ParamSpec.from_module(_make(LogisticRegression))
    with pytest.raises(ConfigError):
        spec.split(np.zeros(spec.dim + 1, dtype=np.float32))
    with pytest.raises(ConfigError, match="float32"):
        spec.check(np.zeros(spec.dim, dtype=np.float64))
    spec.check(np.zeros(spec.dim, dtype=np.float32))  # the right vector passes


def test_spec_on_different_architecture_raises():
    mlp_spec = ParamSpec.from_module(MLP(64, 10, hidden=(32,)))
    with pytest.raises(ConfigError, match="does not match"):
        mlp_spec.flatten(LogisticRegression(64, 10))
    with pytest.raises(ConfigError, match="does not match"):
        mlp_spec.load(MLP(64, 10, hidden=(16,)), np.zeros(mlp_spec.dim, dtype=np.float32))
    with pytest.raises(ConfigError):
        mlp_spec.bind(SmallCNN(64, 10))
    cnn_spec = ParamSpec.from_module(SmallCNN(64, 10, channels=8))
    with pytest.raises(ConfigError):
        cnn_spec.flatten(SmallCNN(64, 10, channels=4))


class _LogRegWithExtraLayer(nn.Module):
    """Has every tensor LogisticRegression has, plus one more layer."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.extra = nn.Linear(10, 10)

    def forward(self, x):
        return self.extra(self.linear(x.flatten(1)))


def test_spec_on_larger_architecture_raises():
    # A module with more trainable tensors than the spec is a different architecture too:
    # flattening it with a smaller spec silently drops ``extra.*`` from the vector.
    spec = ParamSpec.from_module(LogisticRegression(64, 10))
    with pytest.raises(ConfigError):
        spec.bind(_LogRegWithExtraLayer())


def test_frozen_parameters_are_left_out():
    model = MLP(64, 10, hidden=(32,))
    first = model.net[0]
    first.weight.requires_grad_(False)
    first.bias.requires_grad_(False)
    spec = ParamSpec.from_module(model)

    names = [s.name for s in spec.slots]
    assert "net.0.weight" not in names
    assert "net.0.bias" not in names
    assert names == ["net.2.weight", "net.2.bias"]
    assert spec.num_params == 32 * 10 + 10 == spec.dim

    frozen_before = first.weight.detach().clone()
    spec.load(model, _random_vector(spec.dim))
    assert torch.equal(first.weight, frozen_before)


def test_module_without_tensors_raises():
    with pytest.raises(ConfigError):
        ParamSpec.from_module(nn.ReLU())


class _UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))  # a 0-d parameter
        self.proj = nn.Linear(3, 2, bias=False)
        self.register_buffer("ema", torch.ones(2, 2))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        return self.scale * self.proj(x) + self.ema.sum()


def test_user_defined_module():
    model = _UserModel()
    spec = ParamSpec.from_module(model)
    assert [(s.name, s.shape, s.is_buffer) for s in spec.slots] == [
        ("scale", (), False),
        ("proj.weight", (2, 3), False),
        ("ema", (2, 2), True),
    ]
    assert spec.num_params == 7
    assert spec.dim == 11

    vec = np.arange(11, dtype=np.float32)
    spec.load(model, vec)
    assert model.scale.item() == 0.0
    np.testing.assert_array_equal(model.proj.weight.detach().numpy(), [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(model.ema.numpy(), [[7, 8], [9, 10]])
    np.testing.assert_array_equal(spec.flatten(model), vec)
    assert spec.describe()[0] == {"name": "scale", "shape": [], "offset": 0, "buffer": False}


def test_bound_params_flatten_torch_and_split_params():
    model = _make(SmallCNN)
    spec = ParamSpec.from_module(model)
    bound = spec.bind(model)
    assert isinstance(bound, BoundParams)
    assert len(bound.params) == sum(1 for s in spec.slots if not s.is_buffer)

    flat = bound.flatten_torch()
    assert flat.dtype == torch.float32
    np.testing.assert_array_equal(flat.numpy(), bound.flatten())

    pieces = bound.split_params(flat)
    assert [tuple(p.shape) for p in pieces] == [tuple(p.shape) for p in model.parameters()]
    for piece, param in zip(pieces, model.parameters(), strict=True):
        assert torch.equal(piece, param.detach())

    new = torch.as_tensor(_random_vector(spec.dim))
    bound.load(new)
    np.testing.assert_array_equal(bound.flatten(), new.numpy())
    # The bound tensors are the module's own tensors.
    np.testing.assert_array_equal(spec.flatten(model), new.numpy())


def test_vector_sha256_changes_with_one_entry():
    vec = _random_vector(100)
    digest = vector_sha256(vec)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert vector_sha256(vec.copy()) == digest

    changed = vec.copy()
    changed[57] = np.nextafter(changed[57], np.float32(np.inf))
    assert vector_sha256(changed) != digest

    swapped = vec.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert vector_sha256(swapped) != digest


def test_vector_sha256_hashes_float32_values():
    vec = _random_vector(10)
    assert vector_sha256(vec.astype(np.float64)) == vector_sha256(vec)
    # A strided (non-contiguous) view hashes like its contiguous copy.
    assert vector_sha256(vec[::2]) == vector_sha256(vec[::2].copy())
    assert vector_sha256(vec[::2]) != vector_sha256(vec[1::2])
