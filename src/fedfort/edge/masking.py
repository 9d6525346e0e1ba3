"""Masking of sensitive record fields before anything else on the client reads them.

- ``drop``: the column is removed.
- ``generalise``: a number is replaced by the label of its declared bin (``"[40, 65)"``), a
  category by its declared coarser group (k-anonymity-style generalisation; Sweeney,
  "k-Anonymity: A Model for Protecting Privacy", 2002).
- ``pseudonymise``: the value is replaced by ``HMAC-SHA-256(key, field || 0x00 || value)``
  (RFC 2104, FIPS 198-1) under a key only the client holds. The same value gets the same
  pseudonym under one key (so the client can still join and de-duplicate its records) and
  unrelated pseudonyms under another client's key; without the key, a dictionary of candidate
  values cannot be hashed into the pseudonyms, which a plain hash would allow. The field name
  separates the domains, so equal values in two fields do not link.

Pseudonymised fields are never model features; nothing masked leaves the client.
"""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes, hmac

from fedfort.edge.config import EdgeConfig, FieldSpec
from fedfort.edge.schema import Records
from fedfort.errors import ConfigError

__all__ = ["KEY_BYTES", "PseudonymKey", "apply_masking", "generalise", "masking_counts"]

KEY_BYTES = 32


class PseudonymKey:
    """A client's secret HMAC-SHA-256 key for pseudonyms; it never leaves the client.

    Defends against re-identification by dictionary: an unkeyed hash of a patient id or a
    name can be recomputed by anyone who guesses the value, a keyed one cannot. Keys come
    from the OS CSPRNG (:meth:`generate`) or from a file readable by its owner only
    (:meth:`load_or_create`); a key file that group or others may read is refused.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < KEY_BYTES:
            raise ConfigError(f"a pseudonym key needs at least {KEY_BYTES} bytes of secret")
        self._secret = bytes(secret)

    @classmethod
    def generate(cls) -> PseudonymKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def load_or_create(cls, path: str | Path) -> PseudonymKey:
        """The key in ``path``, or a new one written there (mode 0600) when it is absent."""
        p = Path(path)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls._load(p)
        except OSError as exc:
            raise ConfigError(f"cannot create pseudonym key {p}: {exc}") from exc
        secret = os.urandom(KEY_BYTES)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret)
        return cls(secret)

    @classmethod
    def _load(cls, p: Path) -> PseudonymKey:
        try:
            mode = p.stat().st_mode
            secret = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read pseudonym key {p}: {exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"pseudonym key {p} is accessible to group or others (mode "
                f"{stat.S_IMODE(mode):o}): run chmod 600 on it"
            )
        if len(secret) != KEY_BYTES:
            raise ConfigError(f"pseudonym key {p} must hold {KEY_BYTES} bytes, has {len(secret)}")
        return cls(secret)

    def pseudonym(self, field: str, value: str) -> str:
        """The hex HMAC-SHA-256 pseudonym of ``value`` in ``field``."""
        mac = hmac.HMAC(self._secret, hashes.SHA256())
        mac.update(field.encode() + b"\x00" + value.encode())
        return mac.finalize().hex()

    def __repr__(self) -> str:
        return "PseudonymKey(<secret>)"


def generalise(spec: FieldSpec, values: np.ndarray) -> np.ndarray:
    """Bin labels of numbers or group names of categories, as declared in ``spec``."""
    if spec.numeric:
        assert spec.bins is not None
        edges = np.asarray(spec.bins, dtype=np.float64)
        labels = np.array(
            [f"[{a:g}, {b:g})" for a, b in itertools.pairwise(edges.tolist())] + ["outside"],
            dtype=object,
        )
        labels[-2] = labels[-2][:-1] + "]"  # the last bin holds its upper edge
        index = np.searchsorted(edges, values, side="right") - 1
        index = np.where(values == edges[-1], len(edges) - 2, index)
        index = np.where((index < 0) | (index > len(edges) - 2), len(edges) - 1, index)
        out: np.ndarray = labels[index]
        return out
    assert spec.groups is not None
    lookup = {member: group for group, members in spec.groups.items() for member in members}
    return np.array([lookup[str(v)] for v in values.tolist()], dtype=object)


def apply_masking(config: EdgeConfig, records: Records, key: PseudonymKey | None) -> Records:
    """Masked copy of validated ``records``: dropped columns gone, others replaced."""
    columns: dict[str, np.ndarray] = {}
    for name, spec in config.fields.items():
        values = records.columns[name]
        if spec.mask == "drop":
            continue
        if spec.mask == "generalise":
            columns[name] = generalise(spec, values)
        elif spec.mask == "pseudonymise":
            if key is None:
                raise ConfigError(f"field {name!r} is pseudonymised: the client needs its key")
            text = [str(int(v)) if spec.type == "int" else str(v) for v in values.tolist()]
            columns[name] = np.array([key.pseudonym(name, v) for v in text], dtype=object)
        else:
            columns[name] = values
    return Records(records.x, records.y, columns, records.feature_names)


def masking_counts(config: EdgeConfig) -> dict[str, int]:
    """How many declared fields each mask covers (names stay on the client)."""
    masks = [spec.mask for spec in config.fields.values()]
    return {
        "fields_dropped": masks.count("drop"),
        "fields_generalised": masks.count("generalise"),
        "fields_pseudonymised": masks.count("pseudonymise"),
    }
