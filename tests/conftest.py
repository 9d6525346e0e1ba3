"""Fixtures shared by the audit tests: a copy of a finished run, and its audit database opened
by an attacker who removed the append-only triggers. Each test module defines the
``finished_run`` fixture (``(run directory, anything)``) that these copy."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from fedfort.audit import AUDIT_FILE

# Property tests draw the same examples on every run (CI stays deterministic) and have no
# per-example deadline (the machine may be loaded). HYPOTHESIS_PROFILE=explore searches anew.
settings.register_profile("fedfort", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fedfort"))


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
