"""Privacy of a run as objects: the Python API's way to write the ``[privacy]`` table.

Each class is one documented mode with its own options; :meth:`PrivacyMode.table` gives the
``[privacy]`` keys it sets, validated with the rest of the run's config (so a mode given as an
object and the same mode written in TOML build the same run, and its epsilon is computed by
the same accountant). See docs/privacy.md for what each mode protects and against whom.

- :class:`DPFedAvg`: user-level DP-FedAvg (McMahan et al., ICLR 2018), the noise added by the
  server (``placement="central"``) or in shares by the clients (``"distributed"``);
- :class:`LocalDP`: every client clips and randomises its own update (Gaussian or Laplace);
- :class:`DPSGD`: record-level DP-SGD in each client's training (Abadi et al., CCS 2016).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

__all__ = ["DPSGD", "DPFedAvg", "LocalDP", "PrivacyMode"]


@dataclasses.dataclass(frozen=True)
class PrivacyMode:
    """A privacy mode: the ``[privacy]`` keys it sets (unset options keep their defaults)."""

    def table(self) -> dict[str, Any]:
        """The ``[privacy]`` table of this mode."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


@dataclasses.dataclass(frozen=True)
class DPFedAvg(PrivacyMode):
    """User-level DP-FedAvg: clip each update to ``clip_norm``, add Gaussian noise to the sum.

    Give ``target_epsilon`` (the noise is calibrated by the accountant for the run's rounds)
    or ``noise_multiplier``. ``placement = "distributed"`` has every client add a share of
    the noise, so the server never holds a noise-free sum (use it with secure aggregation).
    """

    target_epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None
    clip_norm: float = 1.0
    sampling: Literal["fixed", "poisson"] | None = None
    adaptive_clipping: bool = False
    target_quantile: float | None = None
    accountant: Literal["rdp", "pld"] = "rdp"
    placement: Literal["central", "distributed"] = "central"

    def table(self) -> dict[str, Any]:
        body = super().table()
        body["mode"] = body.pop("placement")
        return body


@dataclasses.dataclass(frozen=True)
class LocalDP(PrivacyMode):
    """Local DP: each client clips to ``clip_norm`` and adds noise for ``epsilon`` per round."""

    epsilon: float
    delta: float = 1e-5
    mechanism: Literal["gaussian", "laplace"] = "gaussian"
    clip_norm: float = 1.0
    accountant: Literal["rdp", "pld"] = "rdp"

    def table(self) -> dict[str, Any]:
        return {
            "mode": "local",
            "local_epsilon": self.epsilon,
            "local_delta": self.delta,
            "local_mechanism": self.mechanism,
            "clip_norm": self.clip_norm,
            "accountant": self.accountant,
        }


@dataclasses.dataclass(frozen=True)
class DPSGD(PrivacyMode):
    """Record-level DP-SGD in every client's local training (per-sample clipping + noise).

    ``target_epsilon`` calibrates the noise multiplier for the run's rounds and the smallest
    client's data, and is every client's own budget; without a target and without
    ``noise_multiplier`` the multiplier is 1.0. ``min_samples`` is the fewest records any
    client holds, for a federation whose clients' sizes the server does not know.
    """

    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    target_epsilon: float | None = None
    min_samples: int | None = None

    def table(self) -> dict[str, Any]:
        return {"dp_sgd": {"enabled": True, **super().table()}}
