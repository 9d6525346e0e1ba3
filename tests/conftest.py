"""What the tests share: the run configurations they build and the hypothesis profile.

Configurations (import them: ``from conftest import tiny_config``):

- :func:`tiny_config` -- a run of a few seconds (digits split iid over 6 clients, logistic
  regression, 3 rounds of one full-batch epoch) with the test's own settings merged in;
- :func:`demo_config` -- ``examples/demo.toml`` with dotted-key overrides, wherever the
  tests are run from.

Fixtures for the audit tests: a copy of a finished run, and its audit database opened by an
attacker who removed the append-only triggers. Each test module that uses them defines the
``finished_run`` fixture (``(run directory, anything)``) that these copy.
"""

from __future__ import annotations

import copy
import os
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from pydantic import BaseModel

from fedfort.audit import AUDIT_FILE
from fedfort.config import RunConfig, load_config, parse_config

# Property tests draw the same examples on every run (CI stays deterministic) and have no
# per-example deadline (the machine may be loaded). HYPOTHESIS_PROFILE=explore searches anew.
settings.register_profile("fedfort", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fedfort"))

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: the tiny run's settings; every other key has its default
TINY_RUN: dict[str, Any] = {
    "rounds": 3,
    "data": {"dataset": "digits", "partition": "iid"},
    "model": {"name": "logreg"},
    "clients": {"count": 6, "epochs": 1, "batch_size": 0, "lr": 0.5},
}


def _merge(body: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (possibly dotted) in ``body``; a dict merges into a dict key by key, a
    config section object (``ClientsConfig(...)``) replaces the whole section."""
    *parents, leaf = key.split(".")
    node = body
    for name in parents:
        node = node.setdefault(name, {})
    if isinstance(value, BaseModel):
        node[leaf] = value.model_dump(mode="json")
    elif isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
        for inner, inner_value in value.items():
            _merge(node[leaf], inner, inner_value)
    else:
        node[leaf] = copy.deepcopy(value)


def tiny_config(*layers: Mapping[str, Any], **overrides: Any) -> RunConfig:
    """:data:`TINY_RUN` with ``layers`` and then ``overrides`` merged in, validated once.

    A key is a top-level key or section (``rounds=4``, ``privacy={"mode": "central"}``) or,
    in a layer, a dotted key (``{"clients.count": 8}``). A section's dict merges into the
    tiny run's section key by key: ``clients={"count": 8}`` keeps the tiny run's epochs,
    batch size and learning rate. A section object replaces the whole section:
    ``clients=ClientsConfig(algorithm="scaffold")`` has every other key at its default.
    Layers let a test module state its own variant once (``tiny_config(SECURE, **sections)``)
    and each test what differs.
    """
    body = copy.deepcopy(TINY_RUN)
    for layer in (*layers, overrides):
        for key, value in layer.items():
            _merge(body, key, value)
    return parse_config(body)


def demo_config(overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """``examples/demo.toml`` with :meth:`RunConfig.with_overrides` ``overrides`` applied."""
    return load_config(EXAMPLES / "demo.toml").with_overrides(dict(overrides or {}))


@pytest.fixture
def run_copy(finished_run: tuple[Path, Any], tmp_path: Path) -> Path:
    """A copy of the module's finished run, free to tamper with."""
    dest = tmp_path / "run"
    shutil.copytree(finished_run[0], dest)
    return dest


@pytest.fixture
def attacker_db(run_copy: Path) -> Iterator[sqlite3.Connection]:
    """The audit database opened by someone who removes the append-only triggers."""
    db = sqlite3.connect(run_copy / AUDIT_FILE)
    db.execute("DROP TRIGGER entries_append_only_update")
    db.execute("DROP TRIGGER entries_append_only_delete")
    db.commit()
    yield db
    db.close()
