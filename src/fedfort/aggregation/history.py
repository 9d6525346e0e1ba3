"""What the server remembers of each client's past updates, in constant space per client.

Updates are compressed with a CountSketch (Charikar, Chen, Farach-Colton 2002): coordinate
``j`` is added, with a seeded random sign, to one of ``buckets`` seeded random buckets. Inner
products are preserved in expectation and an identical update gives an identical sketch, which
is what replay detection needs; the projection is one sparse matrix product for the whole
``(n, d)`` matrix and costs ``O(d)`` memory, not ``O(d * buckets)``.

FoolsGold (:mod:`fedfort.aggregation.foolsgold`) sketches its per-client history with it, and
the anomaly detector (:mod:`fedfort.detection`, which builds on this package's distances)
keeps its replay history here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

__all__ = ["ClientHistory", "CountSketch"]


class CountSketch:
    """A seeded linear map from ``d`` to ``buckets`` dimensions."""

    def __init__(self, dim: int, buckets: int = 256, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        rows = np.arange(dim)
        cols = rng.integers(0, buckets, dim)
        signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), dim)
        self.dim = dim
        self.matrix = sparse.csr_matrix((signs, (rows, cols)), shape=(dim, buckets))

    def __call__(self, updates: np.ndarray) -> np.ndarray:
        """Sketch every row of the ``(n, d)`` matrix: ``(n, buckets)`` float64."""
        sketched: np.ndarray = np.asarray(self.matrix.T @ updates.T, dtype=np.float64).T
        return sketched


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    unit: np.ndarray = rows / np.maximum(norms, 1e-12)
    return unit


class ClientHistory:
    """Per client: a running mean of update norms and the sketches of its last updates."""

    def __init__(self, dim: int, *, keep: int = 5, ema: float = 0.5, seed: int = 0) -> None:
        self.sketch = CountSketch(dim, seed=seed)
        self.keep = keep
        self.ema = ema
        self.mean_norm: dict[str, float] = {}
        self.sketches: dict[str, np.ndarray] = {}

    def log_norm_ratios(self, client_ids: tuple[str, ...], norms: np.ndarray) -> np.ndarray:
        """``log(norm / running mean norm)`` per client; NaN for clients without history."""
        past = np.array([self.mean_norm.get(c, np.nan) for c in client_ids], dtype=np.float64)
        ratios: np.ndarray = np.log(np.maximum(norms, 1e-12) / np.maximum(past, 1e-12))
        return ratios

    def replays(self, client_ids: tuple[str, ...], sketches: np.ndarray) -> np.ndarray:
        """Whether each sketch repeats one of the client's kept past sketches."""
        out = np.zeros(len(client_ids), dtype=bool)
        unit = _unit(sketches)
        for i, cid in enumerate(client_ids):  # one small (keep, buckets) product per client
            past = self.sketches.get(cid)
            if past is not None:
                out[i] = bool((_unit(past) @ unit[i] > 0.9999).any())
        return out

    def updated(
        self, client_ids: tuple[str, ...], norms: np.ndarray, sketches: np.ndarray
    ) -> dict[str, Any]:
        """The state after recording this round's updates (applied only on commit)."""
        mean_norm = dict(self.mean_norm)
        kept = dict(self.sketches)
        for i, cid in enumerate(client_ids):
            old = mean_norm.get(cid)
            n = float(norms[i])
            mean_norm[cid] = n if old is None else self.ema * old + (1 - self.ema) * n
            past = kept.get(cid)
            row = sketches[i : i + 1]
            kept[cid] = row if past is None else np.concatenate([past, row])[-self.keep :]
        return {"mean_norm": mean_norm, "sketches": kept}

    def state_dict(self) -> dict[str, Any]:
        return {"mean_norm": dict(self.mean_norm), "sketches": dict(self.sketches)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean_norm = {k: float(v) for k, v in state.get("mean_norm", {}).items()}
        self.sketches = {
            k: np.asarray(v, dtype=np.float64) for k, v in state.get("sketches", {}).items()
        }
