"""Tests for fedfort.config: loading, validation, overrides and the identity hash."""

import pytest

from fedfort.config import RunConfig, load_config, parse_config
from fedfort.errors import ConfigError


def _write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load():
    config = load_config()
    assert isinstance(config, RunConfig)
    assert config == RunConfig()
    assert config.seed == 0
    assert config.rounds == 30
    assert config.data.dataset == "digits"
    assert config.data.partition == "dirichlet"
    assert config.model.name == "mlp"
    assert config.clients.count == 10
    assert config.server.fraction == 1.0
    assert config.simulation.workers == 0


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == RunConfig()


def test_toml_file_loads(tmp_path):
    path = _write(
        tmp_path,
        """
seed = 7
rounds = 5

[data]
dataset = "breast_cancer"
partition = "iid"

[model]
name = "logreg"

[model.options]
hidden = [8, 4]

[clients]
count = 4
lr = 0.05
algorithm = "fedprox"

[server]
fraction = 0.5
min_clients = 2
deadline_s = 3.5

[simulation]
workers = 2
""",
    )
    config = load_config(path)
    assert config.seed == 7
    assert config.rounds == 5
    assert config.data.dataset == "breast_cancer"
    assert config.data.partition == "iid"
    assert config.data.alpha == 0.5  # untouched keys keep their defaults
    assert config.model.name == "logreg"
    assert config.model.options == {"hidden": [8, 4]}
    assert config.clients.count == 4
    assert config.clients.lr == 0.05
    assert config.server.fraction == 0.5
    assert config.server.min_clients == 2
    assert config.server.deadline_s == 3.5
    assert config.simulation.workers == 2
    # str path works too
    assert load_config(str(path)) == config


def test_local_training_uses_mu_only_for_fedprox():
    prox = parse_config({"clients": {"algorithm": "fedprox", "mu": 0.3}})
    assert prox.clients.local_training().mu == 0.3
    avg = parse_config({"clients": {"algorithm": "fedavg", "mu": 0.3}})
    assert avg.clients.local_training().mu == 0.0


def test_unknown_key_suggests_close_match(tmp_path):
    path = _write(tmp_path, "[clients]\ncuont = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "clients.cuont" in message
    assert "unknown key" in message
    assert "'count'" in message


def test_unknown_top_level_key_suggests_close_match(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "rounsd = 3\n"))
    assert "rounsd" in str(info.value)
    assert "'rounds'" in str(info.value)


def test_unknown_key_without_close_match_has_no_suggestion():
    with pytest.raises(ConfigError) as info:
        parse_config({"server": {"zzzzzzzz": 1}})
    message = str(info.value)
    assert "server.zzzzzzzz" in message
    assert "did you mean" not in message


def test_wrong_type_names_dotted_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, '[clients]\ncount = "many"\n'))
    assert "clients.count" in str(info.value)

    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, '[data]\ndataset = "imagenet"\n', "b.toml"))
    assert "data.dataset" in str(info.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("clients", "count", "0"),
        ("server", "fraction", "1.5"),
        ("server", "fraction", "0"),
        ("server", "quorum", "-0.1"),
        ("clients", "lr", "0"),
        ("data", "alpha", "-1.0"),
        ("simulation", "dropout_rate", "1.0"),
    ],
)
def test_out_of_range_names_dotted_key(tmp_path, section, key, value):
    path = _write(tmp_path, f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{section}.{key}" in str(info.value)


def test_out_of_range_top_level(tmp_path):
    with pytest.raises(ConfigError, match="rounds"):
        load_config(_write(tmp_path, "rounds = 0\n"))


def test_every_problem_is_reported():
    with pytest.raises(ConfigError) as info:
        parse_config({"clients": {"count": 0}, "server": {"fraction": 1.5}})
    assert "clients.count" in str(info.value)
    assert "server.fraction" in str(info.value)


def test_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert "nope.toml" in str(info.value)
    assert "does not exist" in str(info.value)


def test_invalid_toml_raises(tmp_path):
    path = _write(tmp_path, "[clients\ncount = = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid TOML" in str(info.value)


def test_min_clients_above_count_raises():
    with pytest.raises(ConfigError) as info:
        parse_config({"clients": {"count": 3}, "server": {"min_clients": 5}})
    assert "min_clients" in str(info.value)
    with pytest.raises(ConfigError, match="min_participants"):
        parse_config({"clients": {"count": 3}, "server": {"min_participants": 4}})
    # equal is fine
    assert parse_config({"clients": {"count": 3}, "server": {"min_clients": 3}}).server.min_clients


def test_config_is_frozen():
    config = RunConfig()
    with pytest.raises(ValueError):
        config.clients.count = 3  # type: ignore[misc]


def test_with_overrides_applies_dotted_keys_and_skips_none():
    base = RunConfig()
    new = base.with_overrides(
        {
            "clients.count": 20,
            "rounds": 3,
            "data.partition": "shards",
            "server.lr": None,
            "seed": None,
        }
    )
    assert new.clients.count == 20
    assert new.rounds == 3
    assert new.data.partition == "shards"
    assert new.server.lr == base.server.lr
    assert new.seed == base.seed
    # the original is unchanged
    assert base.clients.count == 10
    assert base.rounds == 30


def test_with_overrides_validates_values():
    base = RunConfig()
    with pytest.raises(ConfigError, match=r"clients\.count"):
        base.with_overrides({"clients.count": 0})
    with pytest.raises(ConfigError, match=r"server\.fraction"):
        base.with_overrides({"server.fraction": 1.5})
    with pytest.raises(ConfigError, match="min_clients"):
        base.with_overrides({"clients.count": 2, "server.min_clients": 3})
    with pytest.raises(ConfigError, match="'count'"):
        base.with_overrides({"clients.cuont": 3})


def test_with_overrides_unknown_section_raises_config_error():
    # A typo in the section part of a dotted key must be reported like any unknown key, not
    # escape as a bare KeyError.
    with pytest.raises(ConfigError):
        RunConfig().with_overrides({"clinets.count": 3})


def test_identity_hash_ignores_rounds_and_workers_but_not_seed():
    base = RunConfig()
    digest = base.identity_hash()
    assert len(digest) == 64
    assert base.with_overrides({"rounds": 99}).identity_hash() == digest
    assert base.with_overrides({"simulation.workers": 4}).identity_hash() == digest
    assert base.with_overrides({"seed": 1}).identity_hash() != digest
    assert base.with_overrides({"clients.lr": 0.2}).identity_hash() != digest
    assert base.with_overrides({"simulation.torch_threads": 2}).identity_hash() != digest
    # Deterministic and does not mutate the config.
    assert base.identity_hash() == digest
    assert base.to_dict()["rounds"] == 30
    assert base.to_dict()["simulation"]["workers"] == 0


def test_to_dict_round_trips():
    config = RunConfig().with_overrides({"clients.count": 4, "model.options": {"hidden": [3]}})
    assert parse_config(config.to_dict()) == config
