"""Where a client's records come from, and the one function both runtimes call.

- :func:`with_synthetic_identifiers`: the embedded datasets carry no personal data, so a
  simulated client (or ``fedfort client --data partition:K``) can have synthetic identifying
  columns added to its rows (name, patient id, ZIP code, birth date, age, free-text notes),
  to exercise the declared masking. The values are made up from a seeded generator.
- :func:`load_records`: an ``.npz`` file with the feature matrix ``x``, labels ``y`` and one
  1-D array per declared field (text as unicode arrays, missing text as ``""``, missing
  numbers as NaN); read with ``allow_pickle=False``.
- :func:`client_training_data`: the protected training data of one client and its
  ``edge_*`` count metrics; a no-op when ``[edge]`` is off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedfort.client.training import ClientData
from fedfort.edge.config import SYNTHETIC_COLUMNS, EdgeConfig
from fedfort.edge.masking import PseudonymKey
from fedfort.edge.pipeline import protect
from fedfort.edge.schema import Records
from fedfort.errors import ConfigError

__all__ = [
    "SYNTHETIC_COLUMNS",
    "client_key",
    "client_training_data",
    "load_records",
    "with_synthetic_identifiers",
]

SYNTHETIC_ZIPS = (
    "02115", "02139", "02142", "10016", "10029", "10065",
    "60611", "60612", "60637", "94110", "94115", "94143",
)  # fmt: skip
_FIRST = ("Ada", "Ben", "Chloe", "Dev", "Elena", "Femi", "Grace", "Hiro", "Ines", "Jonas")
_LAST = ("Okafor", "Nguyen", "Schmidt", "Garcia", "Kowalski", "Tanaka", "Haddad", "Silva")
_NOTE = ("follow-up in 3 months", "referred by GP", "family history noted", "")
_STREAM = 0x65646765  # separates the synthetic stream from every other seeded stream


def with_synthetic_identifiers(x: np.ndarray, y: np.ndarray, seed: int, client: int) -> Records:
    """``x`` and ``y`` with made-up identifying columns (seeded per client)."""
    n = y.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM, client)))
    first = rng.choice(np.array(_FIRST), n)
    last = rng.choice(np.array(_LAST), n)
    year: np.ndarray = np.asarray(rng.integers(1936, 2004, n))
    month: np.ndarray = np.asarray(rng.integers(1, 13, n))
    day: np.ndarray = np.asarray(rng.integers(1, 29, n))
    ids: list[int] = np.asarray(rng.choice(10**8, size=n, replace=False)).tolist()
    notes = rng.choice(np.array(_NOTE), n)
    columns = {
        "patient_name": np.char.add(np.char.add(first, " "), last),
        "patient_id": np.array([f"MRN-{client:03d}-{i:08d}" for i in ids]),
        "zip": rng.choice(np.array(SYNTHETIC_ZIPS), n),
        "birth_date": np.array(
            [
                f"{a:04d}-{b:02d}-{c:02d}"
                for a, b, c in zip(year.tolist(), month.tolist(), day.tolist(), strict=True)
            ]
        ),
        "age": (2026 - year).astype(np.int64),
        "notes": notes,
    }
    return Records(x, y, columns)


def load_records(path: str | Path) -> Records:
    """Records from an ``.npz`` with ``x``, ``y`` and one array per record column."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as npz:
            x = np.asarray(npz["x"], dtype=np.float32)
            y = np.asarray(npz["y"])
            columns = {k: np.asarray(npz[k]) for k in npz.files if k not in ("x", "y")}
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"--data {p}: need an .npz file with arrays x, y and fields ({exc})"
        ) from exc
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    return Records(x, y, columns)


def client_key(
    config: EdgeConfig, client_id: str, state_dir: str | Path | None
) -> PseudonymKey | None:
    """The client's pseudonym key: from ``key_dir``, else ``state_dir``, else a fresh one."""
    if not any(spec.mask == "pseudonymise" for spec in config.fields.values()):
        return None
    if config.key_dir is not None:
        directory = Path(config.key_dir)
    elif state_dir is not None:
        directory = Path(state_dir)
    else:
        return PseudonymKey.generate()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return PseudonymKey.load_or_create(directory / f"{client_id}.pseudonym.key")


def client_training_data(
    config: EdgeConfig,
    records: Records,
    *,
    client_id: str,
    num_classes: int,
    seed: int,
    state_dir: str | Path | None = None,
) -> tuple[ClientData, dict[str, float]]:
    """One client's training data after the ``[edge]`` pipeline, and its count metrics."""
    if not config.enabled:
        if records.columns:
            raise ConfigError(
                "the records carry columns besides x and y: declare them in [edge.fields] "
                "(edge.enabled = true) so they are validated and masked"
            )
        return ClientData.from_numpy(records.x, records.y), {}
    key = client_key(config, client_id, state_dir)
    protected = protect(config, records, num_classes=num_classes, key=key, seed=seed)
    return ClientData.from_numpy(protected.x, protected.y), protected.metrics()
