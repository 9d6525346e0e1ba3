"""The shared config builders of ``conftest.py`` build what their docstrings promise."""

from __future__ import annotations

import pytest

from conftest import EXAMPLES, TINY_RUN, demo_config, tiny_config
from fedfort.config import ClientsConfig, load_config, parse_config
from fedfort.errors import ConfigError


def test_the_tiny_run_is_its_stated_settings_and_defaults_elsewhere() -> None:
    assert tiny_config() == parse_config(TINY_RUN)
    cfg = tiny_config()
    assert (cfg.rounds, cfg.clients.count, cfg.clients.batch_size) == (3, 6, 0)
    assert (cfg.data.dataset, cfg.data.partition, cfg.model.name) == ("digits", "iid", "logreg")


def test_a_section_dict_merges_and_a_section_object_replaces() -> None:
    merged = tiny_config(clients={"count": 8}, privacy={"client": {"max_clip_norm": 5.0}})
    assert (merged.clients.count, merged.clients.epochs, merged.clients.lr) == (8, 1, 0.5)
    assert merged.privacy.client.max_clip_norm == 5.0
    replaced = tiny_config(clients=ClientsConfig(algorithm="scaffold"))
    assert replaced.clients == ClientsConfig(algorithm="scaffold")


def test_layers_apply_in_order_with_dotted_keys_and_keywords_last() -> None:
    cfg = tiny_config({"clients.count": 8, "rounds": 5}, {"clients.count": 9}, rounds=2)
    assert (cfg.clients.count, cfg.rounds, cfg.clients.lr) == (9, 2, 0.5)


def test_the_builders_never_share_state_between_calls() -> None:
    privacy = {"client": {"max_clip_norm": 5.0}}
    tiny_config(privacy=privacy)
    privacy["client"]["max_clip_norm"] = 7.0
    assert "privacy" not in TINY_RUN
    assert tiny_config().privacy.client.max_clip_norm is None


def test_an_invalid_setting_is_refused_as_the_config_loader_refuses_it() -> None:
    with pytest.raises(ConfigError, match="clinets"):
        tiny_config(clinets={"count": 3})


def test_the_demo_config_is_the_example_file_with_overrides() -> None:
    assert demo_config() == load_config(EXAMPLES / "demo.toml")
    cfg = demo_config({"rounds": 2, "clients.epochs": 1, "governance.rollback_drop": None})
    assert (cfg.rounds, cfg.clients.epochs, cfg.clients.count) == (2, 1, 10)
