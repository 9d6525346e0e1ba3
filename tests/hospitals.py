"""The hospitals' CSV exports of ``examples/hospitals`` for the tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "hospitals"))

from make_data import HOSPITALS, hospital_frames, hospitals_toml, write_hospitals

__all__ = ["HOSPITALS", "hospital_frames", "hospitals_toml", "write_hospitals"]
