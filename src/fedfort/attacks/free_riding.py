"""Clients that take the model without doing the work, or resend old work.

- :class:`FreeRider` (Lin et al., "Free-riders in Federated Learning: Attacks and Defenses",
  2019; Fraboni et al., AISTATS 2021): returns the global model unchanged (a zero update) or
  a small random perturbation of it, while claiming its sample count.
- :class:`StaleReplay`: records the update it computed in the first round it took part in and
  resubmits that stale update in every later round. The protocol-level answer (signatures
  bound to round and nonce) belongs to the networked runtime; in simulation the content of
  the update is all the server has, and the detector's per-client history must catch it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from fedfort.attacks.base import Attack, AttackKind, AttackView
from fedfort.errors import ConfigError

__all__ = ["FreeRider", "StaleReplay"]


class FreeRider(Attack):
    """Send nothing learned: a zero update, or Gaussian noise of std ``sigma``."""

    name = "free_rider"
    kind: AttackKind = "free_rider"

    def __init__(self, mode: Literal["zero", "noise"] = "zero", sigma: float = 1e-3) -> None:
        if mode not in ("zero", "noise") or not sigma > 0:
            raise ConfigError("free_rider needs mode zero or noise and sigma > 0")
        self.mode = mode
        self.sigma = sigma

    def craft(self, view: AttackView) -> np.ndarray:
        if self.mode == "zero":
            return np.zeros_like(view.own)
        noise = view.rng.standard_normal(view.own.shape, dtype=np.float32)
        return noise * np.float32(self.sigma)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.mode, "sigma": self.sigma}


class StaleReplay(Attack):
    """Resubmit the update of the client's first round in every later round."""

    name = "replay"
    kind: AttackKind = "replay"

    def __init__(self) -> None:
        self.recorded: dict[str, np.ndarray] = {}

    def craft(self, view: AttackView) -> np.ndarray:
        out = view.own.copy()
        for i, cid in enumerate(view.client_ids):
            stored = self.recorded.get(cid)
            if stored is None or stored.shape != out[i].shape:
                self.recorded[cid] = view.own[i].copy()
            else:
                out[i] = stored
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"recorded": dict(self.recorded)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recorded = {
            k: np.asarray(v, dtype=np.float32) for k, v in state.get("recorded", {}).items()
        }
